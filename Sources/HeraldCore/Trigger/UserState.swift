/// Everything herald-trigger keeps for one user of one shop. Kept small: most users only
/// have facts and perhaps one pending timer; the rest lives in `rare`, empty for most.
struct UserState: Sendable {
    var firstSeen: Timestamp
    var lastSeen: Timestamp
    // (The `user.count` counts are a column of the engine, `CountColumn`; whether the
    // state changed since the last checkpoint is `DirtySlots`': 32 bytes a user here.)
    var pending: [Pending] = []
    /// Zero or one element: an array is the cheapest copy-on-write box.
    private var rare: [Rare] = []

    init(at time: Timestamp) {
        firstSeen = time
        lastSeen = time
    }

    struct Rare: Sendable {
        /// Only the profile fields the rules file reads.
        var profile: JSONObject?
        var windows: [Window] = []
        var goals: [GoalWindow] = []
        /// Goal events that arrived after an unfired firing's due time.
        var lateGoalEvents: [SeenRef] = []
        /// Events newer than the state's clock that could cancel or convert later triggers.
        var ahead: [SeenRef] = []

        var isEmpty: Bool { profile == nil && windows.isEmpty && goals.isEmpty && lateGoalEvents.isEmpty && ahead.isEmpty }
    }

    /// Whether any rarely used state is kept (reading it through the accessors below copies).
    var hasRare: Bool { !rare.isEmpty }
    var hasAhead: Bool { !(rare.first?.ahead.isEmpty ?? true) }

    private subscript<T>(rare path: WritableKeyPath<Rare, T>, empty empty: T) -> T {
        get { rare.first?[keyPath: path] ?? empty }
        set {
            if rare.isEmpty { rare.append(Rare()) }
            rare[0][keyPath: path] = newValue
            // Nothing left (a window that fired, goals that expired): no box either.
            if rare[0].isEmpty { rare = [] }
        }
    }

    var profile: JSONObject? {
        get { rare.first?.profile }
        set { self[rare: \.profile, empty: nil] = newValue }
    }
    var windows: [Window] {
        get { self[rare: \.windows, empty: []] }
        set { self[rare: \.windows, empty: []] = newValue }
    }
    var goals: [GoalWindow] {
        get { self[rare: \.goals, empty: []] }
        set { self[rare: \.goals, empty: []] = newValue }
    }
    var lateGoalEvents: [SeenRef] {
        get { self[rare: \.lateGoalEvents, empty: []] }
        set { self[rare: \.lateGoalEvents, empty: []] = newValue }
    }
    var ahead: [SeenRef] {
        get { self[rare: \.ahead, empty: []] }
        set { self[rare: \.ahead, empty: []] = newValue }
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
        var event: PackedObject
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
    /// The user's counts (`CountColumn.counts(of:)`).
    let counts: ArraySlice<Int32>
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
        guard let i = plan.countIndex(pattern), i < counts.count else { return 0 }
        return Int(counts[counts.startIndex + i])
    }
}

/// A JSON object kept as the checkpoint encoding's bytes (`ByteWriter.object`): one
/// allocation instead of two arrays of members — what a pending firing keeps of its event.
struct PackedObject: Sendable {
    /// Empty for the empty object.
    private(set) var bytes: [UInt8] = []

    init() {}

    init(_ object: JSONObject) {
        guard !object.isEmpty else { return }
        var w = ByteWriter(capacity: 64)
        w.object(object)
        bytes = Array(w.bytes[...])  // exactly sized
    }

    var isEmpty: Bool { bytes.isEmpty }

    var object: JSONObject {
        guard !bytes.isEmpty else { return JSONObject() }
        var r = ByteReader(bytes)
        return (try? r.object()) ?? JSONObject()  // cannot fail: written by `init`
    }
}
