import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import HeraldRuntime
import Logging
import Testing

/// The rule engine through the live pipeline (separate processes, real Kafka protocol,
/// PostgreSQL) and through `herald replay`.
@Suite(.serialized) struct RuleEngineEndToEndTests {
    let logger = Logger(label: "rules-e2e")

    /// SPEC §3's rules with its policies and experiment (shaping decides on event time, so
    /// live and replay agree on every deferral, cap and duplicate too).
    static let rules = """
    version: 1
    defaults: { timezone: Asia/Shanghai, channels: [in_app] }
    templates:
      cart_reminder: { body: "Hi {{ user.nickname | default: 'there' }}, {{ event.sku }} is still in your cart." }
      refund_notice: { body: "Payment for order {{ event.order_id }} failed." }
      delivery_apology: { body: "Sorry, the code for order {{ event.order_id }} is late." }
      security_alert: { body: "Several sign-ins failed." }
      usage_guide: { body: "Thanks for your first order!" }
      win_back: { body: "We miss you." }
      repayment_reminder: { body: "Bill {{ event.bill_id }} is due {{ event.due_at | date: 'yyyy-MM-dd' }}." }
      ticket_ack: { body: "We got your message: {{ event.text | truncate: 20 }}" }
      cart_reminder_coupon: { body: "{{ event.sku }} is still in your cart: 10% off with CART10." }
    rules:
      - { id: payment-failed, on: orders.payment_failed, notify: { template: refund_notice, priority: high } }
      - id: cart-abandoned
        on: behavior.cart_add
        where: "event.amount > 0"
        wait: 1h
        cancel_on: [orders.order_created, behavior.checkout_start]
        notify: { template: cart_reminder, channels: [in_app, sms] }
        goal: { event: orders.order_paid, within: 24h }
      - id: code-not-delivered
        on: orders.order_paid
        wait: 5m
        cancel_on: { events: [orders.card_delivered], match: [order_id] }
        notify: { template: delivery_apology, priority: high, escalate: true }
      - id: login-risk
        on: behavior.login_failed
        threshold: { count: 3, within: 10m, reset_on: [behavior.login_success] }
        notify: { template: security_alert, priority: urgent }
      - id: first-purchase-guide
        on: orders.order_paid
        where: "user.count('orders.order_paid') == 1"
        wait: 24h
        notify: { template: usage_guide }
      - { id: win-back, on: "*", idle: 30d, notify: { template: win_back, priority: low } }
      - id: repayment
        on: orders.bill_created
        at: ["event.due_at - 3d", "event.due_at - 1d", "event.due_at"]
        cancel_on: { events: [orders.bill_paid], match: [bill_id] }
        notify: { template: repayment_reminder }
      - id: not-received
        on: behavior.support_message
        where: "event.text contains_any ['未到账', '没收到', 'not received']"
        notify: { template: ticket_ack, priority: high, escalate: true }
    policies:
      quiet_hours: { start: "22:00", end: "08:00", bypass: [urgent] }
      frequency_cap: { max: 3, per: 24h, bypass: [urgent, high] }
      dedupe: { window: 1h }
      shops:
        s1: { quiet_hours: { start: "23:00", end: "07:00" }, frequency_cap: { max: 5, per: 24h } }
    experiments:
      - rule: cart-abandoned
        variants:
          A: { template: cart_reminder, weight: 50 }
          B: { template: cart_reminder_coupon, weight: 50 }
    """

    /// Time-ordered traffic that starts 60 days ago, so every timer it sets is due long before now.
    static func traffic(count: Int, users: Int) -> [ShopTraffic.Message] {
        var t = ShopTraffic(users: users, seed: 11, start: .now - .days(60))
        var rng = SplitMix64(seed: 5)
        var out: [ShopTraffic.Message] = []
        for _ in 0..<count {
            // Mostly the shop's usual mix, with card deliveries and repeated logins failures
            // for the same users so that cancels and thresholds happen.
            switch rng.next() % 10 {
            case 0: out.append(t.make(.behavior, "login_failed", user: Int(rng.next() % 20)))
            default: out.append(t.next())
            }
        }
        return out
    }

    @Test func livePipelineAndReplayGiveTheSameNotifications() throws {
        let messages = Self.traffic(count: 12_000, users: 400)
        let pipeline = try LocalPipeline(rules: Self.rules, partitions: 4, logger: logger)
        defer { pipeline.stop(keepFiles: ProcessInfo.processInfo.environment["HERALD_KEEP"] != nil) }
        try pipeline.startInfrastructure()

        // Everything is in Kafka before the workers start: each partition is read in order.
        let producer = try pipeline.producer()
        for m in messages { try producer.send(topic: m.topic.rawValue, key: m.key, value: m.value) }
        try producer.flush(timeout: .seconds(60))

        // Replay, with the clock stopped where the live pipeline's is (now, less the grace).
        let replay = try ReplayRows.expected(messages, pipeline: pipeline, until: .now - .minutes(1))
        let expected = replay.notifications
        let expectedConversions = replay.conversions
        let byRule = Dictionary(grouping: expected.values, by: { $0.split(separator: " ")[0] }).mapValues(\.count)
        // The workload exercises every rule.
        for rule in ["payment-failed", "cart-abandoned", "code-not-delivered", "login-risk", "first-purchase-guide",
                     "win-back", "repayment", "not-received"] {
            #expect((byRule[Substring(rule)] ?? 0) > 0, "no outcome of \(rule): \(byRule)")
        }
        #expect(!expectedConversions.isEmpty)
        // …and the shaping policies.
        for reason in ["duplicate", "frequency_cap"] {
            #expect(expected.values.contains { $0.contains(" \(reason) ") }, "no \(reason)")
        }
        #expect(expected.values.contains { $0.contains(" - A ") } && expected.values.contains { $0.contains(" - B ") })

        try pipeline.startWorkers()
        let conn = try pipeline.connect()
        let s = "\"\(pipeline.schema)\""
        // Until every row has its final status (deferred ones wake as the shaper's clock passes them).
        let done = try pipeline.await(timeout: 240) { try PipelineRows.read(conn, schema: pipeline.schema) == replay }
        let live = try PipelineRows.read(conn, schema: pipeline.schema)
        #expect(done, "live pipeline did not catch up: \(ReplayRows.differences(expected: replay, live: live))\n\(pipeline.logs)")
        #expect(live.notifications.count == expected.count)
        #expect(ReplayRows.differences(expected: replay, live: live) == "")
        #expect(try conn.execute("SELECT count(*) FROM \(s).dead_letters")[0, 0] == "0")
    }

    static let cartRules = """
    templates:
      cart_reminder: { body: "{{ event.sku }} is still in your cart." }
    rules:
      - id: cart-abandoned
        on: behavior.cart_add
        wait: 1h
        cancel_on: [orders.order_created, behavior.checkout_start]
        notify: { template: cart_reminder }
    """

    func cartAdd(_ user: String, at t: Timestamp, id: String) -> [UInt8] {
        Array(#"{"event_id":"\#(id)","type":"cart_add","shop_id":"s1","user_id":"\#(user)","occurred_at":"\#(t.rfc3339)","sku":"A"}"#.utf8)
    }

    func event(_ type: String, _ user: String, at t: Timestamp, id: String) -> [UInt8] {
        Array(#"{"event_id":"\#(id)","type":"\#(type)","shop_id":"s1","user_id":"\#(user)","occurred_at":"\#(t.rfc3339)"}"#.utf8)
    }

    /// SPEC §5: a timer fires only when the inputs that could cancel it have progressed past
    /// its due time — by their own events, or by being caught up with the wall clock.
    @Test func aBacklogHoldsTimersUntilItIsReadAndIdlePartitionsFireOnTime() throws {
        let pipeline = try LocalPipeline(rules: Self.cartRules, partitions: 1, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure()
        try pipeline.startWorkers()
        let trigger = pipeline.workers[0]
        let producer = try pipeline.producer()
        let conn = try pipeline.connect()
        let s = "\"\(pipeline.schema)\""
        func row(_ user: String) throws -> [String?]? {
            let q = try conn.execute("SELECT decided_at, created_at FROM \(s).notifications WHERE user_id = $1", [user])
            return q.rowCount == 0 ? nil : q.rows[0]
        }

        // Idle partitions: the reminder goes out at its due time, once the wall clock
        // (less the grace period) has passed it.
        let due = Timestamp.now + .seconds(3)
        try producer.send(topic: "behavior", key: "idle-user", value: cartAdd("idle-user", at: due - .hours(1), id: "c-idle"))
        try producer.flush(timeout: .seconds(30))
        #expect(try pipeline.await(timeout: 90) { try row("idle-user") != nil }, "\(pipeline.logs)")
        let timing = try conn.execute("""
            SELECT decided_at = $1::timestamptz, created_at >= $1::timestamptz, created_at < $1::timestamptz + interval '60 seconds'
            FROM \(s).notifications WHERE user_id = 'idle-user'
            """, [due.rfc3339])
        #expect(timing.rows == [["t", "t", "t"]])

        // A backlog: the trigger is down while a cart (due an hour ago), a burst of traffic
        // and the checkout that cancels the cart pile up.
        #expect(trigger.stop() == 0)
        let t1 = Timestamp.now - .hours(2)
        try producer.send(topic: "behavior", key: "busy-user", value: cartAdd("busy-user", at: t1, id: "c-busy"))
        try producer.send(topic: "behavior", key: "control", value: cartAdd("control", at: t1 + .seconds(1), id: "c-control"))
        for i in 0..<20_000 {
            let at = t1 + .seconds(1) + TimeSpan(microseconds: Int64(i) * 90_000)
            try producer.send(topic: "behavior", key: "burst\(i % 500)", value: event("page_view", "burst\(i % 500)", at: at, id: "b\(i)"))
        }
        try producer.send(topic: "behavior", key: "busy-user", value: event("checkout_start", "busy-user", at: t1 + .minutes(30), id: "k-busy"))
        try producer.flush(timeout: .seconds(60))
        try pipeline.startWorker("herald-trigger")

        // The control cart (due a second after the busy one, never cancelled) fires once the
        // backlog is read; by then the busy cart's checkout has cancelled it.
        #expect(try pipeline.await(timeout: 120) { try row("control") != nil }, "\(pipeline.logs)")
        #expect(try row("busy-user") == nil)
    }
}
