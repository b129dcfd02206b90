import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import Logging

/// The sink against its ceiling, in one run on one PostgreSQL server:
/// 1. the ceiling: one raw `COPY` of N notification rows into a plain table (no indexes);
/// 2. the sink's full path: N outcomes already in `herald.outcomes` on a `herald broker`,
///    one herald-sink process, from its first committed batch to N committed rows.
public struct SinkBenchmark {
    public struct Result: Sendable {
        public var rows: Int
        public var partitions: Int
        public var copySeconds: Double
        public var sinkSeconds: Double
        public var sinkStartupSeconds: Double
        public var copyCeilingRPS: Double { Double(rows) / copySeconds }
        public var sinkRPS: Double
        public var sinkRatio: Double { sinkRPS / copyCeilingRPS }
    }

    public var rows: Int
    /// Partitions of the broker's topics; 0 = enough that the mock's ~5 MiB retention per
    /// partition keeps every message.
    public var partitions: Int
    public var batchSize: Int
    public let logger: Logger

    public init(rows: Int, partitions: Int, batchSize: Int, logger: Logger) {
        self.rows = rows
        self.partitions = partitions
        self.batchSize = batchSize
        self.logger = logger
    }

    /// Deterministic outcomes shaped like production: 10 rules, 3 shops, 100,000 users,
    /// mostly `sent` with an A/B variant, some suppressed, arriving roughly in event-time
    /// order over the hour before now (a live stream, seconds of jitter).
    public static func outcomes(_ n: Int, now: Timestamp = .now) -> [Outcome] {
        let shops = ["s1", "s2", "s42"]
        let rules = ["payment-failed", "cart-abandoned", "code-not-delivered", "login-risk", "first-purchase-guide",
                     "win-back", "repayment", "not-received", "margin-call", "logistics"]
        var random = SplitMix64(seed: 6)
        return (0..<n).map { i in
            let user = Int(random.next() % 100_000)
            let rule = rules[i % rules.count]
            let step = Int64(3_600_000_000) / Int64(max(n, 1))
            let eventTime = now - TimeSpan(microseconds: Int64(n - i) * step + Int64(random.next() % 5_000_000))
            let suppressed = i % 7 == 0
            return Outcome(
                notificationID: StableID.notificationID(eventTime: eventTime, ["bench", String(i)]),
                status: suppressed ? .suppressed : .sent, reason: suppressed ? "frequency_cap" : nil,
                ruleID: rule, shopID: shops[i % shops.count], userID: "u\(user)", priority: .normal,
                channels: ["in_app", "sms"], variant: suppressed ? nil : (user % 2 == 0 ? "A" : "B"),
                title: suppressed ? nil : "Payment failed",
                body: suppressed ? nil : "Payment for order o\(i) failed; any charge is refunded within 3 days.",
                mergedInto: nil, dueAt: nil, escalated: false, tags: ["delivery"], triggerEventIDs: ["e\(i)"],
                eventTime: eventTime, decidedAt: eventTime, rulesVersion: "0123456789abcdef")
        }
    }

    public func run() throws -> Result {
        let outcomes = Self.outcomes(rows)
        let payloads = outcomes.map(\.json)
        let bytes = payloads.reduce(0) { $0 + $1.count + 64 }
        // The mock keeps ~5 MiB per partition: aim for at most 3 MiB each.
        var parts = partitions
        if parts == 0 {
            parts = 8
            while bytes / parts > 3 << 20 { parts *= 2 }
        }
        let pipeline = try LocalPipeline(rules: "version: 1\nrules: []\n", partitions: parts, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure()
        let conn = try pipeline.connect()

        // 1. Ceiling: the same rows as the sink's COPY, into a plain table without indexes.
        let s = SQLIdentifier.quoted(pipeline.schema)
        try conn.execute("CREATE TABLE \(s).bench_copy_ceiling (LIKE \(s).notifications)")
        try conn.execute("ALTER TABLE \(s).bench_copy_ceiling DROP COLUMN created_at, DROP COLUMN updated_at")
        Console.say("copy ceiling: COPY of \(rows) rows into a plain table …")
        let clock = ContinuousClock()
        let copyTime = try clock.measure {
            try conn.transaction {
                _ = try conn.copyFrom("COPY \(s).bench_copy_ceiling (\(SinkWriter.columns)) FROM STDIN") { out in
                    for o in outcomes { SinkWriter.appendRow(o, to: &out) }
                }
            }
        }
        let copied = Int(try conn.execute("SELECT count(*) FROM \(s).bench_copy_ceiling")[0, 0] ?? "0") ?? 0
        guard copied == rows else { throw WorkerError.configuration("ceiling COPY wrote \(copied) rows, not \(rows)") }
        try conn.execute("DROP TABLE \(s).bench_copy_ceiling")

        // 2. The outcomes into Kafka, then checked to be all there.
        Console.say("producing \(rows) outcomes (\(bytes >> 20) MiB) into \(parts) partitions …")
        let topic = TopicNames().outcomes
        let producer = try pipeline.producer()
        for (o, payload) in zip(outcomes, payloads) {
            try producer.send(topic: topic, key: o.userID, value: payload)
        }
        try producer.flush(timeout: .seconds(300))
        try checkNothingDropped(pipeline: pipeline, topic: topic, partitions: parts)

        // 3. The sink, from its first committed batch to the last row.
        Console.say("herald-sink draining \(rows) outcomes …")
        let start = clock.now
        let sink = try pipeline.startWorker("herald-sink", arguments: ["--batch-size", String(batchSize)])
        let written = { Int(try conn.execute("SELECT coalesce(sum(count), 0) FROM \(s).rule_stats_minute")[0, 0] ?? "0") ?? 0 }
        var first: (at: ContinuousClock.Instant, rows: Int)?
        var done: ContinuousClock.Instant?
        let deadline = clock.now + .seconds(600)
        while done == nil, clock.now < deadline {
            guard sink.isRunning else { throw WorkerError.configuration("herald-sink exited:\n\(sink.log.suffix(4000))") }
            let n = try written()
            if n > 0, first == nil { first = (clock.now, n) }
            if n >= rows { done = clock.now } else { Thread.sleep(forTimeInterval: 0.05) }
        }
        guard let first, let done else { throw WorkerError.configuration("herald-sink did not finish in 600 s") }
        let total = Int(try conn.execute("SELECT count(*) FROM \(s).notifications")[0, 0] ?? "0") ?? 0
        guard total == rows else { throw WorkerError.configuration("the sink wrote \(total) rows, not \(rows): invalid run") }
        let sinkSeconds = (done - first.at) / .seconds(1)
        return Result(rows: rows, partitions: parts, copySeconds: copyTime / .seconds(1), sinkSeconds: sinkSeconds,
                      sinkStartupSeconds: (first.at - start) / .seconds(1),
                      sinkRPS: Double(rows - first.rows) / sinkSeconds)
    }

    /// A run that lost data to the mock broker's retention is invalid, not fast.
    func checkNothingDropped(pipeline: LocalPipeline, topic: String, partitions: Int) throws {
        let consumer = try KafkaConsumer(config: KafkaClientConfig(brokers: pipeline.bootstrapServers),
                                         groupID: "herald-bench-watermarks", topics: [topic], logger: logger)
        defer { consumer.close() }
        var total: Int64 = 0
        for p in 0..<Int32(partitions) {
            let w = try consumer.watermarks(TopicPartition(topic, p), timeout: .seconds(10))
            guard w.low == 0 else {
                throw WorkerError.configuration("partition \(p) of \(topic) dropped \(w.low) messages to retention: use more partitions")
            }
            total += w.high
        }
        guard total == Int64(rows) else {
            throw WorkerError.configuration("\(topic) holds \(total) messages, not \(rows)")
        }
    }
}
