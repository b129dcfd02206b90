import Foundation
import HeraldCore

/// The trigger's logic alone, without Kafka: parsing, rule evaluation with the SPEC §3
/// rules file, and the state it keeps per user (issue 3's targets).
public struct TriggerLogicBenchmark {
    public struct Result: Sendable {
        public var events: Int
        public var users: Int
        public var usersWithState: Int
        public var averageBytes: Int
        public var parseEPS: Double
        public var triggerEPS: Double
        public var parseAndTriggerEPS: Double
        public var candidateShare: Double
        public var stateBytesPerUser: Double
    }

    public let rules: RuleSet
    public let events: Int
    public let users: Int

    public init(rules: RuleSet, events: Int, users: Int) {
        self.rules = rules
        self.events = events
        self.users = users
    }

    /// A card-delivery shop's mix: mostly browsing and sign-ins, a few orders, payments,
    /// deliveries and support messages.
    static let mix: [(LogicalTopic, String, Int)] = [
        (.behavior, "page_view", 50), (.behavior, "login_success", 12), (.behavior, "cart_add", 6),
        (.behavior, "checkout_start", 4), (.orders, "order_created", 4), (.orders, "order_paid", 4),
        (.orders, "card_delivered", 4), (.behavior, "login_failed", 4), (.orders, "payment_failed", 1),
        (.behavior, "support_message", 1), (.orders, "shipped", 1), (.behavior, "profile_updated", 1),
    ]

    func generate() -> [(LogicalTopic, [UInt8])] { Self.generate(events: events, users: users) }

    /// `events` events of a card-delivery shop over the last `events` × 100 µs, time-ordered.
    public static func generate(events: Int, users: Int) -> [(LogicalTopic, [UInt8])] {
        var rng = SplitMix64(seed: 1)
        let total = Self.mix.reduce(0) { $0 + $1.2 }
        var out: [(LogicalTopic, [UInt8])] = []
        out.reserveCapacity(events)
        var t = Timestamp.now - TimeSpan(microseconds: Int64(events) * 100)
        var lastOrder = [Int: String]()
        for i in 0..<events {
            var pick = Int(rng.next() % UInt64(total))
            var chosen = Self.mix[0]
            for m in Self.mix {
                if pick < m.2 { chosen = m; break }
                pick -= m.2
            }
            let (topic, type) = (chosen.0, chosen.1)
            let u = Int(rng.next() % UInt64(users))
            t = t + TimeSpan(microseconds: 100)
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
            let json = #"{"event_id":"e\#(i)","type":"\#(type)","shop_id":"s\#(u % 3)","user_id":"u\#(u)","occurred_at":"\#(t.rfc3339)"\#(extra)}"#
            out.append((topic, Array(json.utf8)))
        }
        return out
    }

    public func run() throws -> Result {
        let raw = generate()
        let averageBytes = raw.reduce(0) { $0 + $1.1.count } / max(raw.count, 1)

        // Parsing alone.
        var parsed: [Event] = []
        parsed.reserveCapacity(raw.count)
        let parseSeconds = try measure {
            for (topic, bytes) in raw { parsed.append(try EventDecoder.decode(bytes, topic: topic).get()) }
        }

        // Rule evaluation alone on parsed events, as one partition's engine (event-time clock).
        let before = ProcessMemory.residentBytes()
        var engine = TriggerEngine(rules: rules)
        var out: [TriggerOutput] = []
        var candidates = 0
        let triggerSeconds = measure {
            for e in parsed {
                out.removeAll(keepingCapacity: true)
                engine.advance(to: e.occurredAt, into: &out)
                engine.process(e, into: &out)
                candidates += out.count
            }
        }
        let stateBytes = Double(ProcessMemory.residentBytes() - before)
        let usersWithState = engine.userCount
        parsed = []

        // Parsing and rule evaluation together, as the worker does.
        var fresh = TriggerEngine(rules: rules)
        let bothSeconds = try measure {
            for (topic, bytes) in raw {
                out.removeAll(keepingCapacity: true)
                let e = try EventDecoder.decode(bytes, topic: topic).get()
                fresh.advance(to: e.occurredAt, into: &out)
                fresh.process(e, into: &out)
            }
        }
        withExtendedLifetime(engine) {}
        return Result(
            events: events, users: users, usersWithState: usersWithState, averageBytes: averageBytes,
            parseEPS: Double(events) / parseSeconds, triggerEPS: Double(events) / triggerSeconds,
            parseAndTriggerEPS: Double(events) / bothSeconds, candidateShare: Double(candidates) / Double(events),
            stateBytesPerUser: stateBytes / Double(max(usersWithState, 1)))
    }

    func measure(_ body: () throws -> Void) rethrows -> Double {
        let start = ContinuousClock.now
        try body()
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

}
