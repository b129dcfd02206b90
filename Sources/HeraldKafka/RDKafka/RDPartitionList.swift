internal import CRdKafka

/// Owns one `rd_kafka_topic_partition_list_t`; destroys it in `deinit`.
final class RDPartitionList {
    let pointer: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>

    init(capacity: Int = 0) {
        pointer = rd_kafka_topic_partition_list_new(Int32(clamping: max(capacity, 1)))
    }

    /// Takes ownership of a list librdkafka allocated for us.
    init(adopting pointer: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) {
        self.pointer = pointer
    }

    convenience init<S: Sequence>(_ partitions: S) where S.Element == TopicPartition {
        let partitions = Array(partitions)
        self.init(capacity: partitions.count)
        for tp in partitions { add(tp) }
    }

    deinit {
        rd_kafka_topic_partition_list_destroy(pointer)
    }

    func add(_ tp: TopicPartition, offset: Int64? = nil) {
        let element = rd_kafka_topic_partition_list_add(pointer, tp.topic, tp.partition)!
        if let offset { element.pointee.offset = offset }
    }

    struct Entry {
        var partition: TopicPartition
        var offset: Int64
        var err: rd_kafka_resp_err_t
    }

    var entries: [Entry] { Self.entries(of: pointer) }

    /// Reads a list without taking ownership (e.g. the one a callback receives).
    static func entries(of list: UnsafePointer<rd_kafka_topic_partition_list_t>?) -> [Entry] {
        guard let list, let elements = list.pointee.elems else { return [] }
        return (0..<Int(list.pointee.cnt)).map { index in
            let element = elements[index]
            return Entry(
                partition: TopicPartition(String(cString: element.topic), element.partition),
                offset: element.offset,
                err: element.err
            )
        }
    }

    /// The first per-partition error, if any.
    func firstError(_ context: String) -> KafkaError? {
        entries.first { $0.err != RD_KAFKA_RESP_ERR_NO_ERROR }.map { KafkaError($0.err, "\(context) \($0.partition)") }
    }
}

extension Duration {
    /// Whole milliseconds for librdkafka timeouts, clamped to 0...Int32.max.
    var rdMilliseconds: Int32 {
        let (seconds, attoseconds) = components
        let ms = seconds.multipliedReportingOverflow(by: 1000)
        guard !ms.overflow else { return seconds < 0 ? 0 : Int32.max }
        let total = ms.partialValue.addingReportingOverflow(attoseconds / 1_000_000_000_000_000)
        guard !total.overflow else { return Int32.max }
        return Int32(clamping: max(total.partialValue, 0))
    }
}

extension ContinuousClock.Instant {
    /// Milliseconds left until this deadline, never negative.
    var rdRemainingMilliseconds: Int32 {
        (self - .now).rdMilliseconds
    }
}
