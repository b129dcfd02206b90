/// Everything herald-trigger keeps for one user of one shop.
struct UserState: Sendable {
    var firstSeen: Timestamp
    var lastSeen: Timestamp
    /// In `TriggerPlan.countedPatterns` order; empty until a counted event arrives.
    var counts: [Int32] = []
    /// Only the profile fields the rules file reads.
    var profile: JSONObject?
    var pending: [Pending] = []
    var windows: [Window] = []
    var goals: [GoalWindow] = []
    /// Hashes of recent event ids, for dropping repeated events (SPEC §2).
    var seen: [SeenEvent] = []
    /// Goal events that arrived after an unfired firing's due time.
    var lateGoalEvents: [SeenRef] = []
    /// Events newer than the state's clock that could cancel or convert later triggers.
    var ahead: [SeenRef] = []

    init(at time: Timestamp) {
        firstSeen = time
        lastSeen = time
    }

    /// A firing waiting for its time: wait, at, idle and the next firing of a repeat chain.
    struct Pending: Sendable {
        var timer: UInt64
        var rule: Int
        var ordinal: Int
        var due: Timestamp
        var triggerTime: Timestamp
        var triggerEventID: String
        /// Repeats still to come after this firing.
        var repeatsLeft: Int
        /// The trimmed triggering event.
        var event: JSONObject
    }

    /// A threshold rule's event times within its window.
    struct Window: Sendable {
        var rule: Int
        var times: [Timestamp]
    }

    struct GoalWindow: Sendable {
        var rule: Int
        var notificationID: String
        var from: Timestamp
        var until: Timestamp
    }

    struct SeenEvent: Sendable {
        var hash: UInt64
        var at: Timestamp
    }
}

/// What the trigger remembers of an event it may need again.
struct SeenRef: Sendable {
    var eventID: String
    var time: Timestamp
    var topic: LogicalTopic
    var type: String
    /// The fields cancel rules match on.
    var fields: JSONObject

    func trimmed(to keep: Set<String>) -> SeenRef {
        var copy = self
        var out = JSONObject()
        for (k, v) in fields.members where keep.contains(k) { out[k] = v }
        copy.fields = out
        return copy
    }
}

/// Expression values for one event and its user.
struct EventContext: EvaluationContext {
    let event: JSONObject
    let user: UserState
    let plan: TriggerPlan

    func value(at path: String) -> Value {
        if path.hasPrefix("event.") {
            return JSONValue.object(event)[path: path.dropFirst(6)].map(Value.init) ?? .null
        }
        switch path {
        case "user.first_seen": return .timestamp(user.firstSeen)
        case "user.last_seen": return .timestamp(user.lastSeen)
        default:
            guard path.hasPrefix("user."), let profile = user.profile else { return .null }
            return JSONValue.object(profile)[path: path.dropFirst(5)].map(Value.init) ?? .null
        }
    }

    func count(_ pattern: EventPattern) -> Int {
        guard let i = plan.countIndex(pattern), i < user.counts.count else { return 0 }
        return Int(user.counts[i])
    }
}
