internal import CRdKafka
import Logging

extension RDClient {
    /// The group's committed offsets (next offset to read); partitions without one are absent.
    func committed(_ partitions: [TopicPartition], timeout: Duration) throws -> [TopicPartition: Int64] {
        guard !partitions.isEmpty else { return [:] }
        let list = RDPartitionList(partitions)
        let err = rd_kafka_committed(handle, list.pointer, timeout.rdMilliseconds)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, "fetching committed offsets failed") }
        if let error = list.firstError("fetching committed offset failed for") { throw error }
        var result: [TopicPartition: Int64] = [:]
        for entry in list.entries where entry.offset >= 0 {
            result[entry.partition] = entry.offset
        }
        return result
    }

    /// (low, high) watermarks from the broker; high is the offset the next message will get.
    func watermarks(_ tp: TopicPartition, timeout: Duration) throws -> (low: Int64, high: Int64) {
        var low: Int64 = -1
        var high: Int64 = -1
        let err = rd_kafka_query_watermark_offsets(handle, tp.topic, tp.partition, &low, &high, timeout.rdMilliseconds)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, "watermarks for \(tp)") }
        return (low, high)
    }
}

/// Reads a consumer group's committed offsets and the topics' watermarks without joining
/// the group (it never subscribes), so looking at lag (`herald stats`) never triggers a
/// rebalance of the workers.
public final class KafkaOffsetReader {
    private let client: RDClient

    public init(config: KafkaClientConfig, groupID: String, logger: Logger) throws {
        let settings = RDClient.settings(
            defaults: [("client.id", "herald-stats"), ("enable.auto.commit", "false"), ("group.id", groupID)],
            config: config)
        client = try RDClient(kind: .consumer, settings: settings, logger: logger)
    }

    public func committed(_ partitions: [TopicPartition], timeout: Duration) throws -> [TopicPartition: Int64] {
        try client.committed(partitions, timeout: timeout)
    }

    public func watermarks(_ tp: TopicPartition, timeout: Duration) throws -> (low: Int64, high: Int64) {
        try client.watermarks(tp, timeout: timeout)
    }
}
