import Foundation
import HeraldCore
import HeraldKafka
import Logging

/// What the benchmarks that run the whole pipeline as processes share: topic sizing for the
/// mock broker's retention, its check, stage lag, and producing at a fixed rate.
public enum LiveBench {
    /// Partitions per topic so that `bytes` spread over them stay under 2 MiB each: the mock
    /// broker keeps only the newest ~5 MiB of a partition.
    public static func partitions(forBytes bytes: Int, minimum: Int = 8) -> Int {
        var p = minimum
        while bytes / p > 2 << 20 { p *= 2 }
        return p
    }

    /// Every partition of `topics` still holds its first message (low watermark 0); a run
    /// that lost data to the broker's retention is invalid, not fast. The high watermarks.
    @discardableResult
    public static func checkNothingDropped(_ reader: KafkaOffsetReader, topics: [String], partitions: Int) throws
        -> [TopicPartition: Int64]
    {
        var highs: [TopicPartition: Int64] = [:]
        for t in topics {
            for p in 0..<Int32(partitions) {
                let tp = TopicPartition(t, p)
                let w = try reader.watermarks(tp, timeout: .seconds(10))
                guard w.low == 0 else {
                    throw WorkerError.configuration("\(tp) dropped \(w.low) messages to the broker's retention: invalid run")
                }
                highs[tp] = w.high
            }
        }
        return highs
    }

    /// The whole pipeline as release processes — a `herald broker`, a throwaway PostgreSQL
    /// that records commit timestamps (`track_commit_timestamp = on`, for
    /// `pg_xact_commit_timestamp(xmin)`), herald-trigger, herald-shaper and herald-sink (with
    /// `sinkArguments`) — with the rules file at `rulesPath`. The caller stops it.
    static func startPipeline(rulesPath: String, partitions: Int, sinkArguments: [String] = [],
                              logger: Logger) throws -> LocalPipeline {
        let text = try String(contentsOfFile: rulesPath, encoding: .utf8)
        let pg = try ThrowawayPostgres(settings: ["track_commit_timestamp": "on"])
        let pipeline = try LocalPipeline(rules: text, partitions: partitions, postgres: pg, logger: logger)
        do {
            try pipeline.startInfrastructure()
            try pipeline.startWorker("herald-trigger")
            try pipeline.startWorker("herald-shaper")
            try pipeline.startWorker("herald-sink", arguments: sinkArguments)
        } catch {
            pipeline.stop()
            throw error
        }
        return pipeline
    }

    /// `checkNothingDropped` over every topic the pipeline writes or reads.
    static func checkPipelineTopics(_ pipeline: LocalPipeline) throws {
        let topics = TopicNames()
        let reader = try KafkaOffsetReader(config: KafkaClientConfig(brokers: pipeline.bootstrapServers),
                                           groupID: "herald-bench-watermarks", logger: pipeline.logger)
        try checkNothingDropped(reader, topics: [topics.orders, topics.behavior, topics.candidates, topics.outcomes],
                                partitions: pipeline.partitions)
    }

    /// Seconds since `start` on the monotonic clock.
    static func seconds(since start: ContinuousClock.Instant) -> Double {
        (ContinuousClock.now - start) / .seconds(1)
    }
}

/// Messages not yet committed by each stage's consumer group, summed over its inputs.
public final class StageLag {
    public let stages: [(name: String, inputs: [String])]
    let partitions: Int
    private let readers: [KafkaOffsetReader]
    private let watermarks: KafkaOffsetReader

    public init(pipeline: LocalPipeline, stages names: [String] = ["herald-trigger", "herald-shaper", "herald-sink"]) throws {
        let topics = TopicNames()
        let inputs: [String: [String]] = [
            "herald-trigger": [topics.orders, topics.behavior], "herald-shaper": [topics.candidates, topics.behavior],
            "herald-sink": [topics.outcomes, topics.deadletter],
        ]
        stages = names.map { ($0, inputs[$0] ?? []) }
        partitions = pipeline.partitions
        let config = KafkaClientConfig(brokers: pipeline.bootstrapServers)
        readers = try stages.map { try KafkaOffsetReader(config: config, groupID: $0.name, logger: pipeline.logger) }
        watermarks = try KafkaOffsetReader(config: config, groupID: "herald-bench-lag", logger: pipeline.logger)
    }

    public func lag() -> [String: Int64] {
        var out: [String: Int64] = [:]
        var highs: [TopicPartition: Int64] = [:]
        for (i, stage) in stages.enumerated() {
            let tps = stage.inputs.flatMap { t in (0..<Int32(partitions)).map { TopicPartition(t, $0) } }
            let committed = (try? readers[i].committed(tps, timeout: .seconds(5))) ?? [:]
            var total: Int64 = 0
            for tp in tps {
                if highs[tp] == nil { highs[tp] = (try? watermarks.watermarks(tp, timeout: .seconds(5)).high) ?? 0 }
                total += max(0, highs[tp]! - (committed[tp] ?? 0))
            }
            out[stage.name] = total
        }
        return out
    }

    /// A check, to call until it is true, that every stage has committed what its inputs
    /// held once the stages before it were drained (the first stage: at the first call).
    /// Not "every lag is 0": herald-trigger publishes its clock on herald.candidates every
    /// second while idle, so herald-shaper is at exactly the end only between two clock
    /// records; and herald-trigger applies (and commits) its newest events only once the
    /// wall clock less `--grace` has passed them, and then has more candidates for the
    /// shaper.
    public func drain() -> () -> Bool {
        var targets: [String: [TopicPartition: Int64]] = [:]
        return { [self] in
            for (i, stage) in stages.enumerated() {
                let target = targets[stage.name] ?? ends(of: stage.inputs)
                targets[stage.name] = target
                let committed = (try? readers[i].committed(Array(target.keys), timeout: .seconds(5))) ?? [:]
                guard target.allSatisfy({ tp, end in (committed[tp] ?? 0) >= end }) else {
                    // What the later stages must reach depends on what this one still writes.
                    for later in stages[(i + 1)...] { targets[later.name] = nil }
                    return false
                }
            }
            return true
        }
    }

    private func ends(of topics: [String]) -> [TopicPartition: Int64] {
        var out: [TopicPartition: Int64] = [:]
        for t in topics {
            for p in 0..<Int32(partitions) {
                let tp = TopicPartition(t, p)
                out[tp] = (try? watermarks.watermarks(tp, timeout: .seconds(5)).high) ?? Int64.max
            }
        }
        return out
    }
}

/// Produces events at a fixed rate: every millisecond it sends what is due, each event
/// stamped (`occurred_at`) with the wall clock just before it is handed to the producer.
struct PacedProducer {
    let producer: KafkaProducer
    let topics = TopicNames()

    /// Sends `rate` events a second for up to `seconds` (or until `stop` says so; it is
    /// asked every `checkEvery` seconds); `make` builds each event for its time and `sent`
    /// sees it after the send. The number sent.
    @discardableResult
    func run(rate: Int, seconds: Double, checkEvery: Double = 1, stop: () throws -> Bool = { false },
             make: (Timestamp) -> BenchTraffic.Message, sent: (BenchTraffic.Message) -> Void = { _ in }) throws -> Int {
        let start = ContinuousClock.now
        let total = Int(Double(rate) * seconds)
        var count = 0
        var nextCheck = checkEvery
        while count < total {
            let elapsed = LiveBench.seconds(since: start)
            let due = min(total, Int(elapsed * Double(rate)) + 1)
            while count < due {
                let m = make(.now)
                try producer.send(topic: m.topic == .orders ? topics.orders : topics.behavior, key: m.user, value: m.value)
                sent(m)
                count += 1
            }
            producer.poll()
            if elapsed >= nextCheck {
                nextCheck += checkEvery
                if try stop() { break }
            }
            Thread.sleep(forTimeInterval: 0.001)
        }
        return count
    }
}
