import Testing
@testable import HeraldCore

@Suite struct TriggerAndShaperTests {
    static let rules = try! RulesLoader.load(yaml: """
    defaults: { timezone: Asia/Shanghai }
    templates:
      refund_notice:
        title: "Order {{ event.order_id }}"
        body: "Hi {{ user.nickname | default: 'there' }}, payment for {{ event.order_id }} failed."
      code: { body: "Your code: {{ event.card_code | mask }}" }
    rules:
      - id: payment-failed
        on: orders.payment_failed
        notify: { template: refund_notice, priority: high, escalate: true, tags: [billing] }
      - id: code
        on: orders.card_delivered
        shops: [s1]
        notify: { template: code }
    """).get()

    func event(_ type: String, shop: String = "s1", id: String = "e1", extra: String = #","order_id":"o1""#) -> Event {
        let text = #"{"event_id":"\#(id)","type":"\#(type)","shop_id":"\#(shop)","user_id":"u1","occurred_at":"2026-11-25T08:00:00Z"\#(extra)}"#
        return try! EventDecoder.decode(Array(text.utf8), topic: .orders).get()
    }

    @Test func immediateRuleFiresOnceWithADeterministicID() throws {
        var engine = TriggerEngine(rules: Self.rules)
        let candidates = engine.process(event("payment_failed")).compactMap(\.candidate)
        #expect(candidates.count == 1)
        let c = try #require(candidates.first)
        #expect(c.ruleID == "payment-failed")
        let time = Timestamp(rfc3339: "2026-11-25T08:00:00Z")!
        #expect(c.id == Candidate.notificationID(ruleID: "payment-failed", shopID: "s1", userID: "u1", triggerEventID: "e1",
                                                 eventTime: time, ordinal: 0))
        #expect(c.id.count == 32)
        // The id starts with the event time's milliseconds, in hex.
        let ms = String(time.microseconds / 1000, radix: 16)
        #expect(c.id.hasPrefix(String(repeating: "0", count: 12 - ms.count) + ms))
        #expect(c.priority == .high)
        #expect(c.channels == ["in_app"])
        #expect(c.triggerEventIDs == ["e1"])
        #expect(c.firedAt == c.eventTime)
        // Same event again, in another engine: same id.
        var other = TriggerEngine(rules: Self.rules)
        #expect(other.process(event("payment_failed")).compactMap(\.candidate).map(\.id) == [c.id])
        #expect(other.process(event("payment_failed", id: "e2")).compactMap(\.candidate).map(\.id) != [c.id])
    }

    @Test func rulesMatchOnlyTheirEventsAndShops() {
        var engine = TriggerEngine(rules: Self.rules)
        #expect(engine.process(event("order_paid", id: "e1")).compactMap(\.candidate).isEmpty)
        #expect(engine.process(event("card_delivered", shop: "s2", id: "e2", extra: #","card_code":"ABCD1234WXYZ""#)).compactMap(\.candidate).isEmpty)
        #expect(engine.process(event("card_delivered", id: "e3", extra: #","card_code":"ABCD1234WXYZ""#)).compactMap(\.candidate).map(\.ruleID) == ["code"])
    }

    @Test func shaperRendersAndSends() throws {
        var engine = TriggerEngine(rules: Self.rules)
        var shaper = Shaper(rules: Self.rules)
        let c = engine.process(event("payment_failed")).compactMap(\.candidate)[0]
        let outcomes = shaper.process(c)
        #expect(outcomes.count == 1)
        let o = outcomes[0]
        #expect(o.status == .sent)
        #expect(o.reason == nil)
        #expect(o.notificationID == c.id)
        #expect(o.title == "Order o1")
        #expect(o.body == "Hi there, payment for o1 failed.")
        #expect(o.escalated)
        #expect(o.tags == ["billing"])
        #expect(o.decidedAt == c.firedAt)
        #expect(o.rulesVersion == Self.rules.version)
    }

    @Test func missingVariableFails() throws {
        var engine = TriggerEngine(rules: Self.rules)
        var shaper = Shaper(rules: Self.rules)
        let c = engine.process(event("payment_failed", extra: "")).compactMap(\.candidate)[0]
        let o = shaper.process(c)[0]
        #expect(o.status == .failed)
        #expect(o.reason == "missing_variable:event.order_id")
        #expect(o.body == nil)
        #expect(o.escalated == false)
    }

    @Test func messagesRoundTripThroughJSON() throws {
        var engine = TriggerEngine(rules: Self.rules)
        var shaper = Shaper(rules: Self.rules)
        let c = engine.process(event("payment_failed")).compactMap(\.candidate)[0]
        #expect(try Candidate(json: c.json) == c)
        var o = shaper.process(c)[0]
        o.dueAt = Timestamp(rfc3339: "2026-11-26T00:00:00Z")
        o.variant = "B"
        #expect(try Outcome(json: o.json) == o)
        let text = String(decoding: o.json, as: UTF8.self)
        #expect(text.hasPrefix(#"{"kind":"outcome","notification_id":""#))
        #expect(text.contains(#""event_time":"2026-11-25T08:00:00Z""#))
        let letter = DeadLetter(stage: "herald-trigger", reason: "invalid_json", detail: "x", sourceTopic: "orders",
                                sourcePartition: 3, sourceOffset: 99, payload: [0, 1, 255], receivedAt: .init(seconds: 5))
        #expect(try DeadLetter(json: letter.json) == letter)
        #expect(throws: MessageDecodingError("kind is \"outcome\", expected \"candidate\"")) { try Candidate(json: o.json) }
    }

    @Test func deadLettersKeepAtMost64KiB() {
        let letter = DeadLetter(stage: "s", reason: "too_large", detail: "", sourceTopic: "orders", sourcePartition: 0,
                                sourceOffset: 0, payload: [UInt8](repeating: 65, count: 2 << 20), receivedAt: .init(seconds: 0))
        #expect(letter.payload.count == 65_536)
        #expect(letter.payloadSize == 2 << 20)
    }
}

@Suite struct RatePacerTests {
    @Test func pacesToTheRateWithoutBurstCredit() {
        var p = RatePacer(rowsPerSecond: 1000)
        // 500 rows at t=0 wait 0.5 s; the next 500, asked for at t=0.5, another 0.5 s.
        #expect(p.reserve(500, at: 0) == 0.5)
        #expect(p.reserve(500, at: 0.5) == 0.5)
        // After a long idle spell no credit has built up: 1000 rows still take a second.
        #expect(p.reserve(1000, at: 100) == 1.0)
    }
}
