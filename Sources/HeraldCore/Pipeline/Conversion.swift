/// A goal event within a rule's goal window after one of its firings (SPEC §3 `goal`).
public struct Conversion: Sendable, Equatable {
    public var notificationID: String
    public var ruleID: String
    public var shopID: String
    public var userID: String
    /// Filled in by herald-shaper, which assigns variants.
    public var variant: String?
    public var goalEventID: String
    public var convertedAt: Timestamp

    public init(notificationID: String, ruleID: String, shopID: String, userID: String, variant: String?,
                goalEventID: String, convertedAt: Timestamp) {
        self.notificationID = notificationID
        self.ruleID = ruleID
        self.shopID = shopID
        self.userID = userID
        self.variant = variant
        self.goalEventID = goalEventID
        self.convertedAt = convertedAt
    }

    public var json: [UInt8] {
        var w = JSONWriter()
        w.beginObject()
        w.key("kind"); w.string("conversion")
        w.key("notification_id"); w.string(notificationID)
        w.key("rule_id"); w.string(ruleID)
        w.key("shop_id"); w.string(shopID)
        w.key("user_id"); w.string(userID)
        w.key("variant"); w.optionalString(variant)
        w.key("goal_event_id"); w.string(goalEventID)
        w.key("converted_at"); w.string(convertedAt.rfc3339)
        w.endObject()
        return w.bytes
    }

    public init(json bytes: [UInt8]) throws(MessageDecodingError) {
        let r = try ObjectReader(bytes, kind: "conversion")
        self.init(notificationID: try r.string("notification_id"), ruleID: try r.string("rule_id"),
                  shopID: try r.string("shop_id"), userID: try r.string("user_id"), variant: try r.optionalString("variant"),
                  goalEventID: try r.string("goal_event_id"), convertedAt: try r.timestamp("converted_at"))
    }

    /// The `kind` of a message between stages, without decoding the rest.
    public static func kind(of bytes: [UInt8]) -> String? {
        // `kind` is always the first member of Herald's own messages.
        let prefix = Array(#"{"kind":""#.utf8)
        guard bytes.count > prefix.count, bytes.starts(with: prefix) else { return nil }
        guard let end = bytes[prefix.count...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
        return String(decoding: bytes[prefix.count..<end], as: UTF8.self)
    }
}
