import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import Logging

/// Peak shaving (issue 8, item 5): the whole pipeline as release processes with herald-sink
/// capped at `cap` rows a second, fed a payment outage: every event a `payment_failed` (an
/// immediate rule: one notification row per event). What the pipeline can sustain is then the
/// sink's cap, `cap` events a second. A steady `steadyRate`, then `factor` × `cap` for
/// `burstSeconds`, then steady again until the backlog has drained.
///
/// - Lost: every notification `herald replay`'s code computes from the produced events must
///   be a row (ids compared), and every partition's low watermark must still be 0.
/// - PostgreSQL write rate: rows (notifications and dead letters) per second of commit time,
///   `pg_xact_commit_timestamp(xmin)` (server started with `track_commit_timestamp = on`).
/// - Peak memory: each worker's VmHWM at the end.
/// - Drain: from the burst's last event until every row of the events up to it is committed.
public struct PeakShavingBenchmark {
    public struct Result: Sendable {
        public var events: Int
        public var partitions: Int
        public var expected: Int
        public var lost: Int
        public var unexpected: Int
        public var maxRowsPerSecond: Int
        public var maxRowsPerSecond10s: Double
        public var drainSeconds: Double
        public var peakRSSMiB: [String: Double]
        public var burstEvents: Int
        public var burstSeconds: Double
    }

    public var cap: Int
    public var factor: Int
    public var steadyRate: Int
    public var steadySeconds: Double
    public var burstSeconds: Double
    public var users: Int
    public var rulesPath: String
    public let logger: Logger

    public init(cap: Int, factor: Int, steadyRate: Int, steadySeconds: Double, burstSeconds: Double, users: Int,
                rulesPath: String, logger: Logger) {
        self.cap = cap
        self.factor = factor
        self.steadyRate = steadyRate
        self.steadySeconds = steadySeconds
        self.burstSeconds = burstSeconds
        self.users = users
        self.rulesPath = rulesPath
        self.logger = logger
    }

    public func run() throws -> Result {
        var replay = Replay(rules: try RulesFiles.load(rulesPath))
        let burstRate = factor * cap
        let drainGuess = Double(burstRate - cap) * burstSeconds / Double(max(cap - steadyRate, 1))
        let events = Int(Double(burstRate) * burstSeconds + Double(steadyRate) * (2 * steadySeconds + drainGuess))
        // Outcomes (~600 bytes) are the largest messages; one per event.
        let parts = LiveBench.partitions(forBytes: events * 600)
        // Under a cap, batches of a tenth of a second's budget keep the per-second rate even.
        let pipeline = try LiveBench.startPipeline(
            rulesPath: rulesPath, partitions: parts,
            sinkArguments: ["--max-rows-per-second", String(cap), "--batch-size", String(max(1, cap / 10))], logger: logger)
        defer { pipeline.stop() }
        let producer = try PacedProducer(producer: pipeline.producer())
        var traffic = BenchTraffic(users: users, idPrefix: "pf")
        var rng = SplitMix64(seed: 8)
        func outage(_ t: Timestamp) -> BenchTraffic.Message {
            traffic.make(.orders, "payment_failed", user: Int(rng.next() % UInt64(users)), at: t)
        }
        var expected = Set<String>()
        var expectedByBurstEnd = 0
        func record(_ m: BenchTraffic.Message) {
            guard case .success(let e) = EventDecoder.decode(m.value, topic: m.topic) else { return }
            for case .outcome(let o) in replay.process(e) { expected.insert(o.notificationID) }
        }
        let conn = try pipeline.connect()
        let s = SQLIdentifier.quoted(pipeline.schema)
        func workersRunning() throws -> Bool {
            for w in pipeline.workers where !w.isRunning {
                throw WorkerError.configuration("\(w.name) exited:\n\(w.log.suffix(3000))")
            }
            return false
        }

        Console.say("steady: \(steadyRate) events/s for \(steadySeconds) s (sink cap \(cap) rows/s, \(parts) partitions) …")
        var sent = try producer.run(rate: steadyRate, seconds: steadySeconds, stop: workersRunning, make: outage, sent: record)
        Console.say("burst: \(burstRate) events/s for \(burstSeconds) s …")
        let burstEvents = try producer.run(rate: burstRate, seconds: burstSeconds, stop: workersRunning, make: outage, sent: record)
        sent += burstEvents
        let burstEnd = Timestamp.now
        let burstEndClock = ContinuousClock.now
        // Replay holds events until both topics have passed their time (as herald-trigger
        // does) and this traffic is all `orders`: a copy, finished up to the burst's end,
        // gives the notifications of the events so far.
        var atBurstEnd = replay
        var byBurstEnd = expected
        for case .outcome(let o) in atBurstEnd.finish(until: burstEnd) { byBurstEnd.insert(o.notificationID) }
        expectedByBurstEnd = byBurstEnd.count
        Console.say("steady again until the burst's rows are all committed …")
        var drained: Double?
        func written() throws -> Int {
            Int(try conn.execute("SELECT count(*) FROM \(s).notifications WHERE event_time <= $1::timestamptz",
                                 [burstEnd.rfc3339])[0, 0] ?? "0") ?? 0
        }
        sent += try producer.run(rate: steadyRate, seconds: 3600, checkEvery: 0.25, stop: {
            _ = try workersRunning()
            if drained == nil, try written() >= expectedByBurstEnd {
                drained = LiveBench.seconds(since: burstEndClock)
                Console.say(String(format: "drained %.1f s after the burst", drained!))
            }
            // Steady traffic goes on for a while after the drain, as it would.
            return drained.map { LiveBench.seconds(since: burstEndClock) >= $0 + steadySeconds } ?? false
        }, make: outage, sent: record)
        guard let drained else { throw WorkerError.configuration("the backlog did not drain in an hour") }
        try producer.producer.flush(timeout: .seconds(60))

        let lag = try StageLag(pipeline: pipeline)
        guard try pipeline.await(timeout: 600, every: 0.5, lag.drain()) else {
            throw WorkerError.configuration("the pipeline did not drain in 600 s:\n\(pipeline.logs)")
        }
        var peaks: [String: Double] = [:]
        for w in pipeline.workers { peaks[w.name] = Double(ProcessMemory.peakResidentBytes(pid: w.pid)) / 1_048_576 }
        try LiveBench.checkPipelineTopics(pipeline)

        for case .outcome(let o) in replay.finish(until: .now - .seconds(30)) { expected.insert(o.notificationID) }
        var live = Set<String>()
        for r in try conn.execute("SELECT id FROM \(s).notifications").rows { if let id = r[0] { live.insert(id) } }
        let rates = try conn.execute("""
            WITH w AS (SELECT pg_xact_commit_timestamp(xmin) AS t FROM \(s).notifications
                       UNION ALL SELECT pg_xact_commit_timestamp(xmin) FROM \(s).dead_letters)
            SELECT (SELECT max(n) FROM (SELECT count(*) AS n FROM w GROUP BY date_trunc('second', t)) a),
                   (SELECT max(n) FROM (SELECT count(*) AS n FROM w
                                        GROUP BY floor(extract(epoch FROM t) / 10)) b) / 10.0
            """)
        return Result(events: sent, partitions: parts, expected: expected.count,
                      lost: expected.subtracting(live).count, unexpected: live.subtracting(expected).count,
                      maxRowsPerSecond: Int(rates[0, 0] ?? "0") ?? 0, maxRowsPerSecond10s: Double(rates[0, 1] ?? "0") ?? 0,
                      drainSeconds: drained, peakRSSMiB: peaks, burstEvents: burstEvents, burstSeconds: burstSeconds)
    }
}
