import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import HeraldRuntime
import Logging
import Testing

/// SPEC §6 through the live pipeline: separate trigger, shaper and sink processes, Kafka
/// between them, the decisions in PostgreSQL.
@Suite(.serialized) struct ShapingEndToEndTests {
    let logger = Logger(label: "shaping-e2e")

    static func hhmm(_ minutes: Int) -> String {
        let m = (minutes % 1440 + 1440) % 1440
        return String(format: "%02d:%02d", m / 60, m % 60)
    }

    static func rules(nowMinute: Int) -> String {
        """
        version: 1
        defaults: { timezone: UTC, channels: [in_app] }
        templates:
          refund_notice: { body: "Payment for order {{ event.order_id }} failed." }
          ticket_ack: { body: "We got your message." }
          logistics_update: { body: "{{ event.status }}" }
          logistics_digest: { body: "{{ items | count }} updates: {{ items | map: 'event.status' | join: ', ' }}" }
        rules:
          - id: payment-failed
            on: orders.payment_failed
            notify: { template: refund_notice }
            dedupe: { window: 1h }
          - id: not-received
            on: behavior.support_message
            notify: { template: ticket_ack, priority: high, escalate: true, tags: [payment_issue] }
          - id: logistics
            on: [orders.shipped, orders.out_for_delivery, orders.delivered]
            notify: { template: logistics_update }
            merge: { window: 10m, template: logistics_digest }
        policies:
          quiet_hours: { start: "22:00", end: "08:00", bypass: [urgent] }
          frequency_cap: { max: 3, per: 24h, bypass: [urgent, high] }
          shops:
            s-now: { quiet_hours: { start: "\(hhmm(nowMinute - 60))", end: "\(hhmm(nowMinute + 120))" } }
        """
    }

    static func event(_ type: String, user: String, shop: String = "s1", at t: Timestamp, id: String,
                      _ extra: String = "") -> [UInt8] {
        Array(#"{"event_id":"\#(id)","type":"\#(type)","shop_id":"\#(shop)","user_id":"\#(user)","occurred_at":"\#(t.rfc3339)"\#(extra)}"#.utf8)
    }

    @Test func suppressedMergedDeferredAndEscalatedRowsLandInPostgreSQL() throws {
        let now = Timestamp.now
        let nowMinute = Int((now.microseconds / 60_000_000) % 1440)
        // 13:00 UTC three days ago: out of quiet hours; its night is long over.
        let day = (now - .days(3)).microseconds / 86_400_000_000 * 86_400_000_000
        let noon = Timestamp(microseconds: day) + .hours(13)
        let pipeline = try LocalPipeline(rules: Self.rules(nowMinute: nowMinute), partitions: 2, logger: logger)
        defer { pipeline.stop(keepFiles: ProcessInfo.processInfo.environment["HERALD_KEEP"] != nil) }
        try pipeline.startInfrastructure()
        let producer = try pipeline.producer()
        func send(_ topic: String, _ user: String, _ value: [UInt8]) throws {
            try producer.send(topic: topic, key: Array(user.utf8), value: value)
        }
        for (i, status) in ["shipped", "out_for_delivery", "delivered"].enumerated() {
            try send("orders", "u-merge", Self.event(status, user: "u-merge", at: noon + .minutes(Int64(i) * 3), id: "l\(i)",
                                                     #","status":"\#(status)""#))
        }
        try send("orders", "u-dup", Self.event("payment_failed", user: "u-dup", at: noon, id: "d1", #","order_id":"o1""#))
        try send("orders", "u-dup", Self.event("payment_failed", user: "u-dup", at: noon + .minutes(10), id: "d2", #","order_id":"o2""#))
        try send("behavior", "u-opt", Self.event("preference_updated", user: "u-opt", at: noon - .hours(1), id: "p1",
                                                 #","subscribed":false,"channel":"in_app""#))
        try send("orders", "u-opt", Self.event("payment_failed", user: "u-opt", at: noon, id: "o1", #","order_id":"o3""#))
        try send("orders", "u-night", Self.event("payment_failed", user: "u-night", at: noon + .hours(10), id: "n1",
                                                 #","order_id":"o4""#))
        try send("behavior", "u-esc", Self.event("support_message", user: "u-esc", at: noon, id: "s1", #","text":"not received""#))
        try send("orders", "u-now", Self.event("payment_failed", user: "u-now", shop: "s-now", at: now - .minutes(10), id: "w1",
                                               #","order_id":"o5""#))
        try producer.flush(timeout: .seconds(30))
        try pipeline.startWorkers()

        let conn = try pipeline.connect()
        let s = "\"\(pipeline.schema)\""
        func rows() throws -> [String] {
            try conn.execute("""
                SELECT user_id, rule_id, status, coalesce(reason, '-'), coalesce(merged_into, '-'),
                       coalesce(to_char(due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), '-'),
                       to_char(decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), escalated, coalesce(body, '-'), id
                FROM \(s).notifications ORDER BY user_id, decided_at, status, id
                """).rows.map { $0.map { $0 ?? "?" }.joined(separator: " ") }
        }
        let settled = try pipeline.await(timeout: 120) {
            let r = try rows()
            return r.count == 10 && r.filter { $0.contains(" deferred ") }.count == 1
        }
        let seen = try rows()
        #expect(settled, "\(seen)\n\(pipeline.logs)")
        let digest = StableID.notificationID(eventTime: noon, ["digest", Candidate.notificationID(
            ruleID: "logistics", shopID: "s1", userID: "u-merge", triggerEventID: "l0", eventTime: noon, ordinal: 0)])
        // s-now's quiet hours end 120 minutes after the current minute starts.
        let nowDue = Timestamp(microseconds: now.microseconds / 60_000_000 * 60_000_000) + .minutes(120)
        func stamp(_ t: Timestamp) -> String { String(t.rfc3339.prefix(19)) + "Z" }
        let closed = stamp(noon + .minutes(10))
        #expect(try rows().map { $0.split(separator: " ").dropLast().joined(separator: " ") } == [
            "u-dup payment-failed sent - - - \(stamp(noon)) f Payment for order o1 failed.",
            "u-dup payment-failed suppressed duplicate - - \(stamp(noon + .minutes(10))) f -",
            "u-esc not-received sent - - - \(stamp(noon)) t We got your message.",
            "u-merge logistics merged - \(digest) - \(closed) f -",
            "u-merge logistics merged - \(digest) - \(closed) f -",
            "u-merge logistics merged - \(digest) - \(closed) f -",
            "u-merge logistics sent - - - \(closed) f 3 updates: shipped, out_for_delivery, delivered",
            // Deferred at 23:00, sent when quiet hours ended at 08:00.
            "u-night payment-failed sent - - - \(stamp(noon + .hours(19))) f Payment for order o4 failed.",
            "u-now payment-failed deferred quiet_hours - \(stamp(nowDue)) \(stamp(now - .minutes(10))) f -",
            "u-opt payment-failed suppressed opted_out - - \(stamp(noon)) f -",
        ])
        #expect(try conn.execute("""
            SELECT e.user_id, e.priority, e.status, e.tags FROM \(s).escalations e
            """).rows == [["u-esc", "high", "open", "{payment_issue}"]])

        // An open of the sent notice is recorded against it.
        let sentID = Candidate.notificationID(ruleID: "payment-failed", shopID: "s1", userID: "u-dup", triggerEventID: "d1",
                                              eventTime: noon, ordinal: 0)
        try send("behavior", "u-dup", Self.event("notification_opened", user: "u-dup", at: noon + .hours(1), id: "open1",
                                                 #","notification_id":"\#(sentID)""#))
        try producer.flush(timeout: .seconds(30))
        #expect(try pipeline.await(timeout: 60) {
            try conn.execute("SELECT count(*) FROM \(s).engagements")[0, 0] == "1"
        })
        #expect(try conn.execute("SELECT notification_id, rule_id, kind, event_id FROM \(s).engagements").rows
            == [[sentID, "payment-failed", "opened", "open1"]])
    }
}
