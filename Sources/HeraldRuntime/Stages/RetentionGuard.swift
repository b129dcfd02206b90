import HeraldCore
import HeraldKafka
import Logging

/// Notices offsets that the broker deleted (retention) before this worker read them.
///
/// Herald's consumers run with `auto.offset.reset=earliest`, so when a committed offset
/// has fallen below a partition's log start librdkafka silently continues from the
/// earliest offset still there. Herald's topics are neither compacted nor transactional,
/// so consecutive messages of a partition have consecutive offsets: a message whose
/// offset is beyond the one expected (the committed offset, then the previous message's
/// + 1) means the offsets in between are gone. Each such range is reported once per
/// session — an error-level log line, `herald_retention_lost_messages_total` and a
/// `retention_lost` dead letter keyed by the first lost offset (so a re-processed batch
/// never doubles the row) — and consumption continues from the earliest offset, which
/// is where librdkafka already is.
///
/// A group without a committed offset for a partition starts at the earliest offset on
/// purpose: nothing it was responsible for is lost, so nothing is reported.
final class RetentionGuard {
    private let consumer: KafkaConsumer
    private let stage: String
    private let logger: Logger
    /// The next offset this session expects per partition; `.some(nil)`: the group has no
    /// committed offset there.
    private var expected: [TopicPartition: Int64?] = [:]

    init(consumer: KafkaConsumer, stage: String, logger: Logger) {
        self.consumer = consumer
        self.stage = stage
        self.logger = logger
    }

    /// Consumption of `tp` starts at `offset`, a checkpoint's rather than the group's
    /// committed offset (nil: from the beginning on purpose).
    func start(_ tp: TopicPartition, at offset: Int64?) {
        expected[tp] = .some(offset)
    }

    /// Partitions revoked: their next owner (maybe this worker again) reads the committed offset afresh.
    func forget(_ partitions: [TopicPartition]) {
        for p in partitions { expected[p] = nil }
    }

    /// Call for every consumed message, in order; returns the dead letter for offsets lost just before it.
    func check(_ m: KafkaMessage) -> DeadLetter? {
        let tp = m.topicPartition
        // One hash lookup per message in the common case: the partition is known.
        var slot = expected.index(forKey: tp)
        if slot == nil {
            loadCommitted(including: tp)
            slot = expected.index(forKey: tp)
        }
        guard let slot else { return nil }  // loadCommitted always records tp
        let next = expected.values[slot]
        expected.values[slot] = m.offset + 1
        guard let next, m.offset > next else { return nil }
        let first = next, last = m.offset - 1, count = m.offset - next
        logger.error("offsets deleted by retention before this worker processed them; continuing from the earliest available offset", metadata: [
            "topic": "\(m.topic)", "partition": "\(m.partition)", "first_lost_offset": "\(first)",
            "last_lost_offset": "\(last)", "lost_messages": "\(count)",
        ])
        HeraldMetrics.retentionLost(topic: m.topic, partition: m.partition, messages: count)
        let detail = "offsets \(first)-\(last) (\(count) messages) of \(m.topic)[\(m.partition)] were deleted by retention before \(stage) processed them; continued from offset \(m.offset)"
        return DeadLetter(stage: stage, reason: "retention_lost", detail: detail, sourceTopic: m.topic,
                          sourcePartition: m.partition, sourceOffset: first, payload: [], receivedAt: .now)
    }

    /// One round trip for every assigned partition not yet known (the first message of a session or assignment).
    private func loadCommitted(including tp: TopicPartition) {
        let unknown = Set(consumer.assignment + [tp]).filter { expected[$0] == nil }.sorted()
        do {
            let committed = try consumer.committed(unknown, timeout: .seconds(10))
            for p in unknown { expected[p] = .some(committed[p]) }
        } catch {
            // Without the committed offset a gap before the first message cannot be told
            // from a new group's start; later gaps in this session are still caught.
            logger.warning("cannot read committed offsets; a retention gap before this session's first message would go unreported",
                           metadata: ["error": "\(error)", "topic": "\(tp.topic)", "partition": "\(tp.partition)"])
            expected[tp] = .some(nil)
        }
    }
}
