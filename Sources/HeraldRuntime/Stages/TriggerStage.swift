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
        switch EventDecoder.decode(message.value, topic: logical) {
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

/// herald-shaper: herald.candidates + behavior → shaping → herald.outcomes.
public enum ShaperStage {
    public static let name = "herald-shaper"

    public static func run(config: WorkerConfig, rules: RuleSet, logger: Logger, stop: StopSignal) throws {
        let topics = config.topics
        // Preferences and engagement arrive on `behavior`; partition N of it holds the same
        // users as partition N of the candidates (both keyed by user_id).
        _ = try TopicCheck.waitForTopics([topics.candidates, topics.behavior], coPartitioned: true,
                                         config: config, logger: logger, stop: stop)
        try StreamStage(config: config, inputs: [topics.candidates, topics.behavior], logger: logger,
                        handler: ShaperHandler(rules: rules, topics: topics, grace: config.grace, logger: logger)).run(stop: stop)
    }
}

/// One `Shaper` per partition number, advanced to the partition's watermark over
/// `herald.candidates` (by `fired_at`) and `behavior` (by `occurred_at`), like
/// `TriggerHandler`. Candidates wait until the watermark reaches their `fired_at`, so a
/// preference change on a lagging `behavior` partition still applies in event-time order;
/// merge windows close and deferred messages wake by the same watermark.
final class ShaperHandler: StageHandler {
    let rules: RuleSet
    let topics: TopicNames
    let grace: TimeSpan
    let logger: Logger
    private var partitions: [Int32: ShaperPartition] = [:]
    private var progress: [TopicPartition: InputProgress] = [:]

    struct ShaperPartition {
        var shaper: Shaper
        /// Candidates ahead of the watermark, in `fired_at` order (stable for ties).
        var waiting: [Candidate] = []
    }

    init(rules: RuleSet, topics: TopicNames, grace: TimeSpan, logger: Logger) {
        self.rules = rules
        self.topics = topics
        self.grace = grace
        self.logger = logger
    }

    func handle(_ message: KafkaMessage, progress positions: PartitionPositions, into out: inout [OutputRecord]) {
        handle(message, caughtUp: positions.isCaughtUp, wallClock: .now, into: &out)
    }

    func handle(_ message: KafkaMessage, caughtUp: (TopicPartition) -> Bool, wallClock: Timestamp,
                into out: inout [OutputRecord]) {
        let tp = TopicPartition(message.topic, message.partition)
        defer { progress[tp, default: InputProgress()].caughtUp = caughtUp(tp) }
        if message.topic == topics.behavior {
            // Invalid events are the trigger's to dead-letter; here they only count as read.
            guard case .success(let event) = EventDecoder.decode(message.value, topic: .behavior) else { return }
            advanceProgress(tp, to: event.occurredAt)
            var p = partition(message.partition)
            p.shaper.apply(preference: event)
            partitions[message.partition] = p
            if let engagement = Engagement(event: event) {
                out.append(OutputRecord(topic: topics.outcomes, key: message.key, value: engagement.json))
            }
            release(message.partition, wallClock: wallClock, into: &out)
            return
        }
        do throws(MessageDecodingError) {
            if Conversion.kind(of: message.value) == "conversion" {
                var conversion = try Conversion(json: message.value)
                let p = partition(message.partition)
                conversion.variant = conversion.variant
                    ?? p.shaper.variant(ruleID: conversion.ruleID, shopID: conversion.shopID, userID: conversion.userID)
                out.append(OutputRecord(topic: topics.outcomes, key: message.key, value: conversion.json))
                return
            }
            let candidate = try Candidate(json: message.value)
            advanceProgress(tp, to: candidate.firedAt)
            var p = partition(message.partition)
            var i = p.waiting.count
            while i > 0, p.waiting[i - 1].firedAt > candidate.firedAt { i -= 1 }
            p.waiting.insert(candidate, at: i)
            partitions[message.partition] = p
            release(message.partition, wallClock: wallClock, into: &out)
        } catch {
            HeraldMetrics.deadLettered("invalid_candidate")
            let letter = DeadLetter(stage: ShaperStage.name, reason: "invalid_candidate", detail: error.message, message: message)
            out.append(OutputRecord(topic: topics.deadletter, key: message.key, value: letter.json))
        }
    }

    func tick(progress positions: PartitionPositions, into out: inout [OutputRecord]) {
        tick(assignment: positions.assignment, caughtUp: positions.isCaughtUp, wallClock: .now, into: &out)
    }

    func tick(assignment: [TopicPartition], caughtUp: (TopicPartition) -> Bool, wallClock: Timestamp,
              into out: inout [OutputRecord]) {
        for tp in assignment {
            progress[tp, default: InputProgress()].caughtUp = caughtUp(tp)
        }
        for partition in partitions.keys.sorted() { release(partition, wallClock: wallClock, into: &out) }
    }

    func revoked(_ partitions: [TopicPartition]) {
        // Without checkpoints (issue 5) a revoked partition's state goes with it.
        for tp in partitions {
            progress[tp] = nil
            self.partitions[tp.partition] = nil
        }
    }

    private func partition(_ n: Int32) -> ShaperPartition {
        partitions[n] ?? ShaperPartition(shaper: Shaper(rules: rules))
    }

    /// Until this message is applied its partition is not caught up: its progress is this
    /// message's time, whatever the wall clock says.
    private func advanceProgress(_ tp: TopicPartition, to time: Timestamp) {
        var p = progress[tp, default: InputProgress()]
        p.newestEventTime = max(p.newestEventTime ?? time, time)
        p.caughtUp = false
        progress[tp] = p
    }

    /// Shapes the candidates the watermark has reached, then fires the shaper's timers.
    private func release(_ n: Int32, wallClock: Timestamp, into out: inout [OutputRecord]) {
        guard let watermark = Watermark.of(
            [topics.candidates, topics.behavior].map { progress[TopicPartition($0, n)] ?? InputProgress() },
            wallClock: wallClock, grace: grace),
            var p = partitions.removeValue(forKey: n) else { return }
        var outcomes: [Outcome] = []
        let ready = p.waiting.prefix { $0.firedAt <= watermark }.count
        let dropped = p.shaper.replayedDropped
        for c in p.waiting.prefix(ready) { p.shaper.process(c, into: &outcomes) }
        p.waiting.removeFirst(ready)
        p.shaper.advance(to: watermark, into: &outcomes)
        HeraldMetrics.replayedDropped(p.shaper.replayedDropped - dropped)
        partitions[n] = p
        for outcome in outcomes {
            HeraldMetrics.decided(outcome)
            out.append(OutputRecord(topic: topics.outcomes, key: Array(outcome.userID.utf8), value: outcome.json))
        }
    }
}

extension Timestamp {
    /// The wall clock.
    public static var now: Timestamp {
        Timestamp(microseconds: Int64((Date().timeIntervalSince1970 * 1_000_000).rounded()))
    }
}
