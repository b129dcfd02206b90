import HeraldCore
import HeraldKafka
import HeraldPostgres
import Logging

/// A message a stage publishes.
public struct OutputRecord: Sendable {
    public var topic: String
    /// nil: chosen by the key.
    public var partition: Int32?
    public var key: [UInt8]?
    public var value: [UInt8]

    public init(topic: String, partition: Int32? = nil, key: [UInt8]?, value: [UInt8]) {
        self.topic = topic
        self.partition = partition
        self.key = key
        self.value = value
    }
}

/// A partition number's state changes since the previous checkpoint.
struct PartitionChanges {
    var meta: [UInt8]
    var users: [UserStateRecord]
    var seen: [SeenEventsChunk] = []
    var seenGenerations: [Timestamp]?
}

/// What a stage does with its input; called on the stage's own thread.
///
/// State is kept per partition number: partition N of every input topic holds the same
/// users (they are co-partitioned by user and range assignment keeps them together).
protocol StageHandler: AnyObject {
    func handle(_ message: KafkaMessage, progress: PartitionPositions, into out: inout [OutputRecord])
    /// After every batch, with or without messages: time-driven work (timers).
    func tick(progress: PartitionPositions, into out: inout [OutputRecord])
    /// The partition-level state and the users changed since the last call.
    func changes(_ partition: Int32) -> PartitionChanges
    /// Per input topic, the offset of the oldest message read but held without its effect
    /// in the state (empty when none): reading resumes there after a restart, and lag tools
    /// do not count it as done.
    func unapplied(_ partition: Int32) -> [String: Int64]
    /// Replaces the partition's state with a stored checkpoint (empty when it has none).
    func restore(_ checkpoint: StoredCheckpoint) throws
    /// Forgets the partition's state.
    func drop(_ partition: Int32)
    /// The input partitions are no longer consumed (their state may be kept, see `drop`).
    func revoked(_ partitions: [TopicPartition])
}

/// Where the consumer is in each assigned partition, for "is it caught up?" (SPEC §5).
final class PartitionPositions {
    let consumer: KafkaConsumer
    /// The next offset to consume, per partition, once known.
    private var next: [TopicPartition: Int64] = [:]

    init(consumer: KafkaConsumer) {
        self.consumer = consumer
    }

    func consumed(_ m: KafkaMessage) {
        next[TopicPartition(m.topic, m.partition)] = m.offset + 1
    }

    /// Consumption of `tp` starts at `offset` (a checkpoint's).
    func start(_ tp: TopicPartition, at offset: Int64) {
        next[tp] = offset
    }

    func forget(_ partitions: [TopicPartition]) {
        for p in partitions { next[p] = nil }
    }

    /// No backlog: everything the broker had for `tp` at its last fetch response is consumed.
    func isCaughtUp(_ tp: TopicPartition) -> Bool {
        guard let marks = consumer.cachedWatermarks(tp) else { return false }
        if let n = next[tp] { return n >= marks.high }
        // Nothing consumed yet in this session and no checkpoint: start from the committed offset.
        let committed = (try? consumer.committed([tp], timeout: .seconds(5)))?[tp] ?? marks.low
        next[tp] = committed
        return committed >= marks.high
    }

    var assignment: [TopicPartition] { consumer.assignment }
}

/// The consume → process → produce loop of herald-trigger and herald-shaper, with their
/// state checkpointed to PostgreSQL (SPEC §8, docs/reliability.md).
///
/// Every `--checkpoint-interval` (or `checkpointMessages` messages), and when partitions are
/// revoked or the worker stops: wait until the broker has acknowledged every output so far,
/// then write the changed users' state, each partition's state and the next input offsets
/// in one PostgreSQL transaction, then commit those offsets to Kafka for lag tools. On
/// assignment, a partition's state is loaded and consumption starts at its checkpointed
/// offsets, so a crash re-processes exactly the events after the last checkpoint, from the
/// state of that checkpoint, and re-emits the same outputs with the same ids, which
/// herald-shaper and herald-sink drop. Partitions are fenced by an epoch (`CheckpointStore`).
final class StreamStage {
    let config: WorkerConfig
    let inputs: [String]
    let logger: Logger
    let handler: StageHandler
    /// Most messages between checkpoints (besides the interval).
    var checkpointMessages = 200_000

    init(config: WorkerConfig, inputs: [String], logger: Logger, handler: StageHandler) {
        self.config = config
        self.inputs = inputs
        self.logger = logger
        self.handler = handler
    }

    /// The stage thread's store (claims, loads, checkpoints at revocation) and the writer
    /// of periodic checkpoints, each on its own connection.
    private struct Stores {
        var store: CheckpointStore
        var writer: CheckpointWriter
    }

    /// Both stores; the stage thread's on `conn` when given.
    private func connectStores(using given: PostgresConnection? = nil, stop: StopSignal) throws -> Stores? {
        guard let conn = try given ?? PostgresWait.connect(config.postgres, logger: logger, stop: stop),
              let writerConn = try PostgresWait.connect(config.postgres, logger: logger, stop: stop) else { return nil }
        let store = try CheckpointStore(conn: conn, schema: config.schema, group: config.group)
        let background = try CheckpointStore(conn: writerConn, schema: config.schema, group: config.group)
        return Stores(store: store, writer: CheckpointWriter(store: background))
    }

    /// State is kept per partition number, so partition N of every input must land on the
    /// same worker: eager range assignment does that (with equal partition counts).
    static func checkAssignmentStrategy(_ config: WorkerConfig) throws {
        if let strategy = config.kafkaProperties["partition.assignment.strategy"], strategy != "range" {
            throw WorkerError.configuration(
                "partition.assignment.strategy=\(strategy) is not supported by \(config.stage): it keeps per-user state by "
                    + "partition number, which needs partition N of every input topic on one worker (range assignment)")
        }
    }

    func run(stop: StopSignal) throws {
        guard let conn = try PostgresWait.connect(config.postgres, logger: logger, stop: stop) else { return }
        guard try SchemaWait.untilMigrated(conn, config: config, logger: logger, stop: stop) else { return }
        guard var stores = try connectStores(using: conn, stop: stop) else { return }
        defer { stores.writer.close() }
        let producer = try KafkaProducer(config: config.kafka, logger: logger)
        var backoff = Backoff()
        var sessions = 0
        while !stop.isSet {
            sessions += 1
            do {
                try session(producer: producer, stores: stores, stop: stop)
            } catch {
                // A consumer that cannot even be created on the first try is misconfigured.
                if sessions == 1, case SessionError.consumerCreation(let e) = error { throw e }
                let delay = backoff.take()
                logger.error("stage session failed; resuming from the last checkpoint", metadata: [
                    "error": "\(error)", "retry_in_s": "\(delay)",
                ])
                stop.sleep(delay)
                if !stores.store.conn.isHealthy || error is PostgresError {
                    do {
                        guard let fresh = try connectStores(stop: stop) else { break }
                        stores.writer.close()
                        stores = fresh
                    } catch {
                        logger.warning("cannot prepare checkpoints", metadata: ["error": "\(error)"])
                    }
                }
                continue
            }
            backoff = Backoff()
        }
        try? producer.flush(timeout: .seconds(10))
    }

    enum SessionError: Error {
        case consumerCreation(any Error)
    }

    /// The partition numbers this worker owns in a session, and what the rebalance
    /// callback (which runs inside `poll`/`close`) needs.
    private final class Ownership {
        struct Owned {
            var epoch: Int64
            /// The next offset to read per input topic: consumed so far, and at the last checkpoint.
            var next: [String: Int64]
            var saved: [String: Int64]
            var savedMeta: [UInt8]?
            /// What this session has committed to Kafka (for lag tools), per input topic.
            var kafka: [String: Int64] = [:]
        }
        var owned: [Int32: Owned] = [:]
        /// Checkpointed at revocation; the handler still holds their state.
        var retained: [Int32: Owned] = [:]
        /// A failure inside the rebalance callback, thrown by the loop after `poll`.
        var failure: (any Error)?
        var positions: PartitionPositions?
        var retention: RetentionGuard?
        var consumer: KafkaConsumer?
        var monitor: PartitionMonitor?
    }

    private func session(producer: KafkaProducer, stores: Stores, stop: StopSignal) throws {
        let own = Ownership()
        let store = stores.store, writer = stores.writer
        let consumer: KafkaConsumer
        do {
            consumer = try KafkaConsumer(
                config: config.kafka, groupID: config.group, topics: inputs, logger: logger,
                onRebalance: { [self] event in
                    switch event {
                    case .assigned(let partitions):
                        return assigned(partitions, own: own, store: store, writer: writer)
                    case .revoked(let partitions):
                        revoked(partitions, own: own, store: store, writer: writer, producer: producer)
                        return [:]
                    }
                })
        } catch {
            throw SessionError.consumerCreation(error)
        }
        own.consumer = consumer
        defer {
            consumer.close()
            _ = try? writer.finish()
            // Whatever the close could not checkpoint is not trusted beyond this session.
            for p in Set(own.owned.keys).union(own.retained.keys) { handler.drop(p) }
            // The consumer's callback holds `own`: break the cycle.
            own.consumer = nil
            own.positions = nil
            own.retention = nil
            own.monitor = nil
        }
        let positions = PartitionPositions(consumer: consumer)
        own.positions = positions
        let retention = RetentionGuard(consumer: consumer, stage: config.stage, logger: logger)
        own.retention = retention
        let monitor = PartitionMonitor(consumer: consumer, logger: logger)
        own.monitor = monitor
        var outputs: [OutputRecord] = []
        var batch: [KafkaMessage] = []
        var batchStarted: ContinuousClock.Instant?
        var lastCheckpoint = ContinuousClock.now
        var sinceCheckpoint = 0
        var lastIdleCommit = ContinuousClock.now
        var consumedSinceTrim = false
        var lastMessage = ContinuousClock.now
        let interval = Duration.microseconds(config.checkpointInterval.microseconds)
        while !stop.isSet {
            let messages = try consumer.poll(maxMessages: config.batchSize, timeout: .milliseconds(batch.isEmpty ? 100 : 0))
            if let failure = own.failure { throw failure }
            monitor.polled()
            if !messages.isEmpty, batchStarted == nil { batchStarted = .now }
            outputs.removeAll(keepingCapacity: true)
            for message in messages {
                if let lost = retention.check(message) {
                    outputs.append(OutputRecord(topic: config.topics.deadletter, key: nil, value: lost.json))
                }
                positions.consumed(message)
                handler.handle(message, progress: positions, into: &outputs)
                own.owned[message.partition]?.next[message.topic] = message.offset + 1
            }
            batch += messages
            sinceCheckpoint += messages.count
            if !messages.isEmpty {
                consumedSinceTrim = true
                lastMessage = .now
            }
            let batchDue = messages.isEmpty || batch.count >= config.batchSize
                || batchStarted.map { ContinuousClock.now - $0 >= .milliseconds(100) } ?? true
            if batchDue { handler.tick(progress: positions, into: &outputs) }
            for o in outputs {
                try producer.send(topic: o.topic, partition: o.partition, key: o.key, value: o.value)
            }
            guard batchDue else { continue }
            producer.poll()
            if !batch.isEmpty {
                monitor.processed(batch, since: batchStarted ?? .now)
                batch.removeAll(keepingCapacity: true)
            }
            batchStarted = nil
            if ContinuousClock.now - lastCheckpoint >= interval || sinceCheckpoint >= checkpointMessages {
                // The previous checkpoint first (it has had a whole interval), then this one's
                // outputs acknowledged, then its changes handed to the writer.
                try finishCheckpoint(own: own, writer: writer)
                returnFreedMemory()  // (the finished checkpoint's rows are freed by now)
                try monitor.flush(producer, timeout: .seconds(60))
                let writes = changes(own.owned.keys.sorted(), own: own)
                if !writes.isEmpty { writer.submit(writes, started: .now) }
                lastCheckpoint = .now
                sinceCheckpoint = 0
            } else if messages.isEmpty, ContinuousClock.now - lastIdleCommit >= .milliseconds(500) {
                try commitApplied(own: own, producer: producer)
                lastIdleCommit = .now
                // Idle for a second after work (not an empty poll within a drain): what the
                // work freed (fetch buffers, copies of grown arrays).
                if consumedSinceTrim, ContinuousClock.now - lastMessage >= .seconds(1) {
                    returnFreedMemory()
                    consumedSinceTrim = false
                }
            }
        }
    }

    /// Gives the allocator's free memory back to the system (`ProcessMemory.returnFreedMemory`):
    /// after each checkpoint and when the stage falls idle after work, so that the worker's
    /// resident memory is its state and buffers in use, not everything it once freed
    /// (docs/decisions.md). A few milliseconds each time.
    private func returnFreedMemory() {
        let started = ContinuousClock.now
        let returned = ProcessMemory.returnFreedMemory()
        logger.debug("returned freed memory to the system", metadata: [
            "returned": "\(returned)", "ms": "\((ContinuousClock.now - started) / .milliseconds(1))",
        ])
    }

    /// Idle (at most twice a second): commits to Kafka, for lag tools, how far each
    /// checkpointed partition has been read and applied, once the outputs so far are
    /// acknowledged. Between checkpoints an
    /// idle stage would otherwise show as lag whatever arrived since the last one (for
    /// herald-shaper, herald-trigger's clock records every second). Where consumption
    /// resumes is still the checkpoint's business; a partition without a checkpoint, which
    /// would resume at its committed offset, is left alone.
    private func commitApplied(own: Ownership, producer: KafkaProducer) throws {
        var applied: [TopicPartition: Int64] = [:]
        for (p, o) in own.owned where o.savedMeta != nil {
            for (topic, offset) in o.next.merging(handler.unapplied(p), uniquingKeysWith: min) {
                applied[TopicPartition(topic, p)] = offset
            }
        }
        let ahead = aheadOfKafka(applied, own: own)
        guard !ahead.isEmpty else { return }
        try own.monitor?.flush(producer, timeout: .seconds(60))
        commitToKafka(ahead, own: own)
    }

    /// The offsets beyond what this session has committed to Kafka: Kafka's offset never
    /// moves back (a checkpoint finishing after an idle commit holds older offsets).
    private func aheadOfKafka(_ offsets: [TopicPartition: Int64], own: Ownership) -> [TopicPartition: Int64] {
        offsets.filter { tp, offset in offset > (own.owned[tp.partition]?.kafka[tp.topic] ?? -1) }
    }

    /// Commits offsets (from `aheadOfKafka`) for lag tools; failures only warn.
    private func commitToKafka(_ offsets: [TopicPartition: Int64], own: Ownership) {
        guard !offsets.isEmpty else { return }
        do {
            try own.consumer?.commit(offsets)
            for (tp, offset) in offsets { own.owned[tp.partition]?.kafka[tp.topic] = offset }
            own.monitor?.committed(offsets)
        } catch {
            logger.warning("cannot commit offsets to Kafka", metadata: ["error": "\(error)"])
        }
    }

    /// The partitions' changes since their last checkpoint (handed over by the handler).
    private func changes(_ partitions: [Int32], own: Ownership) -> [CheckpointWrite] {
        var writes: [CheckpointWrite] = []
        for p in partitions {
            guard let o = own.owned[p] else { continue }
            let c = handler.changes(p)
            let offsets = o.next.merging(handler.unapplied(p), uniquingKeysWith: min)
            if c.users.isEmpty, c.seen.isEmpty, offsets == o.saved, c.meta == o.savedMeta { continue }
            // Nothing read yet: a checkpoint now would pin the start to the topics' beginning.
            if c.users.isEmpty, o.next.isEmpty, o.savedMeta == nil { continue }
            writes.append(CheckpointWrite(partition: p, epoch: o.epoch, meta: c.meta, offsets: offsets, users: c.users,
                                          seen: c.seen, seenGenerations: c.seenGenerations))
        }
        return writes
    }

    /// Waits for the checkpoint the writer has in flight. Committed: its offsets go to Kafka.
    /// Failed: the handler had handed its changes over, so its state can no longer be
    /// checkpointed incrementally; it goes, and the partitions are reloaded next session.
    private func finishCheckpoint(own: Ownership, writer: CheckpointWriter) throws {
        guard let pending = writer.inFlight else { return }
        do {
            _ = try writer.finish()
        } catch {
            dropAfterFailedCheckpoint(pending.writes.map(\.partition), own: own)
            throw error
        }
        committed(pending.writes, since: pending.started, own: own)
    }

    /// Writes the partitions' changes now, on the stage's thread (revocation); the caller
    /// has flushed the producer.
    private func checkpointNow(_ partitions: [Int32], own: Ownership, store: CheckpointStore) throws {
        let started = ContinuousClock.now
        let writes = changes(partitions, own: own)
        do {
            try store.save(writes)
        } catch {
            dropAfterFailedCheckpoint(partitions, own: own)
            throw error
        }
        committed(writes, since: started, own: own)
    }

    private func dropAfterFailedCheckpoint(_ partitions: [Int32], own: Ownership) {
        for p in partitions {
            handler.drop(p)
            own.owned[p] = nil
        }
    }

    /// A checkpoint is in PostgreSQL: remember it, and commit its offsets to Kafka.
    private func committed(_ writes: [CheckpointWrite], since started: ContinuousClock.Instant, own: Ownership) {
        var commit: [TopicPartition: Int64] = [:]
        for w in writes {
            own.owned[w.partition]?.saved = w.offsets
            own.owned[w.partition]?.savedMeta = w.meta
            for (topic, offset) in w.offsets { commit[TopicPartition(topic, w.partition)] = offset }
        }
        guard !writes.isEmpty else { return }
        let d = ContinuousClock.now - started
        HeraldMetrics.checkpoint(seconds: Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
        logger.debug("checkpointed", metadata: [
            "partitions": "\(writes.map(\.partition))", "users": "\(writes.reduce(0) { $0 + $1.users.count })",
        ])
        // For lag tools only: the checkpoint, not Kafka, decides where consumption resumes.
        commitToKafka(aheadOfKafka(commit, own: own), own: own)
    }

    /// Claims and loads the assigned partition numbers; returns where to start reading.
    private func assigned(_ partitions: [TopicPartition], own: Ownership, store: CheckpointStore,
                          writer: CheckpointWriter) -> [TopicPartition: Int64] {
        logger.info("partitions assigned", metadata: ["partitions": "\(partitions)"])
        // A claim bumps the epoch: nothing of this worker's may still be on its way.
        do {
            try finishCheckpoint(own: own, writer: writer)
        } catch {
            logger.error("a checkpoint failed", metadata: ["error": "\(error)"])
            own.failure = error
            return [:]
        }
        let numbers = Set(partitions.map(\.partition))
        for (p, _) in own.retained where !numbers.contains(p) {
            handler.drop(p)
            own.retained[p] = nil
        }
        var start: [TopicPartition: Int64] = [:]
        do {
            for p in numbers.sorted() where own.owned[p] == nil {
                let retained = own.retained.removeValue(forKey: p)
                let claim = try store.claim(p, keeping: retained?.epoch)
                var owned: Ownership.Owned
                if claim.kept, var kept = retained {
                    kept.epoch = claim.epoch
                    owned = kept
                } else {
                    handler.drop(p)
                    let loadStarted = ContinuousClock.now
                    let checkpoint = try store.load(p, epoch: claim.epoch)
                    try handler.restore(checkpoint)
                    owned = Ownership.Owned(epoch: claim.epoch, next: checkpoint.offsets, saved: checkpoint.offsets,
                                            savedMeta: checkpoint.meta)
                    if checkpoint.meta != nil {
                        logger.info("partition state loaded", metadata: [
                            "partition": "\(p)", "users": "\(checkpoint.users.count)",
                            "seconds": "\((ContinuousClock.now - loadStarted).components.seconds)",
                        ])
                    }
                }
                own.owned[p] = owned
                // A checkpointed partition resumes exactly where its state ends.
                guard owned.savedMeta != nil else { continue }
                for tp in partitions where tp.partition == p {
                    let offset = owned.next[tp.topic] ?? KafkaConsumer.offsetBeginning
                    start[tp] = offset
                    if offset >= 0 { own.positions?.start(tp, at: offset) }
                    own.retention?.start(tp, at: offset >= 0 ? offset : nil)
                }
            }
        } catch {
            logger.error("cannot load partition state", metadata: ["error": "\(error)"])
            own.failure = error
        }
        return start
    }

    /// Checkpoints the revoked partition numbers and keeps their state in memory in case
    /// they come back (eager rebalancing revokes everything first).
    private func revoked(_ partitions: [TopicPartition], own: Ownership, store: CheckpointStore, writer: CheckpointWriter,
                         producer: KafkaProducer) {
        logger.info("partitions revoked", metadata: ["partitions": "\(partitions)"])
        own.positions?.forget(partitions)
        own.retention?.forget(partitions)
        handler.revoked(partitions)
        do {
            try finishCheckpoint(own: own, writer: writer)
        } catch {
            logger.warning("a checkpoint failed; the partitions' next owners resume from the one before",
                           metadata: ["error": "\(error)"])
        }
        let numbers = Set(partitions.map(\.partition)).filter { own.owned[$0] != nil }.sorted()
        guard !numbers.isEmpty else { return }
        do {
            try producer.flush(timeout: .seconds(30))
            try checkpointNow(numbers, own: own, store: store)
            for p in numbers { own.retained[p] = own.owned.removeValue(forKey: p) }
        } catch {
            logger.warning("cannot checkpoint revoked partitions; their next owner resumes from the previous checkpoint",
                           metadata: ["partitions": "\(numbers)", "error": "\(error)"])
            for p in numbers {
                handler.drop(p)
                own.owned[p] = nil
            }
        }
    }
}

/// Waits until `herald migrate` has brought the schema to this version.
enum SchemaWait {
    /// False when stopped while waiting.
    static func untilMigrated(_ conn: PostgresConnection, config: WorkerConfig, logger: Logger, stop: StopSignal) throws -> Bool {
        let migrator = Migrator(schema: config.schema)
        var version = try migrator.currentVersion(conn)
        while version < Migrator.latestVersion {
            if stop.isSet { return false }
            logger.warning("waiting for the schema: run `herald migrate`", metadata: [
                "schema": "\(config.schema)", "have": "\(version)", "need": "\(Migrator.latestVersion)",
            ])
            stop.sleep(2)
            version = try migrator.currentVersion(conn)
        }
        return true
    }
}
