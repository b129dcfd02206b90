/// `herald replay`: the trigger and the shaper over a recorded stream, with the clock
/// driven by event time alone (SPEC §5). The very same `TriggerEngine` and `Shaper` the
/// workers run.
public struct Replay: Sendable {
    public enum Record: Sendable, Equatable {
        case outcome(Outcome)
        case conversion(Conversion)

        public var json: [UInt8] {
            switch self {
            case .outcome(let o): return o.json
            case .conversion(let c): return c.json
            }
        }

        public var isOutcome: Bool {
            if case .outcome = self { return true }
            return false
        }
    }

    public var trigger: TriggerEngine
    public var shaper: Shaper
    /// The file's events back in event-time order, as herald-trigger applies them.
    public internal(set) var order = EventOrder(limit: 200_000)
    private var newest: [Timestamp?] = [nil, nil]

    public init(rules: RuleSet) {
        trigger = TriggerEngine(rules: rules)
        shaper = Shaper(rules: rules)
    }

    /// One line of the input for an event as it was sent to Kafka, newline included.
    public static func line(topic: LogicalTopic, value: [UInt8]) -> [UInt8] {
        Array(#"{"topic":"\#(topic.rawValue)","value":"#.utf8) + value + Array("}\n".utf8)
    }

    /// One line of the input: `{"topic": "orders" | "behavior", "value": {…event…}}`.
    public static func parseLine(_ line: [UInt8]) -> Result<Event, EventRejection> {
        let value: JSONValue
        do {
            value = try JSONParser.parse(line)
        } catch {
            return .failure(EventRejection("invalid_json", error.description))
        }
        guard case .object(let o) = value, let topicName = o["topic"]?.stringValue,
              let topic = LogicalTopic(rawValue: topicName), let event = o["value"] else {
            return .failure(EventRejection("invalid_line", #"expected {"topic": "orders" | "behavior", "value": {…}}"#))
        }
        return EventDecoder.decode(Array(event.jsonString.utf8), topic: topic)
    }

    /// Takes the next event of the file and applies every event both topics have
    /// progressed past, in event-time order (`EventOrder`), as herald-trigger does.
    public mutating func process(_ event: Event) -> [Record] {
        let input = EventOrder.input(event.topic)
        newest[input] = max(newest[input] ?? event.occurredAt, event.occurredAt)
        order.add(event, input: input)
        var watermark: Timestamp?
        if let a = newest[0], let b = newest[1] { watermark = min(a, b) }
        var records: [Record] = []
        while let next = order.next(upTo: watermark) { records += apply(next.event) }
        return records
    }

    /// Advances the clock to the event's time (firing what is due), then applies the event.
    private mutating func apply(_ event: Event) -> [Record] {
        // A preference counts for candidates decided at or after its time, including the
        // timers due right now (the shaper orders changes by event time).
        shaper.apply(preference: event)
        var outputs: [TriggerOutput] = []
        let now = max(trigger.clock ?? event.occurredAt, event.occurredAt)
        trigger.advance(to: now, into: &outputs)
        var records = shape(outputs)
        outputs.removeAll()
        trigger.process(event, into: &outputs)
        records += shape(outputs)
        records += shaper.advance(to: now).map(Record.outcome)
        return records
    }

    /// After the last event: the events still held, then from timer to timer until none is
    /// left, or up to `until`.
    public mutating func finish(until: Timestamp? = nil) -> [Record] {
        var records: [Record] = []
        for held in order.drain() { records += apply(held.event) }
        while let due = [trigger.nextDue, shaper.nextDue].compactMap({ $0 }).min(), until.map({ due <= $0 }) ?? true {
            records += shape(trigger.advance(to: due))
            records += shaper.advance(to: due).map(Record.outcome)
        }
        if let until {
            records += shape(trigger.advance(to: until))
            records += shaper.advance(to: until).map(Record.outcome)
        }
        return records
    }

    private mutating func shape(_ outputs: [TriggerOutput]) -> [Record] {
        var records: [Record] = []
        for output in outputs {
            switch output {
            case .candidate(let c): records += shaper.process(c).map(Record.outcome)
            case .conversion(var c):
                c.variant = c.variant ?? shaper.variant(ruleID: c.ruleID, shopID: c.shopID, userID: c.userID)
                records.append(.conversion(c))
            }
        }
        return records
    }
}
