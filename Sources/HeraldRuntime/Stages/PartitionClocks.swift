import HeraldCore
import HeraldKafka

/// Each input partition's progress and the watermark of a partition number over the
/// topics read together (SPEC §5), shared by herald-trigger and herald-shaper.
struct PartitionClocks {
    /// The topics whose partition N hold the same users.
    let topics: [String]
    let grace: TimeSpan
    /// Topics whose progress is only what their producer says (`TriggerWatermark`), never
    /// the wall clock: being caught up with them says nothing about what is still to come.
    let announced: Set<String>
    private var progress: [TopicPartition: InputProgress] = [:]

    init(topics: [String], grace: TimeSpan, announced: Set<String> = []) {
        self.topics = topics
        self.grace = grace
        self.announced = announced
    }

    /// A message of `tp` at `time` is being applied: until it is, the partition is not
    /// caught up and its progress is this time, whatever the wall clock says.
    mutating func delivered(_ tp: TopicPartition, at time: Timestamp) {
        var p = progress[tp, default: InputProgress()]
        p.newestEventTime = max(p.newestEventTime ?? time, time)
        if !announced.contains(tp.topic) { p.caughtUp = false }
        progress[tp] = p
    }

    mutating func setCaughtUp(_ tp: TopicPartition, _ caughtUp: Bool) {
        guard !announced.contains(tp.topic) else { return }
        progress[tp, default: InputProgress()].caughtUp = caughtUp
    }

    mutating func forget(_ tp: TopicPartition) {
        progress[tp] = nil
    }

    func watermark(_ partition: Int32, wallClock: Timestamp) -> Timestamp? {
        Watermark.of(topics.map { progress[TopicPartition($0, partition)] ?? InputProgress() },
                     wallClock: wallClock, grace: grace)
    }
}
