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

/// The consume → process → produce → acknowledge → commit loop of herald-trigger and
/// herald-shaper.
///
/// Offsets are committed only after every output of the batch has been acknowledged by
/// the broker, so a crash re-processes at most the uncommitted batch; outputs carry
/// deterministic ids, which downstream stages and the sink treat idempotently.
/// Any Kafka error ends the session: the consumer leaves the group and a new one resumes
/// from the committed offsets after a backoff.
final class StreamStage {
    typealias Process = (KafkaMessage, inout [OutputRecord]) -> Void

    let config: WorkerConfig
    let inputs: [String]
    let logger: Logger
    let process: Process

    init(config: WorkerConfig, inputs: [String], logger: Logger, process: @escaping Process) {
        self.config = config
        self.inputs = inputs
        self.logger = logger
        self.process = process
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
    }

    private func session(producer: KafkaProducer, stop: StopSignal) throws {
        let pending = Pending()
        let logger = self.logger
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
                    }
                    return [:]
                })
        } catch {
            throw SessionError.consumerCreation(error)
        }
        defer { consumer.close() }
        let monitor = PartitionMonitor(consumer: consumer, logger: logger)
        var outputs: [OutputRecord] = []
        while !stop.isSet {
            let messages = try consumer.poll(maxMessages: config.batchSize, timeout: .milliseconds(100))
            monitor.polled()
            let started = ContinuousClock.now
            if messages.isEmpty {
                producer.poll()
                continue
            }
            for message in messages {
                outputs.removeAll(keepingCapacity: true)
                process(message, &outputs)
                for o in outputs {
                    try producer.send(topic: o.topic, key: o.key, value: o.value)
                }
                pending.offsets[TopicPartition(message.topic, message.partition)] = message.offset + 1
            }
            try monitor.flush(producer, timeout: .seconds(60))
            try consumer.commit(pending.offsets)
            monitor.committed(pending.offsets, batch: messages, since: started)
            pending.offsets.removeAll(keepingCapacity: true)
        }
    }
}
