internal import CRdKafka
import Logging

/// Topic administration.
// Safe: the rd_kafka_t is thread-safe and this class has no mutable state.
public final class KafkaAdmin: @unchecked Sendable {
    private let client: RDClient
    private let logger: Logger
    private let brokers: String
    /// Replication factor for new topics; -1 = the broker's default (Kafka ≥ 2.4).
    public let replicationFactor: Int32

    static let defaultSettings: [(key: String, value: String)] = [
        ("client.id", "herald-admin"),
        // Metadata lookups must not create the topics they look for.
        ("allow.auto.create.topics", "false"),
        ("log.queue", "false"),
    ]

    public init(config: KafkaClientConfig, logger: Logger, replicationFactor: Int32 = -1) throws {
        let settings = RDClient.settings(defaults: Self.defaultSettings, config: config)
        self.client = try RDClient(kind: .producer, settings: settings, logger: logger)
        self.logger = logger
        self.brokers = config.brokers
        self.replicationFactor = replicationFactor
    }

    /// Creates topics. One that already exists with the same partition count is
    /// fine; one with another count throws an error naming topic, existing and
    /// wanted counts.
    public func createTopics(_ topics: [(name: String, partitions: Int32)], timeout: Duration) throws {
        guard !topics.isEmpty else { return }
        let deadline = ContinuousClock.now + timeout
        if let mock = MockClusterRegistry.cluster(for: brokers) {
            try createOnMock(mock, topics, deadline: deadline)
            return
        }
        let results = try requestCreateTopics(topics, deadline: deadline)
        for topic in topics {
            let err = results[topic.name] ?? (RD_KAFKA_RESP_ERR__FAIL, "no result for topic")
            switch err.0 {
            case RD_KAFKA_RESP_ERR_NO_ERROR:
                logger.info("created topic", metadata: ["kafka.topic": .string(topic.name), "kafka.partitions": .stringConvertible(topic.partitions)])
            case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS:
                try checkExisting(topic, deadline: deadline)
            default:
                var error = KafkaError(err.0, "cannot create topic \(topic.name)")
                if !err.1.isEmpty { error.message += " (\(err.1))" }
                throw error
            }
        }
    }

    private func requestCreateTopics(
        _ topics: [(name: String, partitions: Int32)],
        deadline: ContinuousClock.Instant
    ) throws -> [String: (rd_kafka_resp_err_t, String)] {
        var newTopics: [OpaquePointer?] = []
        defer { for topic in newTopics { rd_kafka_NewTopic_destroy(topic) } }
        var errstr = [CChar](repeating: 0, count: 512)
        for topic in topics {
            guard let newTopic = rd_kafka_NewTopic_new(topic.name, topic.partitions, replicationFactor, &errstr, errstr.count) else {
                let reason = errstr.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                throw KafkaError.local(RD_KAFKA_RESP_ERR__INVALID_ARG, "topic \(topic.name): \(reason)")
            }
            newTopics.append(newTopic)
        }

        let options = rd_kafka_AdminOptions_new(client.handle, RD_KAFKA_ADMIN_OP_CREATETOPICS)
        defer { rd_kafka_AdminOptions_destroy(options) }
        let timeoutMs = deadline.rdRemainingMilliseconds
        _ = rd_kafka_AdminOptions_set_request_timeout(options, timeoutMs, &errstr, errstr.count)
        _ = rd_kafka_AdminOptions_set_operation_timeout(options, timeoutMs, &errstr, errstr.count)

        let queue = rd_kafka_queue_new(client.handle)
        defer { rd_kafka_queue_destroy(queue) }
        newTopics.withUnsafeMutableBufferPointer { buffer in
            rd_kafka_CreateTopics(client.handle, buffer.baseAddress, buffer.count, options, queue)
        }
        // A little slack beyond the request timeout so librdkafka reports its own timeout.
        guard let event = rd_kafka_queue_poll(queue, deadline.rdRemainingMilliseconds &+ 1000) else {
            throw KafkaError.local(RD_KAFKA_RESP_ERR__TIMED_OUT, "CreateTopics timed out")
        }
        defer { rd_kafka_event_destroy(event) }
        let eventErr = rd_kafka_event_error(event)
        guard eventErr == RD_KAFKA_RESP_ERR_NO_ERROR else {
            let reason = rd_kafka_event_error_string(event).map { String(cString: $0) } ?? ""
            throw KafkaError(eventErr, "CreateTopics failed: \(reason)")
        }
        guard let result = rd_kafka_event_CreateTopics_result(event) else {
            throw KafkaError.local(RD_KAFKA_RESP_ERR__FAIL, "CreateTopics: unexpected event type")
        }
        var count = 0
        guard let topicResults = rd_kafka_CreateTopics_result_topics(result, &count) else { return [:] }
        var results: [String: (rd_kafka_resp_err_t, String)] = [:]
        for index in 0..<count {
            let topicResult = topicResults[index]
            let name = String(cString: rd_kafka_topic_result_name(topicResult))
            let message = rd_kafka_topic_result_error_string(topicResult).map { String(cString: $0) } ?? ""
            results[name] = (rd_kafka_topic_result_error(topicResult), message)
        }
        return results
    }

    private func createOnMock(_ mock: MockCluster, _ topics: [(name: String, partitions: Int32)], deadline: ContinuousClock.Instant) throws {
        for topic in topics {
            if try partitionCount(topic: topic.name, timeout: deadline - .now) != nil {
                try checkExisting(topic, deadline: deadline)
                continue
            }
            try mock.createTopic(topic.name, partitions: topic.partitions, replicationFactor: max(replicationFactor, 1))
            logger.info("created topic on mock cluster", metadata: ["kafka.topic": .string(topic.name), "kafka.partitions": .stringConvertible(topic.partitions)])
        }
    }

    private func checkExisting(_ topic: (name: String, partitions: Int32), deadline: ContinuousClock.Instant) throws {
        guard let existing = try partitionCount(topic: topic.name, timeout: deadline - .now) else {
            throw KafkaError.local(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, "topic \(topic.name) reported as existing but has no metadata")
        }
        guard existing == topic.partitions else {
            throw KafkaError.local(
                RD_KAFKA_RESP_ERR_INVALID_PARTITIONS,
                "topic \(topic.name) exists with \(existing) partitions, wanted \(topic.partitions)"
            )
        }
        logger.debug("topic already exists", metadata: ["kafka.topic": .string(topic.name), "kafka.partitions": .stringConvertible(existing)])
    }

    /// The topic's partition count; nil when the topic does not exist.
    public func partitionCount(topic: String, timeout: Duration) throws -> Int32? {
        // All-topics metadata: asking for one topic by handle could auto-create it.
        var metadata: UnsafePointer<rd_kafka_metadata>?
        let err = rd_kafka_metadata(client.handle, 1, nil, &metadata, max(timeout.rdMilliseconds, 1))
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let metadata else {
            throw KafkaError(err, "metadata request failed")
        }
        defer { rd_kafka_metadata_destroy(metadata) }
        let topics = UnsafeBufferPointer(start: metadata.pointee.topics, count: Int(metadata.pointee.topic_cnt))
        guard let entry = topics.first(where: { String(cString: $0.topic) == topic }) else { return nil }
        if entry.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART { return nil }
        if entry.partition_cnt > 0 { return entry.partition_cnt }
        throw KafkaError(entry.err, "metadata for topic \(topic)")
    }
}
