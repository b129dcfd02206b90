import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import Logging

/// End-to-end latency (issue 8, item 4): the whole pipeline as release processes (a
/// `herald broker`, a throwaway PostgreSQL, herald-trigger, herald-shaper, herald-sink) under
/// shop traffic at a fixed rate; for every notification of an immediate rule, the time from
/// its event being handed to the Kafka producer to its row's transaction committing.
///
/// - Start: each event's `occurred_at` is the wall clock read just before `send` (so the
///   producer's linger and the broker's append are inside the measured time); immediate
///   rules carry the triggering event's time as the row's `event_time`.
/// - Commit: `pg_xact_commit_timestamp(xmin)` of the row, from a server started with
///   `track_commit_timestamp = on`: PostgreSQL stamps the commit record (the wall clock, in
///   µs) just before the transaction becomes visible. The sink is not changed or slowed;
///   `created_at` would not do (`now()` is the transaction's start, before the `COPY`).
///   Rows updated after their first write (a deferred row woken later) have a newer `xmin`
///   and are left out and counted.
/// - Both clocks are this machine's `CLOCK_REALTIME`: the error is the µs between the
///   commit stamp and visibility, plus the Timestamp's µs rounding.
public struct EndToEndLatencyBenchmark {
    public struct Result: Sendable {
        public var events: Int
        public var seconds: Double
        public var partitions: Int
        public var rows: Int
        public var updatedRows: Int
        public var p50: Double
        public var p99: Double
        public var max: Double
        public var rules: [String]
        /// p50 and p99 in ms of each stage's share, by stage: herald-trigger (event produced →
        /// candidate produced), herald-shaper (→ outcome produced), herald-sink (→ committed).
        public var stages: [(stage: String, p50: Double, p99: Double)]
    }

    public var rate: Int
    public var seconds: Double
    /// Traffic before the measurement, drained before it starts (group joins, warm caches).
    public var warmup: Double
    public var users: Int
    public var rulesPath: String
    /// herald-sink's `--flush-interval`; nil: its default.
    public var sinkFlushInterval: String?
    public let logger: Logger

    public init(rate: Int, seconds: Double, warmup: Double, users: Int, rulesPath: String, sinkFlushInterval: String? = nil,
                logger: Logger) {
        self.sinkFlushInterval = sinkFlushInterval
        self.rate = rate
        self.seconds = seconds
        self.warmup = warmup
        self.users = users
        self.rulesPath = rulesPath
        self.logger = logger
    }

    /// Rules that notify on the event itself, once: what "immediate-rule event" means here.
    static func immediateRules(_ rules: RuleSet) -> [String] {
        rules.rules.filter { $0.timing == .immediate && $0.merge == nil && $0.repeatEvery == nil }.map(\.id)
    }

    public func run() throws -> Result {
        let ruleSet = try RulesFiles.load(rulesPath)
        let immediate = Self.immediateRules(ruleSet)
        let parts = LiveBench.partitions(forBytes: Int(Double(rate) * (seconds + warmup)) * 260 / 2)
        let pipeline = try LiveBench.startPipeline(rulesPath: rulesPath, partitions: parts,
                                                   sinkArguments: sinkFlushInterval.map { ["--flush-interval", $0] } ?? [],
                                                   logger: logger)
        defer { pipeline.stop() }
        let lag = try StageLag(pipeline: pipeline)
        let producer = try PacedProducer(producer: pipeline.producer())
        var traffic = BenchTraffic(users: users)

        Console.say("warm-up: \(rate) events/s for \(warmup) s, then drained …")
        try producer.run(rate: rate, seconds: warmup) { traffic.next(at: $0) }
        try producer.producer.flush(timeout: .seconds(60))
        guard try pipeline.await(timeout: 300, every: 0.5, lag.drain()) else {
            throw WorkerError.configuration("the warm-up did not drain in 300 s:\n\(pipeline.logs)")
        }

        Console.say("measuring: \(rate) events/s for \(seconds) s across \(parts) partitions per topic …")
        let start = Timestamp.now
        let clock = ContinuousClock.now
        let sent = try producer.run(rate: rate, seconds: seconds) { traffic.next(at: $0) }
        let elapsed = LiveBench.seconds(since: clock)
        try producer.producer.flush(timeout: .seconds(60))
        guard try pipeline.await(timeout: 300, every: 0.5, lag.drain()) else {
            throw WorkerError.configuration("the pipeline did not drain in 300 s:\n\(pipeline.logs)")
        }
        try LiveBench.checkPipelineTopics(pipeline)

        let conn = try pipeline.connect()
        let s = SQLIdentifier.quoted(pipeline.schema)
        let r = try conn.execute("""
            WITH l AS (
              SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - event_time) * 1000 AS ms,
                     created_at = updated_at AS first_version
              FROM \(s).notifications WHERE rule_id = ANY($1::text[]) AND event_time >= $2::timestamptz)
            SELECT count(*) FILTER (WHERE first_version), count(*) FILTER (WHERE NOT first_version),
                   percentile_disc(0.5) WITHIN GROUP (ORDER BY ms) FILTER (WHERE first_version),
                   percentile_disc(0.99) WITHIN GROUP (ORDER BY ms) FILTER (WHERE first_version),
                   max(ms) FILTER (WHERE first_version)
            FROM l
            """, ["{" + immediate.joined(separator: ",") + "}", start.rfc3339])
        let rows = Int(r[0, 0] ?? "0") ?? 0
        guard rows > 0 else { throw WorkerError.configuration("no rows of the immediate rules \(immediate) were written") }
        let stages = try breakdown(pipeline: pipeline, conn: conn, immediate: immediate, since: start)
        return Result(events: sent, seconds: elapsed, partitions: parts, rows: rows, updatedRows: Int(r[0, 1] ?? "0") ?? 0,
                      p50: Double(r[0, 2] ?? "") ?? .nan, p99: Double(r[0, 3] ?? "") ?? .nan,
                      max: Double(r[0, 4] ?? "") ?? .nan, rules: immediate, stages: stages)
    }

    /// Where the time goes: the Kafka timestamps (CreateTime, ms: set when a stage hands the
    /// message to its producer) of each measured row's candidate and outcome.
    func breakdown(pipeline: LocalPipeline, conn: PostgresConnection, immediate: [String], since start: Timestamp) throws
        -> [(stage: String, p50: Double, p99: Double)]
    {
        let s = SQLIdentifier.quoted(pipeline.schema)
        var rows: [String: (event: Double, commit: Double)] = [:]
        for r in try conn.execute("""
            SELECT id, extract(epoch FROM event_time) * 1000, extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000
            FROM \(s).notifications
            WHERE rule_id = ANY($1::text[]) AND event_time >= $2::timestamptz AND created_at = updated_at
            """, ["{" + immediate.joined(separator: ",") + "}", start.rfc3339]).rows {
            if let id = r[0], let e = r[1].flatMap(Double.init), let c = r[2].flatMap(Double.init) { rows[id] = (e, c) }
        }
        let topics = TopicNames()
        var produced: [String: [String: Double]] = [topics.candidates: [:], topics.outcomes: [:]]
        let consumer = try KafkaConsumer(config: KafkaClientConfig(brokers: pipeline.bootstrapServers),
                                         groupID: "herald-bench-breakdown", topics: [topics.candidates, topics.outcomes],
                                         logger: logger)
        defer { consumer.close() }
        var idle = 0
        while idle < 20 {
            let batch = try consumer.poll(maxMessages: 5000, timeout: .milliseconds(250))
            idle = batch.isEmpty ? idle + 1 : 0
            for m in batch {
                guard let ms = m.timestampMs else { continue }
                let id = m.topic == topics.candidates ? (try? Candidate(json: m.value))?.id : (try? Outcome(json: m.value))?.notificationID
                if let id, rows[id] != nil { produced[m.topic]![id] = Double(ms) }
            }
            if produced.values.allSatisfy({ $0.count == rows.count }) { break }
        }
        var trigger: [Double] = [], shaper: [Double] = [], sink: [Double] = []
        for (id, row) in rows {
            guard let c = produced[topics.candidates]![id], let o = produced[topics.outcomes]![id] else { continue }
            trigger.append(c - row.event)
            shaper.append(o - c)
            sink.append(row.commit - o)
        }
        func p(_ xs: [Double], _ q: Double) -> Double {
            let sorted = xs.sorted()
            return sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]
        }
        return [("herald-trigger", p(trigger, 0.5), p(trigger, 0.99)), ("herald-shaper", p(shaper, 0.5), p(shaper, 0.99)),
                ("herald-sink", p(sink, 0.5), p(sink, 0.99))]
    }
}
