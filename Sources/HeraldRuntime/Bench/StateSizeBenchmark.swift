import Foundation
import HeraldCore
import HeraldKafka
import Logging

/// State size on the real worker (issue 8, item 6): one herald-trigger process with the
/// rules file reads one event for each of `users` users (every user then has state: at least
/// `win-back`'s idle timer, `on: "*"`); its resident memory after draining them minus its
/// resident memory idle (joined, assigned, one warm-up event processed), per user.
public struct StateSizeBenchmark {
    public struct Result: Sendable {
        public var users: Int
        public var partitions: Int
        public var idleBytes: Int
        public var fullBytes: Int
        public var peakBytes: Int
        public var seconds: Double
        public var bytesPerUser: Double { Double(fullBytes - idleBytes) / Double(users) }
    }

    public var users: Int
    public var rulesPath: String
    public let logger: Logger

    public init(users: Int, rulesPath: String, logger: Logger) {
        self.users = users
        self.rulesPath = rulesPath
        self.logger = logger
    }

    public func run() throws -> Result {
        let text = try String(contentsOfFile: rulesPath, encoding: .utf8)
        let parts = LiveBench.partitions(forBytes: users * 260 / 2)
        let pipeline = try LocalPipeline(rules: text, partitions: parts, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure()
        let trigger = try pipeline.startWorker("herald-trigger")
        let topics = TopicNames()
        let inputs = [topics.orders, topics.behavior].flatMap { t in (0..<Int32(parts)).map { TopicPartition(t, $0) } }
        let reader = try KafkaOffsetReader(config: KafkaClientConfig(brokers: pipeline.bootstrapServers),
                                           groupID: TriggerStage.name, logger: logger)
        let producer = try pipeline.producer()
        var traffic = BenchTraffic(users: users, idPrefix: "st")
        func send(_ m: BenchTraffic.Message) throws {
            try producer.send(topic: m.topic == .orders ? topics.orders : topics.behavior, key: m.user, value: m.value)
        }
        func committed() throws -> Int64 { try reader.committed(inputs, timeout: .seconds(5)).values.reduce(0, +) }

        // Idle: joined and assigned, one warm-up event (a user outside the measured ones) handled.
        try send(traffic.make(.behavior, "page_view", user: users, at: .now))
        try producer.flush(timeout: .seconds(30))
        guard try pipeline.await(timeout: 120, every: 0.2, { try committed() >= 1 }) else {
            throw WorkerError.configuration("herald-trigger did not handle the warm-up event:\n\(pipeline.logs)")
        }
        Thread.sleep(forTimeInterval: 2)
        let idle = ProcessMemory.residentBytes(pid: trigger.pid)

        Console.say("producing one event for each of \(users) users into \(parts) partitions of orders and behavior …")
        let clock = ContinuousClock.now
        var t = Timestamp.now - TimeSpan(microseconds: Int64(users) * 10)
        for u in 0..<users {
            t = t + TimeSpan(microseconds: 10)
            try send(traffic.next(user: u, at: t))
        }
        try producer.flush(timeout: .seconds(300))
        let ends = try LiveBench.checkNothingDropped(reader, topics: [topics.orders, topics.behavior], partitions: parts)
        guard ends.values.reduce(0, +) == Int64(users + 1) else {
            throw WorkerError.configuration("the inputs hold \(ends.values.reduce(0, +)) events, not \(users + 1): invalid run")
        }
        Console.say("herald-trigger building the state of \(users) users …")
        guard try pipeline.await(timeout: 600, every: 0.2, { try reader.committed(inputs, timeout: .seconds(5)) == ends.filter { $0.value > 0 } })
        else { throw WorkerError.configuration("herald-trigger did not drain in 600 s:\n\(pipeline.logs)") }
        let seconds = LiveBench.seconds(since: clock)
        Thread.sleep(forTimeInterval: 2)
        let full = ProcessMemory.residentBytes(pid: trigger.pid)
        return Result(users: users, partitions: parts, idleBytes: idle, fullBytes: full,
                      peakBytes: ProcessMemory.peakResidentBytes(pid: trigger.pid), seconds: seconds)
    }
}
