internal import CRdKafka
import Logging
import Synchronization

/// librdkafka's mock cluster (rdkafka_mock.h): the real Kafka protocol over TCP
/// on 127.0.0.1, in memory. For tests and `herald broker`; never production.
///
/// Gaps in librdkafka 2.0.2's mock broker, worked around here:
/// - It does not implement CreateTopics (admin requests just time out), so
///   `KafkaAdmin.createTopics` against a MockCluster living in this process
///   creates the topics through `rd_kafka_mock_topic_create` instead (see
///   `MockClusterRegistry`). Another process cannot create topics on it except
///   by auto-creation (Metadata/Produce for an unknown topic creates it with
///   the mock's default partition count).
/// - `rd_kafka_mock_push_request_errors_array` exists in 2.0.2 and is used directly.
// Safe: the handles are immutable after init, and every rd_kafka_mock_* call
// posts an operation to the cluster's own thread and waits for its reply, so
// they may be called from any thread.
public final class MockCluster: @unchecked Sendable {
    /// The rd_kafka_t that rd_kafka_mock_cluster_new requires as a host.
    private let host: RDClient
    /// `rd_kafka_mock_cluster_t *`
    private let cluster: OpaquePointer
    private let logger: Logger
    public let bootstrapServers: String
    public let brokerCount: Int

    public init(brokers: Int = 1, logger: Logger) throws {
        guard (1...Int(Int32.max)).contains(brokers) else {
            throw KafkaError.local(RD_KAFKA_RESP_ERR__INVALID_ARG, "a mock cluster needs at least one broker, got \(brokers)")
        }
        var logger = logger
        logger[metadataKey: "kafka.mock"] = "true"
        let host = try RDClient(
            kind: .producer,
            settings: [("client.id", "herald-mock-cluster"), ("log.queue", "false")],
            logger: logger
        )
        guard let cluster = rd_kafka_mock_cluster_new(host.handle, Int32(brokers)) else {
            throw KafkaError.local(RD_KAFKA_RESP_ERR__FAIL, "cannot start mock cluster")
        }
        self.host = host
        self.cluster = cluster
        self.logger = logger
        self.brokerCount = brokers
        self.bootstrapServers = String(cString: rd_kafka_mock_cluster_bootstraps(cluster))
        MockClusterRegistry.register(self)
        logger.info("mock Kafka cluster started", metadata: ["kafka.brokers": .string(bootstrapServers)])
    }

    deinit {
        MockClusterRegistry.unregister(self)
        rd_kafka_mock_cluster_destroy(cluster)
        // `host` is released (and its rd_kafka_t destroyed) after this.
    }

    /// Consumer overrides that make group rebalances on the mock cluster fast.
    /// Its group coordinator waits `session.timeout.ms` − 1 s (44 s at the
    /// default 45 s) whenever a member joins or leaves a non-empty group; the
    /// first join of an empty group always waits 3 s.
    public static let fastRebalanceConsumerProperties: [String: String] = [
        "session.timeout.ms": "3000",
        "heartbeat.interval.ms": "300",
    ]

    public func createTopic(_ name: String, partitions: Int32, replicationFactor: Int32 = 1) throws {
        let err = rd_kafka_mock_topic_create(cluster, name, partitions, replicationFactor)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw KafkaError(err, "mock: cannot create topic \(name)")
        }
    }

    /// Disconnects the broker and refuses new connections (no leader change).
    public func setBrokerDown(_ brokerID: Int32) throws {
        let err = rd_kafka_mock_broker_set_down(cluster, brokerID)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, "mock: broker \(brokerID) down") }
    }

    public func setBrokerUp(_ brokerID: Int32) throws {
        let err = rd_kafka_mock_broker_set_up(cluster, brokerID)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, "mock: broker \(brokerID) up") }
    }

    /// The next `errors.count` requests with this Kafka ApiKey (e.g. 0 = Produce)
    /// fail with these codes, in order.
    public func pushRequestErrors(apiKey: Int16, errors: [Int32]) {
        guard !errors.isEmpty else { return }
        let codes = errors.map { rd_kafka_resp_err_t(rawValue: $0) }
        codes.withUnsafeBufferPointer { buffer in
            rd_kafka_mock_push_request_errors_array(cluster, apiKey, buffer.count, buffer.baseAddress)
        }
    }

    public func clearRequestErrors(apiKey: Int16) {
        rd_kafka_mock_clear_request_errors(cluster, apiKey)
    }

    /// Creates the topic if needed; -1 makes the partition leaderless.
    public func setPartitionLeader(topic: String, partition: Int32, brokerID: Int32) throws {
        let err = rd_kafka_mock_partition_set_leader(cluster, topic, partition, brokerID)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw KafkaError(err, "mock: leader of \(topic)[\(partition)] → \(brokerID)")
        }
    }

    /// Adds round-trip latency to a broker (-1 = all brokers).
    public func setBrokerRTT(_ brokerID: Int32, milliseconds: Int32) throws {
        let err = rd_kafka_mock_broker_set_rtt(cluster, brokerID, milliseconds)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, "mock: broker \(brokerID) rtt") }
    }
}

/// Live in-process mock clusters by broker address, so `KafkaAdmin` can create
/// topics on them (the 2.0.2 mock broker lacks CreateTopics).
enum MockClusterRegistry {
    private struct Entry: Sendable {
        weak var cluster: MockCluster?
    }

    private static let clusters = Mutex<[String: Entry]>([:])

    static func addresses(_ servers: String) -> [String] {
        servers.split(separator: ",").map { part in
            String(part.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
        }.filter { !$0.isEmpty }
    }

    static func register(_ cluster: MockCluster) {
        clusters.withLock { map in
            for address in addresses(cluster.bootstrapServers) { map[address] = Entry(cluster: cluster) }
        }
    }

    static func unregister(_ cluster: MockCluster) {
        clusters.withLock { map in
            for address in addresses(cluster.bootstrapServers) where map[address]?.cluster == nil {
                // Weak references read nil once deinit has begun, so this drops ours.
                map[address] = nil
            }
        }
    }

    static func cluster(for brokers: String) -> MockCluster? {
        clusters.withLock { map in
            for address in addresses(brokers) {
                if let cluster = map[address]?.cluster { return cluster }
            }
            return nil
        }
    }
}
