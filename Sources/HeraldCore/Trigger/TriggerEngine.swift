/// What herald-trigger publishes.
public enum TriggerOutput: Sendable, Equatable {
    case candidate(Candidate)
    case conversion(Conversion)

    public var candidate: Candidate? {
        if case .candidate(let c) = self { return c }
        return nil
    }
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
    public var eventHorizon: TimeSpan
    let plan: TriggerPlan
    var users: [String: UserState] = [:]
    var timers = TimerHeap()
    var sequence: UInt64 = 0
    /// The newest time the engine was advanced to.
    public private(set) var clock: Timestamp?

    public init(rules: RuleSet, eventHorizon: TimeSpan = .days(7)) {
        self.rules = rules
        self.eventHorizon = eventHorizon
        self.plan = TriggerPlan(rules)
    }

    /// Users with state.
    public var userCount: Int { users.count }
    /// Timers waiting (some may belong to cancelled firings and will be skipped).
    public var timerCount: Int { timers.count }
    /// When the next timer is due.
    public var nextDue: Timestamp? { timers.first?.due }

    static func key(shop: String, user: String) -> String { shop + "\u{1F}" + user }

    // MARK: Events

    public mutating func process(_ event: Event) -> [TriggerOutput] {
        var out: [TriggerOutput] = []
        process(event, into: &out)
        return out
    }

    public mutating func process(_ event: Event, into out: inout [TriggerOutput]) {
        let key = Self.key(shop: event.shopID, user: event.userID)
        var user = users.removeValue(forKey: key) ?? UserState(at: event.occurredAt)
        defer { users[key] = user }
        let t = event.occurredAt

        // A repeated event id is ignored within the horizon.
        let idHash = StableID.hash64([event.eventID])
        let horizonStart = t - eventHorizon
        if !user.seen.isEmpty { user.seen.removeAll { $0.at < horizonStart } }
        if user.seen.contains(where: { $0.hash == idHash }) { return }
        user.seen.append(.init(hash: idHash, at: t))

        // Facts.
        if t < user.firstSeen { user.firstSeen = t }
        if t > user.lastSeen { user.lastSeen = t }
        for (i, p) in plan.countedPatterns.enumerated() where p.matches(event) {
            if user.counts.count < plan.countedPatterns.count {
                user.counts.append(contentsOf: repeatElement(0, count: plan.countedPatterns.count - user.counts.count))
            }
            user.counts[i] &+= 1
        }
        if event.topic == .behavior, event.type == "profile_updated", case .object(let profile)? = event.body["profile"] {
            var merged = user.profile ?? JSONObject()
            for (k, v) in profile.members where plan.profileFields.contains(k) { merged[k] = v }
            user.profile = merged.isEmpty ? nil : merged
        }

        // Goals reached.
        if !user.goals.isEmpty {
            user.goals.removeAll { g in
                if g.until < t { return true }
                guard g.from < t, rules.rules[g.rule].goal!.event.matches(event) else { return false }
                out.append(.conversion(Conversion(
                    notificationID: g.notificationID, ruleID: rules.rules[g.rule].id, shopID: event.shopID,
                    userID: event.userID, variant: nil, goalEventID: event.eventID, convertedAt: t)))
                return true
            }
        }

        // Cancellations: after the trigger, before the fire time, matching fields equal.
        let ref = SeenRef(eventID: event.eventID, time: t, topic: event.topic, type: event.type, fields: event.body)
        if !user.pending.isEmpty {
            user.pending.removeAll { cancels(ref, $0) }
        }

        // A goal event after the fire time of a firing that has not fired yet (its partition's
        // clock lags behind this event) is kept, so the firing converts when it fires.
        if user.pending.contains(where: { $0.due < t && rules.rules[$0.rule].goal?.event.matches(event) == true }) {
            user.lateGoalEvents.append(ref.trimmed(to: []))
        }

        // An event ahead of this state's clock may come before triggers still to arrive on a
        // slower input: it is kept until the clock passes it, to cancel or convert them.
        if let clock, !user.ahead.isEmpty { user.ahead.removeAll { $0.time <= clock } }
        if clock.map({ t > $0 }) ?? true, plan.keepsAhead(event) {
            user.ahead.append(ref.trimmed(to: plan.matchFields))
        }

        for (index, rule) in rules.rules.enumerated() {
            // Threshold resets come from events the rule need not be `on`.
            if case .threshold(_, _, let resetOn) = rule.timing, resetOn.contains(where: { $0.matches(event) }),
               rule.shops?.contains(event.shopID) ?? true {
                user.windows.removeAll { $0.rule == index }
            }
            guard rule.listens(to: event) else { continue }
            if let condition = rule.condition {
                do {
                    guard try condition.isTrue(in: EventContext(event: event.body, user: user, plan: plan)) else { continue }
                } catch {
                    out.append(.candidate(candidate(index, event, user: user, firedAt: t, ordinal: 0,
                                                    failure: "expression_error:" + error.message)))
                    continue
                }
            }
            switch rule.timing {
            case .immediate:
                fire(index, event: event, user: &user, firedAt: t, ordinal: 0, into: &out)
            case .wait(let d):
                schedule(index, event: event, user: &user, due: t + d, ordinal: 0)
            case .at(let expressions):
                let context = EventContext(event: event.body, user: user, plan: plan)
                for (i, e) in expressions.enumerated() {
                    do throws(EvaluationError) {
                        guard let due = try Expression.timestamp(e.evaluate(in: context)) else {
                            throw EvaluationError("at[\(i)] has no timestamp value for this event")
                        }
                        if due < t { continue }  // already past at the triggering event
                        schedule(index, event: event, user: &user, due: due, ordinal: i * 1000)
                    } catch {
                        out.append(.candidate(candidate(index, event, user: user, firedAt: t, ordinal: i * 1000,
                                                        failure: "expression_error:" + error.message)))
                    }
                }
            case .threshold(let count, let within, _):
                var w = user.windows.first { $0.rule == index } ?? UserState.Window(rule: index, times: [])
                user.windows.removeAll { $0.rule == index }
                w.times.append(t)
                w.times.removeAll { $0 <= t - within }
                if w.times.count >= count {
                    fire(index, event: event, user: &user, firedAt: t, ordinal: 0, into: &out)
                } else {
                    user.windows.append(w)
                }
            case .idle(let d):
                // One quiet period at a time: an event that is not the newest within D
                // starts none (the newer one's period already covers it).
                if !user.pending.contains(where: { $0.rule == index && $0.triggerTime >= t && $0.triggerTime < t + d }) {
                    schedule(index, event: event, user: &user, due: t + d, ordinal: 0)
                }
            }
        }
    }

    // MARK: Time

    /// Fires every timer due at or before `time`, in due order.
    public mutating func advance(to time: Timestamp) -> [TriggerOutput] {
        var out: [TriggerOutput] = []
        advance(to: time, into: &out)
        return out
    }

    public mutating func advance(to time: Timestamp, into out: inout [TriggerOutput]) {
        if clock == nil || clock! < time { clock = time }
        while let next = timers.first, next.due <= time {
            _ = timers.pop()
            guard var user = users[next.user],
                  let i = user.pending.firstIndex(where: { $0.timer == next.sequence }) else { continue }
            let p = user.pending.remove(at: i)
            users[next.user] = nil
            let event = Candidate.TriggerRef(eventID: p.triggerEventID, time: p.triggerTime, body: p.event)
            emit(p.rule, trigger: event, next.user, user: &user, firedAt: p.due, ordinal: p.ordinal, into: &out)
            if p.repeatsLeft > 0, let r = rules.rules[p.rule].repeatEvery {
                var again = p
                again.ordinal += 1
                again.due = p.due + r.every
                again.repeatsLeft -= 1
                push(&again, user: next.user, state: &user)
            }
            users[next.user] = user
        }
    }

    /// Whether an event cancels a pending firing: it happened after the trigger and before
    /// the fire time, it is one of the rule's `cancel_on` events with the `match` fields
    /// equal — or, for an idle timer, any of the rule's own events.
    func cancels(_ e: SeenRef, _ p: UserState.Pending) -> Bool {
        guard e.time > p.triggerTime, e.time < p.due else { return false }
        let rule = rules.rules[p.rule]
        if case .idle = rule.timing { return rule.on.contains { $0.matches(topic: e.topic, type: e.type) } }
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

    private mutating func schedule(_ rule: Int, event: Event, user: inout UserState, due: Timestamp, ordinal: Int) {
        var p = UserState.Pending(timer: 0, rule: rule, ordinal: ordinal, due: due, triggerTime: event.occurredAt,
                                  triggerEventID: event.eventID, repeatsLeft: rules.rules[rule].repeatEvery?.times ?? 0,
                                  event: plan.trimmed(event.body, rule: rule))
        push(&p, user: Self.key(shop: event.shopID, user: event.userID), state: &user)
    }

    private mutating func push(_ p: inout UserState.Pending, user key: String, state: inout UserState) {
        // Already cancelled by an event processed before its trigger (a faster input).
        if state.ahead.contains(where: { cancels($0, p) }) { return }
        sequence += 1
        p.timer = sequence
        state.pending.append(p)
        timers.push(.init(due: p.due, sequence: sequence, user: key))
    }

    /// An immediate firing, with its repeat chain scheduled.
    private mutating func fire(_ rule: Int, event: Event, user: inout UserState, firedAt: Timestamp, ordinal: Int,
                               into out: inout [TriggerOutput]) {
        let key = Self.key(shop: event.shopID, user: event.userID)
        let trigger = Candidate.TriggerRef(eventID: event.eventID, time: event.occurredAt, body: plan.trimmed(event.body, rule: rule))
        emit(rule, trigger: trigger, key, user: &user, firedAt: firedAt, ordinal: ordinal, into: &out)
        if let r = rules.rules[rule].repeatEvery {
            var p = UserState.Pending(timer: 0, rule: rule, ordinal: ordinal + 1, due: firedAt + r.every,
                                      triggerTime: event.occurredAt, triggerEventID: event.eventID,
                                      repeatsLeft: r.times - 1, event: trigger.body)
            push(&p, user: key, state: &user)
        }
    }

    private mutating func emit(_ rule: Int, trigger: Candidate.TriggerRef, _ key: String, user: inout UserState,
                               firedAt: Timestamp, ordinal: Int, into out: inout [TriggerOutput]) {
        let sep = key.firstIndex(of: "\u{1F}")!
        let shop = String(key[..<sep]), userID = String(key[key.index(after: sep)...])
        let c = makeCandidate(rule, shop: shop, userID: userID, trigger: trigger, user: user, firedAt: firedAt,
                              ordinal: ordinal, failure: nil)
        out.append(.candidate(c))
        if let goal = rules.rules[rule].goal {
            let until = firedAt + goal.within
            if let late = (user.lateGoalEvents + user.ahead).sorted(by: { $0.time < $1.time }).first(where: {
                $0.time > firedAt && $0.time <= until && goal.event.matches(topic: $0.topic, type: $0.type)
            }) {
                out.append(.conversion(Conversion(notificationID: c.id, ruleID: rules.rules[rule].id, shopID: shop, userID: userID,
                                                  variant: nil, goalEventID: late.eventID, convertedAt: late.time)))
            } else {
                user.goals.append(.init(rule: rule, notificationID: c.id, from: firedAt, until: until))
            }
        }
        if !user.lateGoalEvents.isEmpty, !user.pending.contains(where: { rules.rules[$0.rule].goal != nil }) {
            user.lateGoalEvents.removeAll()
        }
    }

    private func candidate(_ rule: Int, _ event: Event, user: UserState, firedAt: Timestamp, ordinal: Int,
                           failure: String?) -> Candidate {
        makeCandidate(rule, shop: event.shopID, userID: event.userID,
                      trigger: .init(eventID: event.eventID, time: event.occurredAt, body: plan.trimmed(event.body, rule: rule)),
                      user: user, firedAt: firedAt, ordinal: ordinal, failure: failure)
    }

    private func makeCandidate(_ index: Int, shop: String, userID: String, trigger: Candidate.TriggerRef, user: UserState,
                               firedAt: Timestamp, ordinal: Int, failure: String?) -> Candidate {
        let rule = rules.rules[index]
        return Candidate(
            id: Candidate.notificationID(ruleID: rule.id, shopID: shop, userID: userID, triggerEventID: trigger.eventID,
                                         ordinal: ordinal),
            ruleID: rule.id, shopID: shop, userID: userID, priority: rule.notify.priority, channels: rule.notify.channels,
            template: rule.notify.template, escalate: rule.notify.escalate, tags: rule.notify.tags,
            triggerEventIDs: [trigger.eventID], eventTime: trigger.time, firedAt: firedAt, rulesVersion: rules.version,
            ordinal: ordinal, failure: failure, event: trigger.body, user: user.profile ?? JSONObject())
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
