import HeraldCore
import HeraldKafka
import HeraldPostgres
import Logging

/// What `herald stats` shows: outcomes and dead letters over a recent window from
/// PostgreSQL, and each stage's lag from its group's committed offsets.
public enum PipelineStats {
    public struct StageLag: Sendable, Equatable {
        public var stage: String
        public var topic: String
        public var partitions: Int
        /// Σ (high watermark − committed offset); a partition without a commit counts from
        /// its low watermark (the group starts at the earliest offset).
        public var lag: Int64
    }

    /// Each stage's input topics, under its default group (the stage's name).
    public static func stages(_ topics: TopicNames) -> [(stage: String, topics: [String])] {
        [(TriggerStage.name, [topics.orders, topics.behavior]), (ShaperStage.name, [topics.candidates]),
         (SinkStage.name, [topics.outcomes, topics.deadletter])]
    }

    public static func lag(config: WorkerConfig, logger: Logger, timeout: Duration = .seconds(5)) throws -> [StageLag] {
        let admin = try KafkaAdmin(config: config.kafka, logger: logger)
        var result: [StageLag] = []
        for (stage, topics) in stages(config.topics) {
            let reader = try KafkaOffsetReader(config: config.kafka, groupID: stage, logger: logger)
            for topic in topics {
                guard let count = try admin.partitionCount(topic: topic, timeout: timeout) else { continue }
                let partitions = (0..<count).map { TopicPartition(topic, $0) }
                let committed = try reader.committed(partitions, timeout: timeout)
                var lag: Int64 = 0
                for tp in partitions {
                    let marks = try reader.watermarks(tp, timeout: timeout)
                    lag += max(0, marks.high - (committed[tp] ?? marks.low))
                }
                result.append(StageLag(stage: stage, topic: topic, partitions: Int(count), lag: lag))
            }
        }
        return result
    }

    /// Outcomes by rule, status and reason written within `window`.
    public static func outcomes(_ conn: PostgresConnection, schema: String, window: TimeSpan) throws -> [[String]] {
        try conn.execute("""
            SELECT rule_id, status, coalesce(reason, ''), count(*)::text FROM \(SQLIdentifier.quoted(schema)).notifications
            WHERE created_at > now() - make_interval(secs => $1::double precision)
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            """, [String(Double(window.microseconds) / 1_000_000)]).rows.map { $0.map { $0 ?? "" } }
    }

    /// Dead letters by stage and reason received within `window`.
    public static func deadLetters(_ conn: PostgresConnection, schema: String, window: TimeSpan) throws -> [[String]] {
        try conn.execute("""
            SELECT stage, reason, count(*)::text FROM \(SQLIdentifier.quoted(schema)).dead_letters
            WHERE received_at > now() - make_interval(secs => $1::double precision)
            GROUP BY 1, 2 ORDER BY 1, 2
            """, [String(Double(window.microseconds) / 1_000_000)]).rows.map { $0.map { $0 ?? "" } }
    }
}
