internal import CRdKafka
import Logging

/// A group consumer with manual offset management.
///
/// Not `Sendable`: create it and use it on one dedicated thread (poll, commit and
/// close block, and `onRebalance` runs inside `poll`/`close` on that thread).
public final class KafkaConsumer {
    private let client: RDClient
    private let logger: Logger
    private var closed = false
    private var closing = false

    /// Herald's consumer defaults; `config.properties` override them.
    static let defaultSettings: [(key: String, value: String)] = [
        ("client.id", "herald"),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        // Eager range assignment: partition N of co-partitioned topics lands on one member.
        ("partition.assignment.strategy", "range"),
        ("enable.partition.eof", "false"),
        ("fetch.wait.max.ms", "10"),
        // How many messages librdkafka pre-fetches before it stops fetching. 20,000 starved
        // herald-trigger (26k events/s where 100,000 gives ~60k; docs/performance.md).
        ("queued.min.messages", "100000"),
        // …and at most 32 MiB of them (librdkafka's default is 64 MiB): herald-sink's
        // ~600-byte outcomes would otherwise hold ~60 MiB it cannot use faster than
        // PostgreSQL takes them.
        ("queued.max.messages.kbytes", "32768"),
        ("log.queue", "false"),
    ]

    /// A start offset for `onRebalance`: the partition's oldest retained message.
    public static let offsetBeginning: Int64 = -2  // RD_KAFKA_OFFSET_BEGINNING

    /// Subscribes `groupID` to `topics`.
    ///
    /// `onRebalance` is called synchronously inside `poll`/`close` on the polling
    /// thread. For `.assigned(ps)` it returns explicit start offsets for some of
    /// those partitions (empty = committed offsets / `auto.offset.reset`); for
    /// `.revoked(ps)` the return value is ignored and the partitions are unassigned.
    public init(
        config: KafkaClientConfig,
        groupID: String,
        topics: [String],
        logger: Logger,
        onRebalance: @escaping (RebalanceEvent) -> [TopicPartition: Int64] = { _ in [:] }
    ) throws {
        var logger = logger
        logger[metadataKey: "kafka.group"] = .string(groupID)
        var settings = Self.defaultSettings
        settings.append(("group.id", groupID))
        settings = RDClient.settings(defaults: settings, config: config)
        let client = try RDClient(kind: .consumer, settings: settings, logger: logger, onRebalance: onRebalance)

        // Serve logs, errors and rebalances from consumer_poll.
        let redirect = rd_kafka_poll_set_consumer(client.handle)
        guard redirect == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw KafkaError(redirect, "cannot redirect the main queue to the consumer")
        }
        let subscription = RDPartitionList(capacity: topics.count)
        for topic in topics {
            subscription.add(TopicPartition(topic, herald_partition_unassigned()))
        }
        let err = rd_kafka_subscribe(client.handle, subscription.pointer)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw KafkaError(err, "cannot subscribe to \(topics)")
        }
        logger.info("subscribed", metadata: ["kafka.topics": .string(topics.joined(separator: ","))])
        self.client = client
        self.logger = logger
    }

    deinit {
        close()
    }

    /// Returns up to `maxMessages` messages, waiting at most `timeout` for the
    /// first one ([] on timeout). Rebalance callbacks fire inside this call.
    /// Per-message errors are logged; only fatal ones are thrown.
    public func poll(maxMessages: Int, timeout: Duration) throws -> [KafkaMessage] {
        try ensureOpen()
        guard maxMessages > 0 else { return [] }
        let deadline = ContinuousClock.now + timeout
        var messages: [KafkaMessage] = []
        messages.reserveCapacity(min(maxMessages, 1024))
        var firstPoll = true
        while messages.count < maxMessages {
            let wait: Int32 = messages.isEmpty ? deadline.rdRemainingMilliseconds : 0
            if !firstPoll && messages.isEmpty && wait == 0 { break }
            firstPoll = false
            guard let raw = rd_kafka_consumer_poll(client.handle, wait) else {
                if messages.isEmpty { continue }  // re-checks the deadline
                break
            }
            defer { rd_kafka_message_destroy(raw) }
            let message = raw.pointee
            if message.err != RD_KAFKA_RESP_ERR_NO_ERROR {
                try handleConsumerError(raw)
                continue
            }
            messages.append(Self.copy(raw))
        }
        if let fatal = client.context.fatal ?? KafkaError.fatal(of: client.handle) {
            throw fatal
        }
        return messages
    }

    private func handleConsumerError(_ raw: UnsafeMutablePointer<rd_kafka_message_t>) throws {
        let err = raw.pointee.err
        if err == RD_KAFKA_RESP_ERR__PARTITION_EOF { return }
        if err == RD_KAFKA_RESP_ERR__FATAL {
            throw KafkaError.fatal(of: client.handle) ?? KafkaError(err, "consumer")
        }
        let topic = raw.pointee.rkt.map { String(cString: rd_kafka_topic_name($0)) }
        let reason = client.context.scrub(String(cString: rd_kafka_message_errstr(raw)))
        logger.warning(
            "consumer error",
            metadata: [
                "error": .string(String(cString: rd_kafka_err2name(err))),
                "reason": .string(reason),
                "kafka.topic": .string(topic ?? ""),
                "kafka.partition": .stringConvertible(raw.pointee.partition),
            ]
        )
    }

    private static func copy(_ raw: UnsafeMutablePointer<rd_kafka_message_t>) -> KafkaMessage {
        let message = raw.pointee
        let key: [UInt8]? = message.key.map {
            Array(UnsafeRawBufferPointer(start: $0, count: message.key_len))
        }
        let value: [UInt8] = message.payload.map {
            Array(UnsafeRawBufferPointer(start: $0, count: message.len))
        } ?? []
        var timestampType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let timestamp = rd_kafka_message_timestamp(raw, &timestampType)
        return KafkaMessage(
            topic: message.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? "",
            partition: message.partition,
            offset: message.offset,
            key: key,
            value: value,
            timestampMs: timestampType == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE || timestamp < 0 ? nil : timestamp
        )
    }

    /// Synchronous commit. Offsets are the NEXT offset to read (last processed + 1).
    public func commit(_ offsets: [TopicPartition: Int64]) throws {
        try ensureOpen()
        guard !offsets.isEmpty else { return }
        let list = RDPartitionList(capacity: offsets.count)
        for (tp, offset) in offsets.sorted(by: { $0.key < $1.key }) {
            list.add(tp, offset: offset)
        }
        let err = rd_kafka_commit(client.handle, list.pointer, 0)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET else {
            throw KafkaError(err, "commit failed")
        }
        if let error = list.firstError("commit failed for") { throw error }
    }

    /// The group's committed offsets (next offset to read); partitions without one are absent.
    public func committed(_ partitions: [TopicPartition], timeout: Duration) throws -> [TopicPartition: Int64] {
        try ensureOpen()
        guard !partitions.isEmpty else { return [:] }
        return try client.committed(partitions, timeout: timeout)
    }

    public func pause(_ partitions: [TopicPartition]) throws {
        try ensureOpen()
        guard !partitions.isEmpty else { return }
        let list = RDPartitionList(partitions)
        let err = rd_kafka_pause_partitions(client.handle, list.pointer)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, "pause failed") }
        if let error = list.firstError("pause failed for") { throw error }
    }

    public func resume(_ partitions: [TopicPartition]) throws {
        try ensureOpen()
        guard !partitions.isEmpty else { return }
        let list = RDPartitionList(partitions)
        let err = rd_kafka_resume_partitions(client.handle, list.pointer)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, "resume failed") }
        if let error = list.firstError("resume failed for") { throw error }
    }

    /// The current assignment, sorted; [] when closed or unassigned.
    public var assignment: [TopicPartition] {
        guard !closed else { return [] }
        var raw: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
        let err = rd_kafka_assignment(client.handle, &raw)
        guard let raw else { return [] }
        let list = RDPartitionList(adopting: raw)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            logger.warning("cannot read assignment", metadata: ["error": .string(KafkaError(err, "assignment").description)])
            return []
        }
        return list.entries.map(\.partition).sorted()
    }

    /// (low, high) watermarks from the broker; high is the offset the next message will get.
    public func watermarks(_ tp: TopicPartition, timeout: Duration) throws -> (low: Int64, high: Int64) {
        try ensureOpen()
        return try client.watermarks(tp, timeout: timeout)
    }

    /// The watermarks librdkafka last saw in fetch responses for `tp`, without asking the
    /// broker; nil until a fetch response has been seen.
    public func cachedWatermarks(_ tp: TopicPartition) -> (low: Int64, high: Int64)? {
        guard !closed else { return nil }
        var low: Int64 = -1
        var high: Int64 = -1
        let err = rd_kafka_get_watermark_offsets(client.handle, tp.topic, tp.partition, &low, &high)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, high >= 0 else { return nil }
        return (max(low, 0), high)
    }

    /// Leaves the group (the final revoke fires `onRebalance`). Idempotent.
    public func close() {
        guard !closed, !closing else { return }
        // Still "open" while closing, so onRebalance may commit in the final revoke.
        closing = true
        let err = rd_kafka_consumer_close(client.handle)
        closed = true
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            logger.warning("consumer close failed", metadata: ["error": .string(KafkaError(err, "close").description)])
        } else {
            logger.info("consumer closed")
        }
    }

    private func ensureOpen() throws {
        if closed { throw KafkaError.local(RD_KAFKA_RESP_ERR__STATE, "consumer is closed") }
    }
}

/// The rebalance callback: asks `onRebalance` for start offsets, then (un)assigns.
enum Rebalance {
    static func handle(
        handle: OpaquePointer,
        err: rd_kafka_resp_err_t,
        partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?,
        context: ClientContext
    ) {
        let logger = context.logger
        let protocolName = rd_kafka_rebalance_protocol(handle).map { String(cString: $0) } ?? "NONE"
        let cooperative = protocolName == "COOPERATIVE"
        let given = RDPartitionList.entries(of: partitions).map(\.partition)
        let described = given.map(\.description).joined(separator: ",")

        switch err {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            logger.info("partitions assigned", metadata: ["kafka.partitions": .string(described)])
            let offsets = context.onRebalance?(.assigned(given)) ?? [:]
            let unknown = Set(offsets.keys).subtracting(given)
            if !unknown.isEmpty {
                logger.warning(
                    "onRebalance returned offsets for partitions not being assigned; ignored",
                    metadata: ["kafka.partitions": .string(unknown.sorted().map(\.description).joined(separator: ","))]
                )
            }
            let list = RDPartitionList(capacity: given.count)
            for tp in given {
                list.add(tp, offset: offsets[tp] ?? herald_offset_invalid())
            }
            if cooperative {
                if let error = rd_kafka_incremental_assign(handle, list.pointer) {
                    logger.error("incremental assign failed", metadata: ["error": .string(KafkaError(consuming: error, "assign").description)])
                }
            } else {
                let result = rd_kafka_assign(handle, list.pointer)
                if result != RD_KAFKA_RESP_ERR_NO_ERROR {
                    logger.error("assign failed", metadata: ["error": .string(KafkaError(result, "assign").description)])
                }
            }

        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            let lost = rd_kafka_assignment_lost(handle) != 0
            logger.info(
                lost ? "partitions lost" : "partitions revoked",
                metadata: ["kafka.partitions": .string(described)]
            )
            _ = context.onRebalance?(.revoked(given))
            if cooperative {
                if let error = rd_kafka_incremental_unassign(handle, partitions) {
                    logger.error("incremental unassign failed", metadata: ["error": .string(KafkaError(consuming: error, "unassign").description)])
                }
            } else {
                _ = rd_kafka_assign(handle, nil)
            }

        default:
            // librdkafka's advice for unexpected rebalance errors: drop the assignment.
            logger.error("rebalance error", metadata: ["error": .string(KafkaError(err, "rebalance").description)])
            if cooperative {
                if let error = rd_kafka_incremental_unassign(handle, partitions) {
                    rd_kafka_error_destroy(error)
                }
            } else {
                _ = rd_kafka_assign(handle, nil)
            }
        }
    }
}
