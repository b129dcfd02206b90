import Foundation
import HeraldCore
import HeraldKafka
import Logging

/// herald-trigger: orders + behavior → rule evaluation and timers → herald.candidates.
public enum TriggerStage {
    public static let name = "herald-trigger"

    public static func run(config: WorkerConfig, rules: RuleSet, logger: Logger, stop: StopSignal) throws {
        let topics = config.topics
        try StreamStage.checkAssignmentStrategy(config)
        // Candidates go to the partition number of their input (`TriggerWatermark`).
        _ = try TopicCheck.waitForTopics([topics.orders, topics.behavior, topics.candidates], coPartitioned: true,
                                         config: config, logger: logger, stop: stop)
        let handler = TriggerHandler(rules: rules, topics: topics, grace: config.grace, logger: logger)
        try StreamStage(config: config, inputs: [topics.orders, topics.behavior], logger: logger, handler: handler)
            .run(stop: stop)
    }
}

/// One `TriggerEngine` per partition number: partition N of `orders` and of `behavior`
/// hold the same users (range assignment keeps them on one worker), and their progress
/// decides when that state's timers fire. Its candidates go to partition N of
/// `herald.candidates`, followed from time to time by its clock (`TriggerWatermark`), which
/// is how herald-shaper knows that no older candidate is still to come.
final class TriggerHandler: StageHandler {
    let rules: RuleSet
    let topics: TopicNames
    let grace: TimeSpan
    let logger: Logger
    /// A partition number's engine, and the events read but not yet applied, waiting for
    /// the other input to progress to their time (`EventOrder`).
    private struct Partition {
        var engine: TriggerEngine
        var order = EventOrder(limit: TriggerHandler.heldLimit)
    }
    private var partitions: [Int32: Partition] = [:]
    /// Events held per partition number at most while one input lags behind the other.
    static let heldLimit = 100_000
    private var clocks: PartitionClocks
    private var triggerOutputs: [TriggerOutput] = []
    /// The events `apply` takes out of a partition's `EventOrder` at once.
    private var released: [Event] = []
    /// The clock last published per partition number, and when.
    private var published: [Int32: (time: Timestamp, at: ContinuousClock.Instant)] = [:]
    /// Between two watermarks published while events flow or candidates are published, and
    /// while only the wall clock moves them (idle partitions: herald-shaper's quiet-hour
    /// wake-ups and merge windows need no finer clock, and every record is one more message
    /// for the shaper to read and commit).
    static let watermarkInterval: Duration = .milliseconds(20)
    static let idleWatermarkInterval: Duration = .seconds(1)

    init(rules: RuleSet, topics: TopicNames, grace: TimeSpan, logger: Logger) {
        self.rules = rules
        self.topics = topics
        self.grace = grace
        self.logger = logger
        self.clocks = PartitionClocks(topics: [topics.orders, topics.behavior], grace: grace)
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
            clocks.setCaughtUp(tp, positions.isCaughtUp(tp))
        case .success(let event):
            clocks.delivered(tp, at: event.occurredAt)
            clocks.setCaughtUp(tp, positions.isCaughtUp(tp))
            var state = take(message.partition)
            state.order.add(event, input: EventOrder.input(logical), offset: message.offset)
            apply(&state, message.partition, wallClock: .now, idle: false, &out)
            partitions[message.partition] = state
        }
    }

    func tick(progress positions: PartitionPositions, into out: inout [OutputRecord]) {
        let now = Timestamp.now
        let assignment = positions.assignment
        for tp in assignment {
            clocks.setCaughtUp(tp, positions.isCaughtUp(tp))
        }
        // Every assigned partition, with events or not: herald-shaper waits for its clock.
        let assigned = Set(assignment.map(\.partition))
        for partition in assigned.union(partitions.keys).sorted() {
            var state = take(partition)
            apply(&state, partition, wallClock: now, idle: true, &out)
            partitions[partition] = state
        }
    }

    /// Applies the partition's held events that every input has progressed past, in
    /// event-time order, then fires the timers due by the watermark.
    private func apply(_ state: inout Partition, _ partition: Int32, wallClock: Timestamp, idle: Bool,
                       _ out: inout [OutputRecord]) {
        let watermark = clocks.watermark(partition, wallClock: wallClock)
        guard watermark != nil || state.order.count > state.order.limit else { return }
        triggerOutputs.removeAll(keepingCapacity: true)
        let late = state.order.late
        while let next = state.order.next(upTo: watermark) { released.append(next.event) }
        // Timers due by an event fire first — unless `heldLimit` let it out ahead of the
        // watermark: then the inputs have not progressed that far. (Together, so that the
        // engine reads ahead: `TriggerEngine.process(_:_:advancingUpTo:into:)`.)
        state.engine.process(released, released.indices, advancingUpTo: watermark, into: &triggerOutputs)
        released.removeAll(keepingCapacity: true)
        if let watermark { state.engine.advance(to: watermark, into: &triggerOutputs) }
        if state.order.late > late { HeraldMetrics.lateEvents(state.order.late - late) }
        // Candidates just published wait in herald-shaper for a clock that covers them.
        let emitted = !triggerOutputs.isEmpty
        publish(partition, &out)
        publishWatermark(partition, clock: state.engine.clock, idle: idle && !emitted, &out)
    }

    /// The partition's state, taken out of the table (put it back when done) so that it is
    /// changed in place.
    private func take(_ partition: Int32) -> Partition {
        partitions.removeValue(forKey: partition) ?? Partition(engine: TriggerEngine(rules: rules))
    }

    /// Held events stay: if the partition comes back with its state kept, reading resumes
    /// after them; if not, `drop` forgets them with the state.
    func revoked(_ partitions: [TopicPartition]) {
        for tp in partitions { clocks.forget(tp) }
    }

    func changes(_ partition: Int32) -> PartitionChanges {
        var state = take(partition)
        defer { partitions[partition] = state }
        let users = state.engine.takeDirtyStates()
        let seen = state.engine.takeNewSeenEvents()
        return PartitionChanges(meta: state.engine.encodeMeta(), users: users, seen: seen,
                                seenGenerations: state.engine.seenGenerations)
    }

    /// Events held in event-time order are read again after a restart (applied ones that
    /// come again are repeated ids, which the engine ignores).
    func unapplied(_ partition: Int32) -> [String: Int64] {
        var out: [String: Int64] = [:]
        for (input, offset) in partitions[partition]?.order.oldestOffsets() ?? [:] {
            out[input == EventOrder.input(.orders) ? topics.orders : topics.behavior] = offset
        }
        return out
    }

    func restore(_ checkpoint: StoredCheckpoint) throws {
        published[checkpoint.partition] = nil
        partitions[checkpoint.partition] = nil
        guard let meta = checkpoint.meta else { return }
        partitions[checkpoint.partition] = Partition(engine: try TriggerEngine.restore(
            rules: rules, meta: meta, users: checkpoint.users, seen: checkpoint.seen))
    }

    func drop(_ partition: Int32) {
        partitions[partition] = nil
        published[partition] = nil
    }

    private func publish(_ partition: Int32, _ out: inout [OutputRecord]) {
        for o in triggerOutputs {
            switch o {
            case .candidate(let c):
                HeraldMetrics.fired(c)
                out.append(OutputRecord(topic: topics.candidates, partition: partition, key: Array(c.userID.utf8), value: c.json))
            case .conversion(let c):
                out.append(OutputRecord(topic: topics.candidates, partition: partition, key: Array(c.userID.utf8), value: c.json))
            }
        }
    }

    /// Publishes the partition's clock when it moved (at most every `watermarkInterval`),
    /// after the candidates it covers.
    private func publishWatermark(_ partition: Int32, clock: Timestamp?, idle: Bool, _ out: inout [OutputRecord]) {
        guard let clock else { return }
        let now = ContinuousClock.now
        if let last = published[partition] {
            guard clock > last.time, now - last.at >= (idle ? Self.idleWatermarkInterval : Self.watermarkInterval) else { return }
        }
        published[partition] = (clock, now)
        out.append(OutputRecord(topic: topics.candidates, partition: partition, key: nil,
                                value: TriggerWatermark(time: clock).json))
    }
}
