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

    public init(rules: RuleSet) {
        trigger = TriggerEngine(rules: rules)
        shaper = Shaper(rules: rules)
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

    /// Advances the clock to the event's time (firing what is due), then applies the event.
    public mutating func process(_ event: Event) -> [Record] {
        var outputs: [TriggerOutput] = []
        let now = max(trigger.clock ?? event.occurredAt, event.occurredAt)
        trigger.advance(to: now, into: &outputs)
        trigger.process(event, into: &outputs)
        return shape(outputs)
    }

    /// After the last event: from timer to timer until none is left, or up to `until`.
    public mutating func finish(until: Timestamp? = nil) -> [Record] {
        var records: [Record] = []
        while let due = trigger.nextDue, until.map({ due <= $0 }) ?? true {
            records += shape(trigger.advance(to: due))
        }
        if let until { records += shape(trigger.advance(to: until)) }
        return records
    }

    private mutating func shape(_ outputs: [TriggerOutput]) -> [Record] {
        var records: [Record] = []
        for output in outputs {
            switch output {
            case .candidate(let c): records += shaper.process(c).map(Record.outcome)
            case .conversion(let c): records.append(.conversion(c))
            }
        }
        return records
    }
}
