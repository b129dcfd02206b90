import HeraldCore

/// Physical topic names; SPEC §1 defaults, all configurable.
public struct TopicNames: Sendable, Equatable {
    public var orders = "orders"
    public var behavior = "behavior"
    public var candidates = "herald.candidates"
    public var outcomes = "herald.outcomes"
    public var deadletter = "herald.deadletter"

    public init() {}

    /// The logical input a physical topic carries.
    public func logical(_ physical: String) -> LogicalTopic? {
        if physical == orders { return .orders }
        if physical == behavior { return .behavior }
        return nil
    }

    public var all: [String] { [orders, behavior, candidates, outcomes, deadletter] }
}
