import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import Logging

/// Opens a PostgreSQL connection, waiting with backoff while the server is unreachable.
enum PostgresWait {
    static func connect(_ conninfo: String?, logger: Logger, stop: StopSignal) throws -> PostgresConnection? {
        guard let conninfo else {
            throw WorkerError.configuration("no PostgreSQL: pass --postgres or set HERALD_POSTGRES")
        }
        var backoff = Backoff(initial: 0.5, max: 10)
        while !stop.isSet {
            do {
                return try PostgresConnection(conninfo, logger: logger)
            } catch {
                let delay = backoff.take()
                logger.warning("waiting for PostgreSQL", metadata: [
                    "postgres": "\(Redaction.postgres(conninfo))", "error": "\(error)", "retry_in_s": "\(delay)",
                ])
                stop.sleep(delay)
            }
        }
        return nil
    }
}

/// herald-sink: herald.outcomes + herald.deadletter → PostgreSQL, in batches. Offsets are
/// committed to Kafka only after the batch's transaction has committed.
public enum SinkStage {
    public static let name = "herald-sink"

    /// How often the partitions ahead of today are checked while running.
    static let partitionCheckInterval: Duration = .seconds(3600)

    public static func run(config: WorkerConfig, sink: SinkConfig = SinkConfig(), logger: Logger, stop: StopSignal) throws {
        let topics = config.topics
        guard var conn = try PostgresWait.connect(config.postgres, logger: logger, stop: stop) else { return }
        var writer = SinkWriter(schema: config.schema)
        let migrator = Migrator(schema: config.schema)
        var version = try migrator.currentVersion(conn)
        while version < Migrator.latestVersion, !stop.isSet {
            logger.warning("waiting for the schema: run `herald migrate`", metadata: [
                "schema": "\(config.schema)", "have": "\(version)", "need": "\(Migrator.latestVersion)",
            ])
            stop.sleep(2)
            version = try migrator.currentVersion(conn)
        }
        try writer.prepare(conn)
        try writer.partitions.ensureAhead(on: conn)
        _ = try TopicCheck.waitForTopics([topics.outcomes, topics.deadletter], coPartitioned: false,
                                         config: config, logger: logger, stop: stop)
        var backoff = Backoff()
        var firstSession = true
        while !stop.isSet {
            do {
                let consumer = try KafkaConsumer(
                    config: config.kafka, groupID: config.group, topics: [topics.outcomes, topics.deadletter],
                    logger: logger,
                    onRebalance: { event in
                        logger.info("rebalance", metadata: ["event": "\(event)"])
                        return [:]
                    })
                // A consumer that cannot be created on the first try is misconfigured.
                firstSession = false
                defer { consumer.close() }
                try session(consumer: consumer, conn: &conn, writer: &writer, config: config, sink: sink, logger: logger,
                            stop: stop)
                backoff = Backoff()
            } catch let error as WorkerError {
                throw error
            } catch {
                if firstSession { throw error }
                let delay = backoff.take()
                logger.error("sink session failed; resuming from committed offsets", metadata: [
                    "error": "\(error)", "retry_in_s": "\(delay)",
                ])
                stop.sleep(delay)
                if !conn.isHealthy {
                    guard let c = try PostgresWait.connect(config.postgres, logger: logger, stop: stop) else { return }
                    conn = c
                    try writer.prepare(conn)
                }
            }
        }
    }

    private static func session(consumer: KafkaConsumer, conn: inout PostgresConnection, writer: inout SinkWriter,
                                config: WorkerConfig, sink: SinkConfig, logger: Logger, stop: StopSignal) throws {
        let topics = config.topics
        let clock = ContinuousClock()
        let origin = clock.now
        var pacer = sink.maxRowsPerSecond.map { RatePacer(rowsPerSecond: Double($0)) }
        // Under a rate cap a batch holds at most one second's worth, so pacing stays smooth.
        let batchSize = min(config.batchSize, sink.maxRowsPerSecond ?? .max)
        var nextPartitionCheck = clock.now + partitionCheckInterval
        var outcomes: [Outcome] = []
        var conversions: [Conversion] = []
        var letters: [DeadLetter] = []
        var offsets: [TopicPartition: Int64] = [:]
        var count = 0
        while !stop.isSet {
            // Gather a batch: up to batchSize messages or the flush interval after the first.
            var deadline: ContinuousClock.Instant?
            while count < batchSize, !stop.isSet {
                let wait: Duration = deadline.map { max(.zero, $0 - clock.now) } ?? .milliseconds(100)
                if deadline != nil, wait == .zero { break }
                let messages = try consumer.poll(maxMessages: batchSize - count, timeout: wait)
                if messages.isEmpty {
                    if deadline == nil { continue } else { break }
                }
                if deadline == nil { deadline = clock.now + sink.flushInterval }
                for m in messages {
                    count += 1
                    offsets[TopicPartition(m.topic, m.partition)] = m.offset + 1
                    do throws(MessageDecodingError) {
                        if m.topic == topics.outcomes, Conversion.kind(of: m.value) == "conversion" {
                            conversions.append(try Conversion(json: m.value))
                        } else if m.topic == topics.outcomes {
                            outcomes.append(try Outcome(json: m.value))
                        } else {
                            letters.append(try DeadLetter(json: m.value))
                        }
                    } catch {
                        let reason = m.topic == topics.outcomes ? "invalid_outcome" : "invalid_dead_letter"
                        letters.append(DeadLetter(stage: name, reason: reason, detail: error.message, message: m))
                    }
                }
            }
            if count == 0 { continue }
            if var p = pacer {
                // Peak shaving: wait for the budget before writing; Kafka keeps the backlog.
                let wait = p.reserve(outcomes.count + conversions.count + letters.count, at: (clock.now - origin) / .seconds(1))
                pacer = p
                if wait > 0 { stop.sleep(wait) }
            }
            if clock.now >= nextPartitionCheck {
                nextPartitionCheck = clock.now + partitionCheckInterval
                _ = try? writer.partitions.ensureAhead(on: conn)
            }
            try writeWithRetry(outcomes: outcomes, conversions: conversions, letters: letters, conn: &conn,
                               writer: &writer, config: config, logger: logger, stop: stop)
            try consumer.commit(offsets)
            logger.debug("batch written", metadata: ["outcomes": "\(outcomes.count)", "dead_letters": "\(letters.count)"])
            outcomes.removeAll(keepingCapacity: true)
            conversions.removeAll(keepingCapacity: true)
            letters.removeAll(keepingCapacity: true)
            offsets.removeAll(keepingCapacity: true)
            count = 0
        }
    }

    /// Retries a failed batch for a while (the consumer keeps its partitions); past that the
    /// session ends, the consumer leaves the group, and the batch is re-read after recovery.
    private static func writeWithRetry(outcomes: [Outcome], conversions: [Conversion], letters: [DeadLetter],
                                       conn: inout PostgresConnection,
                                       writer: inout SinkWriter, config: WorkerConfig, logger: Logger, stop: StopSignal) throws {
        var backoff = Backoff(initial: 0.2, max: 5)
        let giveUp = Date().addingTimeInterval(30)
        while true {
            do {
                try writer.write(outcomes: outcomes, conversions: conversions, deadLetters: letters, on: conn)
                return
            } catch let error as PostgresError {
                guard Date() < giveUp, !stop.isSet else { throw error }
                let delay = backoff.take()
                logger.warning("batch write failed; retrying", metadata: ["error": "\(error)", "retry_in_s": "\(delay)"])
                stop.sleep(delay)
                if error.isConnectionFailure || !conn.isHealthy {
                    if (try? conn.reconnect()) != nil { try? writer.prepare(conn) }
                }
            }
        }
    }
}
