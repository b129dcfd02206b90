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
        guard try SchemaWait.untilMigrated(conn, config: config, logger: logger, stop: stop) else { return }
        try writer.prepare(conn)
        try writer.partitions.ensureAhead(on: conn)
        _ = try TopicCheck.waitForTopics([topics.outcomes, topics.deadletter], coPartitioned: false,
                                         config: config, logger: logger, stop: stop)
        var backoff = Backoff()
        var firstSession = true
        while !stop.isSet {
            do {
                let retentionBox = RetentionBox()
                let consumer = try KafkaConsumer(
                    config: config.kafka, groupID: config.group, topics: [topics.outcomes, topics.deadletter],
                    logger: logger,
                    onRebalance: { event in
                        logger.info("rebalance", metadata: ["event": "\(event)"])
                        if case .revoked(let partitions) = event { retentionBox.guard?.forget(partitions) }
                        return [:]
                    })
                let retention = RetentionGuard(consumer: consumer, stage: SinkStage.name, logger: logger)
                retentionBox.guard = retention
                // A consumer that cannot be created on the first try is misconfigured.
                firstSession = false
                defer { consumer.close() }
                try session(consumer: consumer, retention: retention, conn: &conn, writer: &writer, config: config,
                            sink: sink, logger: logger, stop: stop)
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

    /// Lets the rebalance callback, created before the consumer, reach the consumer's guard.
    private final class RetentionBox {
        var `guard`: RetentionGuard?
    }

    private static func session(consumer: KafkaConsumer, retention: RetentionGuard, conn: inout PostgresConnection, writer: inout SinkWriter,
                                config: WorkerConfig, sink: SinkConfig, logger: Logger, stop: StopSignal) throws {
        let topics = config.topics
        let clock = ContinuousClock()
        let origin = clock.now
        var pacer = sink.maxRowsPerSecond.map { RatePacer(rowsPerSecond: Double($0)) }
        // Under a rate cap a batch holds at most one second's worth, so pacing stays smooth.
        let batchSize = min(config.batchSize, sink.maxRowsPerSecond ?? .max)
        var nextPartitionCheck = clock.now + partitionCheckInterval
        // Batch k is written on the writer's thread while batch k+1 is polled and decoded
        // here; k's offsets are committed only once its transaction has committed.
        let pipeline = SinkBatchWriter(conn: conn, writer: writer, lanes: sink.writers, config: config, logger: logger,
                                       stop: stop)
        let monitor = PartitionMonitor(consumer: consumer, logger: logger)
        var inFlight: (batch: SinkBatch, started: ContinuousClock.Instant)?
        func finishInFlight() throws {
            guard let (batch, started) = inFlight else { return }
            inFlight = nil
            // While PostgreSQL refuses writes, fetching pauses (memory stays bounded).
            while try !pipeline.wait(timeout: .milliseconds(200)) {
                if pipeline.isRetrying { monitor.pause(because: "PostgreSQL writes are failing") }
            }
            monitor.resume()
            try consumer.commit(batch.offsets)
            monitor.committed(batch.offsets, batch: [], since: started)
            HeraldMetrics.written(outcomes: batch.outcomes, conversions: batch.conversions.count,
                                  deadLetters: batch.letters.count, now: .now)
        }
        defer {
            pipeline.close()
            conn = pipeline.conn
            writer = pipeline.writer
        }
        while !stop.isSet {
            var batch = SinkBatch()
            // Gather a batch: up to batchSize messages or the flush interval after the first.
            var deadline: ContinuousClock.Instant?
            while batch.count < batchSize, !stop.isSet {
                let wait: Duration = deadline.map { max(.zero, $0 - clock.now) } ?? .milliseconds(100)
                if deadline != nil, wait == .zero { break }
                let messages = try consumer.poll(maxMessages: batchSize - batch.count, timeout: wait)
                monitor.polled()
                HeraldMetrics.consumed(messages)
                if messages.isEmpty {
                    // Idle: commit the batch in flight now rather than when traffic resumes.
                    if deadline == nil { try finishInFlight(); continue } else { break }
                }
                if deadline == nil { deadline = clock.now + sink.flushInterval }
                for m in messages {
                    // Rows lost to retention are recorded as a dead letter in the same batch.
                    if let lost = retention.check(m) { batch.letters.append(lost) }
                    batch.add(m, topics: topics)
                }
            }
            try finishInFlight()
            if batch.count == 0 { continue }
            if var p = pacer {
                // Peak shaving: wait for the budget before writing; Kafka keeps the backlog.
                let wait = p.reserve(batch.rows, at: (clock.now - origin) / .seconds(1))
                pacer = p
                if wait > 0 { stop.sleep(wait) }
            }
            let checkPartitions = clock.now >= nextPartitionCheck
            if checkPartitions { nextPartitionCheck = clock.now + partitionCheckInterval }
            pipeline.submit(batch, checkPartitions: checkPartitions)
            inFlight = (batch, clock.now)
        }
        try finishInFlight()
    }
}

/// One batch of consumed messages, decoded.
struct SinkBatch: Sendable {
    var outcomes: [Outcome] = []
    var conversions: [Conversion] = []
    var engagements: [Engagement] = []
    var letters: [DeadLetter] = []
    /// The next offset to commit per partition.
    var offsets: [TopicPartition: Int64] {
        var all = settledOffsets
        if let run = offsetRun { all[run.partition] = run.next }
        return all
    }
    private var settledOffsets: [TopicPartition: Int64] = [:]
    /// The partition of the latest messages and the offset after them: a poll returns a
    /// partition's messages together, so the dictionary is written once per run, not per message.
    private var offsetRun: (partition: TopicPartition, next: Int64)?
    /// Values repeated across the batch's outcomes, decoded once (`OutcomeValueCache`).
    private var valueCache = OutcomeValueCache()
    var count = 0

    var rows: Int { outcomes.count + conversions.count + engagements.count + letters.count }

    mutating func add(_ m: KafkaMessage, topics: TopicNames) {
        count += 1
        if let run = offsetRun, run.partition.partition == m.partition, run.partition.topic == m.topic {
            offsetRun!.next = m.offset + 1
        } else {
            if let run = offsetRun { settledOffsets[run.partition] = run.next }
            offsetRun = (TopicPartition(m.topic, m.partition), m.offset + 1)
        }
        do throws(MessageDecodingError) {
            let kind = m.topic == topics.outcomes ? Conversion.kind(of: m.value) : nil
            if kind == "conversion" {
                conversions.append(try Conversion(json: m.value))
            } else if kind == "engagement" {
                engagements.append(try Engagement(json: m.value))
            } else if m.topic == topics.outcomes {
                outcomes.append(try Outcome(json: m.value, cache: &valueCache))
            } else {
                letters.append(try DeadLetter(json: m.value))
            }
        } catch {
            let reason = m.topic == topics.outcomes ? "invalid_outcome" : "invalid_dead_letter"
            letters.append(DeadLetter(stage: SinkStage.name, reason: reason, detail: error.message, message: m))
        }
    }
}
