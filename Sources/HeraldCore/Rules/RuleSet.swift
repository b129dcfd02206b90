/// A loaded, validated rules file (SPEC §3).
public struct RuleSet: Sendable {
    public var defaults: Defaults
    public var templates: [String: MessageTemplate]
    public var rules: [Rule]
    public var policies: Policies
    public var experiments: [Experiment]
    /// Stable hash of the file set's bytes; stored with every outcome.
    public var version: String

    public init(defaults: Defaults, templates: [String: MessageTemplate], rules: [Rule], policies: Policies = Policies(),
                experiments: [Experiment] = [], version: String) {
        self.defaults = defaults
        self.templates = templates
        self.rules = rules
        self.policies = policies
        self.experiments = experiments
        self.version = version
    }

    public func rule(id: String) -> Rule? { rules.first { $0.id == id } }
}

public struct Defaults: Sendable, Equatable {
    /// Used when the user has no `user.timezone`.
    public var timezone: String
    public var channels: [String]

    public init(timezone: String = "UTC", channels: [String] = ["in_app"]) {
        self.timezone = timezone
        self.channels = channels
    }
}

public struct MessageTemplate: Sendable, Equatable {
    public var name: String
    public var title: Template?
    public var body: Template

    public init(name: String, title: Template?, body: Template) {
        self.name = name
        self.title = title
        self.body = body
    }
}

public enum Priority: String, Sendable, CaseIterable, Comparable {
    case urgent, high, normal, low

    /// 0 for urgent, then 1, 2 and 3 for low.
    public var rank: Int {
        switch self {
        case .urgent: 0
        case .high: 1
        case .normal: 2
        case .low: 3
        }
    }

    /// urgent sorts first.
    public static func < (a: Priority, b: Priority) -> Bool { a.rank < b.rank }
}

/// `orders.payment_failed`, `orders.*` or `*`.
public struct EventPattern: Sendable, Equatable, CustomStringConvertible {
    public var topic: LogicalTopic?
    public var type: String?

    public init(topic: LogicalTopic?, type: String?) {
        self.topic = topic
        self.type = type
    }

    public init?(parsing text: String) {
        if text == "*" {
            self.init(topic: nil, type: nil)
            return
        }
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let topic = LogicalTopic(rawValue: String(parts[0])), !parts[1].isEmpty else { return nil }
        self.init(topic: topic, type: parts[1] == "*" ? nil : String(parts[1]))
    }

    public func matches(_ event: Event) -> Bool {
        matches(topic: event.topic, type: event.type)
    }

    public func matches(topic: LogicalTopic, type: String) -> Bool {
        if let t = self.topic, t != topic { return false }
        if let ty = self.type, ty != type { return false }
        return true
    }

    public var description: String {
        guard let topic else { return "*" }
        return "\(topic.rawValue).\(type ?? "*")"
    }
}

public struct Notify: Sendable, Equatable {
    public var template: String
    public var channels: [String]
    public var priority: Priority
    public var escalate: Bool
    public var tags: [String]

    public init(template: String, channels: [String], priority: Priority = .normal, escalate: Bool = false, tags: [String] = []) {
        self.template = template
        self.channels = channels
        self.priority = priority
        self.escalate = escalate
        self.tags = tags
    }
}

