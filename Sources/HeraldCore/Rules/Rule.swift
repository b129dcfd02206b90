/// One rule of the rules file (SPEC §3).
public struct Rule: Sendable, Equatable {
    public var id: String
    public var on: [EventPattern]
    /// nil: every shop.
    public var shops: Set<String>?
    /// `where`
    public var condition: Expression?
    public var timing: Timing
    public var cancel: Cancel?
    public var repeatEvery: Repeat?
    public var goal: Goal?
    public var notify: Notify
    public var dedupe: Dedupe?
    public var merge: Merge?

    public enum Timing: Sendable, Equatable {
        /// Fires on the event itself.
        case immediate
        /// `wait: D`: D after the triggering event's `occurred_at`.
        case wait(TimeSpan)
        /// `at: [expr, …]`: at each computed time.
        case at([Expression])
        /// `threshold: {count, within, reset_on}`
        case threshold(count: Int, within: TimeSpan, resetOn: [EventPattern])
        /// `idle: D`: when no `on` event has occurred for D since the last one.
        case idle(TimeSpan)
    }

    public struct Cancel: Sendable, Equatable {
        public var events: [EventPattern]
        /// Fields that must be equal on both events (`order_id`).
        public var match: [String]
    }

    public struct Repeat: Sendable, Equatable {
        public var every: TimeSpan
        public var times: Int
    }

    public struct Goal: Sendable, Equatable {
        public var event: EventPattern
        public var within: TimeSpan
    }

    public struct Dedupe: Sendable, Equatable {
        public var window: TimeSpan
        /// nil: the user.
        public var key: Template?
    }

    public struct Merge: Sendable, Equatable {
        public var window: TimeSpan
        public var template: String
    }

    public init(id: String, on: [EventPattern], shops: Set<String>? = nil, condition: Expression? = nil,
                timing: Timing = .immediate, cancel: Cancel? = nil, repeatEvery: Repeat? = nil, goal: Goal? = nil,
                notify: Notify, dedupe: Dedupe? = nil, merge: Merge? = nil) {
        self.id = id
        self.on = on
        self.shops = shops
        self.condition = condition
        self.timing = timing
        self.cancel = cancel
        self.repeatEvery = repeatEvery
        self.goal = goal
        self.notify = notify
        self.dedupe = dedupe
        self.merge = merge
    }
}

/// `policies:` — applied by herald-shaper (SPEC §6).
public struct Policies: Sendable, Equatable {
    public var quietHours: QuietHours?
    public var frequencyCap: FrequencyCap?
    /// Default dedupe window for rules without their own.
    public var dedupeWindow: TimeSpan?
    public var shops: [String: ShopPolicies]

    public init(quietHours: QuietHours? = nil, frequencyCap: FrequencyCap? = nil, dedupeWindow: TimeSpan? = nil,
                shops: [String: ShopPolicies] = [:]) {
        self.quietHours = quietHours
        self.frequencyCap = frequencyCap
        self.dedupeWindow = dedupeWindow
        self.shops = shops
    }

    public struct QuietHours: Sendable, Equatable {
        /// Minutes after local midnight.
        public var start: Int
        public var end: Int
        public var bypass: Set<Priority>
    }

    public struct FrequencyCap: Sendable, Equatable {
        public var max: Int
        public var per: TimeSpan
        public var bypass: Set<Priority>
    }

    public struct ShopPolicies: Sendable, Equatable {
        public var quietHours: QuietHours?
        public var frequencyCap: FrequencyCap?
    }
}

/// `experiments:` — an A/B split of one rule's template.
public struct Experiment: Sendable, Equatable {
    public var rule: String
    public var variants: [Variant]

    public struct Variant: Sendable, Equatable {
        public var name: String
        public var template: String
        public var weight: Int
    }
}
