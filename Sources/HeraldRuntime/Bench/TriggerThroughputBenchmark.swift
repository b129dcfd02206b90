import Foundation
import HeraldCore
import HeraldKafka
import Logging

/// herald-trigger against the consume ceiling, in one run on one `herald broker`:
/// 1. the ceiling: a minimal consumer-group loop (HeraldKafka's `KafkaConsumer`, batches of
///    5,000) reading N events from `orders` and `behavior`;
/// 2. one herald-trigger process draining the same N events with a rules file, timed from
///    its first committed offset to every offset committed.
public struct TriggerThroughputBenchmark {
    public struct Result: Sendable {
        public var events: Int
        public var partitions: Int
        public var consumeSeconds: Double
        public var triggerSeconds: Double
        public var consumeCeilingEPS: Double
        public var triggerEPS: Double
        public var triggerRatio: Double { triggerEPS / consumeCeilingEPS }
    }

    public var events: Int
    public var users: Int
    public var rulesPath: String
    /// Extra environment of the herald-trigger process (`HERALD_KAFKA_PROPERTIES`,
    /// `HERALD_BATCH_SIZE`, …), for trying settings one at a time.
    public var workerEnvironment: [String: String]
    public let logger: Logger

    public init(events: Int, users: Int, rulesPath: String, workerEnvironment: [String: String] = [:], logger: Logger) {
        self.workerEnvironment = workerEnvironment
        self.events = events
        self.users = users
        self.rulesPath = rulesPath
        self.logger = logger
    }

    public func run() throws -> Result {
        let raw = TriggerLogicBenchmark.generate(events: events, users: users)
        let bytes = raw.reduce(0) { $0 + $1.1.count + 64 }
        // The mock keeps ~5 MiB per partition (and topic): aim for at most 2 MiB each.
        var parts = 8
        while bytes / (2 * parts) > 2 << 20 { parts *= 2 }
        let rules = try String(contentsOfFile: rulesPath, encoding: .utf8)
        let pipeline = try LocalPipeline(rules: rules, partitions: parts, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure()
        let topics = TopicNames()

        Console.say("producing \(events) events (\(bytes >> 20) MiB) into \(parts) partitions of orders and behavior …")
        let producer = try pipeline.producer()
        for (topic, value) in raw {
            // Keyed by user id, like a shop's producer; the key is the event's user_id.
            let user = Self.userID(value)
            try producer.send(topic: topic == .orders ? topics.orders : topics.behavior, key: user, value: value)
        }
        try producer.flush(timeout: .seconds(300))
        let inputs = [topics.orders, topics.behavior].flatMap { t in (0..<Int32(parts)).map { TopicPartition(t, $0) } }
        let reader = try KafkaOffsetReader(config: KafkaClientConfig(brokers: pipeline.bootstrapServers),
                                           groupID: TriggerStage.name, logger: logger)
        var ends: [TopicPartition: Int64] = [:]
        for tp in inputs {
            let w = try reader.watermarks(tp, timeout: .seconds(10))
            guard w.low == 0 else {
                throw WorkerError.configuration("\(tp) dropped \(w.low) messages to the broker's retention: invalid run")
            }
            ends[tp] = w.high
        }
        guard ends.values.reduce(0, +) == Int64(events) else {
            throw WorkerError.configuration("the inputs hold \(ends.values.reduce(0, +)) events, not \(events): invalid run")
        }

        // 1. Ceiling.
        Console.say("consume ceiling: a minimal consumer-group loop …")
        let clock = ContinuousClock()
        let consumer = try KafkaConsumer(config: KafkaClientConfig(brokers: pipeline.bootstrapServers),
                                         groupID: "herald-bench-ceiling", topics: [topics.orders, topics.behavior], logger: logger)
        var consumed = 0
        var firstAt: ContinuousClock.Instant?
        var firstCount = 0
        let deadline = clock.now + .seconds(600)
        while consumed < events, clock.now < deadline {
            let batch = try consumer.poll(maxMessages: 5000, timeout: .milliseconds(200))
            if !batch.isEmpty, firstAt == nil {
                firstAt = clock.now
                firstCount = batch.count
            }
            consumed += batch.count
        }
        let consumeEnd = clock.now
        consumer.close()
        guard consumed == events, let firstAt else { throw WorkerError.configuration("the ceiling consumed \(consumed) of \(events)") }
        let consumeSeconds = (consumeEnd - firstAt) / .seconds(1)

        // 2. herald-trigger.
        Console.say("herald-trigger draining \(events) events …")
        let trigger = try pipeline.startWorker("herald-trigger", arguments: ["--metrics-port", "0"],
                                              overrides: workerEnvironment)
        var started: (at: ContinuousClock.Instant, done: Int64)?
        var finished: ContinuousClock.Instant?
        while finished == nil, clock.now < deadline {
            guard trigger.isRunning else { throw WorkerError.configuration("herald-trigger exited:\n\(trigger.log.suffix(4000))") }
            let committed = try reader.committed(inputs, timeout: .seconds(5))
            let done = committed.values.reduce(0, +)
            if done > 0, started == nil { started = (clock.now, done) }
            if inputs.allSatisfy({ committed[$0] == ends[$0] }) { finished = clock.now } else { Thread.sleep(forTimeInterval: 0.05) }
        }
        guard let started, let finished else { throw WorkerError.configuration("herald-trigger did not finish in 600 s") }
        let triggerSeconds = (finished - started.at) / .seconds(1)
        return Result(events: events, partitions: parts, consumeSeconds: consumeSeconds, triggerSeconds: triggerSeconds,
                      consumeCeilingEPS: Double(events - firstCount) / consumeSeconds,
                      triggerEPS: Double(events - Int(started.done)) / triggerSeconds)
    }

    /// The `user_id` of a generated event (they all carry it right after `shop_id`).
    static func userID(_ value: [UInt8]) -> String {
        let text = String(decoding: value, as: UTF8.self)
        guard let r = text.range(of: #""user_id":""#), let end = text[r.upperBound...].firstIndex(of: "\"") else { return "" }
        return String(text[r.upperBound..<end])
    }
}
