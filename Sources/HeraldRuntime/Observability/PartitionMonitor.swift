import HeraldKafka
import Logging

/// A consumer session's partitions as `/metrics` and `/readyz` see them: the assignment,
/// the lag of each partition (high watermark − committed offset), and back-pressure
/// pauses. Used on the stage's polling thread only, like the consumer itself.
final class PartitionMonitor {
    private let consumer: KafkaConsumer
    private let logger: Logger
    private var committed: [TopicPartition: Int64] = [:]
    private var asked: Set<TopicPartition> = []
    private var paused: [TopicPartition] = []
    private var lastLag: ContinuousClock.Instant?
    private let clock = ContinuousClock()
    static let lagInterval: Duration = .seconds(1)

    init(consumer: KafkaConsumer, logger: Logger) {
        self.consumer = consumer
        self.logger = logger
        HeraldMetrics.registry.increment(HeraldMetrics.sessions)
        HeraldMetrics.registry.set(HeraldMetrics.pausedPartitions, to: 0)
        HeraldMetrics.registry.set(HeraldMetrics.producerQueue, to: 0)
    }

    deinit {
        Health.shared.setAssigned(0)
        HeraldMetrics.registry.set(HeraldMetrics.assignedPartitions, to: 0)
        HeraldMetrics.registry.set(HeraldMetrics.pausedPartitions, to: 0)
        HeraldMetrics.registry.replace(HeraldMetrics.consumerLag, with: [:])
    }

    /// After each poll: the assignment now, and the lag at most every `lagInterval`.
    func polled() {
        let assignment = consumer.assignment
        Health.shared.setAssigned(assignment.count)
        HeraldMetrics.registry.set(HeraldMetrics.assignedPartitions, to: Double(assignment.count))
        if let last = lastLag, clock.now - last < Self.lagInterval { return }
        lastLag = clock.now
        // Another member may have moved a partition we no longer own.
        let owned = Set(assignment)
        committed = committed.filter { owned.contains($0.key) }
        asked.formIntersection(owned)
        var lag: [[String]: Double] = [:]
        for tp in assignment {
            // The high watermark of the latest fetch response: never a round trip on this thread.
            guard let marks = consumer.cachedWatermarks(tp) else { continue }
            if committed[tp] == nil, !asked.contains(tp) {
                asked.insert(tp)
                if let c = try? consumer.committed([tp], timeout: .seconds(1))[tp] { committed[tp] = c }
            }
            let position = committed[tp] ?? marks.low
            lag[[tp.topic, String(tp.partition)]] = Double(max(0, marks.high - position))
        }
        HeraldMetrics.registry.replace(HeraldMetrics.consumerLag, with: lag)
    }

    /// Waits for the producer's acknowledgements; when they take longer than a second the
    /// broker is behind, so fetching pauses until they arrive (memory stays bounded).
    func flush(_ producer: KafkaProducer, timeout: Duration) throws {
        if (try? producer.flush(timeout: .seconds(1))) != nil { return }
        HeraldMetrics.registry.set(HeraldMetrics.producerQueue, to: Double(producer.inFlight))
        pause(because: "the producer queue is behind")
        defer {
            resume()
            HeraldMetrics.registry.set(HeraldMetrics.producerQueue, to: Double(producer.inFlight))
        }
        try producer.flush(timeout: timeout)
    }

    /// A batch's offsets are committed: record them, its messages and its duration.
    func committed(_ offsets: [TopicPartition: Int64], batch: [KafkaMessage], since started: ContinuousClock.Instant) {
        committed(offsets)
        processed(batch, since: started)
    }

    /// Offsets committed to Kafka (what lag is measured from).
    func committed(_ offsets: [TopicPartition: Int64]) {
        committed.merge(offsets) { _, new in new }
    }

    /// A batch has been processed: count its messages and record its duration.
    func processed(_ batch: [KafkaMessage], since started: ContinuousClock.Instant) {
        HeraldMetrics.consumed(batch)
        let d = ContinuousClock.now - started
        HeraldMetrics.batch(seconds: Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
    }

    /// Back-pressure: stop fetching the assigned partitions while downstream catches up.
    func pause(because reason: String) {
        guard paused.isEmpty else { return }
        paused = consumer.assignment
        do {
            try consumer.pause(paused)
            logger.warning("pausing consumption: \(reason)", metadata: ["partitions": "\(paused.count)"])
            HeraldMetrics.registry.set(HeraldMetrics.pausedPartitions, to: Double(paused.count))
        } catch {
            paused = []
        }
    }

    func resume() {
        guard !paused.isEmpty else { return }
        try? consumer.resume(paused)
        logger.info("resuming consumption", metadata: ["partitions": "\(paused.count)"])
        paused = []
        HeraldMetrics.registry.set(HeraldMetrics.pausedPartitions, to: 0)
    }
}
