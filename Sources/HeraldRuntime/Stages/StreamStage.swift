import HeraldCore
import HeraldKafka
import Logging

/// A message a stage publishes.
public struct OutputRecord: Sendable {
    public var topic: String
    public var key: [UInt8]?
    public var value: [UInt8]

    public init(topic: String, key: [UInt8]?, value: [UInt8]) {
        self.topic = topic
        self.key = key
        self.value = value
    }
}

/// What a stage does with its input; called on the stage's own thread.
protocol StageHandler: AnyObject {
    func handle(_ message: KafkaMessage, progress: PartitionPositions, into out: inout [OutputRecord])
    /// After every poll, with or without messages: time-driven work (timers).
    func tick(progress: PartitionPositions, into out: inout [OutputRecord])
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

    func forget(_ partitions: [TopicPartition]) {
        for p in partitions { next[p] = nil }
    }

    /// No backlog: everything the broker had for `tp` at its last fetch response is consumed.
    func isCaughtUp(_ tp: TopicPartition) -> Bool {
        guard let marks = consumer.cachedWatermarks(tp) else { return false }
        if let n = next[tp] { return n >= marks.high }
        // Nothing consumed yet in this session: start from the committed offset.
        let committed = (try? consumer.committed([tp], timeout: .seconds(5)))?[tp] ?? marks.low
        next[tp] = committed
        return committed >= marks.high
    }

    var assignment: [TopicPartition] { consumer.assignment }
}

/// The consume → process → produce → acknowledge → commit loop of herald-trigger and
/// herald-shaper.
///
/// Offsets are committed only after every output of the batch has been acknowledged by
/// the broker, so a crash re-processes at most the uncommitted batch; outputs carry
/// deterministic ids, which downstream stages and the sink treat idempotently.
/// Any Kafka error ends the session: the consumer leaves the group and a new one resumes
/// from the committed offsets after a backoff.
final class StreamStage {
    let config: WorkerConfig
    let inputs: [String]
    let logger: Logger
    let handler: StageHandler

    init(config: WorkerConfig, inputs: [String], logger: Logger, handler: StageHandler) {
        self.config = config
        self.inputs = inputs
        self.logger = logger
        self.handler = handler
    }

    func run(stop: StopSignal) throws {
        let producer = try KafkaProducer(config: config.kafka, logger: logger)
        var backoff = Backoff()
        var sessions = 0
        while !stop.isSet {
            sessions += 1
            do {
                try session(producer: producer, stop: stop)
            } catch {
                // A consumer that cannot even be created on the first try is misconfigured.
                if sessions == 1, case SessionError.consumerCreation(let e) = error { throw e }
                let delay = backoff.take()
                logger.error("stage session failed; resuming from committed offsets", metadata: [
                    "error": "\(error)", "retry_in_s": "\(delay)",
                ])
                stop.sleep(delay)
                continue
            }
            backoff = Backoff()
        }
        try? producer.flush(timeout: .seconds(10))
    }

    enum SessionError: Error {
        case consumerCreation(any Error)
    }

    private final class Pending {
        var offsets: [TopicPartition: Int64] = [:]
        var positions: PartitionPositions?
        var retention: RetentionGuard?
    }

    private func session(producer: KafkaProducer, stop: StopSignal) throws {
        let pending = Pending()
        let logger = self.logger
        let handler = self.handler
        let consumer: KafkaConsumer
        do {
            consumer = try KafkaConsumer(
                config: config.kafka, groupID: config.group, topics: inputs, logger: logger,
                onRebalance: { event in
                    switch event {
                    case .assigned(let partitions):
                        logger.info("partitions assigned", metadata: ["partitions": "\(partitions)"])
                    case .revoked(let partitions):
                        logger.info("partitions revoked", metadata: ["partitions": "\(partitions)"])
                        // Everything polled so far has been processed (batches are processed
                        // whole before the next poll); pending offsets were committed
                        // unless the last commit failed, in which case the new owner
                        // re-processes and downstream drops the repeated ids.
                        for p in partitions { pending.offsets[p] = nil }
                        pending.positions?.forget(partitions)
                        pending.retention?.forget(partitions)
                        handler.revoked(partitions)
                    }
                    return [:]
                })
        } catch {
            throw SessionError.consumerCreation(error)
        }
        defer { consumer.close() }
        let positions = PartitionPositions(consumer: consumer)
        pending.positions = positions
        let retention = RetentionGuard(consumer: consumer, stage: config.stage, logger: logger)
        pending.retention = retention
        let monitor = PartitionMonitor(consumer: consumer, logger: logger)
        var outputs: [OutputRecord] = []
        // Messages handled since the last commit, and since when: a commit (a broker round
        // trip, after waiting for every output's acknowledgement) covers many polls.
        var uncommitted: [KafkaMessage] = []
        var batchStarted: ContinuousClock.Instant?
        while !stop.isSet {
            let messages = try consumer.poll(maxMessages: config.batchSize, timeout: .milliseconds(uncommitted.isEmpty ? 100 : 0))
            monitor.polled()
            if !messages.isEmpty, batchStarted == nil { batchStarted = .now }
            outputs.removeAll(keepingCapacity: true)
            for message in messages {
                if let lost = retention.check(message) {
                    outputs.append(OutputRecord(topic: config.topics.deadletter, key: nil, value: lost.json))
                }
                positions.consumed(message)
                handler.handle(message, progress: positions, into: &outputs)
                pending.offsets[TopicPartition(message.topic, message.partition)] = message.offset + 1
            }
            uncommitted += messages
            let batchDue = messages.isEmpty || uncommitted.count >= config.batchSize
                || batchStarted.map { ContinuousClock.now - $0 >= .milliseconds(100) } ?? true
            if batchDue { handler.tick(progress: positions, into: &outputs) }
            for o in outputs {
                try producer.send(topic: o.topic, key: o.key, value: o.value)
            }
            guard batchDue else { continue }
            if outputs.isEmpty && pending.offsets.isEmpty && producer.inFlight == 0 {
                producer.poll()
                uncommitted.removeAll(keepingCapacity: true)
                batchStarted = nil
                continue
            }
            try monitor.flush(producer, timeout: .seconds(60))
            if !pending.offsets.isEmpty {
                try consumer.commit(pending.offsets)
                monitor.committed(pending.offsets, batch: uncommitted, since: batchStarted ?? .now)
                pending.offsets.removeAll(keepingCapacity: true)
            }
            uncommitted.removeAll(keepingCapacity: true)
            batchStarted = nil
        }
    }
}
