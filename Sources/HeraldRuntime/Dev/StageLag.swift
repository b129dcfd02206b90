import HeraldKafka
import Logging

/// Each stage's consumer-group lag on a local pipeline: its input topics' high watermarks
/// minus the offsets its group has committed, summed over the partitions. 0 for every stage
/// means every worker's committed offsets are at the end of its input.
public final class StageLag {
    public static let stageNames = ["herald-trigger", "herald-shaper", "herald-sink"]

    private let partitions: Int
    private let stages: [(name: String, inputs: [String], reader: KafkaOffsetReader)]

    public init(bootstrapServers: String, partitions: Int, topics: TopicNames = TopicNames(), logger: Logger) throws {
        self.partitions = partitions
        let inputs = [[topics.orders, topics.behavior], [topics.candidates, topics.behavior], [topics.outcomes, topics.deadletter]]
        stages = try zip(Self.stageNames, inputs).map { name, topics in
            (name, topics, try KafkaOffsetReader(config: KafkaClientConfig(brokers: bootstrapServers), groupID: name, logger: logger))
        }
    }

    public convenience init(_ pipeline: LocalPipeline) throws {
        try self.init(bootstrapServers: pipeline.bootstrapServers, partitions: pipeline.partitions, logger: pipeline.logger)
    }

    /// Lag per stage name; a partition whose offsets cannot be read counts its whole length.
    public func perStage() -> [String: Int64] {
        var out: [String: Int64] = [:]
        for stage in stages {
            let tps = stage.inputs.flatMap { t in (0..<Int32(partitions)).map { TopicPartition(t, $0) } }
            let committed = (try? stage.reader.committed(tps, timeout: .seconds(5))) ?? [:]
            var total: Int64 = 0
            for tp in tps {
                let high = (try? stage.reader.watermarks(tp, timeout: .seconds(5)).high) ?? 0
                total += max(0, high - (committed[tp] ?? 0))
            }
            out[stage.name] = total
        }
        return out
    }

    /// Every stage has committed the end of its input.
    public var drained: Bool { perStage().values.allSatisfy { $0 == 0 } }

    /// Each stage's input partitions and their high watermarks now.
    public func ends() -> [String: [TopicPartition: Int64]] {
        var out: [String: [TopicPartition: Int64]] = [:]
        for stage in stages {
            for t in stage.inputs {
                for p in 0..<Int32(partitions) {
                    let tp = TopicPartition(t, p)
                    out[stage.name, default: [:]][tp] = (try? stage.reader.watermarks(tp, timeout: .seconds(5)).high) ?? Int64.max
                }
            }
        }
        return out
    }

    /// Every stage has committed at least `ends` (from `ends()`): what was in its input
    /// then is processed. Unlike `drained` it holds while herald-trigger keeps publishing
    /// its clock on herald.candidates.
    public func reached(_ ends: [String: [TopicPartition: Int64]]) -> Bool {
        stages.allSatisfy { stage in
            guard let marks = ends[stage.name] else { return false }
            let committed = (try? stage.reader.committed(Array(marks.keys), timeout: .seconds(5))) ?? [:]
            return marks.allSatisfy { tp, end in (committed[tp] ?? 0) >= end }
        }
    }
}
