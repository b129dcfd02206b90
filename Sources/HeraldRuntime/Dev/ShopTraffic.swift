import HeraldCore

/// Deterministic traffic of a card-delivery shop, for `herald dev` and tests.
public struct ShopTraffic {
    public struct Message: Sendable {
        public var topic: LogicalTopic
        public var key: String
        public var value: [UInt8]
    }

    private var rng: SplitMix64
    private let users: Int
    private let shops: [String]
    private var clock: Timestamp
    private var sequence = 0

    public init(users: Int, shops: [String] = ["s1", "s2", "s42"], seed: UInt64 = 42,
                start: Timestamp = Timestamp(rfc3339: "2026-11-25T08:00:00Z")!) {
        self.rng = SplitMix64(seed: seed)
        self.users = users
        self.shops = shops
        self.clock = start
    }

    /// Event types and their weights.
    static let mix: [(LogicalTopic, String, Int)] = [
        (.behavior, "page_view", 30), (.behavior, "cart_add", 12), (.behavior, "checkout_start", 6),
        (.orders, "order_created", 6), (.orders, "order_paid", 6), (.orders, "payment_failed", 3),
        (.orders, "card_delivered", 5), (.behavior, "login_success", 10), (.behavior, "login_failed", 4),
        (.behavior, "support_message", 3), (.orders, "shipped", 2), (.orders, "delivered", 2),
        (.orders, "bill_created", 1), (.behavior, "profile_updated", 2),
    ]
    static let totalWeight = mix.reduce(0) { $0 + $1.2 }
    static let supportTexts = ["我的卡密没收到", "充值未到账，请帮忙查看", "card not received after payment", "How do I redeem?", "谢谢"]

    public mutating func next() -> Message {
        var pick = Int(rng.next() % UInt64(Self.totalWeight))
        var chosen = Self.mix[0]
        for m in Self.mix {
            if pick < m.2 { chosen = m; break }
            pick -= m.2
        }
        return make(chosen.0, chosen.1)
    }

    /// One event of the given type for a random user.
    public mutating func make(_ topic: LogicalTopic, _ type: String, user: Int? = nil) -> Message {
        sequence += 1
        clock = clock + TimeSpan(microseconds: Int64(rng.next() % 2_000_000))
        let u = user ?? Int(rng.next() % UInt64(users))
        let userID = "u\(u)"
        let shop = shops[u % shops.count]
        let order = "o\(rng.next() % 1_000_000)"
        var fields: [(String, JSONValue)] = [
            ("event_id", .string("e\(sequence)-\(rng.next() % 1_000_000_000)")), ("type", .string(type)),
            ("shop_id", .string(shop)), ("user_id", .string(userID)), ("occurred_at", .string(clock.rfc3339)),
        ]
        switch type {
        case "cart_add": fields += [("sku", .string("sku-\(rng.next() % 50)")), ("amount", .int(Int64(1 + rng.next() % 200)))]
        case "order_created", "order_paid", "payment_failed":
            fields += [("order_id", .string(order)), ("amount", .double(Double(rng.next() % 20000) / 100))]
        case "card_delivered":
            fields += [("order_id", .string(order)), ("card_code", .string("CARD\(rng.next() % 100_000_000)XYZW"))]
        case "support_message":
            fields += [("text", .string(Self.supportTexts[Int(rng.next() % UInt64(Self.supportTexts.count))]))]
        case "shipped", "delivered": fields += [("order_id", .string(order)), ("status", .string(type))]
        case "bill_created": fields += [("bill_id", .string("b\(order)")), ("due_at", .string((clock + .days(7)).rfc3339))]
        case "profile_updated":
            fields += [("profile", .object(JSONObject([("nickname", .string("小\(u)")), ("timezone", .string("Asia/Shanghai"))])))]
        case "login_failed", "login_success": fields += [("ip", .string("10.0.\(u % 250).\(rng.next() % 250)"))]
        default: fields += [("page", .string("/item/\(rng.next() % 100)"))]
        }
        return Message(topic: topic, key: userID, value: JSONValue.object(JSONObject(fields)).jsonString.utf8.map { $0 })
    }

    /// A message that is not a valid event, of one of several kinds; `kind` cycles through them.
    public static func malformed(_ kind: Int) -> [UInt8] {
        switch kind % 8 {
        case 0: return Array("not json at all".utf8)
        case 1: return Array("[1, 2, 3]".utf8)
        case 2: return Array(#"{"event_id":"x","type":"payment_failed","shop_id":"s1","occurred_at":"2026-11-25T08:00:00Z"}"#.utf8)
        case 3: return Array(#"{"event_id":7,"type":"payment_failed","shop_id":"s1","user_id":"u1","occurred_at":"2026-11-25T08:00:00Z"}"#.utf8)
        case 4: return Array(#"{"event_id":"x","type":"payment_failed","shop_id":"s1","user_id":"u1","occurred_at":"yesterday"}"#.utf8)
        case 5: return [0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x3A, 0x31, 0x7D]  // invalid UTF-8
        case 6: return Array(#"{"event_id":"x","event_id":"y"}"#.utf8)
        default: return Array(#"{"event_id":"x","type":"payment_failed""#.utf8)  // truncated
        }
    }
}
