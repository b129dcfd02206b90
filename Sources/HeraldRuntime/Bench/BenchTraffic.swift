import HeraldCore

/// The benchmarks' event generator: a card-delivery shop's mix (mostly browsing and sign-ins,
/// a few orders, payments, deliveries and support messages), ≈250-byte events, one at a time
/// so that live benchmarks can stamp each with the moment it is produced.
public struct BenchTraffic {
    public struct Message: Sendable {
        public var topic: LogicalTopic
        public var type: String
        /// The user id, also the Kafka key (a shop's producer keys by user).
        public var user: String
        public var value: [UInt8]
    }

    static let mix: [(LogicalTopic, String, Int)] = [
        (.behavior, "page_view", 50), (.behavior, "login_success", 12), (.behavior, "cart_add", 6),
        (.behavior, "checkout_start", 4), (.orders, "order_created", 4), (.orders, "order_paid", 4),
        (.orders, "card_delivered", 4), (.behavior, "login_failed", 4), (.orders, "payment_failed", 1),
        (.behavior, "support_message", 1), (.orders, "shipped", 1), (.behavior, "profile_updated", 1),
    ]
    static let totalWeight = mix.reduce(0) { $0 + $1.2 }

    private var rng = SplitMix64(seed: 1)
    private var lastOrder = [Int: String]()
    public let users: Int
    /// Prefix of event ids, so that several runs on one broker never share ids.
    public var idPrefix: String
    /// Events generated so far.
    public private(set) var count = 0

    public init(users: Int, idPrefix: String = "e") {
        self.users = users
        self.idPrefix = idPrefix
    }

    /// The next event of the mix, for a random user, occurring at `time`.
    public mutating func next(at time: Timestamp) -> Message {
        let (topic, type) = pickType()
        let u = Int(rng.next() % UInt64(users))
        return make(topic, type, user: u, at: time)
    }

    /// The next event of the mix for user `u`.
    public mutating func next(user u: Int, at time: Timestamp) -> Message {
        let (topic, type) = pickType()
        return make(topic, type, user: u, at: time)
    }

    private mutating func pickType() -> (LogicalTopic, String) {
        var pick = Int(rng.next() % UInt64(Self.totalWeight))
        var chosen = Self.mix[0]
        for m in Self.mix {
            if pick < m.2 { chosen = m; break }
            pick -= m.2
        }
        return (chosen.0, chosen.1)
    }

    /// One event of `type` for user `u` at `time`.
    public mutating func make(_ topic: LogicalTopic, _ type: String, user u: Int, at time: Timestamp) -> Message {
        let i = count
        count += 1
        var extra: String
        switch type {
        case "cart_add": extra = #","sku":"sku-\#(u % 50)","amount":\#(1 + u % 90)"#
        case "order_created", "order_paid", "payment_failed", "shipped":
            let order = "o\(i)"
            lastOrder[u % 4096] = order
            extra = #","order_id":"\#(order)","amount":12.5"#
        case "card_delivered": extra = #","order_id":"\#(lastOrder[u % 4096] ?? "o0")","card_code":"ABCD1234EFGH5678""#
        case "support_message": extra = u % 3 == 0 ? #","text":"充值未到账""# : #","text":"How do I redeem?""#
        case "profile_updated": extra = #","profile":{"nickname":"u\#(u)","timezone":"Asia/Shanghai"}"#
        default: extra = #","page":"/item/\#(u % 100)""#
        }
        extra += #","ip":"10.0.\#(u % 250).\#(i % 250)","ua":"Mozilla/5.0 (Linux; Android 14)""#
        let json = #"{"event_id":"\#(idPrefix)\#(i)","type":"\#(type)","shop_id":"s\#(u % 3)","user_id":"u\#(u)","occurred_at":"\#(time.rfc3339)"\#(extra)}"#
        return Message(topic: topic, type: type, user: "u\(u)", value: Array(json.utf8))
    }
}
