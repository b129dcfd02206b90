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
    /// Events queued by a multi-event scenario (a login attack), sent before new picks.
    private var queued: [Message] = []
    /// Stamp events with the current time instead of the simulated clock (`herald loadgen`,
    /// so end-to-end latency means something).
    public var wallClock = false
    /// Extra fields of the fuller mix (card delivery delays); off for `herald dev` and tests.
    public var fullScenarios = false

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
    /// What `herald loadgen` adds for a fuller shop: refunds, logistics, bills paid, sign-ups,
    /// engagement, opt-outs, and credential-stuffing bursts (`attack`).
    public static let fullMix: [(LogicalTopic, String, Int)] = mix + [
        (.orders, "refund_requested", 1), (.orders, "refunded", 1), (.orders, "out_for_delivery", 1),
        (.orders, "bill_paid", 1), (.behavior, "register", 2), (.behavior, "notification_opened", 2),
        (.behavior, "notification_clicked", 1), (.behavior, "preference_updated", 1), (.behavior, "attack", 1),
    ]
    static let totalWeight = mix.reduce(0) { $0 + $1.2 }
    static let supportTexts = ["我的卡密没收到", "充值未到账，请帮忙查看", "card not received after payment", "How do I redeem?", "谢谢"]

    public mutating func next() -> Message {
        next(from: Self.mix, totalWeight: Self.totalWeight)
    }

    /// The next event of the fuller mix, card delivery delays and attacks included.
    public mutating func nextFull() -> Message {
        next(from: Self.fullMix, totalWeight: Self.fullMix.reduce(0) { $0 + $1.2 })
    }

    private mutating func next(from mix: [(LogicalTopic, String, Int)], totalWeight: Int) -> Message {
        if !queued.isEmpty { return queued.removeFirst() }
        var pick = Int(rng.next() % UInt64(totalWeight))
        var chosen = mix[0]
        for m in mix {
            if pick < m.2 { chosen = m; break }
            pick -= m.2
        }
        if chosen.1 == "attack" {
            // Credential stuffing: one account, many failed sign-ins from scattered addresses.
            let victim = Int(rng.next() % UInt64(users))
            for _ in 0..<(5 + Int(rng.next() % 10)) { queued.append(make(.behavior, "login_failed", user: victim)) }
            return queued.removeFirst()
        }
        return make(chosen.0, chosen.1)
    }

    /// One event of the given type for a random user.
    public mutating func make(_ topic: LogicalTopic, _ type: String, user: Int? = nil) -> Message {
        sequence += 1
        clock = clock + TimeSpan(microseconds: Int64(rng.next() % 2_000_000))
        if wallClock { clock = .now }
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
            if fullScenarios {
                // Most codes go out at once; some wait for stock.
                fields.append(("delay_s", .int(rng.next() % 10 == 0 ? Int64(60 + rng.next() % 3600) : 0)))
            }
        case "support_message":
            fields += [("text", .string(Self.supportTexts[Int(rng.next() % UInt64(Self.supportTexts.count))]))]
        case "shipped", "delivered": fields += [("order_id", .string(order)), ("status", .string(type))]
        case "bill_created": fields += [("bill_id", .string("b\(order)")), ("due_at", .string((clock + .days(7)).rfc3339))]
        case "profile_updated":
            fields += [("profile", .object(JSONObject([("nickname", .string("小\(u)")), ("timezone", .string("Asia/Shanghai"))])))]
        case "login_failed", "login_success": fields += [("ip", .string("10.0.\(u % 250).\(rng.next() % 250)"))]
        case "refund_requested", "refunded", "out_for_delivery", "bill_paid":
            fields += [("order_id", .string(order)), ("amount", .double(Double(rng.next() % 20000) / 100))]
        case "register": fields += [("channel", .string(["web", "app", "mini_program"][Int(rng.next() % 3)]))]
        case "notification_opened", "notification_clicked":
            fields += [("notification_id", .string(String(format: "%032llx", rng.next())))]
        case "preference_updated":
            fields += [("subscribed", .bool(rng.next() % 4 != 0)), ("channel", .string(["sms", "email", "in_app"][Int(rng.next() % 3)]))]
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
