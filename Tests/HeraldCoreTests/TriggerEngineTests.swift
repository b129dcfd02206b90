import Testing
@testable import HeraldCore

/// Builds events and runs them through `Replay` (trigger + shaper on event time).
struct Script {
    static let base = Timestamp(rfc3339: "2026-11-25T08:00:00Z")!
    var events: [Event] = []
    var sequence = 0

    /// An event `offset` after 08:00Z (`"90m"`, `"1d2h"`; `""` for 08:00).
    mutating func add(_ name: String, user: String = "u1", shop: String = "s1", at offset: String = "",
                      id: String? = nil, _ fields: KeyValuePairs<String, JSONValue> = [:]) {
        sequence += 1
        let parts = name.split(separator: ".")
        let time = offset.isEmpty ? Self.base : Self.base + TimeSpan(parsing: offset)!
        var body = JSONObject([
            ("event_id", .string(id ?? "e\(sequence)")), ("type", .string(String(parts[1]))), ("shop_id", .string(shop)),
            ("user_id", .string(user)), ("occurred_at", .string(time.rfc3339)),
        ])
        for (k, v) in fields { body[k] = v }
        events.append(try! EventDecoder.decode(Array(JSONValue.object(body).jsonString.utf8), topic: LogicalTopic(rawValue: String(parts[0]))!).get())
    }

    static func at(_ offset: String) -> String { (base + TimeSpan(parsing: offset)!).rfc3339 }
}

/// "rule user status decided_at [reason]" per outcome, and conversions.
func replay(_ yaml: String, _ script: Script, until: Timestamp? = nil) throws -> [String] {
    let rules = try RulesLoader.load(yaml: yaml).get()
    var r = Replay(rules: rules)
    var records: [Replay.Record] = []
    for e in script.events { records += r.process(e) }
    records += r.finish(until: until)
    return records.map { record in
        switch record {
        case .outcome(let o):
            return "\(o.ruleID) \(o.userID) \(o.status.rawValue) \(o.decidedAt.rfc3339)" + (o.reason.map { " \($0)" } ?? "")
        case .conversion(let c):
            return "conversion \(c.ruleID) \(c.userID) \(c.goalEventID) \(c.convertedAt.rfc3339)"
        }
    }
}

let templates = """
templates:
  t: { body: "hi {{ event.type }}" }
  code: { body: "order {{ event.order_id }}" }
  bill: { body: "bill {{ event.bill_id }} due {{ event.due_at | date: 'yyyy-MM-dd' }}" }
  guide: { body: "Hi {{ user.nickname | default: 'there' }}" }

"""

@Suite struct TriggerEngineTests {
    @Test func immediateRule() throws {
        var s = Script()
        s.add("orders.payment_failed")
        s.add("orders.order_paid", at: "1m")
        #expect(try replay(templates + """
        rules:
          - { id: pf, on: orders.payment_failed, notify: { template: t } }
        """, s) == ["pf u1 sent \(Script.at("0s"))"])
    }

    static let cart = templates + """
    rules:
      - id: cart
        on: behavior.cart_add
        where: "event.amount > 0"
        wait: 1h
        cancel_on: [orders.order_created, behavior.checkout_start]
        goal: { event: orders.order_paid, within: 24h }
        notify: { template: t }
    """

    @Test func waitFiresAfterTheDelayUnlessCancelled() throws {
        var s = Script()
        s.add("behavior.cart_add", user: "fires", ["amount": 5])
        s.add("behavior.cart_add", user: "cancelled", ["amount": 5])
        s.add("behavior.checkout_start", user: "cancelled", at: "30m")
        s.add("behavior.cart_add", user: "late-cancel", ["amount": 5])
        s.add("behavior.checkout_start", user: "late-cancel", at: "2h")
        s.add("behavior.cart_add", user: "free", ["amount": 0])
        s.add("behavior.checkout_start", user: "other", at: "3h")
        #expect(try replay(Self.cart, s) == [
            "cart fires sent \(Script.at("1h"))",
            "cart late-cancel sent \(Script.at("1h"))",
        ])
    }

    @Test func cancelAtExactlyTheFireTimeDoesNotCancel() throws {
        var s = Script()
        s.add("behavior.cart_add", ["amount": 5])
        s.add("behavior.checkout_start", at: "1h")
        #expect(try replay(Self.cart, s) == ["cart u1 sent \(Script.at("1h"))"])
    }

    @Test func goalAfterAFiringIsAConversion() throws {
        var s = Script()
        s.add("behavior.cart_add", ["amount": 5])
        s.add("orders.order_paid", at: "30m", id: "too-early")
        s.add("orders.order_paid", at: "3h", id: "paid")
        s.add("orders.order_paid", at: "4h", id: "again")
        #expect(try replay(Self.cart, s) == [
            "cart u1 sent \(Script.at("1h"))",
            "conversion cart u1 paid \(Script.at("3h"))",
        ])
    }

    @Test func cancelMatchedOnAField() throws {
        var s = Script()
        s.add("orders.order_paid", ["order_id": "A"])
        s.add("orders.order_paid", at: "1m", ["order_id": "B"])
        s.add("orders.card_delivered", at: "2m", ["order_id": "A"])
        s.add("orders.card_delivered", at: "20m")  // no order_id: matches nothing
        #expect(try replay(templates + """
        rules:
          - id: late-code
            on: orders.order_paid
            wait: 5m
            cancel_on: { events: [orders.card_delivered], match: [order_id] }
            notify: { template: code }
        """, s) == ["late-code u1 sent \(Script.at("6m"))"])
    }

    static let login = templates + """
    rules:
      - id: risk
        on: behavior.login_failed
        threshold: { count: 3, within: 10m, reset_on: [behavior.login_success] }
        notify: { template: t, priority: urgent }
    """

    @Test func thresholdFiresOnTheNthEventInTheWindowAndStartsAgain() throws {
        var s = Script()
        for m in ["0m", "4m", "9m", "10m", "11m", "12m"] { s.add("behavior.login_failed", user: "a", at: m) }
        for m in ["0m", "11m", "22m"] { s.add("behavior.login_failed", user: "slow", at: m) }
        #expect(try replay(Self.login, s) == [
            "risk a sent \(Script.at("9m"))",
            "risk a sent \(Script.at("12m"))",
        ])
    }

    @Test func thresholdResets() throws {
        var s = Script()
        s.add("behavior.login_failed", at: "0m")
        s.add("behavior.login_failed", at: "1m")
        s.add("behavior.login_success", at: "2m")
        s.add("behavior.login_failed", at: "3m")
        s.add("behavior.login_failed", at: "4m")
        #expect(try replay(Self.login, s) == [])
        s.add("behavior.login_failed", at: "5m")
        #expect(try replay(Self.login, s) == ["risk u1 sent \(Script.at("5m"))"])
    }

    @Test func conditionOnUserFacts() throws {
        var s = Script()
        s.add("orders.order_paid", user: "a")
        s.add("orders.order_paid", user: "a", at: "1h")
        s.add("orders.order_paid", user: "b", at: "2h")
        s.add("behavior.profile_updated", user: "b", at: "3h", ["profile": .object(JSONObject([("nickname", "Bea")]))])
        #expect(try replay(templates + """
        rules:
          - id: first
            on: orders.order_paid
            where: "user.count('orders.order_paid') == 1"
            wait: 24h
            notify: { template: guide }
        """, s) == [
            "first a sent \(Script.at("24h"))",
            "first b sent \(Script.at("26h"))",
        ])
    }

    @Test func idleFiresOncePerQuietPeriod() throws {
        var s = Script()
        s.add("behavior.page_view")
        s.add("orders.order_paid", at: "10d")
        s.add("behavior.page_view", at: "50d")
        s.add("behavior.page_view", user: "other", at: "60d")
        #expect(try replay(templates + """
        rules:
          - { id: winback, on: "*", idle: 30d, notify: { template: t, priority: low } }
        """, s) == [
            "winback u1 sent \(Script.at("40d"))",
            "winback u1 sent \(Script.at("80d"))",
            "winback other sent \(Script.at("90d"))",
        ])
    }

    static let bills = templates + """
    rules:
      - id: repay
        on: orders.bill_created
        at: ["event.due_at - 3d", "event.due_at - 1d", "event.due_at"]
        cancel_on: { events: [orders.bill_paid], match: [bill_id] }
        notify: { template: bill }
    """

    @Test func scheduleFromAnEventField() throws {
        var s = Script()
        s.add("orders.bill_created", user: "a", ["bill_id": "b1", "due_at": .string(Script.at("10d"))])
        s.add("orders.bill_created", user: "b", ["bill_id": "b2", "due_at": .string(Script.at("2d"))])  // -3d already past
        s.add("orders.bill_paid", user: "b", at: "1d12h", ["bill_id": "other"])
        s.add("orders.bill_created", user: "c", ["bill_id": "b3", "due_at": .string(Script.at("10d"))])
        s.add("orders.bill_paid", user: "c", at: "8d", ["bill_id": "b3"])
        #expect(try replay(Self.bills, s) == [
            "repay b sent \(Script.at("1d"))",
            "repay b sent \(Script.at("2d"))",
            "repay a sent \(Script.at("7d"))",
            "repay c sent \(Script.at("7d"))",
            "repay a sent \(Script.at("9d"))",
            "repay a sent \(Script.at("10d"))",
        ])
    }

    @Test func aScheduleFromABadTimestampFails() throws {
        var s = Script()
        s.add("orders.bill_created", ["bill_id": "b1", "due_at": "next week"])
        s.add("orders.bill_created", ["bill_id": "b2"])
        #expect(try replay(Self.bills, s) == [
            "repay u1 failed \(Script.at("0s")) expression_error:'next week' is not an RFC 3339 timestamp",
            "repay u1 failed \(Script.at("0s")) expression_error:'next week' is not an RFC 3339 timestamp",
            "repay u1 failed \(Script.at("0s")) expression_error:'next week' is not an RFC 3339 timestamp",
            "repay u1 failed \(Script.at("0s")) expression_error:at[0] has no timestamp value for this event",
            "repay u1 failed \(Script.at("0s")) expression_error:at[1] has no timestamp value for this event",
            "repay u1 failed \(Script.at("0s")) expression_error:at[2] has no timestamp value for this event",
        ])
    }

    @Test func keywordClassificationOnChineseText() throws {
        var s = Script()
        s.add("behavior.support_message", user: "a", ["text": "充值未到账，请帮忙"])
        s.add("behavior.support_message", user: "b", ["text": "谢谢"])
        s.add("behavior.support_message", user: "c", ["text": "Card NOT RECEIVED"])
        s.add("behavior.support_message", user: "d", ["text": "card not received yet"])
        #expect(try replay(templates + """
        rules:
          - id: nr
            on: behavior.support_message
            where: "event.text contains_any ['未到账', '没收到', 'not received']"
            notify: { template: t, priority: high, escalate: true }
        """, s) == ["nr a sent \(Script.at("0s"))", "nr d sent \(Script.at("0s"))"])
    }

    static let margin = templates + """
    rules:
      - id: margin
        on: orders.margin_low
        notify: { template: t, priority: urgent }
        repeat: { every: 5m, times: 2 }
        cancel_on: [orders.margin_topped_up]
    """

    @Test func repeatUntilTheUserActs() throws {
        var s = Script()
        s.add("orders.margin_low", user: "ignores", id: "m1")
        s.add("orders.margin_low", user: "acts", id: "m2")
        s.add("orders.margin_topped_up", user: "acts", at: "7m")
        let rules = try RulesLoader.load(yaml: Self.margin).get()
        var r = Replay(rules: rules)
        var outcomes: [Outcome] = []
        for e in s.events { outcomes += r.process(e).compactMap { if case .outcome(let o) = $0 { return o } else { return nil } } }
        outcomes += r.finish().compactMap { if case .outcome(let o) = $0 { return o } else { return nil } }
        #expect(outcomes.map { "\($0.userID) \($0.decidedAt.rfc3339)" } == [
            "ignores \(Script.at("0s"))", "acts \(Script.at("0s"))", "ignores \(Script.at("5m"))",
            "acts \(Script.at("5m"))", "ignores \(Script.at("10m"))",
        ])
        // One chain: ordinals 0, 1, 2 of the same trigger event.
        #expect(outcomes.filter { $0.userID == "ignores" }.map(\.notificationID) == (0...2).map {
            Candidate.notificationID(ruleID: "margin", shopID: "s1", userID: "ignores", triggerEventID: "m1",
                                     eventTime: Timestamp(rfc3339: Script.at("0s"))!, ordinal: $0)
        })
    }

    @Test func repeatedEventIDsAreIgnored() throws {
        var s = Script()
        s.add("behavior.login_failed", id: "same")
        s.add("behavior.login_failed", at: "1m", id: "same")
        s.add("behavior.login_failed", at: "2m", id: "same")
        #expect(try replay(Self.login, s) == [])
        var other = Script()
        other.add("behavior.login_failed", shop: "s1", id: "x")
        other.add("behavior.login_failed", shop: "s2", id: "x")  // another shop's user: separate state
        #expect(try replay(Self.login, other) == [])
    }

    @Test func shopsLimitARule() throws {
        var s = Script()
        s.add("orders.payment_failed", shop: "s1")
        s.add("orders.payment_failed", shop: "s2", at: "1m")
        #expect(try replay(templates + """
        rules:
          - { id: pf, on: orders.payment_failed, shops: [s2], notify: { template: t } }
        """, s) == ["pf u1 sent \(Script.at("1m"))"])
    }

    @Test func untilStopsTheClock() throws {
        var s = Script()
        s.add("behavior.cart_add", ["amount": 5])
        #expect(try replay(Self.cart, s, until: Timestamp(rfc3339: Script.at("30m"))) == [])
        #expect(try replay(Self.cart, s, until: Timestamp(rfc3339: Script.at("1h"))) == ["cart u1 sent \(Script.at("1h"))"])
    }

    /// Users split across partition engines, each advanced by its own events, give the same
    /// outcomes as one engine over everything (time-ordered input).
    @Test(arguments: [1, 2, 3, 7])
    func partitioningDoesNotChangeOutcomes(partitions: Int) throws {
        let rules = try RulesLoader.load(yaml: Self.cart).get()
        var rng = SplitMix64(seed: UInt64(partitions))
        var s = Script()
        var minute = 0
        for _ in 0..<2000 {
            minute += Int(rng.next() % 3)
            let user = "u\(rng.next() % 40)"
            let kinds = ["behavior.cart_add", "behavior.checkout_start", "orders.order_paid", "behavior.page_view"]
            s.add(kinds[Int(rng.next() % 4)], user: user, at: "\(minute)m", ["amount": .int(Int64(rng.next() % 3))])
        }
        func run(_ n: Int) -> Set<String> {
            var engines = (0..<n).map { _ in TriggerEngine(rules: rules) }
            var ids = Set<String>()
            for e in s.events {
                let p = Int(StableID.hash64([e.userID]) % UInt64(n))
                for o in engines[p].advance(to: e.occurredAt) + engines[p].process(e) {
                    if case .candidate(let c) = o { ids.insert("\(c.id) \(c.firedAt)") }
                }
            }
            for p in 0..<n {
                while let due = engines[p].nextDue {
                    for o in engines[p].advance(to: due) { if case .candidate(let c) = o { ids.insert("\(c.id) \(c.firedAt)") } }
                }
            }
            return ids
        }
        let single = run(1)
        #expect(single.count > 20)
        #expect(run(partitions) == single)
    }
}


/// Live, a partition's clock is the slower of its two input topics, so events of one topic
/// can be processed before timers that were due earlier have fired. The outcomes must be
/// those of strict event-time order.
@Suite struct LaggingClockTests {
    func run(_ yaml: String, _ script: Script, advanceBeforeEvents: Bool) throws -> [String] {
        let rules = try RulesLoader.load(yaml: yaml).get()
        var engine = TriggerEngine(rules: rules)
        var out: [TriggerOutput] = []
        for e in script.events {
            if advanceBeforeEvents { engine.advance(to: e.occurredAt, into: &out) }
            engine.process(e, into: &out)
        }
        while let due = engine.nextDue { engine.advance(to: due, into: &out) }
        return out.map {
            switch $0 {
            case .candidate(let c): return "\(c.ruleID) \(c.userID) \(c.firedAt.rfc3339) \(c.triggerEventIDs[0])"
            case .conversion(let c): return "conversion \(c.ruleID) \(c.goalEventID)"
            }
        }.sorted()
    }

    @Test func aGoalEventBeforeTheLateFiringStillConverts() throws {
        var s = Script()
        s.add("behavior.cart_add", ["amount": 5])
        s.add("orders.order_paid", at: "2h", id: "paid")
        let strict = try run(TriggerEngineTests.cart, s, advanceBeforeEvents: true)
        #expect(strict == ["cart u1 \(Script.at("1h")) e1", "conversion cart paid"])
        #expect(try run(TriggerEngineTests.cart, s, advanceBeforeEvents: false) == strict)
    }

    /// The faster input (orders) is read to its end before the slower one (behavior):
    /// the cancelling order arrives before the cart it cancels.
    @Test func aCancelReadBeforeItsTriggerStillCancels() throws {
        var s = Script()
        s.add("orders.order_created", user: "a", at: "20m")
        s.add("orders.order_paid", user: "b", at: "3h", id: "paid-b")
        s.add("behavior.cart_add", user: "a", at: "0m", ["amount": 5])
        s.add("behavior.cart_add", user: "b", at: "0m", ["amount": 5])
        s.add("behavior.page_view", user: "c", at: "5h")
        let rules = try RulesLoader.load(yaml: TriggerEngineTests.cart).get()
        var engine = TriggerEngine(rules: rules)
        var out: [TriggerOutput] = []
        // The partition's clock is the slower input's newest event time.
        engine.process(s.events[0], into: &out)
        engine.process(s.events[1], into: &out)
        for e in s.events[2...] {
            engine.advance(to: e.occurredAt, into: &out)
            engine.process(e, into: &out)
        }
        let strict = try run(TriggerEngineTests.cart, { var x = Script(); x.events = s.events.sorted { $0.occurredAt < $1.occurredAt }; return x }(),
                             advanceBeforeEvents: true)
        #expect(strict == ["cart b \(Script.at("1h")) e4", "conversion cart paid-b"])
        #expect(out.map {
            switch $0 {
            case .candidate(let c): return "\(c.ruleID) \(c.userID) \(c.firedAt.rfc3339) \(c.triggerEventIDs[0])"
            case .conversion(let c): return "conversion \(c.ruleID) \(c.goalEventID)"
            }
        }.sorted() == strict)
    }

    @Test func idleTimersOfLaggingEventsMatchStrictOrder() throws {
        let yaml = templates + """
        rules:
          - { id: idle, on: "*", idle: 1h, notify: { template: t } }
        """
        var s = Script()
        s.add("behavior.page_view", at: "0m")
        s.add("orders.order_paid", at: "2h")       // the 0m period ended at 1h
        s.add("behavior.page_view", at: "30m")     // lagging: ends nothing, starts nothing newer
        s.add("behavior.page_view", at: "2h30m")
        let strictOrder = [s.events[0], s.events[2], s.events[1], s.events[3]]
        var sorted = Script()
        sorted.events = strictOrder
        let strict = try run(yaml, sorted, advanceBeforeEvents: true)
        #expect(strict == ["idle u1 \(Script.at("1h30m")) e3", "idle u1 \(Script.at("3h30m")) e4"])
        #expect(try run(yaml, s, advanceBeforeEvents: false) == strict)
    }
}
