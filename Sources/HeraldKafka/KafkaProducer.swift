internal import CRdKafka
import Logging

/// An idempotent, acks=all producer.
// Safe: librdkafka documents rd_kafka_t as thread-safe for produce, poll, flush
// and outq_len; the only mutable Swift state (delivery/fatal errors) lives in
// ClientContext behind Mutexes.
public final class KafkaProducer: @unchecked Sendable {
    private let client: RDClient
    private let logger: Logger
    /// How long `send` keeps serving delivery reports and retrying while
    /// librdkafka's local queue is full before it throws.
    public let queueFullTimeout: Duration

    /// Herald's producer defaults; `config.properties` override them.
    static let defaultSettings: [(key: String, value: String)] = [
        ("client.id", "herald"),
        ("acks", "all"),
        // No duplicates or reordering from internal retries.
        ("enable.idempotence", "true"),
        // Same key → same partition as the Java client, so topics written by
        // other producers stay co-partitioned with ours.
        ("partitioner", "murmur2_random"),
        ("linger.ms", "5"),
        ("log.queue", "false"),
    ]

    public init(config: KafkaClientConfig, logger: Logger, queueFullTimeout: Duration = .seconds(60)) throws {
        let settings = RDClient.settings(defaults: Self.defaultSettings, config: config)
        self.client = try RDClient(kind: .producer, settings: settings, logger: logger)
        self.logger = logger
        self.queueFullTimeout = queueFullTimeout
    }

    deinit {
        let pending = inFlight
        if pending > 0 {
            logger.warning("producer destroyed with undelivered messages; flush before releasing it", metadata: ["kafka.inFlight": .stringConvertible(pending)])
        }
    }

    /// Enqueues one message (the bytes are copied). When the local queue is full
    /// it serves delivery reports and retries — back-pressure — for up to
    /// `queueFullTimeout` before throwing. Delivery errors surface from `flush`.
    public func send(topic: String, partition: Int32? = nil, key: [UInt8]?, value: [UInt8]) throws {
        let target = partition ?? herald_partition_unassigned()
        var deadline: ContinuousClock.Instant?
        while true {
            let err = produce(topic: topic, partition: target, key: key, value: value)
            if err == RD_KAFKA_RESP_ERR_NO_ERROR { return }
            if err == RD_KAFKA_RESP_ERR__QUEUE_FULL {
                let limit = deadline ?? ContinuousClock.now + queueFullTimeout
                deadline = limit
                if ContinuousClock.now >= limit {
                    throw KafkaError.local(
                        err,
                        "local producer queue still full after \(queueFullTimeout) (\(inFlight) messages in flight)"
                    )
                }
                rd_kafka_poll(client.handle, 10)
                continue
            }
            if err == RD_KAFKA_RESP_ERR__FATAL, let fatal = KafkaError.fatal(of: client.handle) {
                throw fatal
            }
            throw KafkaError(err, "cannot enqueue message for \(topic)")
        }
    }

    /// Convenience: a UTF-8 string key, partition chosen by key hash.
    public func send(topic: String, key: String, value: [UInt8]) throws {
        try send(topic: topic, partition: nil, key: Array(key.utf8), value: value)
    }

    private func produce(topic: String, partition: Int32, key: [UInt8]?, value: [UInt8]) -> rd_kafka_resp_err_t {
        value.withUnsafeBytes { valueBytes in
            if let key {
                return key.withUnsafeBytes { keyBytes in
                    herald_produce(
                        client.handle, topic, partition,
                        keyBytes.baseAddress, keyBytes.count,
                        valueBytes.baseAddress, valueBytes.count
                    )
                }
            }
            return herald_produce(
                client.handle, topic, partition, nil, 0, valueBytes.baseAddress, valueBytes.count
            )
        }
    }

    /// Serves delivery reports without blocking.
    public func poll() {
        rd_kafka_poll(client.handle, 0)
    }

    /// Blocks until every enqueued message is acknowledged (or `timeout`).
    /// Throws the first delivery error since the previous flush (and resets it),
    /// or a timeout error. After it returns normally, every message sent before
    /// it is durably in the broker.
    public func flush(timeout: Duration) throws {
        let err = rd_kafka_flush(client.handle, timeout.rdMilliseconds)
        if let fatal = client.context.fatal {
            throw fatal
        }
        if let (error, failures) = client.context.takeDeliveryError() {
            var error = error
            if failures > 1 { error.message += " (and \(failures - 1) more failed deliveries)" }
            throw error
        }
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError.local(
                err,
                "flush did not complete within \(timeout): \(inFlight) messages still in flight"
            )
        }
    }

    /// Messages and requests not yet acknowledged (`rd_kafka_outq_len`).
    public var inFlight: Int {
        Int(rd_kafka_outq_len(client.handle))
    }
}
