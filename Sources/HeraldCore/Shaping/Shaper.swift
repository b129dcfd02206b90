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
    /// The same plans in a list when there are few rules: comparing a few short strings
    /// costs less than hashing the rule id.
    private let planList: [RulePlan]
    /// Sent history older than this is never read again.
    private let historyHorizon: TimeSpan
    private let sweepInterval: TimeSpan
    /// Users interned to dense slots; their state is `states[slot]` and timers name the
    /// slot, so waking a user needs no lookup. A user the sweep removes keeps its slot
    /// (`present` false) until the user comes back or the sweep compacts the slots.
    var users = UserSlots()
    var states: [ShaperUser] = []
    /// Slots whose state is present.
    var liveUsers = 0
    var timers = TimerHeapOf<UInt32>()
    /// The quiet hours and cap in force for each shop, by the shop's index in `users`.
    private var shopPlans: [ShopPlan] = []
    var timerSequence: UInt64 = 0
    /// Time zones by name, each an index into `zones`.
    private var timeZones: [String: Int] = [:]
    private var zones: [ZoneOffsets] = []
    var lastSweep: Timestamp?
    public internal(set) var clock: Timestamp?
    /// Candidates dropped at step 1 (an id seen before).
    public internal(set) var replayedDropped: Int = 0
    /// Users changed since the last checkpoint (`takeDirtyStates`); a user's `dirty` flag
    /// says whether its slot is listed. A slot may be listed twice (removed, then reused).
    var dirtySlots: [UInt32] = []
    /// Users removed since the last checkpoint; a key may be listed twice.
    var removedKeys: [UserKey] = []
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
            p[r.id] = RulePlan(ruleID: r.id, rule: r, policies: rules.policies, experiment: ex[r.id], templates: rules.templates)
        }
        plans = p
        planList = rules.rules.count <= 16 ? rules.rules.compactMap { p[$0.id] } : []
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
    public var userCount: Int { liveUsers }

    // MARK: - Input

    public mutating func process(_ candidate: Candidate) -> [Outcome] {
        var out: [Outcome] = []
        process(candidate, into: &out)
        return out
    }

    public mutating func process(_ c: Candidate, into out: inout [Outcome]) {
        var holder = ShaperUser()
        process(c, keyHash: nil, holder: &holder, into: &out)
    }

    /// Shapes `batch` in order: the same outcomes as `process(_:into:)` for each candidate.
    /// Each group of `group` candidates first has its users' state read (their keys'
    /// table entries, then the state rows, then their seen-id and history buffers, each step
    /// for the whole group), so that the cache misses on a group's random users overlap
    /// instead of coming one after another; then the group is decided in order. The reads
    /// change nothing.
    public mutating func process(contentsOf batch: Span<Candidate>, into out: inout [Outcome]) {
        var holder = ShaperUser()
        var start = 0
        while start < batch.count {
            let end = min(start + group, batch.count)
            groupHashes.removeAll(keepingCapacity: true)
            groupSlots.removeAll(keepingCapacity: true)
            // Hashing first, then the table reads on their own: a tight loop of independent
            // loads whose misses overlap (interleaved with the hashing, only two or three do).
            for i in start..<end { warmed &+= batch[i].touchBox }
            for i in start..<end { groupHashes.append(StableHash64.of(batch[i].shopID, batch[i].userID)) }
            for h in groupHashes {
                if let s = users.slotGuess(hash: h) { groupSlots.append(s) }
            }
            for i in start..<end { warmed &+= batch[i].touch }
            warmGroupSlots()
            for i in start..<end { process(batch[i], keyHash: groupHashes[i - start], holder: &holder, into: &out) }
            start = end
        }
    }

    /// Candidates or timers whose users' state is read together, ahead of deciding them (1:
    /// one at a time, as before batches; tests compare the two).
    var group = 16
    /// Reused per group: the candidates' key hashes, and the slots to read.
    private var groupHashes: [UInt64] = []
    private var groupSlots: [UInt32] = []
    /// Timers taken off the heap, due and not fired yet (`advance`).
    private var dueTimers: [TimerHeapOf<UInt32>.Entry] = []
    /// The bytes of the message being rendered, kept between messages.
    private var renderScratch: [UInt8] = []
    /// Where the reads of `warmGroupSlots` go, so that they are not optimised away.
    private var warmed = 0

    /// Reads the state of `groupSlots`' users, one step for all of them at a time: the keys
    /// and state rows, then the seen-id, history, window and deferred-message buffers they
    /// point to (every entry: deciding scans them), then the candidates held in windows and
    /// deferred messages. Decides and changes nothing.
    private mutating func warmGroupSlots() {
        warmed &+= readGroupSlots()
    }

    private func readGroupSlots() -> Int {
        var sum = 0
        let rows = states.span
        for s in groupSlots where Int(s) < rows.count {
            sum &+= users.touch(s) &+ (rows[Int(s)].present ? 1 : 0)
        }
        // Each member read in place (a copy of the row would retain every buffer).
        for s in groupSlots where Int(s) < rows.count {
            for e in rows[Int(s)].seen.span.indices { sum &+= Int(truncatingIfNeeded: rows[Int(s)].seen.span[e].hash) }
            for e in rows[Int(s)].history.span.indices {
                sum &+= Int(truncatingIfNeeded: rows[Int(s)].history.span[e].time.microseconds)
            }
            sum &+= rows[Int(s)].deferred.count &+ rows[Int(s)].windows.count
        }
        for s in groupSlots where Int(s) < rows.count {
            let deferred = rows[Int(s)].deferred.span
            for e in deferred.indices { sum &+= deferred[e].message.candidate.touch }
            let windows = rows[Int(s)].windows.span
            for w in windows.indices {
                let members = windows[w].members.span
                if !members.isEmpty { sum &+= members[members.count - 1].touch }
            }
        }
        return sum
    }

    /// `user`: an empty state the candidate's user's is swapped with while it is decided
    /// (the caller's, kept across candidates: making and destroying one per candidate costs).
    private mutating func process(_ c: Candidate, keyHash: UInt64?, holder user: inout ShaperUser,
                                  into out: inout [Outcome]) {
        advance(to: c.firedAt, into: &out)
        // Taken out of its slot by a swap (no copy) and swapped back when done; nothing
        // below adds or removes users.
        let slot = slot(shop: c.shopID, user: c.userID, hash: keyHash)
        swap(&user, &states[Int(slot)])
        defer { swap(&user, &states[Int(slot)]) }
        markDirty(&user, slot)
        // 1. A candidate id seen before is dropped silently.
        let idHash = StableID.hash64(c.id)
        if user.seen.contains(where: { $0.hash == idHash }) {
            replayedDropped += 1
            return
        }
        user.see(idHash, at: c.firedAt)
        let now = c.firedAt
        user.prune(historyFrom: now - historyHorizon, seenFrom: now - seenHorizon, foldUpTo: now - .hours(1))
        // A firing that failed in the trigger fails here, whatever the policies say.
        let plan = plan(for: c.ruleID)
        if c.failure != nil {
            send(c, items: nil, plan: plan, decidedAt: now, into: &out)
            return
        }
        // 2. Opt-out. The candidate goes on as it is (borrowed, not copied) unless a channel
        // is filtered out.
        let channels = user.preferences.allowedChannels(c.channels, rule: c.ruleID, priority: c.priority, at: now)
        if channels.isEmpty {
            var filtered = c
            filtered.channels = channels
            out.append(Outcome(source: filtered, status: .suppressed, reason: "opted_out", decidedAt: now))
        } else if channels.count == c.channels.count {
            mergeOrDeliver(c, idHash: idHash, plan: plan, at: now, slot: slot, user: &user, into: &out)
        } else {
            var filtered = c
            filtered.channels = channels
            mergeOrDeliver(filtered, idHash: idHash, plan: plan, at: now, slot: slot, user: &user, into: &out)
        }
    }

    /// Step 3, then steps 4–7 for a candidate not merged.
    private mutating func mergeOrDeliver(_ c: Candidate, idHash: UInt64, plan: RulePlan, at now: Timestamp, slot: UInt32,
                                         user: inout ShaperUser, into out: inout [Outcome]) {
        if let merge = plan.merge {
            if let i = user.windows.firstIndex(where: { $0.ruleID == c.ruleID }) {
                user.windows[i].members.append(c)
            } else {
                let due = now + merge.window
                user.windows.append(MergeWindow(ruleID: c.ruleID, closesAt: due, members: [c], timer: schedule(due, slot)))
            }
            return
        }
        if let deferral = deliver(c, items: nil, idHash: idHash, plan: plan, at: now, slot: slot, user: &user, into: &out) {
            // The candidate is borrowed: the deferred message is a copy.
            user.deferred.append(DeferredMessage(message: Message(c), dueAt: deferral.dueAt, timer: deferral.timer))
        }
    }

    /// The policies of the slot's shop, resolved once per shop.
    private mutating func shopPlan(_ slot: UInt32) -> ShopPlan {
        let i = users.shopIndex(of: slot)
        while shopPlans.count <= i {
            shopPlans.append(ShopPlan(rules.policies, shop: users.shops[shopPlans.count]))
        }
        return shopPlans[i]
    }

    /// The user's slot, its state present (created empty if there is none).
    /// `hash`: `StableHash64.of(shop, user)`, when known.
    mutating func slot(shop: String, user: String, hash: UInt64? = nil) -> UInt32 {
        let (slot, inserted) = users.insert(shop: shop, user: user, hash: hash)
        if inserted {
            states.append(ShaperUser())
            liveUsers += 1
        } else if !states[Int(slot)].present {
            states[Int(slot)].present = true
            liveUsers += 1
        }
        return slot
    }

    private func plan(for ruleID: String) -> RulePlan {
        // Lengths first: most ids that differ differ in length, which costs no comparison.
        let length = ruleID.utf8.count
        if let p = planList.first(where: { $0.ruleIDLength == length && $0.ruleID == ruleID }) { return p }
        return plans[ruleID] ?? RulePlan(ruleID: ruleID, rule: nil, policies: rules.policies,
                                         experiment: experiments[ruleID], templates: rules.templates)
    }

    /// Applies a `behavior.preference_updated` event (SPEC §2). It counts for candidates
    /// decided at or after its `occurred_at`, whatever order the two arrive in.
    public mutating func apply(preference event: Event) {
        guard event.topic == .behavior, event.type == "preference_updated",
              let subscribed = event.body["subscribed"]?.boolValue else { return }
        let change = PreferenceChange(time: event.occurredAt, subscribed: subscribed,
                                      scope: OptOutScope(rule: event.body["rule"]?.stringValue,
                                                         channel: event.body["channel"]?.stringValue))
        let slot = slot(shop: event.shopID, user: event.userID)
        var user = ShaperUser()
        swap(&user, &states[Int(slot)])
        markDirty(&user, slot)
        user.preferences.add(change)
        swap(&user, &states[Int(slot)])
    }

    private mutating func markDirty(_ user: inout ShaperUser, _ slot: UInt32) {
        if tracksDirty, !user.dirty {
            user.dirty = true
            dirtySlots.append(slot)
        }
    }

    /// Closes every merge window and wakes every deferred message due at or before `time`.
    public mutating func advance(to time: Timestamp) -> [Outcome] {
        var out: [Outcome] = []
        advance(to: time, into: &out)
        return out
    }

    public mutating func advance(to time: Timestamp, into out: inout [Outcome]) {
        // A group of due timers at a time is taken off the heap and their users' state read
        // first, so that the cache misses overlap; they fire in the heap's order, merged
        // with any timer a firing pushes that comes before them.
        while let first = timers.first, first.due <= time {
            dueTimers.removeAll(keepingCapacity: true)
            groupSlots.removeAll(keepingCapacity: true)
            while dueTimers.count < group, let t = timers.first, t.due <= time {
                _ = timers.pop()
                dueTimers.append(t)
                groupSlots.append(t.user)
            }
            warmGroupSlots()
            var holder = ShaperUser()
            var k = 0
            while k < dueTimers.count {
                let next: TimerHeapOf<UInt32>.Entry
                if let t = timers.first, TimerHeapOf<UInt32>.less(t, dueTimers[k]) {
                    _ = timers.pop()
                    next = t
                } else {
                    next = dueTimers[k]
                    k += 1
                }
                clock = max(clock ?? next.due, next.due)
                fire(next, holder: &holder, into: &out)
            }
        }
        clock = max(clock ?? time, time)
        if lastSweep.map({ time - $0 >= sweepInterval }) ?? true {
            sweep(now: time)
            lastSweep = time
        }
    }

    // MARK: - Steps 4–7

    /// Steps 4–7 for a message decided at `now`. When quiet hours defer it: when it wakes and
    /// the timer that wakes it, for the caller to keep the message (a copy of a borrowed
    /// candidate, the message itself when the caller owns it).
    /// `idHash`: the hash of the message's notification id.
    /// `items`: a digest's.
    private mutating func deliver(_ c: Candidate, items: [JSONValue]?, idHash: UInt64, plan: RulePlan, at now: Timestamp,
                                  slot: UInt32, user: inout ShaperUser,
                                  into out: inout [Outcome]) -> (dueAt: Timestamp, timer: UInt64)? {
        // 4. Dedupe (keys, rules and chains compared by their 64-bit hashes).
        var dedupeKey: UInt64?
        // Only read for a message with a dedupe key.
        var chain: UInt64 = 0
        if let window = plan.dedupeWindow {
            let key: UInt64
            if let template = plan.dedupeKey {
                do {
                    key = StableID.hash64(try render(template, c, items))
                } catch {
                    out.append(Outcome(source: c, status: .failed, reason: error.reason, decidedAt: now))
                    return nil
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
                out.append(Outcome(source: c, status: .suppressed, reason: "duplicate", decidedAt: now))
                return nil
            }
            dedupeKey = key
        }
        // 5. Quiet hours.
        let shop = shopPlan(slot)
        if let quiet = shop.quiet, shop.quietBypass & c.priority.bit == 0,
           let end = quietHoursEnd(start: quiet.start, end: quiet.end, at: now, zone: zoneIndex(for: c)) {
            out.append(Outcome(source: c, status: .deferred, reason: "quiet_hours", dueAt: end, decidedAt: now))
            // The deferred message holds its dedupe key, so a second one during the night
            // is a duplicate rather than a second message in the morning.
            user.record(Delivery(id: idHash, rule: plan.ruleHash, dedupeKey: dedupeKey, chain: chain,
                                 time: now, sent: false))
            // One timer per user and due time: the first one fired wakes all the user's
            // messages due by then, so a second would fire nothing.
            return (end, user.deferred.first(where: { $0.dueAt == end })?.timer ?? schedule(end, slot))
        }
        decide(c, items: items, idHash: idHash, plan: plan, at: now, dedupeKey: dedupeKey, chain: chain, held: false,
               shop: shop, user: &user, into: &out)
        return nil
    }

    /// Steps 6–7.
    /// `held`: the message was deferred and holds a history entry (its dedupe key) to release.
    private mutating func decide(_ c: Candidate, items: [JSONValue]?, idHash: UInt64, plan: RulePlan, at now: Timestamp,
                                 dedupeKey: UInt64?, chain: UInt64, held: Bool, shop: ShopPlan, user: inout ShaperUser,
                                 into out: inout [Outcome]) {
        // 6. Frequency cap: messages sent in the rolling window (now − per, now].
        if let cap = shop.cap, shop.capBypass & c.priority.bit == 0 {
            let from = now - cap.per
            var sent = 0
            for d in user.history where d.sent && d.time > from && d.time <= now { sent += 1 }
            if sent >= cap.max {
                if held { user.history.removeAll { $0.id == idHash } }
                out.append(Outcome(source: c, status: .suppressed, reason: "frequency_cap", decidedAt: now))
                return
            }
        }
        // 7. Render and send.
        send(c, items: items, plan: plan, decidedAt: now, into: &out)  // read in place below: no copy
        if held { user.history.removeAll { $0.id == idHash } }
        if out[out.count - 1].status == .sent {
            user.record(Delivery(id: idHash, rule: plan.ruleHash, dedupeKey: dedupeKey, chain: chain,
                                         time: now, sent: true))
        }
    }

    /// Step 7: variant, render and send; a render error makes the outcome `failed` with its
    /// reason. The outcome is appended as it is made, in one expression (no copy of it).
    private mutating func send(_ c: Candidate, items: [JSONValue]?, plan: RulePlan, decidedAt: Timestamp,
                      into out: inout [Outcome]) {
        if let failure = c.failure {
            out.append(Outcome(source: c, status: .failed, reason: failure, decidedAt: decidedAt))
            return
        }
        var templateName = c.template
        var variant: String?
        if items == nil, let experiment = plan.experiment {
            let v = Shaper.variant(of: experiment, shopID: c.shopID, userID: c.userID)
            variant = v.name
            templateName = v.template
        }
        guard let template = plan.template(templateName) ?? rules.templates[templateName].map({ NamedTemplate(templateName, $0) })
        else {
            out.append(Outcome(source: c, status: .failed,
                               reason: RenderError.templateError("unknown template \(templateName)").reason,
                               variant: variant, decidedAt: decidedAt))
            return
        }
        let title: String?, body: String
        do {
            if let t = template.title { title = try render(t, c, items) } else { title = nil }
            body = try render(template.body, c, items)
        } catch {
            out.append(Outcome(source: c, status: .failed, reason: error.reason, variant: variant, decidedAt: decidedAt))
            return
        }
        out.append(Outcome(source: c, status: .sent, reason: nil, variant: variant, title: title, body: body,
                           escalated: c.escalate, decidedAt: decidedAt))
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
    private mutating func render(_ template: Template, _ c: Candidate, _ items: [JSONValue]?) throws(RenderError) -> String {
        // Only the candidate and a string are captured (capturing `self` would copy the shaper).
        let fallback = rules.defaults.timezone
        return try template.render(timeZone: { Shaper.timeZoneName(c, default: fallback) },
                                   lookup: { Shaper.lookup($0, c, items) }, scratch: &renderScratch)
    }

    /// The value at a template path (split at its dots) in the scope templates see:
    /// `event`, `user`, `rule` (its `id`), `notification` (`id`, `priority`, `channels`) and,
    /// for a digest, `items`. Only the root a path names is built.
    static func lookup(_ path: [String], _ c: Candidate, _ items: [JSONValue]?) -> JSONValue? {
        guard let first = path.first else { return nil }
        // `event.x` and `user.x`, most tags, read straight from the object.
        if path.count == 2 {
            if first == "event" { return c.event[path[1]] }
            if first == "user" { return c.user[path[1]] }
        }
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
            guard let items else { return nil }
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
    private mutating func schedule(_ due: Timestamp, _ slot: UInt32) -> UInt64 {
        timerSequence += 1
        timers.push(.init(due: due, sequence: timerSequence, user: slot))
        return timerSequence
    }

    /// `user`: as for `process`.
    private mutating func fire(_ timer: TimerHeapOf<UInt32>.Entry, holder user: inout ShaperUser,
                               into out: inout [Outcome]) {
        let slot = timer.user
        guard Int(slot) < states.count, states[Int(slot)].present else { return }
        swap(&user, &states[Int(slot)])
        defer { swap(&user, &states[Int(slot)]) }
        markDirty(&user, slot)
        let now = timer.due
        // Merge windows closing now, oldest first.
        while let i = user.windows.firstIndex(where: { $0.closesAt <= now }) {
            let window = user.windows.remove(at: i)
            // An emptied array gives its buffer back: the next read of it is no cache miss.
            if user.windows.isEmpty { user.windows = [] }
            // Consumed, not copied: a copy would share the members' buffer, and taking the
            // last member out of a shared buffer copies every member.
            let closesAt = window.closesAt
            let m = digest(of: consume window, at: closesAt, into: &out)
            if let deferral = deliver(m.candidate, items: m.items, idHash: StableID.hash64(m.candidate.id),
                                      plan: plan(for: m.candidate.ruleID), at: closesAt, slot: slot, user: &user, into: &out) {
                user.deferred.append(DeferredMessage(message: consume m, dueAt: deferral.dueAt, timer: deferral.timer))
            }
        }
        // Deferred messages waking now go on at step 6 with the same notification id, in
        // the order they were deferred (deciding one defers nothing, so one pass does).
        // They are moved out of the array taken from the user (`remove(at:)` moves;
        // reading or iterating an element would copy the candidate); the rest go back in order.
        guard user.deferred.contains(where: { $0.dueAt <= now }) else { return }
        var pending: [DeferredMessage] = []
        swap(&pending, &user.deferred)
        while !pending.isEmpty {
            let d = pending.remove(at: 0)
            guard d.dueAt <= now else {
                user.deferred.append(d)
                continue
            }
            let idHash = StableID.hash64(d.message.candidate.id)
            let held = user.history.first(where: { $0.id == idHash })
            decide(d.message.candidate, items: d.message.items, idHash: idHash, plan: plan(for: d.message.candidate.ruleID),
                   at: d.dueAt, dedupeKey: held?.dedupeKey, chain: held?.chain ?? 0, held: true, shop: shopPlan(slot),
                   user: &user, into: &out)
        }
    }

    /// Closes a merge window: one member goes on as itself; two or more become `merged`
    /// into a digest whose id derives from the first member's.
    private func digest(of window: consuming MergeWindow, at now: Timestamp, into out: inout [Outcome]) -> Message {
        // A single member is moved out of the window, not copied.
        guard window.members.count > 1 else { return Message(window.members.removeLast()) }
        // The digest's fields changed as a value, then boxed once (each member set on a
        // `Candidate` makes a new box).
        let first = window.members[0]
        var d = first.fields
        d.id = Candidate.digestID(of: first)
        d.template = rulesByID[window.ruleID]?.merge?.template ?? first.template
        d.firedAt = now
        d.channels = []
        d.triggerEventIDs = []
        d.tags = []
        d.escalate = false
        for member in window.members {
            for ch in member.channels where !d.channels.contains(ch) { d.channels.append(ch) }
            for t in member.triggerEventIDs where !d.triggerEventIDs.contains(t) { d.triggerEventIDs.append(t) }
            for t in member.tags where !d.tags.contains(t) { d.tags.append(t) }
            d.priority = min(d.priority, member.priority)
            d.escalate = d.escalate || member.escalate
            out.append(Outcome(source: member, status: .merged, reason: nil, mergedInto: d.id, decidedAt: now))
        }
        d.event = window.members[window.members.count - 1].event
        let items: [JSONValue] = window.members.map { member in
            .object(JSONObject([
                ("event", .object(member.event)),
                ("notification", .object(JSONObject([("id", .string(member.id))]))),
                ("event_time", .string(member.eventTime.rfc3339)),
            ]))
        }
        return Message(Candidate(d), items: items)
    }

    /// Drops what no decision will read again, and users left with nothing.
    private mutating func sweep(now: Timestamp) {
        let historyFrom = now - historyHorizon
        let seenFrom = now - seenHorizon
        for i in states.indices where states[i].present {
            var user = ShaperUser()
            swap(&user, &states[i])
            let size = (user.seen.count, user.history.count, user.preferences.pending.count)
            user.prune(historyFrom: historyFrom, seenFrom: seenFrom, foldUpTo: now - .hours(1))
            if size != (user.seen.count, user.history.count, user.preferences.pending.count) {
                markDirty(&user, UInt32(i))
            }
            if !user.isEmpty {
                swap(&user, &states[i])
                continue
            }
            // Removed: its row goes. A listed slot of a user no longer present is skipped.
            states[i].present = false
            liveUsers -= 1
            if tracksDirty { removedKeys.append(users.key(UInt32(i))) }
        }
        if states.count - liveUsers > max(liveUsers, 4096) { compact() }
    }

    /// Renumbers the slots of present users (when most slots are of removed ones). Timers
    /// keep their order: only the slot they name changes. No timer names a removed user:
    /// the sweep runs after every timer due by then has fired, and a user with a pending
    /// window or deferred message is not empty.
    mutating func compact() {
        var fresh = UserSlots()
        fresh.reserve(liveUsers)
        var kept: [ShaperUser] = []
        kept.reserveCapacity(liveUsers)
        var map = [UInt32](repeating: .max, count: states.count)
        for i in states.indices where states[i].present {
            let key = users.key(UInt32(i))
            map[i] = fresh.insert(shop: key.shop, user: key.user).slot
            kept.append(states[i])
        }
        users = fresh
        states = kept
        shopPlans = []  // shops are numbered anew
        timers.mapTargets { map[Int($0)] }
        dirtySlots = dirtySlots.compactMap { map[Int($0)] == .max ? nil : map[Int($0)] }
    }

    // MARK: - Time zones

    private func timeZoneName(_ c: Candidate) -> String {
        Shaper.timeZoneName(c, default: rules.defaults.timezone)
    }

    /// The candidate's user's time zone, else `fallback` (the rules' default).
    private static func timeZoneName(_ c: Candidate, default fallback: String) -> String {
        c.user["timezone"]?.stringValue ?? fallback
    }

    /// The index in `zones` of the candidate's time zone.
    private mutating func zoneIndex(for c: Candidate) -> Int {
        let name = timeZoneName(c)
        // Most candidates name one of a few zones: comparing a short name costs less than
        // hashing it.
        for i in 0..<min(zones.count, 8) where zones[i].name == name { return i }
        if let i = timeZones[name] { return i }
        let tz = TimeZone(identifier: name) ?? TimeZone(identifier: rules.defaults.timezone) ?? TimeZone(identifier: "UTC")!
        if timeZones.count < 1024 {
            zones.append(ZoneOffsets(tz, name: name))
            timeZones[name] = zones.count - 1
            return zones.count - 1
        }
        // Past 1,024 names, one more entry is made anew for each.
        if zones.count == 1024 { zones.append(ZoneOffsets(tz, name: name)) } else { zones[1024] = ZoneOffsets(tz, name: name) }
        return 1024
    }

    private mutating func quietHoursEnd(start: Int, end: Int, at: Timestamp, zone i: Int) -> Timestamp? {
        Shaper.quietHoursEnd(start: start, end: end, at: at, zone: &zones[i])
    }

    /// When `at` falls in quiet hours in `zone`: the UTC instant they end; else nil.
    static func quietHoursEnd(_ q: Policies.QuietHours, at: Timestamp, zone: TimeZone) -> Timestamp? {
        var offsets = ZoneOffsets(zone)
        return quietHoursEnd(start: q.start, end: q.end, at: at, zone: &offsets)
    }

    /// `start`, `end`: minutes of the local day.
    static func quietHoursEnd(start: Int, end: Int, at: Timestamp, zone: inout ZoneOffsets) -> Timestamp? {
        let q = (start: start, end: end)
        guard q.start != q.end else { return nil }
        let seconds = at.microseconds.floorDiv(1_000_000)
        let offset = zone.secondsFromGMT(at: seconds)
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
        var off = zone.secondsFromGMT(at: wall - offset)
        let again = zone.secondsFromGMT(at: wall - off)
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

/// A time zone with the UTC offset of the last instant asked about and the span it holds
/// for, up to the zone's next transition: quiet hours ask about the same few zones for
/// every candidate, and Foundation's lookup costs far more than two comparisons.
struct ZoneOffsets: Sendable {
    let zone: TimeZone
    /// The name it was asked for by (a user's, possibly not a zone Foundation knows).
    let name: String
    /// Seconds since the epoch: `offset` holds in `from..<until` (empty at first).
    private var from: Int64 = 0
    private var until: Int64 = 0
    private var offset: Int64 = 0

    init(_ zone: TimeZone, name: String? = nil) {
        self.zone = zone
        self.name = name ?? zone.identifier
    }

    /// `zone.secondsFromGMT` at `seconds` since the epoch.
    mutating func secondsFromGMT(at seconds: Int64) -> Int64 {
        if seconds >= from && seconds < until { return offset }
        let date = Date(timeIntervalSince1970: TimeInterval(seconds))
        offset = Int64(zone.secondsFromGMT(for: date))
        from = seconds
        until = zone.nextDaylightSavingTimeTransition(after: date).map { Int64($0.timeIntervalSince1970.rounded(.down)) }
            ?? .max
        return offset
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
        var h = Hasher64()
        for id in ids {
            h.add(id)
            h.add(0xFF)
        }
        return h.finish()
    }
}

/// What steps 3–7 need of one rule, resolved when the shaper is made (a class: looking
/// it up retains one reference, not each of its members).
final class RulePlan: Sendable {
    let ruleID: String
    let ruleIDLength: Int
    /// `StableID.hash64` of the rule id, as history records it.
    let ruleHash: UInt64
    /// A merge window longer than zero.
    let merge: Rule.Merge?
    /// The rule's dedupe window or the default; nil when dedupe is off (none, or `0s`).
    let dedupeWindow: TimeSpan?
    let dedupeKey: Template?
    let experiment: Experiment?
    /// The templates its candidates name (the rule's and its variants').
    let templates: [NamedTemplate]

    func template(_ name: String) -> NamedTemplate? {
        templates.first(where: { $0.name == name })
    }

    init(ruleID: String, rule: Rule?, policies: Policies, experiment: Experiment?, templates all: [String: MessageTemplate]) {
        var named: [NamedTemplate] = []
        for name in [rule?.notify.template].compactMap({ $0 }) + (experiment?.variants.map(\.template) ?? []) {
            if let t = all[name], !named.contains(where: { $0.name == name }) { named.append(NamedTemplate(name, t)) }
        }
        templates = named
        self.ruleID = ruleID
        ruleIDLength = ruleID.utf8.count
        ruleHash = StableID.hash64(ruleID)
        merge = rule?.merge.flatMap { $0.window.microseconds > 0 ? $0 : nil }
        let window = rule?.dedupe?.window ?? policies.dedupeWindow
        dedupeWindow = window.flatMap { $0.microseconds > 0 ? $0 : nil }
        dedupeKey = rule?.dedupe?.key
        self.experiment = experiment
    }
}

/// A template and the name candidates give it (a class: finding it retains one reference,
/// not each of its texts' parts).
final class NamedTemplate: Sendable {
    let name: String
    let title: Template?
    let body: Template

    init(_ name: String, _ template: MessageTemplate) {
        self.name = name
        title = template.title
        body = template.body
    }
}

/// The quiet hours and frequency cap of one shop (its own or the defaults), as plain values.
struct ShopPlan: Sendable {
    var quiet: (start: Int, end: Int)?
    /// `Priority.bit`s that bypass them.
    var quietBypass: UInt8 = 0
    var cap: (max: Int, per: TimeSpan)?
    var capBypass: UInt8 = 0

    init(_ policies: Policies, shop: String) {
        let own = policies.shops[shop]
        if let q = own?.quietHours ?? policies.quietHours {
            quiet = (q.start, q.end)
            quietBypass = q.bypass.reduce(0) { $0 | $1.bit }
        }
        if let c = own?.frequencyCap ?? policies.frequencyCap {
            cap = (c.max, c.per)
            capBypass = c.bypass.reduce(0) { $0 | $1.bit }
        }
    }
}

extension Priority {
    /// One bit per priority, for sets of them as masks.
    var bit: UInt8 { 1 << rank }
}

struct ShaperUser: Sendable {
    /// False once the sweep removed the user (its slot not yet reused or compacted away).
    var present = true
    var seen: [(hash: UInt64, time: Timestamp)] = []
    var history: [Delivery] = []
    var windows: [MergeWindow] = []
    var deferred: [DeferredMessage] = []
    var preferences = Preferences()
    /// Changed since the last checkpoint (listed in the shaper's `dirtyKeys`).
    var dirty = false

    /// Buffers start with room for a few entries rather than growing one at a time (each
    /// growth is a new allocation, a copy and a free).
    mutating func see(_ hash: UInt64, at time: Timestamp) {
        if seen.capacity == 0 { seen.reserveCapacity(8) }
        seen.append((hash, time))
    }

    mutating func record(_ delivery: Delivery) {
        if history.capacity == 0 { history.reserveCapacity(4) }
        history.append(delivery)
    }

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
        if optedOut.isEmpty && pending.isEmpty { return channels }
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
