import Foundation

/// Decisions for herald-shaper: candidates in, outcomes out (SPEC §6). Pure logic, shared
/// by the worker and `herald replay`.
///
/// The caller drives the clock: `advance(to:)` closes merge windows and wakes deferred
/// messages due by then, in (due, creation) order; `process(_:)` first advances to the
/// candidate's `firedAt`. Every decision is stamped with event time (the candidate's
/// `firedAt`, or the due time of the timer that made it), never the wall clock, so a
/// replay decides exactly what the live pipeline decides.
///
/// State is per (shop, user) and bounded: sent history is kept for the longest dedupe or
/// cap window, seen candidate ids for `seenHorizon`, preference changes are folded into
/// one set once they are an hour older than the clock.
public struct Shaper: Sendable {
    public let rules: RuleSet
    /// How long a candidate id is remembered for dropping replays (step 1).
    public let seenHorizon: TimeSpan

    private let rulesByID: [String: Rule]
    private let experiments: [String: Experiment]
    /// What steps 3–7 need of each rule, resolved once: one lookup per candidate.
    private let plans: [String: RulePlan]
    /// Sent history older than this is never read again.
    private let historyHorizon: TimeSpan
    private let sweepInterval: TimeSpan
    var users: [UserKey: ShaperUser] = [:]
    var timers = TimerHeap()
    var timerSequence: UInt64 = 0
    private var timeZones: [String: TimeZone] = [:]
    var lastSweep: Timestamp?
    public internal(set) var clock: Timestamp?
    /// Candidates dropped at step 1 (an id seen before).
    public internal(set) var replayedDropped: Int = 0
    /// Users changed or removed since the last checkpoint (`takeDirtyStates`); a user's
    /// `dirty` flag says whether it is listed. A removed user's key may be listed twice.
    var dirtyKeys: [UserKey] = []
    /// Off until the first checkpoint (which takes every user) or a restore.
    var tracksDirty = false

    public init(rules: RuleSet, seenHorizon: TimeSpan = .days(7)) {
        self.rules = rules
        self.seenHorizon = seenHorizon
        var byID: [String: Rule] = [:]
        for r in rules.rules { byID[r.id] = r }
        rulesByID = byID
        var ex: [String: Experiment] = [:]
        for e in rules.experiments where !e.variants.isEmpty { ex[e.rule] = e }
        experiments = ex
        var p: [String: RulePlan] = [:]
        for r in rules.rules {
            p[r.id] = RulePlan(ruleID: r.id, rule: r, policies: rules.policies, experiment: ex[r.id])
        }
        plans = p
        var longest = rules.policies.dedupeWindow ?? TimeSpan(microseconds: 0)
        if let cap = rules.policies.frequencyCap { longest = max(longest, cap.per) }
        for s in rules.policies.shops.values { if let cap = s.frequencyCap { longest = max(longest, cap.per) } }
        for r in rules.rules { if let d = r.dedupe { longest = max(longest, d.window) } }
        historyHorizon = longest
        // Users seen again are pruned as they are touched; the sweep only removes users
        // that went quiet, so it can be as rare as the longest window (at least hourly for
        // the preference fold, at most daily).
        sweepInterval = min(max(longest, .hours(1)), .days(1))
    }

    /// The next merge-window close or deferred wake-up, if any.
    public var nextDue: Timestamp? { timers.first?.due }

    /// Users with state (for tests and metrics).
    public var userCount: Int { users.count }

    // MARK: - Input

    public mutating func process(_ candidate: Candidate) -> [Outcome] {
        var out: [Outcome] = []
        process(candidate, into: &out)
        return out
    }

    public mutating func process(_ c: Candidate, into out: inout [Outcome]) {
        advance(to: c.firedAt, into: &out)
        let key = UserKey(shop: c.shopID, user: c.userID)
        // Taken out of the table by a swap at its index (one hash lookup, no copy) and
        // swapped back when done; nothing below adds or removes users.
        let slot = slot(for: key)
        var user = ShaperUser()
        swap(&user, &users.values[slot])
        defer { swap(&user, &users.values[slot]) }
        markDirty(&user, key)
        // 1. A candidate id seen before is dropped silently.
        let idHash = StableID.hash64(c.id)
        if user.seen.contains(where: { $0.hash == idHash }) {
            replayedDropped += 1
            return
        }
        user.seen.append((idHash, c.firedAt))
        let now = c.firedAt
        user.prune(historyFrom: now - historyHorizon, seenFrom: now - seenHorizon, foldUpTo: now - .hours(1))
        // A firing that failed in the trigger fails here, whatever the policies say.
        let plan = plan(for: c.ruleID)
        if c.failure != nil {
            out.append(send(Message(c), plan: plan, decidedAt: now))
            return
        }
        // 2. Opt-out.
        var m = Message(c)
        m.candidate.channels = user.preferences.allowedChannels(c.channels, rule: c.ruleID, priority: c.priority, at: now)
        if m.candidate.channels.isEmpty {
            out.append(Outcome(candidate: m.candidate, status: .suppressed, reason: "opted_out", decidedAt: now))
            return
        }
        // 3. Merge.
        if let merge = plan.merge {
            if let i = user.windows.firstIndex(where: { $0.ruleID == c.ruleID }) {
                user.windows[i].members.append(m.candidate)
            } else {
                let due = now + merge.window
                user.windows.append(MergeWindow(ruleID: c.ruleID, closesAt: due, members: [m.candidate], timer: schedule(due, key)))
            }
            return
        }
        deliver(m, idHash: idHash, plan: plan, at: now, user: &user, into: &out)
    }

    /// The index of `key`'s state in `users`, created empty if there is none.
    private mutating func slot(for key: UserKey) -> Dictionary<UserKey, ShaperUser>.Index {
        if let i = users.index(forKey: key) { return i }
        users[key] = ShaperUser()
        return users.index(forKey: key)!
    }

    private func plan(for ruleID: String) -> RulePlan {
        plans[ruleID] ?? RulePlan(ruleID: ruleID, rule: nil, policies: rules.policies, experiment: experiments[ruleID])
    }

    /// Applies a `behavior.preference_updated` event (SPEC §2). It counts for candidates
    /// decided at or after its `occurred_at`, whatever order the two arrive in.
    public mutating func apply(preference event: Event) {
        guard event.topic == .behavior, event.type == "preference_updated",
              let subscribed = event.body["subscribed"]?.boolValue else { return }
        let key = UserKey(shop: event.shopID, user: event.userID)
        let change = PreferenceChange(time: event.occurredAt, subscribed: subscribed,
                                      scope: OptOutScope(rule: event.body["rule"]?.stringValue,
                                                         channel: event.body["channel"]?.stringValue))
        if tracksDirty {
            if users[key]?.dirty != true { dirtyKeys.append(key) }
            users[key, default: ShaperUser()].dirty = true
        }
        users[key, default: ShaperUser()].preferences.add(change)
    }

    private mutating func markDirty(_ user: inout ShaperUser, _ key: UserKey) {
        if tracksDirty, !user.dirty {
            user.dirty = true
            dirtyKeys.append(key)
        }
    }

    /// Closes every merge window and wakes every deferred message due at or before `time`.
    public mutating func advance(to time: Timestamp) -> [Outcome] {
        var out: [Outcome] = []
        advance(to: time, into: &out)
        return out
    }

    public mutating func advance(to time: Timestamp, into out: inout [Outcome]) {
        while let top = timers.first, top.due <= time {
            _ = timers.pop()
            clock = max(clock ?? top.due, top.due)
            fire(top, into: &out)
        }
        clock = max(clock ?? time, time)
        if lastSweep.map({ time - $0 >= sweepInterval }) ?? true {
            sweep(now: time)
            lastSweep = time
        }
    }

    // MARK: - Steps 4–7

    /// Steps 4–7 for a message decided at `now`.
    /// `idHash`: the hash of the message's notification id.
    private mutating func deliver(_ m: Message, idHash: UInt64, plan: RulePlan, at now: Timestamp,
                                  user: inout ShaperUser, into out: inout [Outcome]) {
        let c = m.candidate
        // 4. Dedupe (keys, rules and chains compared by their 64-bit hashes).
        var dedupeKey: UInt64?
        // Only read for a message with a dedupe key.
        var chain: UInt64 = 0
        if let window = plan.dedupeWindow {
            let key: UInt64
            if let template = plan.dedupeKey {
                do {
                    key = StableID.hash64(try render(template, m))
                } catch {
                    out.append(Outcome(candidate: c, status: .failed, reason: error.reason, decidedAt: now))
                    return
                }
            } else {
                key = Shaper.emptyKeyHash
            }
            chain = Delivery.chainHash(c.triggerEventIDs)
            let rule = plan.ruleHash
            if user.history.contains(where: {
                $0.rule == rule && $0.dedupeKey == key && $0.time > now - window && $0.time <= now
                    && $0.chain != chain
            }) {
                out.append(Outcome(candidate: c, status: .suppressed, reason: "duplicate", decidedAt: now))
                return
            }
            dedupeKey = key
        }
        // 5. Quiet hours.
        let policies = rules.policies.shops[c.shopID]
        if let quiet = policies?.quietHours ?? rules.policies.quietHours, !quiet.bypass.contains(c.priority),
           let end = Shaper.quietHoursEnd(quiet, at: now, zone: timeZone(for: c)) {
            var deferred = Outcome(candidate: c, status: .deferred, reason: "quiet_hours", decidedAt: now)
            deferred.dueAt = end
            out.append(deferred)
            // The deferred message holds its dedupe key, so a second one during the night
            // is a duplicate rather than a second message in the morning.
            user.history.append(Delivery(id: idHash, rule: plan.ruleHash, dedupeKey: dedupeKey, chain: chain,
                                         time: now, sent: false))
            user.deferred.append(DeferredMessage(message: m, dueAt: end,
                                                 timer: schedule(end, UserKey(shop: c.shopID, user: c.userID))))
            return
        }
        decide(m, idHash: idHash, plan: plan, at: now, dedupeKey: dedupeKey, chain: chain, held: false, user: &user,
               into: &out)
    }

    /// Steps 6–7.
    /// `held`: the message was deferred and holds a history entry (its dedupe key) to release.
    private mutating func decide(_ m: Message, idHash: UInt64, plan: RulePlan, at now: Timestamp, dedupeKey: UInt64?,
                                 chain: UInt64, held: Bool, user: inout ShaperUser, into out: inout [Outcome]) {
        let c = m.candidate
        // 6. Frequency cap: messages sent in the rolling window (now − per, now].
        let policies = rules.policies.shops[c.shopID]
        if let cap = policies?.frequencyCap ?? rules.policies.frequencyCap, !cap.bypass.contains(c.priority) {
            let from = now - cap.per
            var sent = 0
            for d in user.history where d.sent && d.time > from && d.time <= now { sent += 1 }
            if sent >= cap.max {
                if held { user.history.removeAll { $0.id == idHash } }
                out.append(Outcome(candidate: c, status: .suppressed, reason: "frequency_cap", decidedAt: now))
                return
            }
        }
        // 7. Render and send.
        let outcome = send(m, plan: plan, decidedAt: now)
        if held { user.history.removeAll { $0.id == idHash } }
        if outcome.status == .sent {
            user.history.append(Delivery(id: idHash, rule: plan.ruleHash, dedupeKey: dedupeKey, chain: chain,
                                         time: now, sent: true))
        }
        out.append(outcome)
    }

    /// Step 7: variant, render and send; a render error makes the outcome `failed` with its reason.
    private func send(_ m: Message, plan: RulePlan, decidedAt: Timestamp) -> Outcome {
        let c = m.candidate
        var outcome = Outcome(candidate: c, status: .sent, reason: nil, decidedAt: decidedAt)
        if let failure = c.failure {
            outcome.status = .failed
            outcome.reason = failure
            return outcome
        }
        var templateName = c.template
        if m.items == nil, let experiment = plan.experiment {
            let variant = Shaper.variant(of: experiment, shopID: c.shopID, userID: c.userID)
            outcome.variant = variant.name
            templateName = variant.template
        }
        guard let template = rules.templates[templateName] else {
            outcome.status = .failed
            outcome.reason = RenderError.templateError("unknown template \(templateName)").reason
            return outcome
        }
        do {
            outcome.title = try template.title.map { t throws(RenderError) in try render(t, m) }
            outcome.body = try render(template.body, m)
            outcome.escalated = c.escalate
        } catch {
            outcome.status = .failed
            outcome.reason = error.reason
            outcome.title = nil
            outcome.body = nil
        }
        return outcome
    }

    /// The variant `user` gets for `rule`'s experiment, if it has one (conversions carry it).
    public func variant(ruleID: String, shopID: String, userID: String) -> String? {
        experiments[ruleID].map { Shaper.variant(of: $0, shopID: shopID, userID: userID).name }
    }

    /// The stable variant of a user in an experiment: a hash of shop, user and the
    /// experiment's rule, mapped onto the cumulative weights.
    public static func variant(of experiment: Experiment, shopID: String, userID: String) -> Experiment.Variant {
        let total = experiment.variants.reduce(0) { $0 + max(0, $1.weight) }
        guard total > 0 else { return experiment.variants[0] }
        let h = StableID.hash64([shopID, userID, "experiment", experiment.rule])
        var point = Int(h % UInt64(total))
        for v in experiment.variants where v.weight > 0 {
            if point < v.weight { return v }
            point -= v.weight
        }
        return experiment.variants[experiment.variants.count - 1]
    }

    /// Renders `template` for `m` in the user's time zone.
    private func render(_ template: Template, _ m: Message) throws(RenderError) -> String {
        try template.render(timeZone: timeZoneName(m.candidate)) { Shaper.lookup($0, in: m) }
    }

    /// The value at a template path (split at its dots) in the scope templates see:
    /// `event`, `user`, `rule` (its `id`), `notification` (`id`, `priority`, `channels`) and,
    /// for a digest, `items`. Only the root a path names is built.
    static func lookup(_ path: [String], in m: Message) -> JSONValue? {
        guard let first = path.first else { return nil }
        let c = m.candidate
        var current: JSONValue
        switch first {
        case "event": current = .object(c.event)
        case "user": current = .object(c.user)
        case "rule": current = .object(JSONObject([("id", .string(c.ruleID))]))
        case "notification":
            current = .object(JSONObject([
                ("id", .string(c.id)), ("priority", .string(c.priority.rawValue)),
                ("channels", .array(c.channels.map(JSONValue.string))),
            ]))
        case "items":
            guard let items = m.items else { return nil }
            current = .array(items)
        default: return nil
        }
        for part in path.dropFirst() {
            guard case .object(let object) = current, let next = object[part] else { return nil }
            current = next
        }
        return current
    }

    /// The dedupe key of a rule without a key template (the user).
    static let emptyKeyHash = StableID.hash64("")

    // MARK: - Timers

    /// The timer's sequence, which a checkpoint keeps to rebuild the heap in the same order.
    private mutating func schedule(_ due: Timestamp, _ key: UserKey) -> UInt64 {
        timerSequence += 1
        timers.push(.init(due: due, sequence: timerSequence, user: key))
        return timerSequence
    }

    private mutating func fire(_ timer: TimerHeap.Entry, into out: inout [Outcome]) {
        guard let slot = users.index(forKey: timer.user) else { return }
        var user = ShaperUser()
        swap(&user, &users.values[slot])
        defer { swap(&user, &users.values[slot]) }
        markDirty(&user, timer.user)
        let now = timer.due
        // Merge windows closing now, oldest first.
        while let i = user.windows.firstIndex(where: { $0.closesAt <= now }) {
            let window = user.windows.remove(at: i)
            let m = digest(of: window, at: window.closesAt, into: &out)
            deliver(m, idHash: StableID.hash64(m.candidate.id), plan: plan(for: m.candidate.ruleID), at: window.closesAt,
                    user: &user, into: &out)
        }
        // Deferred messages waking now go on at step 6 with the same notification id, in
        // the order they were deferred (deciding one defers nothing, so one pass does).
        var i = 0
        while i < user.deferred.count {
            guard user.deferred[i].dueAt <= now else {
                i += 1
                continue
            }
            let d = user.deferred.remove(at: i)
            let idHash = StableID.hash64(d.message.candidate.id)
            let held = user.history.first(where: { $0.id == idHash })
            decide(d.message, idHash: idHash, plan: plan(for: d.message.candidate.ruleID), at: d.dueAt,
                   dedupeKey: held?.dedupeKey, chain: held?.chain ?? 0,
                   held: true, user: &user, into: &out)
        }
    }

    /// Closes a merge window: one member goes on as itself; two or more become `merged`
    /// into a digest whose id derives from the first member's.
    private func digest(of window: MergeWindow, at now: Timestamp, into out: inout [Outcome]) -> Message {
        let first = window.members[0]
        guard window.members.count > 1 else { return Message(first) }
        var d = first
        d.id = StableID.make(["digest", first.id])
        d.template = rulesByID[window.ruleID]?.merge?.template ?? first.template
        d.firedAt = now
        var channels: [String] = []
        var triggers: [String] = []
        var priority = first.priority
        var escalate = false
        var tags: [String] = []
        for member in window.members {
            for ch in member.channels where !channels.contains(ch) { channels.append(ch) }
            for t in member.triggerEventIDs where !triggers.contains(t) { triggers.append(t) }
            for t in member.tags where !tags.contains(t) { tags.append(t) }
            priority = min(priority, member.priority)
            escalate = escalate || member.escalate
            var merged = Outcome(candidate: member, status: .merged, reason: nil, decidedAt: now)
            merged.mergedInto = d.id
            out.append(merged)
        }
        d.channels = channels
        d.triggerEventIDs = triggers
        d.priority = priority
        d.escalate = escalate
        d.tags = tags
        d.event = window.members[window.members.count - 1].event
        let items: [JSONValue] = window.members.map { member in
            .object(JSONObject([
                ("event", .object(member.event)),
                ("notification", .object(JSONObject([("id", .string(member.id))]))),
                ("event_time", .string(member.eventTime.rfc3339)),
            ]))
        }
        return Message(d, items: items)
    }

    /// Drops what no decision will read again, and users left with nothing.
    private mutating func sweep(now: Timestamp) {
        let historyFrom = now - historyHorizon
        let seenFrom = now - seenHorizon
        // The keys are copied first: mutating values while iterating the dictionary would
        // copy the whole table.
        for key in Array(users.keys) {
            guard var user = users.removeValue(forKey: key) else { continue }
            let size = (user.seen.count, user.history.count, user.preferences.pending.count)
            user.prune(historyFrom: historyFrom, seenFrom: seenFrom, foldUpTo: now - .hours(1))
            if size != (user.seen.count, user.history.count, user.preferences.pending.count) {
                markDirty(&user, key)
            }
            if !user.isEmpty {
                users[key] = user
            } else if tracksDirty, !user.dirty {
                dirtyKeys.append(key)  // removed: its row goes
            }
        }
    }

    // MARK: - Time zones

    private func timeZoneName(_ c: Candidate) -> String {
        c.user["timezone"]?.stringValue ?? rules.defaults.timezone
    }

    private mutating func timeZone(for c: Candidate) -> TimeZone {
        let name = timeZoneName(c)
        if let tz = timeZones[name] { return tz }
        let tz = TimeZone(identifier: name) ?? TimeZone(identifier: rules.defaults.timezone) ?? TimeZone(identifier: "UTC")!
        if timeZones.count < 1024 { timeZones[name] = tz }
        return tz
    }

    /// When `at` falls in quiet hours in `zone`: the UTC instant they end; else nil.
    static func quietHoursEnd(_ q: Policies.QuietHours, at: Timestamp, zone: TimeZone) -> Timestamp? {
        guard q.start != q.end else { return nil }
        let seconds = at.microseconds.floorDiv(1_000_000)
        let offset = Int64(zone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(seconds))))
        let local = seconds + offset
        let day = local.floorDiv(86_400)
        let minute = Int((local - day * 86_400) / 60)
        let quiet = q.start < q.end ? (minute >= q.start && minute < q.end) : (minute >= q.start || minute < q.end)
        guard quiet else { return nil }
        // The end is today when it is still ahead on the local clock, else tomorrow.
        let endDay = minute < q.end ? day : day + 1
        let wall = endDay * 86_400 + Int64(q.end) * 60
        // Wall clock → UTC: the offset in force at that wall time (twice, for DST changes).
        // An end inside a spring-forward gap resolves to just after the gap (the smaller
        // offset); one in the repeated hour of a fall-back to its first occurrence.
        var off = Int64(zone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(wall - offset))))
        let again = Int64(zone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(wall - off))))
        if again != off { off = min(off, again) }
        return Timestamp(seconds: wall - off)
    }
}

extension Int64 {
    fileprivate func floorDiv(_ d: Int64) -> Int64 {
        let q = self / d
        return (self % d != 0 && (self < 0) != (d < 0)) ? q - 1 : q
    }
}

/// A candidate on its way through the steps; a digest carries its `items`.
struct Message: Sendable {
    var candidate: Candidate
    var items: [JSONValue]?

    init(_ candidate: Candidate, items: [JSONValue]? = nil) {
        self.candidate = candidate
        self.items = items
    }
}

struct MergeWindow: Sendable {
    var ruleID: String
    var closesAt: Timestamp
    var members: [Candidate]
    /// The sequence of the timer that closes it.
    var timer: UInt64
}

struct DeferredMessage: Sendable {
    var message: Message
    var dueAt: Timestamp
    /// The sequence of the timer that wakes it.
    var timer: UInt64
}

/// A message sent (or deferred and holding its dedupe key) for dedupe and caps: plain
/// values (64-bit hashes), so a user's history is one allocation and copies retain nothing.
struct Delivery: Sendable, Equatable {
    /// `StableID.hash64` of the notification id.
    var id: UInt64
    /// `StableID.hash64` of the rule id (rules may change across a restore; ids stay).
    var rule: UInt64
    /// `StableID.hash64` of the rendered dedupe key ("" when the rule has no key); nil when
    /// the message was not subject to dedupe.
    var dedupeKey: UInt64?
    /// `chainHash` of the trigger event ids: firings of one repeat chain share them.
    var chain: UInt64
    var time: Timestamp
    var sent: Bool

    /// A hash of a list of ids: each id's bytes followed by 0xFF, a byte UTF-8 never
    /// contains, so different lists (["a", "b"], ["a\u{1F}b"], [], [""]) hash apart.
    static func chainHash(_ ids: [String]) -> UInt64 {
        var h = Hasher128()
        for id in ids {
            for b in id.utf8 { h.add(b) }
            h.add(0xFF)
        }
        return h.finish().0
    }
}

/// What steps 3–7 need of one rule, resolved when the shaper is made.
struct RulePlan: Sendable {
    /// `StableID.hash64` of the rule id, as history records it.
    var ruleHash: UInt64
    /// A merge window longer than zero.
    var merge: Rule.Merge?
    /// The rule's dedupe window or the default; nil when dedupe is off (none, or `0s`).
    var dedupeWindow: TimeSpan?
    var dedupeKey: Template?
    var experiment: Experiment?

    init(ruleID: String, rule: Rule?, policies: Policies, experiment: Experiment?) {
        ruleHash = StableID.hash64(ruleID)
        merge = rule?.merge.flatMap { $0.window.microseconds > 0 ? $0 : nil }
        let window = rule?.dedupe?.window ?? policies.dedupeWindow
        dedupeWindow = window.flatMap { $0.microseconds > 0 ? $0 : nil }
        dedupeKey = rule?.dedupe?.key
        self.experiment = experiment
    }
}

struct ShaperUser: Sendable {
    var seen: [(hash: UInt64, time: Timestamp)] = []
    var history: [Delivery] = []
    var windows: [MergeWindow] = []
    var deferred: [DeferredMessage] = []
    var preferences = Preferences()
    /// Changed since the last checkpoint (listed in the shaper's `dirtyKeys`).
    var dirty = false

    var isEmpty: Bool {
        seen.isEmpty && history.isEmpty && windows.isEmpty && deferred.isEmpty && preferences.isEmpty
    }

    mutating func prune(historyFrom: Timestamp, seenFrom: Timestamp, foldUpTo: Timestamp) {
        if let first = seen.first, first.time <= seenFrom { seen.removeAll { $0.time <= seenFrom } }
        // Deferred messages keep their entries until they are decided.
        if history.contains(where: { $0.sent && $0.time <= historyFrom }) {
            history.removeAll { $0.sent && $0.time <= historyFrom }
        }
        if !preferences.pending.isEmpty { preferences.fold(upTo: foldUpTo) }
    }
}

/// What a preference event opts out of: a channel, a rule, a channel of a rule, or (both
/// nil) everything that is not urgent.
struct OptOutScope: Sendable, Hashable {
    var rule: String?
    var channel: String?
}

struct PreferenceChange: Sendable {
    var time: Timestamp
    var subscribed: Bool
    var scope: OptOutScope
}

/// Opt-outs of one user: a folded base plus changes newer than the shaper's clock, kept in
/// event-time order so a candidate sees exactly the changes that happened before it.
struct Preferences: Sendable {
    var optedOut: Set<OptOutScope> = []
    var pending: [PreferenceChange] = []

    var isEmpty: Bool { optedOut.isEmpty && pending.isEmpty }

    mutating func add(_ change: PreferenceChange) {
        var i = pending.count
        while i > 0, pending[i - 1].time > change.time { i -= 1 }
        pending.insert(change, at: i)
    }

    mutating func fold(upTo time: Timestamp) {
        while let first = pending.first, first.time <= time {
            Preferences.apply(first, to: &optedOut)
            pending.removeFirst()
        }
    }

    static func apply(_ change: PreferenceChange, to set: inout Set<OptOutScope>) {
        if !change.subscribed {
            set.insert(change.scope)
        } else if change.scope.rule == nil && change.scope.channel == nil {
            set.removeAll()
        } else {
            set.remove(change.scope)
        }
    }

    func allowedChannels(_ channels: [String], rule: String, priority: Priority, at time: Timestamp) -> [String] {
        var set = optedOut
        for change in pending where change.time <= time { Preferences.apply(change, to: &set) }
        if set.isEmpty { return channels }
        return channels.filter { ch in
            !set.contains { s in
                if s.rule == nil && s.channel == nil { return priority != .urgent }
                return (s.rule == nil || s.rule == rule) && (s.channel == nil || s.channel == ch)
            }
        }
    }
}
