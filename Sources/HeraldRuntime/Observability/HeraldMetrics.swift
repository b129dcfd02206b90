import HeraldCore
import HeraldKafka

/// The series every worker exposes on `GET /metrics` (docs/operations.md says what each
/// one means). One registry per process: a process is one worker.
public enum HeraldMetrics {
    public static let registry: MetricsRegistry = {
        let r = MetricsRegistry()
        r.declare(eventsConsumed, .counter, help: "Messages consumed, by topic.", labels: ["topic"])
        r.declare(rulesFired, .counter, help: "Candidates emitted by the trigger, by rule.", labels: ["rule"])
        r.declare(candidates, .counter, help: "Candidates emitted by the trigger.")
        r.declare(outcomes, .counter, help: "Outcomes decided by the shaper, by status and reason.", labels: ["status", "reason"])
        r.declare(replayedCandidates, .counter, help: "Candidates the shaper dropped because their id was seen before (SPEC §6 step 1).")
        r.declare(deadLetters, .counter, help: "Inputs dead-lettered by this worker, by reason.", labels: ["reason"])
        r.declare(rowsWritten, .counter, help: "Records the sink committed to PostgreSQL, by table (a replayed id counts again).",
                  labels: ["table"])
        r.declare(consumerLag, .gauge, help: "High watermark minus committed offset, per assigned partition.",
                  labels: ["topic", "partition"])
        r.declare(assignedPartitions, .gauge, help: "Partitions assigned to this worker.")
        r.declare(pausedPartitions, .gauge, help: "Assigned partitions paused by back-pressure.")
        r.declare(producerQueue, .gauge, help: "Messages produced but not yet acknowledged by the broker.")
        r.declare(batchDuration, .histogram, help: "Seconds from a batch's poll to its offset commit.",
                  buckets: latencyBuckets)
        r.declare(checkpointDuration, .histogram, help: "Seconds to checkpoint per-user state with offsets.",
                  buckets: latencyBuckets)
        r.declare(endToEndLatency, .histogram, help: "Seconds from an outcome's event time to its row being committed.",
                  buckets: endToEndBuckets)
        r.declare(retentionLost, .counter,
                  help: "Input messages deleted by broker retention before this worker processed them, per partition.",
                  labels: ["topic", "partition"])
        r.declare(lateEvents, .counter,
                  help: "Events herald-trigger read after events with later times of the same partition number had been applied.")
        r.declare(sessions, .counter, help: "Consumer sessions started (more than one: Kafka errors forced restarts).")
        return r
    }()

    public static let eventsConsumed = "herald_events_consumed_total"
    public static let rulesFired = "herald_rules_fired_total"
    public static let candidates = "herald_candidates_total"
    public static let outcomes = "herald_outcomes_total"
    public static let replayedCandidates = "herald_replayed_candidates_total"
    public static let deadLetters = "herald_dead_letters_total"
    public static let rowsWritten = "herald_rows_written_total"
    public static let consumerLag = "herald_consumer_lag"
    public static let assignedPartitions = "herald_assigned_partitions"
    public static let pausedPartitions = "herald_paused_partitions"
    public static let producerQueue = "herald_producer_queue_messages"
    public static let batchDuration = "herald_batch_duration_seconds"
    public static let checkpointDuration = "herald_checkpoint_duration_seconds"
    public static let endToEndLatency = "herald_end_to_end_latency_seconds"
    public static let sessions = "herald_consumer_sessions_total"
    public static let retentionLost = "herald_retention_lost_messages_total"
    public static let lateEvents = "herald_trigger_late_events_total"

    static let latencyBuckets: [Double] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
    static let endToEndBuckets: [Double] = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86_400]

    // Helpers, one call per place in the stage loops.

    static func consumed(_ messages: [KafkaMessage]) {
        var byTopic: [String: Int] = [:]
        // Counted by runs of one topic (a poll returns a partition's messages together).
        var start = messages.startIndex
        while start < messages.endIndex {
            var end = start + 1
            while end < messages.endIndex, messages[end].topic == messages[start].topic { end += 1 }
            byTopic[messages[start].topic, default: 0] += end - start
            start = end
        }
        for (topic, n) in byTopic { registry.increment(eventsConsumed, [topic], by: Double(n)) }
    }

    static func fired(_ candidate: Candidate) {
        registry.increment(rulesFired, [candidate.ruleID])
        registry.increment(candidates)
    }

    static func decided(_ outcome: Outcome) {
        registry.increment(outcomes, [outcome.status.rawValue, outcome.reason ?? ""])
    }

    static func replayedDropped(_ n: Int) {
        if n > 0 { registry.increment(replayedCandidates, by: Double(n)) }
    }

    static func deadLettered(_ reason: String) {
        registry.increment(deadLetters, [reason])
    }

    static func retentionLost(topic: String, partition: Int32, messages: Int64) {
        registry.increment(retentionLost, [topic, String(partition)], by: Double(messages))
        registry.increment(deadLetters, ["retention_lost"])
    }

    static func lateEvents(_ n: Int) {
        registry.increment(lateEvents, by: Double(n))
    }

    static func batch(seconds: Double) {
        registry.observe(batchDuration, value: seconds)
    }

    /// Issue 5's checkpoint feeds this.
    public static func checkpoint(seconds: Double) {
        registry.observe(checkpointDuration, value: seconds)
    }

    /// A sink batch committed at `now`: rows by table and each outcome's event-time latency.
    static func written(outcomes: [Outcome], conversions: Int, deadLetters: Int, now: Timestamp) {
        registry.increment(rowsWritten, ["notifications"], by: Double(outcomes.count))
        registry.increment(rowsWritten, ["conversions"], by: Double(conversions))
        registry.increment(rowsWritten, ["dead_letters"], by: Double(deadLetters))
        // Each outcome's time only (a closure over the outcomes would copy each of them).
        var latencies: [Double] = []
        latencies.reserveCapacity(outcomes.count)
        for i in outcomes.indices { latencies.append(Double((now - outcomes[i].eventTime).microseconds) / 1_000_000) }
        registry.observe(endToEndLatency, values: latencies)
    }
}
