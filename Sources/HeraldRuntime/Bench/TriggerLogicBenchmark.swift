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
        /// The same rates per CPU second of the measuring thread (the machine is shared: wall
        /// time swings with other processes' load, CPU time much less).
        public var parseCPUEPS: Double
        public var triggerCPUEPS: Double
        public var parseAndTriggerCPUEPS: Double
        public var candidateShare: Double
        public var stateBytesPerUser: Double
        /// What the workers' `ProcessMemory.returnFreedMemory()` costs on this process's heap
        /// (both engines' state held, what building them freed still in the allocator), and
        /// the resident memory before and after it.
        public var trimSeconds: Double
        public var residentBeforeTrim: Int
        public var residentAfterTrim: Int
    }

    /// Events handed to the engine at once in the trigger-logic loop.
    static let batch = 256

    public let rules: RuleSet
    public let events: Int
    public let users: Int

    public init(rules: RuleSet, events: Int, users: Int) {
        self.rules = rules
        self.events = events
        self.users = users
    }

    func generate() -> [(LogicalTopic, [UInt8])] { Self.generate(events: events, users: users) }

    /// `events` events of a card-delivery shop over the last `events` × 100 µs, time-ordered.
    public static func generate(events: Int, users: Int) -> [(LogicalTopic, [UInt8])] {
        var traffic = BenchTraffic(users: users)
        var out: [(LogicalTopic, [UInt8])] = []
        out.reserveCapacity(events)
        var t = Timestamp.now - TimeSpan(microseconds: Int64(events) * 100)
        for _ in 0..<events {
            t = t + TimeSpan(microseconds: 100)
            let e = traffic.next(at: t)
            out.append((e.topic, e.value))
        }
        return out
    }

    public func run() throws -> Result {
        let raw = generate()
        let averageBytes = raw.reduce(0) { $0 + $1.1.count } / max(raw.count, 1)

        // Parsing alone.
        var parsed: [Event] = []
        parsed.reserveCapacity(raw.count)
        let (parseSeconds, parseCPU) = try ThreadCPUClock.measure {
            for (topic, bytes) in raw { parsed.append(try EventDecoder.decode(bytes, topic: topic).get()) }
        }

        // Rule evaluation alone on parsed events, as one partition's engine (event-time clock).
        let before = ProcessMemory.residentBytes()
        var engine = TriggerEngine(rules: rules)
        var out: [TriggerOutput] = []
        var candidates = 0
        let (triggerSeconds, triggerCPU) = ThreadCPUClock.measure {
            // In batches, as herald-trigger hands an engine the events it releases together;
            // the events are in time order, so every event of a batch is at or before its
            // last one's time and has the timers due by its own time fired first.
            var start = 0
            while start < parsed.count {
                let end = min(start + Self.batch, parsed.count)
                out.removeAll(keepingCapacity: true)
                engine.process(parsed, start..<end, advancingUpTo: parsed[end - 1].occurredAt, into: &out)
                candidates += out.count
                start = end
            }
        }
        let stateBytes = Double(ProcessMemory.residentBytes() - before)
        let usersWithState = engine.userCount
        parsed = []

        // Parsing and rule evaluation together, as the worker does.
        var fresh = TriggerEngine(rules: rules)
        let (bothSeconds, bothCPU) = try ThreadCPUClock.measure {
            for (topic, bytes) in raw {
                out.removeAll(keepingCapacity: true)
                let e = try EventDecoder.decode(bytes, topic: topic).get()
                fresh.advance(to: e.occurredAt, into: &out)
                fresh.process(e, into: &out)
            }
        }
        let residentBeforeTrim = ProcessMemory.residentBytes()
        let trimStart = ContinuousClock.now
        ProcessMemory.returnFreedMemory()
        let trimSeconds = (ContinuousClock.now - trimStart) / .seconds(1)
        let residentAfterTrim = ProcessMemory.residentBytes()
        withExtendedLifetime((engine, fresh)) {}
        return Result(
            events: events, users: users, usersWithState: usersWithState, averageBytes: averageBytes,
            parseEPS: Double(events) / parseSeconds, triggerEPS: Double(events) / triggerSeconds,
            parseAndTriggerEPS: Double(events) / bothSeconds,
            parseCPUEPS: Double(events) / parseCPU, triggerCPUEPS: Double(events) / triggerCPU,
            parseAndTriggerCPUEPS: Double(events) / bothCPU, candidateShare: Double(candidates) / Double(events),
            stateBytesPerUser: stateBytes / Double(max(usersWithState, 1)), trimSeconds: trimSeconds,
            residentBeforeTrim: residentBeforeTrim, residentAfterTrim: residentAfterTrim)
    }
}
