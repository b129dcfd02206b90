/// What herald-trigger publishes.
public enum TriggerOutput: Sendable, Equatable {
    case candidate(Candidate)
    case conversion(Conversion)

    public var candidate: Candidate? {
        if case .candidate(let c) = self { return c }
        return nil
    }
}

/// A user of a shop: the unit of trigger state.
struct UserKey: Hashable, Sendable {
    var shop: String
    var user: String
}

/// Rule evaluation for herald-trigger (SPEC §3–5): events in, candidates out, on event
/// time. Pure logic — the worker, `herald replay` and the tests run this same code.
///
/// The caller drives the clock: `advance(to:)` fires every timer due at or before that
/// time. The worker advances a partition's engine to that partition's watermark; replay
/// advances to the newest event time, then from timer to timer.
public struct TriggerEngine: Sendable {
    public let rules: RuleSet
    /// Repeated event ids of a user within this horizon are ignored (SPEC §2).
    public let eventHorizon: TimeSpan
    let plan: TriggerPlan
    var users: [UserKey: UserState] = [:]
    var timers = TimerQueue()
    var dispatch: [DispatchKey: EventPlan] = [:]
    var seenEvents: SeenEvents
    /// Users changed since the last checkpoint (`takeDirtyStates`), each once: a user's
    /// `dirty` flag says whether it is listed.
    var dirtyKeys: [UserKey] = []
    /// Off until the first checkpoint (which takes every user) or a restore, so an engine
    /// that is never checkpointed (replay, benchmarks) keeps no list.
    var tracksDirty = false
    /// The newest time the engine was advanced to.
    public internal(set) var clock: Timestamp?

    public init(rules: RuleSet, eventHorizon: TimeSpan = .days(7)) {
        self.rules = rules
        self.eventHorizon = eventHorizon
        self.plan = TriggerPlan(rules)
        self.seenEvents = SeenEvents(horizon: eventHorizon)
    }

    /// Users with state.
    public var userCount: Int { users.count }
    /// Timers waiting (some may belong to cancelled or moved firings and will be skipped).
    public var timerCount: Int { timers.heap.count }
    /// When the next timer is due.
    public var nextDue: Timestamp? { timers.heap.first?.due }

    public mutating func process(_ event: Event) -> [TriggerOutput] {
        var out: [TriggerOutput] = []
        process(event, into: &out)
        return out
    }

    public mutating func process(_ event: Event, into out: inout [TriggerOutput]) {
        let key = DispatchKey(topic: event.topic, type: event.type)
        let eventPlan = dispatch[key] ?? {
            let p = plan.eventPlan(topic: event.topic, type: event.type)
            dispatch[key] = p
            return p
        }()
        // A repeated event id of a user is ignored within the horizon (SPEC §2).
        guard seenEvents.insert(shop: event.shopID, user: event.userID, eventID: event.eventID, at: event.occurredAt) else { return }
        let logic = RuleLogic(rules: rules, plan: plan, clock: clock, horizon: eventHorizon, tracksDirty: tracksDirty)
        let userKey = UserKey(shop: event.shopID, user: event.userID)
        logic.apply(event, eventPlan, key: userKey, user: &users[userKey, default: UserState(at: event.occurredAt)],
                    timers: &timers, out: &out, dirty: &dirtyKeys)
    }

    /// Fires every timer due at or before `time`, in due order.
    public mutating func advance(to time: Timestamp) -> [TriggerOutput] {
        var out: [TriggerOutput] = []
        advance(to: time, into: &out)
        return out
    }

    public mutating func advance(to time: Timestamp, into out: inout [TriggerOutput]) {
        if clock.map({ $0 < time }) ?? true { clock = time }
        let logic = RuleLogic(rules: rules, plan: plan, clock: clock, horizon: eventHorizon, tracksDirty: tracksDirty)
        while let next = timers.heap.first, next.due <= time {
            _ = timers.heap.pop()
            guard users[next.user] != nil else { continue }
            logic.fire(timer: next, key: next.user, user: &users[next.user]!, timers: &timers, out: &out, dirty: &dirtyKeys)
        }
    }
}

/// Event ids seen within the horizon, as 128-bit hashes of (shop, user, event id), in two
/// generations by event time: an id is remembered for at least one horizon and at most two.
struct SeenEvents: Sendable {
    let horizon: TimeSpan
    var current = HashSet128()
    var previous = HashSet128()
    var currentStart: Timestamp?
    var previousStart: Timestamp?
    /// Hashes inserted since the last checkpoint (`takeNewSeenEvents`), per generation, as
    /// (a, b) pairs; dropped with their generation.
    var currentNew: [UInt64] = []
    var previousNew: [UInt64] = []
    /// Off until the first checkpoint (which takes both sets whole) or a restore.
    var tracksNew = false

    init(horizon: TimeSpan) {
        self.horizon = horizon
    }

    var count: Int { current.count + previous.count }

    /// Records the event; false when it was seen before.
    mutating func insert(shop: String, user: String, eventID: String, at t: Timestamp) -> Bool {
        var h = Hasher128()
        for b in shop.utf8 { h.add(b) }
        h.add(0x1F)
        for b in user.utf8 { h.add(b) }
        h.add(0x1F)
        for b in eventID.utf8 { h.add(b) }
        let (a, b) = h.finish()
        if let start = currentStart, t >= start + horizon {
            previous = current
            current = HashSet128()
            previousStart = currentStart
            currentStart = t
            previousNew = currentNew
            currentNew = []
        } else if currentStart == nil {
            currentStart = t
        }
        if previous.contains(a, b) { return false }
        guard current.insert(a, b) else { return false }
        if tracksNew {
            currentNew.append(a)
            currentNew.append(b)
        }
        return true
    }
}

/// An open-addressing set of 128-bit hashes. The keys are already uniformly distributed,
/// so they index the table directly (no rehashing through `Hasher`).
struct HashSet128: Sendable {
    private var slots: [UInt64] = []   // pairs (a, b); (0, 0) marks an empty slot
    /// (0, 0) itself, which cannot live in a slot.
    private var hasZero = false
    private(set) var count = 0

    func contains(_ a: UInt64, _ b: UInt64) -> Bool {
        if a == 0 && b == 0 { return hasZero }
        guard !slots.isEmpty else { return false }
        let mask = slots.count / 2 - 1
        var i = Int(truncatingIfNeeded: a) & mask
        while true {
            let x = slots[2 * i], y = slots[2 * i + 1]
            if x == 0 && y == 0 { return false }
            if x == a && y == b { return true }
            i = (i + 1) & mask
        }
    }

    /// false when already present.
    mutating func insert(_ a: UInt64, _ b: UInt64) -> Bool {
        if a == 0 && b == 0 {
            defer { hasZero = true }
            if !hasZero { count += 1 }
            return !hasZero
        }
        if (count + 1) * 4 > slots.count / 2 * 3 { grow() }
        let mask = slots.count / 2 - 1
        var i = Int(truncatingIfNeeded: a) & mask
        while true {
            let x = slots[2 * i], y = slots[2 * i + 1]
            if x == 0 && y == 0 {
                slots[2 * i] = a
                slots[2 * i + 1] = b
                count += 1
                return true
            }
            if x == a && y == b { return false }
            i = (i + 1) & mask
        }
    }

    /// Every hash, as (a, b) pairs in one array.
    var pairs: [UInt64] {
        var out: [UInt64] = []
        out.reserveCapacity(2 * count)
        if hasZero { out += [0, 0] }
        var k = 0
        while k < slots.count {
            if slots[k] != 0 || slots[k + 1] != 0 { out += [slots[k], slots[k + 1]] }
            k += 2
        }
        return out
    }

    /// Makes room for `n` hashes at once. Restoring needs it: hashes listed in another
    /// table's slot order and inserted into a table that grows on the way cluster badly.
    mutating func reserve(_ n: Int) {
        var size = max(64, slots.count)
        while (n + 1) * 4 > size / 2 * 3 { size *= 2 }
        if size > slots.count { grow(to: size) }
    }

    private mutating func grow(to size: Int? = nil) {
        let old = slots
        slots = [UInt64](repeating: 0, count: size ?? max(64, old.count * 2))
        count = hasZero ? 1 : 0
        var k = 0
        while k < old.count {
            if old[k] != 0 || old[k + 1] != 0 { _ = insert(old[k], old[k + 1]) }
            k += 2
        }
    }
}

/// Timers of all users, with the sequence that orders equal due times.
struct TimerQueue: Sendable {
    var heap = TimerHeap()
    var sequence: UInt64 = 0

    mutating func next() -> UInt64 {
        sequence += 1
        return sequence
    }
}

struct DispatchKey: Hashable, Sendable {
    var topic: LogicalTopic
    var type: String
}

/// What one kind of event (`orders.order_paid`) touches, worked out once per type.
struct EventPlan: Sendable {
    /// Rules `on` this event (their `shops` are checked per event).
    var listening: [Int] = []
    /// Indices into the counted patterns.
    var counted: [Int] = []
    /// Threshold rules this event resets.
    var resets: [Int] = []
    /// Whether it can cancel or convert a firing (kept while ahead of the clock).
    var cancelsOrConverts = false
    /// Rules whose goal it is.
    var goalOf: [Int] = []
}

/// The per-user work, on one user's state; separate from the engine so the state is
/// mutated in place in the user table.
struct RuleLogic {
    let rules: RuleSet
    let plan: TriggerPlan
    let clock: Timestamp?
    let horizon: TimeSpan
    let tracksDirty: Bool

    func apply(_ event: Event, _ ep: EventPlan, key: UserKey, user: inout UserState, timers: inout TimerQueue,
               out: inout [TriggerOutput], dirty: inout [UserKey]) {
        let t = event.occurredAt
        if tracksDirty, !user.dirty {
            user.dirty = true
            dirty.append(key)
        }

        // Facts.
        if t < user.firstSeen { user.firstSeen = t }
        if t > user.lastSeen { user.lastSeen = t }
        if !ep.counted.isEmpty {
            if user.counts.count < plan.countedPatterns.count {
                user.counts.append(contentsOf: repeatElement(0, count: plan.countedPatterns.count - user.counts.count))
            }
            for i in ep.counted { user.counts[i] &+= 1 }
        }
        if event.topic == .behavior, event.type == "profile_updated", case .object(let profile)? = event.body["profile"] {
            var merged = user.profile ?? JSONObject()
            for (k, v) in profile.members where plan.profileFields.contains(k) { merged[k] = v }
            user.profile = merged.isEmpty ? nil : merged
        }

        // Goals reached.
        if !user.goals.isEmpty {
            user.goals.removeAll { g in
                // Expired once the clock (not this event: it may come from the faster
                // input) has passed the window.
                if g.until < (clock ?? t) { return true }
                if g.until < t { return false }
                guard g.from < t, ep.goalOf.contains(g.rule) else { return false }
                out.append(.conversion(Conversion(
                    notificationID: g.notificationID, ruleID: rules.rules[g.rule].id, shopID: key.shop,
                    userID: key.user, variant: nil, goalEventID: event.eventID, convertedAt: t)))
                return true
            }
        }

        let ref = SeenRef(eventID: event.eventID, time: t, topic: event.topic, type: event.type, fields: event.body)
        if ep.cancelsOrConverts {
            // Cancellations: after the trigger, before the fire time, matching fields equal.
            // (Idle timers move with their rule's events below.)
            if !user.pending.isEmpty { user.pending.removeAll { cancels(ref, $0, idle: false) } }

            // A goal event after the due time of a firing that has not fired yet (its
            // partition's clock lags behind this event) is kept for when it fires.
            if !ep.goalOf.isEmpty, user.pending.contains(where: { $0.due < t && ep.goalOf.contains($0.rule) }) {
                user.lateGoalEvents.append(ref.trimmed(to: []))
            }
        }
        // An event ahead of this state's clock may precede triggers still to arrive on a
        // slower input: it is kept until the clock passes it, to cancel or convert them.
        if let clock, !user.ahead.isEmpty { user.ahead.removeAll { $0.time <= clock } }
        if ep.cancelsOrConverts, clock.map({ t > $0 }) ?? true {
            user.ahead.append(ref.trimmed(to: plan.matchFields))
        }

        for index in ep.resets where rules.rules[index].shops?.contains(key.shop) ?? true {
            user.windows.removeAll { $0.rule == index }
        }
        for index in ep.listening {
            let rule = rules.rules[index]
            if let shops = rule.shops, !shops.contains(key.shop) { continue }
            if let condition = rule.condition {
                do {
                    guard try condition.isTrue(in: EventContext(event: event.body, user: user, plan: plan)) else { continue }
                } catch {
                    out.append(.candidate(candidate(index, key, trigger(event, index), user: user, firedAt: t, ordinal: 0,
                                                    failure: "expression_error:" + error.message)))
                    continue
                }
            }
            switch rule.timing {
            case .immediate:
                fire(index, key, trigger(event, index), user: &user, firedAt: t, ordinal: 0, timers: &timers, out: &out)
            case .wait(let d):
                schedule(index, key, event, user: &user, due: t + d, ordinal: 0, timers: &timers)
            case .at(let expressions):
                let context = EventContext(event: event.body, user: user, plan: plan)
                for (i, e) in expressions.enumerated() {
                    do throws(EvaluationError) {
                        guard let due = try Expression.timestamp(e.evaluate(in: context)) else {
                            throw EvaluationError("at[\(i)] has no timestamp value for this event")
                        }
                        if due < t { continue }  // already past at the triggering event
                        schedule(index, key, event, user: &user, due: due, ordinal: i * 1000, timers: &timers)
                    } catch {
                        out.append(.candidate(candidate(index, key, trigger(event, index), user: user, firedAt: t,
                                                        ordinal: i * 1000, failure: "expression_error:" + error.message)))
                    }
                }
            case .threshold(let count, let within, _):
                var w = user.windows.first { $0.rule == index } ?? UserState.Window(rule: index, times: [])
                user.windows.removeAll { $0.rule == index }
                w.times.append(t)
                w.times.removeAll { $0 <= t - within }
                if w.times.count >= count {
                    fire(index, key, trigger(event, index), user: &user, firedAt: t, ordinal: 0, timers: &timers, out: &out)
                } else {
                    user.windows.append(w)
                }
            case .idle(let d):
                if let i = user.pending.firstIndex(where: { $0.rule == index && $0.triggerTime < t && t < $0.due }) {
                    // The quiet period restarts: the same timer moves to the new end.
                    user.pending[i].triggerTime = t
                    user.pending[i].due = t + d
                    user.pending[i].triggerEventID = event.eventID
                    user.pending[i].event = plan.trimmed(event.body, rule: index)
                } else if !user.pending.contains(where: { $0.rule == index && $0.triggerTime >= t && $0.triggerTime < t + d }) {
                    // Not covered by a newer event's period (events can arrive late from a slower input).
                    schedule(index, key, event, user: &user, due: t + d, ordinal: 0, timers: &timers)
                }
            }
        }
    }

    /// A timer popped from the queue: fire its firing if it is still pending and due.
    func fire(timer: TimerHeap.Entry, key: UserKey, user: inout UserState, timers: inout TimerQueue, out: inout [TriggerOutput],
              dirty: inout [UserKey]) {
        guard let i = user.pending.firstIndex(where: { $0.timer == timer.sequence }) else { return }
        if user.pending[i].due > timer.due {
            // An idle timer that moved: wait for its new time.
            timers.heap.push(.init(due: user.pending[i].due, sequence: timer.sequence, user: key))
            return
        }
        if tracksDirty, !user.dirty {
            user.dirty = true
            dirty.append(key)
        }
        let p = user.pending.remove(at: i)
        emit(p.rule, key, Candidate.TriggerRef(eventID: p.triggerEventID, time: p.triggerTime, body: p.event),
             user: &user, firedAt: p.due, ordinal: p.ordinal, out: &out)
        if p.repeatsLeft > 0, let r = rules.rules[p.rule].repeatEvery {
            var again = p
            again.ordinal += 1
            again.due = p.due + r.every
            again.repeatsLeft -= 1
            push(&again, key, user: &user, timers: &timers)
        }
    }

    /// Whether an event cancels a pending firing: it happened after the trigger and before
    /// the fire time, it is one of the rule's `cancel_on` events with the `match` fields
    /// equal — or, for an idle timer, any of the rule's own events.
    func cancels(_ e: SeenRef, _ p: UserState.Pending, idle checkIdle: Bool = true) -> Bool {
        guard e.time > p.triggerTime, e.time < p.due else { return false }
        let rule = rules.rules[p.rule]
        if case .idle = rule.timing {
            return checkIdle && rule.on.contains { $0.matches(topic: e.topic, type: e.type) }
        }
        guard let cancel = rule.cancel, cancel.events.contains(where: { $0.matches(topic: e.topic, type: e.type) }) else {
            return false
        }
        if cancel.match.isEmpty { return true }
        let body = JSONValue.object(e.fields)
        let trigger = JSONValue.object(p.event)
        return cancel.match.allSatisfy { field in
            guard let a = body[path: field], let b = trigger[path: field], !a.isNull else { return false }
            return a == b
        }
    }

    // MARK: Firing

    func trigger(_ event: Event, _ rule: Int) -> Candidate.TriggerRef {
        Candidate.TriggerRef(eventID: event.eventID, time: event.occurredAt, body: plan.trimmed(event.body, rule: rule))
    }

    func schedule(_ rule: Int, _ key: UserKey, _ event: Event, user: inout UserState, due: Timestamp, ordinal: Int,
                  timers: inout TimerQueue) {
        var p = UserState.Pending(timer: 0, rule: rule, ordinal: ordinal, due: due, triggerTime: event.occurredAt,
                                  triggerEventID: event.eventID, repeatsLeft: rules.rules[rule].repeatEvery?.times ?? 0,
                                  event: plan.trimmed(event.body, rule: rule))
        push(&p, key, user: &user, timers: &timers)
    }

    func push(_ p: inout UserState.Pending, _ key: UserKey, user: inout UserState, timers: inout TimerQueue) {
        // Already cancelled by an event processed before its trigger (a faster input).
        if user.ahead.contains(where: { cancels($0, p) }) { return }
        p.timer = timers.next()
        user.pending.append(p)
        timers.heap.push(.init(due: p.due, sequence: p.timer, user: key))
    }

    /// An immediate firing, with its repeat chain scheduled.
    func fire(_ rule: Int, _ key: UserKey, _ trigger: Candidate.TriggerRef, user: inout UserState, firedAt: Timestamp,
              ordinal: Int, timers: inout TimerQueue, out: inout [TriggerOutput]) {
        emit(rule, key, trigger, user: &user, firedAt: firedAt, ordinal: ordinal, out: &out)
        if let r = rules.rules[rule].repeatEvery {
            var p = UserState.Pending(timer: 0, rule: rule, ordinal: ordinal + 1, due: firedAt + r.every,
                                      triggerTime: trigger.time, triggerEventID: trigger.eventID,
                                      repeatsLeft: r.times - 1, event: trigger.body)
            push(&p, key, user: &user, timers: &timers)
        }
    }

    func emit(_ rule: Int, _ key: UserKey, _ trigger: Candidate.TriggerRef, user: inout UserState, firedAt: Timestamp,
              ordinal: Int, out: inout [TriggerOutput]) {
        let c = candidate(rule, key, trigger, user: user, firedAt: firedAt, ordinal: ordinal, failure: nil)
        out.append(.candidate(c))
        if let goal = rules.rules[rule].goal {
            let until = firedAt + goal.within
            let early = (user.lateGoalEvents + user.ahead).filter {
                $0.time > firedAt && $0.time <= until && goal.event.matches(topic: $0.topic, type: $0.type)
            }
            if let first = early.min(by: { $0.time < $1.time }) {
                out.append(.conversion(Conversion(notificationID: c.id, ruleID: rules.rules[rule].id, shopID: key.shop,
                                                  userID: key.user, variant: nil, goalEventID: first.eventID,
                                                  convertedAt: first.time)))
            } else {
                user.goals.append(.init(rule: rule, notificationID: c.id, from: firedAt, until: until))
            }
        }
        if !user.lateGoalEvents.isEmpty, !user.pending.contains(where: { rules.rules[$0.rule].goal != nil }) {
            user.lateGoalEvents.removeAll()
        }
    }

    func candidate(_ index: Int, _ key: UserKey, _ trigger: Candidate.TriggerRef, user: UserState, firedAt: Timestamp,
                   ordinal: Int, failure: String?) -> Candidate {
        let rule = rules.rules[index]
        return Candidate(
            id: Candidate.notificationID(ruleID: rule.id, shopID: key.shop, userID: key.user,
                                         triggerEventID: trigger.eventID, ordinal: ordinal),
            ruleID: rule.id, shopID: key.shop, userID: key.user, priority: rule.notify.priority,
            channels: rule.notify.channels, template: rule.notify.template, escalate: rule.notify.escalate,
            tags: rule.notify.tags, triggerEventIDs: [trigger.eventID], eventTime: trigger.time, firedAt: firedAt,
            rulesVersion: rules.version, ordinal: ordinal, failure: failure, event: trigger.body,
            user: user.profile ?? JSONObject())
    }
}

extension Candidate {
    /// The triggering event as a firing remembers it.
    struct TriggerRef {
        var eventID: String
        var time: Timestamp
        var body: JSONObject
    }
}
