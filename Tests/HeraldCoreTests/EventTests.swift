import Testing
@testable import HeraldCore

@Suite struct EventDecoderTests {
    static let valid = #"{"event_id":"e1","type":"payment_failed","shop_id":"s1","user_id":"u1","occurred_at":"2026-11-25T16:00:00+08:00","order_id":"o9","attrs":{"sku":"A"}}"#

    @Test func decodesAValidEvent() throws {
        let event = try EventDecoder.decode(Array(Self.valid.utf8), topic: .orders).get()
        #expect(event.name == "orders.payment_failed")
        #expect(event.eventID == "e1")
        #expect(event.shopID == "s1")
        #expect(event.userID == "u1")
        #expect(event.occurredAt == Timestamp(rfc3339: "2026-11-25T08:00:00Z"))
        #expect(JSONValue.object(event.body)[path: "attrs.sku"] == .string("A"))
    }

    @Test(arguments: [
        ("", "empty"),
        ("nope", "invalid_json"),
        ("[1]", "not_an_object"),
        (#"{"type":"t","shop_id":"s","user_id":"u","occurred_at":"2026-11-25T08:00:00Z"}"#, "missing_field"),
        (#"{"event_id":1,"type":"t","shop_id":"s","user_id":"u","occurred_at":"2026-11-25T08:00:00Z"}"#, "wrong_type"),
        (#"{"event_id":"e","type":"t","shop_id":"s","user_id":"","occurred_at":"2026-11-25T08:00:00Z"}"#, "wrong_type"),
        (#"{"event_id":"e","type":"t","shop_id":"s","user_id":"u"}"#, "missing_field"),
        (#"{"event_id":"e","type":"t","shop_id":"s","user_id":"u","occurred_at":1764057600}"#, "wrong_type"),
        (#"{"event_id":"e","type":"t","shop_id":"s","user_id":"u","occurred_at":"2026-11-25 08:00"}"#, "bad_timestamp"),
        (#"{"event_id":"e","event_id":"f"}"#, "invalid_json"),
    ])
    func rejects(input: String, reason: String) {
        switch EventDecoder.decode(Array(input.utf8), topic: .orders) {
        case .success: Issue.record("accepted \(input)")
        case .failure(let r): #expect(r.reason == reason, "\(r)")
        }
    }

    @Test func rejectsMessagesOverOneMebibyte() {
        let big = [UInt8](repeating: 0x20, count: EventDecoder.maxBytes + 1)
        #expect(throws: EventRejection("too_large", "1048577 bytes, the limit is 1048576")) {
            try EventDecoder.decode(big, topic: .behavior).get()
        }
    }

    @Test func namesTheMissingField() {
        let r = EventDecoder.decode(Array(#"{"event_id":"e","type":"t","user_id":"u","occurred_at":"2026-11-25T08:00:00Z"}"#.utf8), topic: .orders)
        #expect(throws: EventRejection("missing_field", "shop_id is required")) { try r.get() }
    }
}
