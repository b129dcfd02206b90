/// Everything herald-trigger keeps for one user of one shop. Kept small: most users only
/// have facts and perhaps one pending timer; the rest lives in `rare`, empty for most.
struct UserState: Sendable {
    var firstSeen: Timestamp
    var lastSeen: Timestamp
    // (The `user.count` counts are a column of the engine, `CountColumn`; whether the
    // state changed since the last checkpoint is `DirtySlots`'; the pending firings are in
    // the engine's `PendingPool`: 32 bytes a user here.)
    /// Zero or one element: an array is the cheapest copy-on-write box.
    private var rare: [Rare] = []
    /// The user's pending firings: their list in the engine's `PendingPool` (0: none).
    var pendingHead: UInt32 = 0
    /// The user's threshold windows: their times' list in the engine's `WindowPool` (0: none).
    var windowHead: UInt32 = 0

    init(at time: Timestamp) {
        firstSeen = time
        lastSeen = time
    }

    struct Rare: Sendable {
        /// Only the profile fields the rules file reads.
        var profile: JSONObject?
        var goals: [GoalWindow] = []
        /// Goal events that arrived after an unfired firing's due time.
        var lateGoalEvents: [SeenRef] = []
        /// Events newer than the state's clock that could cancel or convert later triggers.
        var ahead: [SeenRef] = []

        var isEmpty: Bool { profile == nil && goals.isEmpty && lateGoalEvents.isEmpty && ahead.isEmpty }
    }

    /// Whether any rarely used state is kept (reading it through the accessors below copies).
    var hasRare: Bool { !rare.isEmpty }
    // (`rare[0]`, not `rare.first`: that copies the box's five fields, a retain each.)
    var hasAhead: Bool { !rare.isEmpty && !rare[0].ahead.isEmpty }

    private subscript<T>(rare path: WritableKeyPath<Rare, T>, empty empty: T) -> T {
        get { rare.isEmpty ? empty : rare[0][keyPath: path] }
        set {
            if rare.isEmpty { rare.append(Rare()) }
            rare[0][keyPath: path] = newValue
            // Nothing left (a window that fired, goals that expired): no box either.
            if rare[0].isEmpty { rare = [] }
        }
    }

    var profile: JSONObject? {
        get { rare.isEmpty ? nil : rare[0].profile }
        set { self[rare: \.profile, empty: nil] = newValue }
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
    /// 60 bytes (rule, ordinal and repeats as 32-bit fields), so that it and its list link
    /// fill one 64-byte entry of the pool.
    struct Pending: Sendable {
        var timer: UInt64
        var due: Timestamp
        var triggerTime: Timestamp
        var triggerEventID: String
        /// The trimmed triggering event.
        var event: PackedObject
        private var rule32: Int32
        private var ordinal32: Int32
        private var repeats32: Int32

        init(timer: UInt64, rule: Int, ordinal: Int, due: Timestamp, triggerTime: Timestamp, triggerEventID: String,
             repeatsLeft: Int, event: PackedObject) {
            self.timer = timer
            self.due = due
            self.triggerTime = triggerTime
            self.triggerEventID = triggerEventID
            self.event = event
            rule32 = Int32(truncatingIfNeeded: rule)
            ordinal32 = Int32(truncatingIfNeeded: ordinal)
            repeats32 = Int32(truncatingIfNeeded: repeatsLeft)
        }

        var rule: Int { Int(rule32) }
        var ordinal: Int {
            get { Int(ordinal32) }
            set { ordinal32 = Int32(truncatingIfNeeded: newValue) }
        }
        /// Repeats still to come after this firing.
        var repeatsLeft: Int {
            get { Int(repeats32) }
            set { repeats32 = Int32(truncatingIfNeeded: newValue) }
        }
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

/// Every pending firing of an engine in one array (64 bytes each), instead of an array per
/// user (a 112-byte block for one firing): a user's firings are a list threaded through it,
/// from `UserState.pendingHead`, in the order they were added (timer order). Freed entries
/// are reused. Indices are 1-based; 0 ends a list.
struct PendingPool: Sendable {
    private struct Entry: LinkedEntry {
        var firing: UserState.Pending
        var next: UInt32
    }

    private var entries = LinkedEntries<Entry>()

    private static let blank = UserState.Pending(timer: 0, rule: 0, ordinal: 0, due: Timestamp(microseconds: 0),
                                                 triggerTime: Timestamp(microseconds: 0), triggerEventID: "",
                                                 repeatsLeft: 0, event: PackedObject())

    // (`_read`, not `get`: reading one field of a firing would copy the whole entry — a
    // retain and release of its event id and bytes — for each field read.)
    subscript(i: UInt32) -> UserState.Pending {
        _read { yield entries[i].firing }
        _modify { yield &entries[i].firing }
    }

    func next(_ i: UInt32) -> UInt32 { entries.read(i) { $0.next } }

    /// What the list walks look at: a firing's timing, without its strings (a copy of the
    /// whole firing retains its event bytes, a cache miss).
    struct Timing {
        var timer: UInt64
        var rule: Int
        var due: Timestamp
        var triggerTime: Timestamp
    }

    func timing(of i: UInt32) -> Timing {
        entries.read(i) { e in
            Timing(timer: e.firing.timer, rule: e.firing.rule, due: e.firing.due, triggerTime: e.firing.triggerTime)
        }
    }

    /// The first entry of the list from `head` for which `match` holds, or 0.
    func first(from head: UInt32, where match: (Timing) -> Bool) -> UInt32 {
        var i = head
        while i != 0 {
            if match(timing(of: i)) { return i }
            i = next(i)
        }
        return 0
    }

    func contains(from head: UInt32, where match: (Timing) -> Bool) -> Bool {
        first(from: head, where: match) != 0
    }

    /// The list's firings, in order.
    func list(from head: UInt32) -> [UserState.Pending] {
        var out: [UserState.Pending] = []
        var i = head
        while i != 0 {
            out.append(entries[i].firing)
            i = entries[i].next
        }
        return out
    }

    /// Adds `p` at the end of the list from `head`.
    mutating func append(_ p: UserState.Pending, to head: inout UInt32) {
        let i = entries.allocate(Entry(firing: p, next: 0))
        if head == 0 {
            head = i
            return
        }
        var last = head
        while next(last) != 0 { last = next(last) }
        entries[last].next = i
    }

    /// Takes entry `i` out of the list from `head`; returns its firing.
    @discardableResult
    mutating func remove(_ i: UInt32, from head: inout UInt32) -> UserState.Pending {
        let after = next(i)
        if head == i {
            head = after
        } else {
            var prev = head
            while next(prev) != i { prev = next(prev) }
            entries[prev].next = after
        }
        let p = entries[i].firing
        entries.release(i, leaving: Entry(firing: Self.blank, next: 0))  // drops its strings
        return p
    }

    /// Takes out every firing of the list for which `match` holds, keeping the others' order.
    mutating func removeAll(from head: inout UInt32, where match: (UserState.Pending) -> Bool) {
        var prev: UInt32 = 0
        var i = head
        while i != 0 {
            let after = next(i)
            if entries.read(i, { match($0.firing) }) {
                if prev == 0 { head = after } else { entries[prev].next = after }
                entries.release(i, leaving: Entry(firing: Self.blank, next: 0))
            } else {
                prev = i
            }
            i = after
        }
    }
}

/// Every user's threshold windows in one array of 16-byte times (rule, time, next), a list
/// per user from `UserState.windowHead`, windows one after another in their order: instead
/// of a rare box, a window array and a times array for each user with a window (the SPEC §3
/// `login-risk` gives one to every user with a failed sign-in). Freed entries are reused;
/// indices are 1-based, 0 ends a list.
struct WindowPool: Sendable {
    private struct Entry: LinkedEntry {
        var time: Timestamp
        var rule: Int32
        var next: UInt32
    }

    private var entries = LinkedEntries<Entry>()

    /// The windows of the list from `head`.
    func windows(from head: UInt32) -> [UserState.Window] {
        var out: [UserState.Window] = []
        var i = head
        while i != 0 {
            let e = entries[i]
            if let last = out.last, last.rule == Int(e.rule) {
                out[out.count - 1].times.append(e.time)
            } else {
                out.append(UserState.Window(rule: Int(e.rule), times: [e.time]))
            }
            i = e.next
        }
        return out
    }

    /// Replaces the list from `head` with `windows` (a window without times is not kept:
    /// it is the same as none).
    mutating func set(_ head: inout UInt32, _ windows: [UserState.Window]) {
        var i = head
        while i != 0 {
            let after = entries[i].next
            entries.release(i, leaving: entries[i])
            i = after
        }
        head = 0
        var last: UInt32 = 0
        for w in windows {
            for t in w.times {
                let j = entries.allocate(Entry(time: t, rule: Int32(truncatingIfNeeded: w.rule), next: 0))
                if last == 0 { head = j } else { entries[last].next = j }
                last = j
            }
        }
    }
}

/// An entry of a pool's lists: the index of the next entry of its list, or of the next free
/// entry once released (0: none).
protocol LinkedEntry: Sendable {
    var next: UInt32 { get set }
}

/// The pools' entries with their free list: released entries are reused before the array
/// grows. Indices are 1-based (0 ends a list).
struct LinkedEntries<Entry: LinkedEntry>: Sendable {
    private var entries = ChunkedArray<Entry>()
    /// The first free entry (its `next` the one after).
    private var free: UInt32 = 0

    subscript(i: UInt32) -> Entry {
        _read { yield entries[i] }
        _modify { yield &entries[i] }
    }

    /// `body` of entry `i`, borrowed (`ChunkedArray.read`).
    func read<R>(_ i: UInt32, _ body: (borrowing Entry) -> R) -> R { entries.read(i, body) }

    /// Stores `e` in a free entry, or a new one; returns its index.
    mutating func allocate(_ e: Entry) -> UInt32 {
        guard free != 0 else { return entries.append(e) }
        let i = free
        free = entries.read(i) { $0.next }
        entries[i] = e
        return i
    }

    /// Frees entry `i`, leaving `e` in it (a blank one drops what the old entry held).
    mutating func release(_ i: UInt32, leaving e: Entry) {
        var e = e
        e.next = free
        entries[i] = e
        free = i
    }
}

/// An array kept in chunks of 512 elements, indexed from 1 (the pools' indices): it grows a
/// chunk at a time and never copies what it holds — a doubling array leaves each smaller
/// copy freed in the allocator, which in a worker with dozens of partition engines stays
/// resident.
struct ChunkedArray<Element: Sendable>: Sendable {
    private var chunks: [[Element]] = []
    private(set) var count = 0

    subscript(i: UInt32) -> Element {
        _read {
            let k = Int(i) - 1
            yield chunks[k >> 9][k & 511]
        }
        _modify {
            let k = Int(i) - 1
            yield &chunks[k >> 9][k & 511]
        }
    }

    /// `body` of element `i`, borrowed: reading fields through the subscript copies the
    /// whole element first (a retain and a release of each reference it holds).
    func read<R>(_ i: UInt32, _ body: (borrowing Element) -> R) -> R {
        let k = Int(i) - 1
        return chunks.withUnsafeBufferPointer { outer in
            outer[k >> 9].withUnsafeBufferPointer { inner in body(inner[k & 511]) }
        }
    }

    /// Adds `e`; returns its index.
    mutating func append(_ e: Element) -> UInt32 {
        if count & 511 == 0 {
            var chunk: [Element] = []
            chunk.reserveCapacity(512)
            chunks.append(chunk)
        }
        chunks[chunks.count - 1].append(e)
        count += 1
        return UInt32(count)
    }
}
