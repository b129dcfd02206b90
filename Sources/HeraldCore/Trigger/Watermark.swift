/// How far one input partition has progressed, for deciding when timers may fire (SPEC §5).
public struct InputProgress: Sendable, Equatable {
    /// The newest `occurred_at` delivered from this partition.
    public var newestEventTime: Timestamp?
    /// No backlog: everything the broker has for this partition has been consumed.
    public var caughtUp: Bool

    public init(newestEventTime: Timestamp? = nil, caughtUp: Bool = false) {
        self.newestEventTime = newestEventTime
        self.caughtUp = caughtUp
    }
}

public enum Watermark {
    /// The time up to which timers of a state may fire: every input partition it reads has
    /// delivered events at or after that time, or is caught up and the wall clock minus
    /// `grace` has passed it. nil when some input has neither delivered anything nor caught up.
    public static func of(_ inputs: [InputProgress], wallClock: Timestamp, grace: TimeSpan) -> Timestamp? {
        var result: Timestamp?
        for input in inputs {
            var t = input.newestEventTime
            if input.caughtUp {
                let idle = wallClock - grace
                t = t.map { max($0, idle) } ?? idle
            }
            guard let t else { return nil }
            result = result.map { min($0, t) } ?? t
        }
        return result
    }
}
