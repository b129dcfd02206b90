import Foundation
import HeraldCore
import HeraldKafka
import Logging

/// herald-trigger: orders + behavior → rule evaluation and timers → herald.candidates.
public enum TriggerStage {
    public static let name = "herald-trigger"

    public static func run(config: WorkerConfig, rules: RuleSet, logger: Logger, stop: StopSignal) throws {
        let topics = config.topics
        _ = try TopicCheck.waitForTopics([topics.orders, topics.behavior], coPartitioned: true,
                                         config: config, logger: logger, stop: stop)
        let handler = TriggerHandler(rules: rules, topics: topics, grace: config.grace, logger: logger)
        try StreamStage(config: config, inputs: [topics.orders, topics.behavior], logger: logger, handler: handler)
            .run(stop: stop)
    }
}

/// One `TriggerEngine` per partition number: partition N of `orders` and of `behavior`
/// hold the same users (range assignment keeps them on one worker), and their progress
/// decides when that state's timers fire.
final class TriggerHandler: StageHandler {
    let rules: RuleSet
    let topics: TopicNames
    let grace: TimeSpan
    let logger: Logger
    private var engines: [Int32: TriggerEngine] = [:]
    private var progress: [TopicPartition: InputProgress] = [:]
    private var triggerOutputs: [TriggerOutput] = []

    init(rules: RuleSet, topics: TopicNames, grace: TimeSpan, logger: Logger) {
        self.rules = rules
        self.topics = topics
        self.grace = grace
        self.logger = logger
    }

    func handle(_ message: KafkaMessage, progress positions: PartitionPositions, into out: inout [OutputRecord]) {
        guard let logical = topics.logical(message.topic) else { return }
        let tp = TopicPartition(message.topic, message.partition)
        switch EventDecoder.decode(message.value, topic: logical, notAfter: .now + EventDecoder.maxFutureSkew) {
        case .failure(let rejection):
            logger.debug("dead-lettered an event", metadata: [
                "topic": "\(message.topic)", "partition": "\(message.partition)",
                "offset": "\(message.offset)", "reason": "\(rejection)",
            ])
            let letter = DeadLetter(stage: TriggerStage.name, reason: rejection.reason, detail: rejection.detail, message: message)
            out.append(OutputRecord(topic: topics.deadletter, key: message.key, value: letter.json))
            progress[tp, default: InputProgress()].caughtUp = positions.isCaughtUp(tp)
        case .success(let event):
            // Until this event is applied the partition is not caught up: its progress is
            // this event's time, whatever the wall clock says.
            var p = progress[tp, default: InputProgress()]
            p.newestEventTime = max(p.newestEventTime ?? event.occurredAt, event.occurredAt)
            p.caughtUp = false
            progress[tp] = p
            var engine = engines.removeValue(forKey: message.partition) ?? TriggerEngine(rules: rules)
            triggerOutputs.removeAll(keepingCapacity: true)
            if let watermark = watermark(message.partition, wallClock: .now) {
                engine.advance(to: watermark, into: &triggerOutputs)
            }
            engine.process(event, into: &triggerOutputs)
            engines[message.partition] = engine
            progress[tp]?.caughtUp = positions.isCaughtUp(tp)
            publish(&out)
        }
    }

    func tick(progress positions: PartitionPositions, into out: inout [OutputRecord]) {
        let now = Timestamp.now
        for tp in positions.assignment {
            progress[tp, default: InputProgress()].caughtUp = positions.isCaughtUp(tp)
        }
        for partition in engines.keys.sorted() {
            guard let watermark = watermark(partition, wallClock: now), var engine = engines.removeValue(forKey: partition) else { continue }
            triggerOutputs.removeAll(keepingCapacity: true)
            engine.advance(to: watermark, into: &triggerOutputs)
            engines[partition] = engine
            publish(&out)
        }
    }

    func revoked(_ partitions: [TopicPartition]) {
        // Without checkpoints (issue 5) a revoked partition's state goes with it.
        for tp in partitions {
            progress[tp] = nil
            engines[tp.partition] = nil
        }
    }

    private func watermark(_ partition: Int32, wallClock: Timestamp) -> Timestamp? {
        Watermark.of([topics.orders, topics.behavior].map { progress[TopicPartition($0, partition)] ?? InputProgress() },
                     wallClock: wallClock, grace: grace)
    }

    private func publish(_ out: inout [OutputRecord]) {
        for o in triggerOutputs {
            switch o {
            case .candidate(let c):
                HeraldMetrics.fired(c)
                out.append(OutputRecord(topic: topics.candidates, key: Array(c.userID.utf8), value: c.json))
            case .conversion(let c):
                out.append(OutputRecord(topic: topics.candidates, key: Array(c.userID.utf8), value: c.json))
            }
        }
    }
}

extension Timestamp {
    /// The wall clock.
    public static var now: Timestamp {
        Timestamp(microseconds: Int64((Date().timeIntervalSince1970 * 1_000_000).rounded()))
    }
}
