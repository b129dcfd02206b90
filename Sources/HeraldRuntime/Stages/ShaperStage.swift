import HeraldCore
import HeraldKafka
import Logging

/// herald-shaper: herald.candidates + behavior → shaping → herald.outcomes.
public enum ShaperStage {
    public static let name = "herald-shaper"

    public static func run(config: WorkerConfig, rules: RuleSet, logger: Logger, stop: StopSignal) throws {
        let topics = config.topics
        try StreamStage.checkAssignmentStrategy(config)
        // Preferences and engagement arrive on `behavior`; partition N of it holds the same
        // users as partition N of the candidates (both keyed by user_id).
        _ = try TopicCheck.waitForTopics([topics.candidates, topics.behavior], coPartitioned: true,
                                         config: config, logger: logger, stop: stop)
        try StreamStage(config: config, inputs: [topics.candidates, topics.behavior], logger: logger,
                        handler: ShaperHandler(rules: rules, topics: topics, grace: config.grace, logger: logger)).run(stop: stop)
    }
}

/// One `Shaper` per partition number, advanced to the partition's watermark over
/// `herald.candidates` (herald-trigger's clock, which it publishes there as
/// `TriggerWatermark`) and `behavior` (by `occurred_at`, or the wall clock when caught up),
/// like `TriggerHandler`. Candidates wait until the watermark reaches their `fired_at` and
/// are shaped in `fired_at` order, so a timer's candidate published after a newer one is
/// still shaped first, and a preference change on a lagging `behavior` partition still
/// applies in event-time order; merge windows close and deferred messages wake by the same
/// watermark.
final class ShaperHandler: StageHandler {
    let rules: RuleSet
    let topics: TopicNames
    let grace: TimeSpan
    let logger: Logger
    private var partitions: [Int32: ShaperPartition] = [:]
    private var clocks: PartitionClocks

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
        self.clocks = PartitionClocks(topics: [topics.candidates, topics.behavior], grace: grace,
                                      announced: [topics.candidates])
    }

    func handle(_ message: KafkaMessage, progress positions: PartitionPositions, into out: inout [OutputRecord]) {
        handle(message, caughtUp: positions.isCaughtUp, wallClock: .now, into: &out)
    }

    func handle(_ message: KafkaMessage, caughtUp: (TopicPartition) -> Bool, wallClock: Timestamp,
                into out: inout [OutputRecord]) {
        let tp = TopicPartition(message.topic, message.partition)
        defer { clocks.setCaughtUp(tp, caughtUp(tp)) }
        if message.topic == topics.behavior {
            // Invalid events are the trigger's to dead-letter; here they only count as read.
            guard case .success(let event) = EventDecoder.decode(message.value, topic: .behavior) else { return }
            clocks.delivered(tp, at: event.occurredAt)
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
            let kind = Conversion.kind(of: message.value)
            if kind == TriggerWatermark.kind {
                clocks.delivered(tp, at: try TriggerWatermark(json: message.value).time)
                release(message.partition, wallClock: wallClock, into: &out)
                return
            }
            if kind == "conversion" {
                var conversion = try Conversion(json: message.value)
                let p = partition(message.partition)
                conversion.variant = conversion.variant
                    ?? p.shaper.variant(ruleID: conversion.ruleID, shopID: conversion.shopID, userID: conversion.userID)
                out.append(OutputRecord(topic: topics.outcomes, key: message.key, value: conversion.json))
                return
            }
            let candidate = try Candidate(json: message.value)
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
            clocks.setCaughtUp(tp, caughtUp(tp))
        }
        for partition in partitions.keys.sorted() { release(partition, wallClock: wallClock, into: &out) }
    }

    func revoked(_ partitions: [TopicPartition]) {
        for tp in partitions { clocks.forget(tp) }
    }

    /// The shaper's partition-level state, then the candidates still waiting for the
    /// watermark (their offsets are behind the checkpoint's, so they are part of it).
    func changes(_ partition: Int32) -> PartitionChanges {
        var p = self.partition(partition)
        defer { partitions[partition] = p }
        let users = p.shaper.takeDirtyStates()
        let meta = CheckpointParts.join([p.shaper.encodeMeta(), Candidate.checkpointBytes(p.waiting)])
        return PartitionChanges(meta: meta, users: users)
    }

    /// Nothing read is left out of the state: waiting candidates are in it.
    func unapplied(_ partition: Int32) -> [String: Int64] { [:] }

    func restore(_ checkpoint: StoredCheckpoint) throws {
        guard let meta = checkpoint.meta else {
            partitions[checkpoint.partition] = nil
            return
        }
        let parts = try CheckpointParts.split(meta)
        guard parts.count == 2 else { throw CheckpointDecodingError("herald-shaper's partition state has \(parts.count) parts, not 2") }
        var p = ShaperPartition(shaper: try Shaper.restore(rules: rules, meta: parts[0], users: checkpoint.users))
        p.waiting = try Candidate.list(checkpointBytes: parts[1])
        partitions[checkpoint.partition] = p
    }

    func drop(_ partition: Int32) {
        partitions[partition] = nil
    }

    private func partition(_ n: Int32) -> ShaperPartition {
        partitions[n] ?? ShaperPartition(shaper: Shaper(rules: rules))
    }

    /// Shapes the candidates the watermark has reached, then fires the shaper's timers.
    private func release(_ n: Int32, wallClock: Timestamp, into out: inout [OutputRecord]) {
        guard let watermark = clocks.watermark(n, wallClock: wallClock),
            var p = partitions.removeValue(forKey: n) else { return }
        var outcomes: [Outcome] = []
        let ready = p.waiting.prefix { $0.firedAt <= watermark }.count
        let dropped = p.shaper.replayedDropped
        // Taken out of the partition (a swap, no copy) so the shaper can borrow it.
        var waiting: [Candidate] = []
        swap(&waiting, &p.waiting)
        p.shaper.process(contentsOf: waiting.span.extracting(0..<ready), into: &outcomes)
        waiting.removeFirst(ready)
        swap(&waiting, &p.waiting)
        p.shaper.advance(to: watermark, into: &outcomes)
        HeraldMetrics.replayedDropped(p.shaper.replayedDropped - dropped)
        partitions[n] = p
        for outcome in outcomes {
            HeraldMetrics.decided(outcome)
            out.append(OutputRecord(topic: topics.outcomes, key: Array(outcome.userID.utf8), value: outcome.json))
        }
    }
}
