import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import Logging

/// `scripts/soak`: the whole pipeline under steady shop traffic for a while, watching each
/// worker's memory and each stage's lag; at the end every notification `herald replay`
/// computes from the same events must be in PostgreSQL (issue 9, item 7).
public struct Soak {
    public struct Sample: Sendable {
        public var elapsed: Double
        public var rssMiB: [String: Double]
        public var lag: [String: Int64]
    }

    public struct Result: Sendable {
        public var events: Int
        public var seconds: Double
        public var samples: [Sample]
        public var expected: Int
        public var lost: Int
        public var unexpected: Int
        public var deadLetters: Int
        public var drainSeconds: Double
    }

    public var duration: TimeSpan
    public var rate: Int
    public var users: Int
    public var partitions: Int
    public let logger: Logger

    public init(duration: TimeSpan, rate: Int, users: Int, partitions: Int, logger: Logger) {
        self.duration = duration
        self.rate = rate
        self.users = users
        self.partitions = partitions
        self.logger = logger
    }

    public func run() throws -> Result {
        let pipeline = try LocalPipeline(rules: DevRules.yaml, partitions: partitions, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure()
        try pipeline.startWorkers()
        let producer = try pipeline.producer()
        let topics = TopicNames()
        let stageLag = try StageLag(pipeline: pipeline)
        func lag() -> [String: Int64] { stageLag.lag() }
        func sample(_ started: Date) -> Sample {
            var rss: [String: Double] = [:]
            for w in pipeline.workers { rss[w.name] = Double(ProcessMemory.residentBytes(pid: w.pid)) / 1_048_576 }
            return Sample(elapsed: Date().timeIntervalSince(started), rssMiB: rss, lag: lag())
        }

        var traffic = ShopTraffic(users: users, seed: 7)
        traffic.wallClock = true
        var sent: [Event] = []
        let total = Int(Double(duration.microseconds) / 1_000_000 * Double(rate))
        let started = Date()
        var samples: [Sample] = []
        var nextSample = started
        for i in 0..<total {
            let due = started.addingTimeInterval(Double(i) / Double(rate))
            if due.timeIntervalSinceNow > 0 { Thread.sleep(forTimeInterval: due.timeIntervalSinceNow) }
            let m = traffic.next()
            try producer.send(topic: m.topic == .orders ? topics.orders : topics.behavior, key: m.key, value: m.value)
            if case .success(let e) = EventDecoder.decode(m.value, topic: m.topic) { sent.append(e) }
            if Date() >= nextSample {
                producer.poll()
                let s = sample(started)
                samples.append(s)
                let lagText = s.lag.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                let rssText = s.rssMiB.sorted { $0.key < $1.key }.map { "\($0.key)=\(Int($0.value))MiB" }.joined(separator: " ")
                Console.say(String(format: "%6.0fs  sent %d/%d  ", s.elapsed, i + 1, total) + "lag \(lagText)  rss \(rssText)")
                nextSample = nextSample.addingTimeInterval(10)
            }
            for w in pipeline.workers where !w.isRunning {
                throw WorkerError.configuration("\(w.name) exited during the soak:\n\(w.log.suffix(3000))")
            }
        }
        try producer.flush(timeout: .seconds(60))
        let seconds = Date().timeIntervalSince(started)

        // Drain: every stage caught up.
        let drainStart = Date()
        let drained = try pipeline.await(timeout: 300, every: 1) { lag().values.allSatisfy { $0 == 0 } }
        guard drained else { throw WorkerError.configuration("the pipeline did not drain in 300 s:\n\(pipeline.logs)") }
        let drainSeconds = Date().timeIntervalSince(drainStart)
        samples.append(sample(started))

        // What replay computes from the same events, up to a cutoff safely behind the live
        // clock (timers due after it may or may not have fired live yet).
        let cutoff = Timestamp.now - .seconds(30)
        let rules = try RulesLoader.load(yaml: DevRules.yaml).get()
        var replay = Replay(rules: rules)
        var expected = Set<String>()
        for e in sent where e.occurredAt <= cutoff {
            for case .outcome(let o) in replay.process(e) { expected.insert(o.notificationID) }
        }
        for case .outcome(let o) in replay.finish(until: cutoff) { expected.insert(o.notificationID) }
        let conn = try pipeline.connect()
        let s = SQLIdentifier.quoted(pipeline.schema)
        var live: [String: Timestamp] = [:]
        for r in try conn.execute("SELECT id, to_char(decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM \(s).notifications").rows {
            if let id = r[0], let t = r[1].flatMap({ Timestamp(rfc3339: $0) }) { live[id] = t }
        }
        let lost = expected.filter { live[$0] == nil }.count
        let unexpected = live.filter { !expected.contains($0.key) && $0.value <= cutoff }.count
        let deadLetters = Int(try conn.execute("SELECT count(*) FROM \(s).dead_letters")[0, 0] ?? "0") ?? 0
        return Result(events: total, seconds: seconds, samples: samples, expected: expected.count, lost: lost,
                      unexpected: unexpected, deadLetters: deadLetters, drainSeconds: drainSeconds)
    }

}
