import Foundation
import Testing
@testable import HeraldCore

/// The SPEC §3 rules file.
let heraldYAML: String = {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return try! String(contentsOf: root.appendingPathComponent("deploy/rules/herald.yaml"), encoding: .utf8)
}()

func loadRules(_ yaml: String) throws -> RuleSet { try RulesLoader.load(yaml: yaml).get() }

/// A seeded mixed workload for the SPEC §3 rules: every rule kind, two shops, three time
/// zones, preference changes, some events out of order and some delivered twice, with
/// quiet gaps of days (so idle and goal windows expire) and users that go quiet early
/// (so win-back fires).
func workload(seed: UInt64, events n: Int) -> [Event] {
    var rng = SplitMix64(seed: seed)
    func pick(_ k: Int) -> Int { Int(rng.next() % UInt64(k)) }
    let mix: [(LogicalTopic, String, Int)] = [
        (.behavior, "page_view", 8), (.behavior, "login_success", 3), (.behavior, "login_failed", 7),
        (.behavior, "cart_add", 7), (.behavior, "checkout_start", 2), (.orders, "order_created", 2),
        (.orders, "order_paid", 4), (.orders, "card_delivered", 3), (.orders, "payment_failed", 3),
        (.behavior, "support_message", 2), (.orders, "shipped", 3), (.orders, "out_for_delivery", 2),
        (.orders, "delivered", 2), (.orders, "bill_created", 2), (.orders, "bill_paid", 1),
        (.orders, "margin_low", 2), (.orders, "margin_topped_up", 1), (.behavior, "profile_updated", 2),
        (.behavior, "preference_updated", 2),
    ]
    let total = mix.reduce(0) { $0 + $1.2 }
    var t = Timestamp(rfc3339: "2026-11-25T08:00:00Z")!
    var out: [Event] = []
    for i in 0..<n {
        if pick(150) == 0 { t = t + .days(Int64(3 + pick(9))) } else { t = t + .seconds(Int64(pick(900))) }
        if !out.isEmpty, pick(30) == 0 {
            out.append(out[out.count - 1 - pick(min(out.count, 200))])  // delivered again
            continue
        }
        var k = pick(total)
        var chosen = mix[0]
        for m in mix {
            if k < m.2 { chosen = m; break }
            k -= m.2
        }
        let u = i < n / 5 ? pick(40) : pick(30)
        let shop = u % 4 == 0 ? "s42" : "s1"
        let time = pick(10) == 0 ? t - .seconds(Int64(pick(600))) : t
        var body = JSONObject([("event_id", .string("e\(i)")), ("type", .string(chosen.1)), ("shop_id", .string(shop)),
                               ("user_id", .string("u\(u)")), ("occurred_at", .string(time.rfc3339))])
        switch chosen.1 {
        case "cart_add": body["amount"] = pick(5) == 0 ? .int(0) : .double(Double(pick(1000)) / 4)
        case "order_paid", "order_created", "card_delivered": body["order_id"] = .string("o\(u)-\(pick(3))")
        case "support_message": body["text"] = .string(pick(2) == 0 ? "充值未到账" : "hello")
        case "shipped", "out_for_delivery", "delivered": body["status"] = .string(chosen.1)
        case "bill_created", "bill_paid":
            body["bill_id"] = .string("b\(u)-\(pick(2))")
            body["due_at"] = .string((t + .hours(Int64(12 + pick(150)))).rfc3339)
        case "profile_updated":
            body["profile"] = .object(JSONObject([
                ("timezone", .string(["Asia/Shanghai", "Europe/London", "America/New_York"][pick(3)])),
                ("nickname", .string("n\(u)")), ("vip", .bool(pick(2) == 0)), ("score", .double(0.1 * Double(pick(7)))),
            ]))
        case "preference_updated":
            body["subscribed"] = .bool(pick(2) == 0)
            if pick(2) == 0 { body["channel"] = .string(["sms", "in_app"][pick(2)]) }
            if pick(3) == 0 { body["rule"] = .string("cart-abandoned") }
        default: body["page"] = .string("/item/\(pick(100))")
        }
        out.append(Event(topic: chosen.0, eventID: "e\(i)", type: chosen.1, shopID: shop, userID: "u\(u)",
                         occurredAt: time, body: body))
        if chosen.1 == "shipped", pick(2) == 0 {
            // Logistics updates in quick succession (merged into a digest).
            out.append(Event(topic: .orders, eventID: "e\(i)-1", type: "out_for_delivery", shopID: shop, userID: "u\(u)",
                             occurredAt: time + .seconds(200), body: JSONObject([("status", .string("out_for_delivery"))])))
        }
        if chosen.1 == "login_failed", pick(2) == 0 {
            // A burst of failed sign-ins (the threshold rule), sometimes reset by a success.
            for j in 1...2 {
                let type = pick(6) == 0 ? "login_success" : "login_failed"
                out.append(Event(topic: .behavior, eventID: "e\(i)-\(j)", type: type, shopID: shop, userID: "u\(u)",
                                 occurredAt: time + .seconds(Int64(40 * j)), body: JSONObject([("type", .string(type))])))
            }
        }
    }
    return out
}

/// The incremental checkpoints a worker keeps in PostgreSQL: the state table (nil deletes a
/// row), the seen-event chunks of live generations, and the meta.
private struct CheckpointStore {
    var states: [String: UserStateRecord] = [:]
    var seen: [SeenEventsChunk] = []
    var meta: [UInt8] = []

    mutating func save(_ records: [UserStateRecord]) {
        for r in records { states["\(r.shopID)\u{1F}\(r.userID)"] = r.state == nil ? nil : r }
    }

    mutating func checkpoint(_ engine: inout TriggerEngine) {
        save(engine.takeDirtyStates())
        seen += engine.takeNewSeenEvents()
        let live = Set(engine.seenGenerations)
        seen.removeAll { !live.contains($0.generationStart) }
        meta = engine.encodeMeta()
    }

    mutating func checkpoint(_ shaper: inout Shaper) {
        save(shaper.takeDirtyStates())
        meta = shaper.encodeMeta()
    }

    /// The rows in a scrambled order, as a database may return them.
    var rows: [UserStateRecord] { states.values.sorted { $0.userID + $0.shopID > $1.userID + $1.shopID } }
}

/// One run of the trigger over `events`; at the steps in `checkpoints` a checkpoint is taken,
/// and at those in `restores` the engine is rebuilt from the checkpoints so far.
private func runTrigger(_ events: [Event], rules: RuleSet, checkpoints: Set<Int> = [], restores: Set<Int> = [],
                        restoreRules: RuleSet? = nil) throws -> [TriggerOutput] {
    var engine = TriggerEngine(rules: rules)
    var store = CheckpointStore()
    var out: [TriggerOutput] = []
    var newest = events[0].occurredAt
    for (i, e) in events.enumerated() {
        if checkpoints.contains(i) || restores.contains(i) { store.checkpoint(&engine) }
        if restores.contains(i) {
            engine = try TriggerEngine.restore(rules: restoreRules ?? rules, meta: store.meta, users: store.rows, seen: store.seen)
        }
        newest = max(newest, e.occurredAt)
        // Timers lag the newest event by five minutes, so late events meet unfired firings.
        engine.advance(to: newest - .minutes(5), into: &out)
        engine.process(e, into: &out)
    }
    engine.advance(to: newest + .days(60), into: &out)
    return out
}

private enum ShaperStep {
    case candidate(Candidate)
    case preference(Event)
    case advance(Timestamp)
}

/// The shaper's input from the workload: the trigger's candidates in order (some sent
/// twice), preference events and clock advances.
private func shaperSteps(_ events: [Event], rules: RuleSet) -> [ShaperStep] {
    var engine = TriggerEngine(rules: rules)
    var steps: [ShaperStep] = []
    var rng = SplitMix64(seed: 99)
    var sent: [Candidate] = []
    var newest = events[0].occurredAt
    func add(_ outputs: [TriggerOutput]) {
        for case .candidate(let c) in outputs {
            steps.append(.candidate(c))
            sent.append(c)
            if rng.next() % 15 == 0 { steps.append(.candidate(sent[Int(rng.next() % UInt64(sent.count))])) }
        }
    }
    for e in events {
        newest = max(newest, e.occurredAt)
        add(engine.advance(to: newest - .minutes(5)))
        if e.type == "preference_updated" { steps.append(.preference(e)) }
        add(engine.process(e))
        if rng.next() % 10 == 0 { steps.append(.advance(newest - .minutes(5))) }
    }
    add(engine.advance(to: newest + .days(60)))
    steps.append(.advance(newest + .days(61)))
    return steps
}

/// `group`: the shaper's (1: one candidate and one timer at a time); `batched`: runs of
/// candidates go in as one batch, as the worker hands them over.
private func runShaper(_ steps: [ShaperStep], rules: RuleSet, checkpoints: Set<Int> = [], restores: Set<Int> = [],
                       group: Int = 16, batched: Bool = false) throws -> [Outcome] {
    var shaper = Shaper(rules: rules)
    shaper.group = group
    var store = CheckpointStore()
    var out: [Outcome] = []
    var batch: [Candidate] = []
    func flush() {
        shaper.process(contentsOf: batch.span, into: &out)
        batch = []
    }
    for (i, step) in steps.enumerated() {
        if case .candidate(let c) = step, batched, !checkpoints.contains(i), !restores.contains(i) {
            batch.append(c)
            continue
        }
        flush()
        if checkpoints.contains(i) || restores.contains(i) { store.checkpoint(&shaper) }
        if restores.contains(i) {
            shaper = try Shaper.restore(rules: rules, meta: store.meta, users: store.rows)
            shaper.group = group
        }
        switch step {
        case .candidate(let c): shaper.process(c, into: &out)
        case .preference(let e): shaper.apply(preference: e)
        case .advance(let t): shaper.advance(to: t, into: &out)
        }
    }
    flush()
    return out
}

/// `count` distinct random steps in 1..<n.
private func randomSteps(_ count: Int, below n: Int, seed: UInt64) -> Set<Int> {
    var rng = SplitMix64(seed: seed)
    var s: Set<Int> = []
    while s.count < count { s.insert(1 + Int(rng.next() % UInt64(n - 1))) }
    return s
}

@Suite struct CheckpointTests {
    @Test(arguments: [1, 2, 3] as [UInt64])
    func aRestoredTriggerContinuesExactlyAsAnUninterruptedOne(seed: UInt64) throws {
        let rules = try loadRules(heraldYAML)
        let events = workload(seed: seed, events: 3000)
        let expected = try runTrigger(events, rules: rules)
        // The workload exercises what a checkpoint must carry.
        let ruleIDs = Set(expected.compactMap(\.candidate?.ruleID))
        #expect(ruleIDs.isSuperset(of: ["payment-failed", "cart-abandoned", "code-not-delivered", "login-risk",
                                        "first-purchase-guide", "win-back", "repayment", "not-received", "margin-call",
                                        "logistics"]))
        #expect(expected.contains { if case .conversion = $0 { return true } else { return false } })
        #expect(expected.contains { $0.candidate?.ruleID == "margin-call" && $0.candidate!.ordinal == 2 })

        let checkpoints = randomSteps(40, below: events.count, seed: seed &* 31)
        let restores = Set(checkpoints.sorted().enumerated().filter { $0.offset % 5 == 2 }.map(\.element))
        let restored = try runTrigger(events, rules: rules, checkpoints: checkpoints, restores: restores)
        #expect(restored == expected)
        // Restoring before every event changes nothing either.
        let everywhere = Set(1..<events.count).filter { $0 % 7 == 0 }
        #expect(try runTrigger(events, rules: rules, restores: everywhere) == expected)
    }

    @Test func repeatedEventIDsStayIgnoredAfterARestore() throws {
        let rules = try loadRules(heraldYAML)
        let t = Timestamp(rfc3339: "2026-11-25T08:00:00Z")!
        func failed(_ id: String, at: Timestamp) -> Event {
            Event(topic: .orders, eventID: id, type: "payment_failed", shopID: "s1", userID: "u1", occurredAt: at,
                  body: JSONObject([("event_id", .string(id))]))
        }
        var engine = TriggerEngine(rules: rules)
        #expect(engine.process(failed("a", at: t)).count == 1)
        // Eight days later the set has rotated: "a" is in the previous generation, "b" in the current.
        #expect(engine.process(failed("b", at: t + .days(8))).count == 1)
        var store = CheckpointStore()
        store.checkpoint(&engine)
        #expect(engine.seenGenerations == [t, t + .days(8)])
        var restored = try TriggerEngine.restore(rules: rules, meta: store.meta, users: store.rows, seen: store.seen)
        #expect(restored.process(failed("a", at: t + .days(8))).isEmpty)
        #expect(restored.process(failed("b", at: t + .days(8))).isEmpty)
        #expect(restored.process(failed("c", at: t + .days(8))).count == 1)
        // Chunks of generations no longer in use are ignored.
        let stale = SeenEventsChunk(generationStart: t - .days(30), hashes: [UInt8](repeating: 7, count: 32))
        _ = try TriggerEngine.restore(rules: rules, meta: store.meta, users: store.rows, seen: store.seen + [stale])
    }

    @Test(arguments: [1, 2] as [UInt64])
    func aRestoredShaperContinuesExactlyAsAnUninterruptedOne(seed: UInt64) throws {
        let rules = try loadRules(heraldYAML)
        let steps = shaperSteps(workload(seed: seed, events: 3000), rules: rules)
        let expected = try runShaper(steps, rules: rules)
        let statuses = Set(expected.map(\.status))
        #expect(statuses.isSuperset(of: [.sent, .suppressed, .deferred, .merged]))
        #expect(expected.contains { $0.reason == "opted_out" })
        #expect(expected.contains { $0.reason == "duplicate" })
        #expect(expected.contains { $0.reason == "frequency_cap" })
        let checkpoints = randomSteps(40, below: steps.count, seed: seed &* 17)
        let restores = Set(checkpoints.sorted().enumerated().filter { $0.offset % 4 == 1 }.map(\.element))
        #expect(try runShaper(steps, rules: rules, checkpoints: checkpoints, restores: restores) == expected)
        let everywhere = Set(1..<steps.count).filter { $0 % 5 == 0 }
        #expect(try runShaper(steps, rules: rules, restores: everywhere) == expected)
    }

    /// Batches, and timers fired a group at a time, decide exactly what one candidate and
    /// one timer at a time decide (the groups only read ahead).
    @Test(arguments: [1, 2, 3] as [UInt64])
    func batchesDecideAsOneAtATime(seed: UInt64) throws {
        let rules = try loadRules(heraldYAML)
        let steps = shaperSteps(workload(seed: seed, events: 3000), rules: rules)
        let expected = try runShaper(steps, rules: rules, group: 1)
        #expect(expected.count > 1000)
        #expect(try runShaper(steps, rules: rules) == expected)
        for group in [2, 5, 16, 64] {
            #expect(try runShaper(steps, rules: rules, group: group, batched: true) == expected)
        }
        let restores = randomSteps(20, below: steps.count, seed: seed &* 31)
        #expect(try runShaper(steps, rules: rules, restores: restores, batched: true) == expected)
    }

    @Test func theShaperReportsUsersItSweptAsRemoved() throws {
        let rules = try loadRules(heraldYAML)
        var shaper = Shaper(rules: rules)
        let t = Timestamp(rfc3339: "2026-11-25T08:00:00Z")!
        let c = Candidate(id: "n1", ruleID: "payment-failed", shopID: "s1", userID: "u1", priority: .urgent,
                          channels: ["in_app"], template: "refund_notice", escalate: false, tags: [],
                          triggerEventIDs: ["e1"], eventTime: t, firedAt: t, rulesVersion: "v",
                          event: JSONObject(), user: JSONObject())
        _ = shaper.process(c)
        #expect(shaper.takeDirtyStates().map(\.state?.isEmpty) == [false])
        #expect(shaper.takeDirtyStates().isEmpty)
        _ = shaper.advance(to: t + .days(30))
        #expect(shaper.takeDirtyStates() == [UserStateRecord(shopID: "s1", userID: "u1", state: nil)])
        #expect(shaper.userCount == 0)
    }

    @Test func candidatesRoundTripInBinary() throws {
        let t = Timestamp(rfc3339: "2026-11-25T08:00:00.123456Z")!
        let c = Candidate(id: "n1", ruleID: "r", shopID: "s", userID: "ü", priority: .low, channels: ["sms", "in_app"],
                          template: "t", escalate: true, tags: ["a"], triggerEventIDs: ["e1", "e2"], eventTime: t,
                          firedAt: t + .hours(1), rulesVersion: "v9", ordinal: 1001, failure: "expression_error:x",
                          event: JSONObject([("a", .double(1.0)), ("b", .int(-3)), ("c", .array([.null, .bool(true)])),
                                             ("d", .object(JSONObject([("e", .double(0.1))])))]),
                          user: JSONObject([("timezone", .string("Asia/Shanghai"))]))
        #expect(try Candidate(checkpointBytes: c.checkpointBytes) == c)
        #expect(throws: CheckpointDecodingError.self) { try Candidate(checkpointBytes: Array(c.checkpointBytes.dropLast())) }
    }

    /// SPEC §3 rules with `code-not-delivered` removed, a rule added, and the rest in reverse order.
    static func changedRules() throws -> RuleSet {
        let start = heraldYAML.range(of: "rules:\n")!, end = heraldYAML.range(of: "\npolicies:")!
        var blocks = heraldYAML[start.upperBound..<end.lowerBound].components(separatedBy: "\n  - id: ")
        blocks[0] = String(blocks[0].dropFirst("  - id: ".count))
        blocks = blocks.filter { !$0.hasPrefix("code-not-delivered") }.reversed()
        blocks.append("""
        page-viewed
            on: behavior.page_view
            wait: 2h
            cancel_on: [behavior.checkout_start]
            notify: { template: usage_guide }
        """)
        let text = String(heraldYAML[..<start.upperBound]) + blocks.map { "  - id: " + $0.trimmingCharacters(in: .newlines) }
            .joined(separator: "\n\n") + "\n" + String(heraldYAML[end.lowerBound...])
        return try loadRules(text)
    }

    @Test func rulesChangedBetweenCheckpointAndRestore() throws {
        let rules = try loadRules(heraldYAML)
        let changed = try Self.changedRules()
        #expect(changed.rules.count == rules.rules.count)
        #expect(changed.rules.first?.id == "page-viewed" || changed.rules.last?.id == "page-viewed")
        let events = workload(seed: 5, events: 3000)
        let cut = 1500
        func line(_ o: TriggerOutput) -> String {
            switch o {
            case .candidate(let c): return "\(c.id) \(c.ruleID) \(c.userID) \(c.firedAt) \(c.failure ?? "")"
            case .conversion(let v): return "conversion \(v.notificationID) \(v.goalEventID) \(v.convertedAt)"
            }
        }
        // Outputs up to the cut are the same in both runs; the count tells where the cut falls.
        var before = TriggerEngine(rules: rules)
        var prefix: [TriggerOutput] = []
        var newest = events[0].occurredAt
        for e in events[..<cut] {
            newest = max(newest, e.occurredAt)
            before.advance(to: newest - .minutes(5), into: &prefix)
            before.process(e, into: &prefix)
        }
        let expected = try runTrigger(events, rules: rules).map(line)
        let restored = try runTrigger(events, rules: rules, restores: [cut], restoreRules: changed).map(line)
        let head = prefix.map(line)
        #expect(Array(restored.prefix(head.count)) == head)
        let after = Array(restored.dropFirst(head.count)), afterExpected = Array(expected.dropFirst(head.count))
        let kept: (String) -> Bool = { !$0.contains(" code-not-delivered ") && !$0.contains(" page-viewed ") }
        #expect(after.filter(kept) == afterExpected.filter(kept))
        // The removed rule's firings pending at the cut are dropped; the added rule fires.
        #expect(afterExpected.contains { $0.contains(" code-not-delivered ") })
        #expect(!after.contains { $0.contains(" code-not-delivered ") })
        #expect(after.contains { $0.contains(" page-viewed ") })
        // Pending firings of kept rules crossed the cut (their timers were rebuilt).
        #expect(after.contains { $0.contains(" cart-abandoned ") || $0.contains(" repayment ") })
    }

    @Test func corruptOrTruncatedBytesAreErrorsNotCrashes() throws {
        let rules = try loadRules(heraldYAML)
        let events = workload(seed: 7, events: 1500)
        var engine = TriggerEngine(rules: rules)
        for e in events {
            _ = engine.advance(to: e.occurredAt - .minutes(5))
            _ = engine.process(e)
        }
        let meta = engine.encodeMeta()
        let states = engine.allStates().compactMap(\.state).sorted { $0.count > $1.count }
        let seen = engine.takeNewSeenEvents()
        var shaper = Shaper(rules: rules)
        for case .candidate(let c) in shaperSteps(events, rules: rules) { _ = shaper.process(c) }
        let shaperMeta = shaper.encodeMeta()
        let shaperStates = shaper.allStates().compactMap(\.state).sorted { $0.count > $1.count }
        #expect(states.count > 20 && shaperStates.count > 20)

        var rng = SplitMix64(seed: 11)
        func mutate(_ b: [UInt8]) -> [UInt8] {
            var b = b
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                let i = b.isEmpty ? 0 : Int(rng.next() % UInt64(b.count))
                switch rng.next() % 4 {
                case 0 where !b.isEmpty: b[i] ^= UInt8(1 << (rng.next() % 8))
                case 1 where !b.isEmpty: b[i] = UInt8(truncatingIfNeeded: rng.next())
                case 2: b.insert(UInt8(truncatingIfNeeded: rng.next()), at: i)
                default: if !b.isEmpty { b.remove(at: i) }
                }
            }
            return b
        }
        func user(_ s: [UInt8]) -> [UserStateRecord] { [UserStateRecord(shopID: "s1", userID: "u1", state: s)] }
        var failures = 0
        for k in 0..<4000 {
            let s = states[k % min(states.count, 40)], ss = shaperStates[k % min(shaperStates.count, 40)]
            // A truncated encoding is always an error.
            let cut = Int(rng.next() % UInt64(s.count))
            #expect(throws: CheckpointDecodingError.self) {
                _ = try TriggerEngine.restore(rules: rules, meta: meta, users: user(Array(s[..<cut])), seen: [])
            }
            let shaperCut = Int(rng.next() % UInt64(ss.count))
            #expect(throws: CheckpointDecodingError.self) {
                _ = try Shaper.restore(rules: rules, meta: shaperMeta, users: user(Array(ss[..<shaperCut])))
            }
            // A mutated one decodes to something or is an error, never a crash.
            do {
                switch k % 5 {
                case 0: _ = try TriggerEngine.restore(rules: rules, meta: mutate(meta), users: user(s), seen: seen)
                case 1:
                    let chunk = seen.map { SeenEventsChunk(generationStart: $0.generationStart, hashes: mutate($0.hashes)) }
                    _ = try TriggerEngine.restore(rules: rules, meta: meta, users: [], seen: chunk)
                case 2: _ = try Shaper.restore(rules: rules, meta: mutate(shaperMeta), users: user(ss))
                case 3: _ = try Shaper.restore(rules: rules, meta: shaperMeta, users: user(mutate(ss)))
                default:
                    var restored = try TriggerEngine.restore(rules: rules, meta: meta, users: user(mutate(s)), seen: [])
                    _ = restored.advance(to: events.last!.occurredAt + .days(1))
                }
            } catch {
                failures += 1
            }
        }
        #expect(failures > 100)
        #expect(throws: CheckpointDecodingError.self) { _ = try Shaper.restore(rules: rules, meta: [], users: []) }
        #expect(throws: CheckpointDecodingError.self) { _ = try TriggerEngine.restore(rules: rules, meta: [9], users: [], seen: []) }
    }
}
