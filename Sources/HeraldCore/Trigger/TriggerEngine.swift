/// What herald-trigger publishes.
public enum TriggerOutput: Sendable, Equatable {
    case candidate(Candidate)
    case conversion(Conversion)

    public var candidate: Candidate? {
        if case .candidate(let c) = self { return c }
        return nil
    }
}

/// A user of a shop: the unit of trigger state.
struct UserKey: Hashable, Sendable {
    var shop: String
    var user: String
}

/// Rule evaluation for herald-trigger (SPEC §3–5): events in, candidates out, on event
/// time. Pure logic — the worker, `herald replay` and the tests run this same code.
///
/// The caller drives the clock: `advance(to:)` fires every timer due at or before that
/// time. The worker advances a partition's engine to that partition's watermark; replay
/// advances to the newest event time, then from timer to timer.
///
/// Layout (docs/performance.md, "Trigger logic"): users are interned to dense slots
/// (`UserSlots`); their state, and the idle timers of rules that keep nothing else
/// (`IdleColumns`), are arrays indexed by slot; timers name a slot.
public struct TriggerEngine: Sendable {
    public let rules: RuleSet
    /// Repeated event ids of a user within this horizon are ignored (SPEC §2).
    public let eventHorizon: TimeSpan
    let plan: TriggerPlan
    var users = UserSlots()
    /// By slot.
    var states: [UserState] = []
    /// Every user's pending firings (lists from `UserState.pendingHead`).
    var pool = PendingPool()
    /// Every user's threshold windows (lists from `UserState.windowHead`).
    var windows = WindowPool()
    var counts: CountColumn
    var idle: IdleColumns
    var timers = TimerQueue()
    var dispatch = DispatchCache()
    var seenEvents: SeenEvents
    /// Users changed since the last checkpoint (`takeDirtyStates`).
    var dirty = DirtySlots()
    /// The newest time the engine was advanced to.
    public internal(set) var clock: Timestamp?
    /// `process(_:_:advancingUpTo:into:)`'s hashes of a group of events (user, event, …),
    /// the slots its users' table entries name (0: none; else slot + 1), and the sum of what
    /// it read ahead.
    private var scratch: [UInt64] = []
    private var guesses: [UInt32] = []
    private var touched: UInt64 = 0

    public init(rules: RuleSet, eventHorizon: TimeSpan = .days(7)) {
        self.init(rules: rules, eventHorizon: eventHorizon, idleColumns: true)
    }

    /// `idleColumns: false` keeps every idle firing as a pending firing (tests compare both).
    init(rules: RuleSet, eventHorizon: TimeSpan = .days(7), idleColumns: Bool) {
        self.rules = rules
        self.eventHorizon = eventHorizon
        self.plan = TriggerPlan(rules)
        self.idle = IdleColumns(plan, enabled: idleColumns)
        self.counts = CountColumn(patterns: plan.countedPatterns.count)
        self.seenEvents = SeenEvents(horizon: eventHorizon)
    }

    /// Users with state.
    public var userCount: Int { users.count }
    /// Timers waiting (some may belong to cancelled or moved firings and will be skipped).
    public var timerCount: Int { timers.heap.count + idle.buckets.count }
    /// When the next timer is due.
    public var nextDue: Timestamp? {
        let heapFirst = timers.heap.first?.due
        return idle.nextDue(before: heapFirst, pool: pool, states: states) ?? heapFirst
    }

    public mutating func process(_ event: Event) -> [TriggerOutput] {
        var out: [TriggerOutput] = []
        process(event, into: &out)
        return out
    }

    public mutating func process(_ event: Event, into out: inout [TriggerOutput]) {
        let (userHash, eventHash) = Self.hashes(shop: event.shopID, user: event.userID, eventID: event.eventID)
        // The batch's read-ahead for one event: the seen-set and slot-table entries are read
        // together, then the guessed slot's entries together, instead of each in turn.
        var sum = seenEvents.touch(eventHash)
        if let guess = users.slotGuess(hash: userHash) { sum &+= touch(slot: guess) }
        touched &+= sum
        process(event, userHash: userHash, eventHash: eventHash, into: &out)
    }

    /// Reads the slot's key, state, `user.count` and idle-column entries, and its first
    /// pending firing (the value means nothing): `process` will need them, and these loads
    /// do not wait for each other (the firing's waits for the state only).
    private func touch(slot: UInt32) -> UInt64 {
        guard Int(slot) < states.count else { return 0 }
        let head = states[Int(slot)].pendingHead
        return UInt64(users.touch(slot)) &+ UInt64(bitPattern: states[Int(slot)].lastSeen.microseconds)
            &+ idle.touch(slot: slot) &+ counts.touch(slot: slot) &+ (head == 0 ? 0 : pool.timing(of: head).timer)
    }

    /// The user's key is hashed once: its hash finds the slot, and continued with the event
    /// id it is the event's hash.
    static func hashes(shop: String, user: String, eventID: String) -> (user: UInt64, event: UInt64) {
        var h = StableHash64()
        h.add(shop)
        h.add(user)
        let userHash = h.finish()
        h.add(eventID)
        return (userHash, h.finish())
    }

    /// `events[range]` in order, each after the timers due by its time when that time is at
    /// or before `bound` (the worker's watermark; nil: no timers fire): the same as
    /// `advance(to:)` and `process(_:)` event by event, in less time. An event costs a few
    /// reads of memory no cache holds (its seen-set entry; its user's slot-table entry, key,
    /// state and idle-column entry; its body, which passing the event on retains), each
    /// waited for in turn when the events come one at a time. Here they are taken
    /// `lookahead` at a time and those places are read for all of them first — loads that do
    /// not depend on each other, so the processor has many of them in flight at once — then
    /// the events are processed one by one, finding them in the cache. Reading changes
    /// nothing: each event is processed exactly as alone (one repeated in the group, or a
    /// user new in it, finds what the events before it left); a guessed slot that is wrong
    /// costs only the wasted read (docs/performance.md, "Trigger logic").
    public mutating func process(_ events: [Event], _ range: Range<Int>, advancingUpTo bound: Timestamp?,
                                 into out: inout [TriggerOutput]) {
        var start = range.lowerBound
        while start < range.upperBound {
            let end = min(start + Self.lookahead, range.upperBound)
            scratch.removeAll(keepingCapacity: true)
            guesses.removeAll(keepingCapacity: true)
            for i in start..<end {
                let (u, e) = Self.hashes(shop: events[i].shopID, user: events[i].userID, eventID: events[i].eventID)
                scratch.append(u)
                scratch.append(e)
            }
            // Summed and kept, so that the reads are not optimized away.
            var sum: UInt64 = 0
            for k in 0..<(end - start) {
                sum &+= seenEvents.touch(scratch[2 * k + 1])
                guesses.append(users.slotGuess(hash: scratch[2 * k]).map { $0 &+ 1 } ?? 0)
                sum &+= UInt64(events[start + k].body.keys.count &+ events[start + k].body.values.count)
            }
            for guess in guesses where guess != 0 { sum &+= touch(slot: guess - 1) }
            touched &+= sum
            for i in start..<end {
                let t = events[i].occurredAt
                if let bound, t <= bound { advance(to: t, into: &out) }
                let k = 2 * (i - start)
                process(events[i], userHash: scratch[k], eventHash: scratch[k + 1], into: &out)
            }
            start = end
        }
    }

    /// Events read ahead together by `process(_:_:advancingUpTo:into:)` (16 ran slower in
    /// alternated runs).
    static let lookahead = 32

    @inline(never)  // (inlined into the loop above, it copied each event once more)
    mutating func process(_ event: Event, userHash: UInt64, eventHash: UInt64, into out: inout [TriggerOutput]) {
        let eventPlan = dispatch.plan(topic: event.topic, type: event.type, plan)
        // A repeated event id of a user is ignored within the horizon (SPEC §2).
        guard seenEvents.insert(eventHash, at: event.occurredAt) else { return }
        let (slot, inserted) = users.insert(shop: event.shopID, user: event.userID, hash: userHash)
        if inserted {
            states.append(UserState(at: event.occurredAt))
            idle.addSlot()
            counts.addSlot()
            dirty.addSlot()
        }
        let logic = RuleLogic(plan: plan, clock: clock)
        logic.apply(event, eventPlan, slot: slot, user: &states[Int(slot)], counts: &counts, idle: &idle, timers: &timers,
                    pool: &pool, windows: &windows, out: &out, dirty: &dirty)
    }

    /// Fires every timer due at or before `time`, in due order.
    public mutating func advance(to time: Timestamp) -> [TriggerOutput] {
        var out: [TriggerOutput] = []
        advance(to: time, into: &out)
        return out
    }

    public mutating func advance(to time: Timestamp, into out: inout [TriggerOutput]) {
        if clock.map({ $0 < time }) ?? true { clock = time }
        idle.release(upTo: time, into: &timers, pool: pool, states: states)
        guard let first = timers.heap.first, first.due <= time else { return }
        let logic = RuleLogic(plan: plan, clock: clock)
        while let next = timers.heap.first, next.due <= time {
            _ = timers.heap.pop()
            guard Int(next.user) < states.count else { continue }
            logic.fire(timer: next, users: users, user: &states[Int(next.user)], idle: &idle,
                       timers: &timers, pool: &pool, out: &out, dirty: &dirty)
        }
    }
}

/// Event ids seen within the horizon, as 64-bit hashes of (shop, user, event id), in two
/// generations by event time: an id is remembered for at least one horizon and at most two.
struct SeenEvents: Sendable {
    let horizon: TimeSpan
    var current = HashSet64()
    var previous = HashSet64()
    var currentStart: Timestamp?
    var previousStart: Timestamp?
    /// Hashes inserted since the last checkpoint (`takeNewSeenEvents`), per generation;
    /// dropped with their generation.
    var currentNew: [UInt64] = []
    var previousNew: [UInt64] = []
    /// Off until the first checkpoint (which takes both sets whole) or a restore.
    var tracksNew = false

    init(horizon: TimeSpan) {
        self.horizon = horizon
    }

    var count: Int { current.count + previous.count }

    /// Reads the entries `insert(h)` will start at (`TriggerEngine.process(_:_:advancingUpTo:into:)`).
    func touch(_ h: UInt64) -> UInt64 { current.touch(h) &+ previous.touch(h) }

    /// Records the event by its hash (of shop, user and event id); false when it was seen before.
    mutating func insert(_ h: UInt64, at t: Timestamp) -> Bool {
        if let start = currentStart, t >= start + horizon {
            previous = current
            current = HashSet64()
            previousStart = currentStart
            currentStart = t
            previousNew = currentNew
            currentNew = []
        } else if currentStart == nil {
            currentStart = t
        }
        if previous.contains(h) { return false }
        guard current.insert(h) else { return false }
        if tracksNew { currentNew.append(h) }
        return true
    }
}

/// An open-addressing set of 64-bit hashes. The keys are already uniformly distributed,
/// so they index the table directly (no rehashing through `Hasher`).
struct HashSet64: Sendable {
    private var slots: [UInt64] = []   // 0 marks an empty slot
    /// 0 itself, which cannot live in a slot.
    private var hasZero = false
    private(set) var count = 0

    func contains(_ a: UInt64) -> Bool {
        if a == 0 { return hasZero }
        guard !slots.isEmpty else { return false }
        let mask = slots.count - 1
        var i = Int(truncatingIfNeeded: a) & mask
        while true {
            let x = slots[i]
            if x == 0 { return false }
            if x == a { return true }
            i = (i + 1) & mask
        }
    }

    /// The entry where looking for `a` starts.
    func touch(_ a: UInt64) -> UInt64 {
        slots.isEmpty ? 0 : slots[Int(truncatingIfNeeded: a) & (slots.count - 1)]
    }

    /// false when already present.
    mutating func insert(_ a: UInt64) -> Bool {
        if a == 0 {
            defer { hasZero = true }
            if !hasZero { count += 1 }
            return !hasZero
        }
        if (count + 1) * 4 > slots.count * 3 { grow() }
        let mask = slots.count - 1
        var i = Int(truncatingIfNeeded: a) & mask
        while true {
            let x = slots[i]
            if x == 0 {
                slots[i] = a
                count += 1
                return true
            }
            if x == a { return false }
            i = (i + 1) & mask
        }
    }

    /// Every hash.
    var all: [UInt64] {
        var out: [UInt64] = []
        out.reserveCapacity(count)
        if hasZero { out.append(0) }
        for x in slots where x != 0 { out.append(x) }
        return out
    }

    /// Makes room for `n` hashes at once. Restoring needs it: hashes listed in another
    /// table's slot order and inserted into a table that grows on the way cluster badly.
    mutating func reserve(_ n: Int) {
        var size = max(64, slots.count)
        while (n + 1) * 4 > size * 3 { size *= 2 }
        if size > slots.count { grow(to: size) }
    }

    private mutating func grow(to size: Int? = nil) {
        let old = slots
        slots = [UInt64](repeating: 0, count: size ?? max(64, old.count * 2))
        count = hasZero ? 1 : 0
        for x in old where x != 0 { _ = insert(x) }
    }
}

/// The `user.count` counts of every slot, `patterns` a slot side by side (4 bytes a user
/// for the one pattern of the SPEC §3 rules, instead of an array in each state).
struct CountColumn: Sendable {
    let patterns: Int
    private(set) var values: [Int32] = []

    init(patterns: Int) {
        self.patterns = patterns
    }

    mutating func addSlot() {
        for _ in 0..<patterns { values.append(0) }
    }

    mutating func reserve(_ n: Int) { values.reserveCapacity(n * patterns) }

    func counts(of slot: UInt32) -> ArraySlice<Int32> {
        values[Int(slot) * patterns..<(Int(slot) + 1) * patterns]
    }

    /// Reads the slot's first count.
    func touch(slot: UInt32) -> UInt64 {
        let i = Int(slot) * patterns
        return i < values.count ? UInt64(UInt32(bitPattern: values[i])) : 0
    }

    mutating func increment(_ slot: UInt32, _ i: Int) { values[Int(slot) * patterns + i] &+= 1 }

    mutating func set(_ slot: UInt32, _ counts: [Int32]) {
        for (i, c) in counts.prefix(patterns).enumerated() { values[Int(slot) * patterns + i] = c }
    }
}

/// Users changed since the last checkpoint, each listed once. Off until the first checkpoint
/// (which takes every user) or a restore, so an engine that is never checkpointed (replay,
/// benchmarks) keeps neither the list nor the flags.
struct DirtySlots: Sendable {
    private(set) var tracking = false
    /// Per slot while tracking: whether it is listed.
    private var flags: [Bool] = []
    private var list: [UInt32] = []

    mutating func start(slots: Int) {
        tracking = true
        flags = [Bool](repeating: false, count: slots)
        list = []
    }

    mutating func addSlot() { if tracking { flags.append(false) } }

    mutating func mark(_ slot: UInt32) {
        guard tracking, !flags[Int(slot)] else { return }
        flags[Int(slot)] = true
        list.append(slot)
    }

    /// The listed slots, in the order they changed; clears the list.
    mutating func take() -> [UInt32] {
        let out = list
        for s in out { flags[Int(s)] = false }
        list = []
        return out
    }
}

/// Timers of all users, with the sequence that orders equal due times.
struct TimerQueue: Sendable {
    var heap = TimerHeapOf<UInt32>()
    var sequence: UInt64 = 0

    mutating func next() -> UInt64 {
        sequence += 1
        return sequence
    }
}

/// The plan of each kind of event (`topic.type`) seen so far, found by a hash of the type.
struct DispatchCache: Sendable {
    /// Open addressing: index + 1 into `plans`; 0 is empty.
    private var table = [Int32](repeating: 0, count: 64)
    private var topics: [LogicalTopic] = []
    private var types: [String] = []
    private var plans: [EventPlan] = []

    mutating func plan(topic: LogicalTopic, type: String, _ plan: TriggerPlan) -> EventPlan {
        var h = StableHash64()
        h.add(type)
        let mask = table.count - 1
        var i = Int(truncatingIfNeeded: h.finish() ^ UInt64(topic == .orders ? 1 : 0)) & mask
        while table[i] != 0 {
            let k = Int(table[i]) - 1
            if topics[k] == topic, types[k] == type { return plans[k] }
            i = (i + 1) & mask
        }
        let p = plan.eventPlan(topic: topic, type: type)
        topics.append(topic)
        types.append(type)
        plans.append(p)
        table[i] = Int32(plans.count)
        if plans.count * 2 > table.count { rebuild() }
        return p
    }

    private mutating func rebuild() {
        table = [Int32](repeating: 0, count: table.count * 2)
        let mask = table.count - 1
        for k in plans.indices {
            var h = StableHash64()
            h.add(types[k])
            var i = Int(truncatingIfNeeded: h.finish() ^ UInt64(topics[k] == .orders ? 1 : 0)) & mask
            while table[i] != 0 { i = (i + 1) & mask }
            table[i] = Int32(k + 1)
        }
    }
}

/// What one kind of event (`orders.order_paid`) touches, worked out once per type.
final class EventPlan: Sendable {
    /// Rules `on` this event (their `shops` are checked per event).
    let listening: [Int]
    /// Indices into the counted patterns.
    let counted: [Int]
    /// Threshold rules this event resets.
    let resets: [Int]
    /// Whether it can cancel or convert a firing (kept while ahead of the clock).
    let cancelsOrConverts: Bool
    /// Whether it can cancel a pending firing by `cancel_on` or be a goal: what the pending
    /// firings are checked against when it arrives. An idle rule's own events only move its
    /// timer (`on: "*"` makes every event `cancelsOrConverts`, not this).
    let cancelsPending: Bool
    /// Rules whose goal it is.
    let goalOf: [Int]

    init(listening: [Int], counted: [Int], resets: [Int], cancelsOrConverts: Bool, cancelsPending: Bool, goalOf: [Int]) {
        self.listening = listening
        self.counted = counted
        self.resets = resets
        self.cancelsOrConverts = cancelsOrConverts
        self.cancelsPending = cancelsPending
        self.goalOf = goalOf
    }
}

/// Idle timers of rules that keep nothing but the timer — idle, no repeat, no goal, no
/// event fields for their templates: `win-back` (`on: "*"`, `idle: 30d`) gives every user
/// one, so they live in a column per such rule, indexed by slot, instead of as pending
/// firings. A column holds at most one firing per user; a second one of the same rule
/// (events arriving late from a slower input) is an ordinary pending firing. Where it is
/// kept changes nothing: pending firings are always considered in timer order, which is
/// their creation order.
struct IdleColumns: Sendable {
    /// Per rule index: its column, if it has one.
    let columnOf: [Int?]
    /// Per column: its rule, and the rule's quiet period (a firing's due time is its
    /// trigger's time plus that, so it is not stored).
    let ruleOf: [Int]
    let periodOf: [TimeSpan]
    /// [column][slot]
    var columns: [[IdleTimer]]
    /// The columns' timers by due hour: a 4-byte slot each instead of a heap entry.
    var buckets = IdleBuckets()

    struct IdleTimer: Sendable {
        /// 0: none (timer sequences start at 1).
        var timer: UInt64 = 0
        var triggerTime = Timestamp(microseconds: 0)
        var triggerEventID = ""
    }

    init(_ plan: TriggerPlan, enabled: Bool = true) {
        var columnOf: [Int?] = []
        var ruleOf: [Int] = []
        var periodOf: [TimeSpan] = []
        for (i, rule) in plan.rules.enumerated() {
            if enabled, case .idle(let d) = rule.timing, rule.repeatEvery == nil, rule.goal == nil, plan.eventFields[i].isEmpty {
                columnOf.append(ruleOf.count)
                ruleOf.append(i)
                periodOf.append(d)
            } else {
                columnOf.append(nil)
            }
        }
        self.columnOf = columnOf
        self.ruleOf = ruleOf
        self.periodOf = periodOf
        columns = Array(repeating: [], count: ruleOf.count)
    }

    mutating func addSlot() {
        for c in columns.indices { columns[c].append(IdleTimer()) }
    }

    /// Reads the slot's entry of every column.
    func touch(slot: UInt32) -> UInt64 {
        var t: UInt64 = 0
        for c in columns.indices where Int(slot) < columns[c].count { t &+= columns[c][Int(slot)].timer }
        return t
    }

    mutating func reserve(_ n: Int) {
        for c in columns.indices { columns[c].reserveCapacity(n) }
    }

    mutating func clear(slot: UInt32) {
        for c in columns.indices { columns[c][Int(slot)] = IdleTimer() }
    }

    /// Keeps `p` in its rule's column, its timer in a bucket, when it fits there; false when
    /// it must be kept as a pending firing (with a heap entry).
    mutating func store(_ p: UserState.Pending, slot: UInt32) -> Bool {
        guard let c = columnOf[p.rule], p.timer != 0, p.ordinal == 0, p.repeatsLeft == 0, p.event.isEmpty,
              p.due == p.triggerTime + periodOf[c], columns[c][Int(slot)].timer == 0 else { return false }
        columns[c][Int(slot)] = IdleTimer(timer: p.timer, triggerTime: p.triggerTime, triggerEventID: p.triggerEventID)
        buckets.add(column: c, slot: slot, due: p.due)
        return true
    }

    /// The due time of the column's firing of `slot`, if it has one.
    func due(_ c: Int, slot: UInt32) -> Timestamp? {
        let e = columns[c][Int(slot)]
        return e.timer == 0 ? nil : e.triggerTime + periodOf[c]
    }

    /// Turns the timers of every bucket starting at or before `time` into heap entries —
    /// each with its firing's sequence and current due time, so the heap pops them exactly
    /// where it would have had they been there all along; a timer that moved on to a later
    /// bucket goes to that bucket instead.
    mutating func release(upTo time: Timestamp, into timers: inout TimerQueue, pool: PendingPool, states: [UserState]) {
        while let start = buckets.firstStart, start <= time {
            guard let (c, index, slots) = buckets.takeFirst() else { break }
            if c == pendingColumn {
                releasePending(index, slots, into: &timers, pool: pool, states: states)
                continue
            }
            for slot in slots {
                guard Int(slot) < columns[c].count, let due = due(c, slot: slot) else { continue }
                if IdleBuckets.index(due) <= index {
                    timers.heap.push(.init(due: due, sequence: columns[c][Int(slot)].timer, user: slot))
                } else {
                    buckets.add(column: c, slot: slot, due: due)
                }
            }
        }
    }

    /// The buckets' column for the timers of pending firings (after the rules' columns).
    var pendingColumn: Int { ruleOf.count }

    /// Lists the timer of a pending firing of `slot` (in its `PendingPool` list) in the
    /// bucket of its due hour: 4 bytes instead of a heap entry until the hour comes.
    mutating func listPending(slot: UInt32, due: Timestamp) {
        buckets.add(column: pendingColumn, slot: slot, due: due)
    }

    /// A bucket of pending firings' timers: the firings of each user listed in it (once, if
    /// listed more than once) that are due in its hour become heap entries; those due later
    /// (a firing whose due time moved on, or another of the user's) are listed in their own
    /// hour's bucket again (listing twice is harmless: a user is taken once per bucket);
    /// those due earlier went to the heap with their own bucket.
    private mutating func releasePending(_ index: Int64, _ listed: [UInt32], into timers: inout TimerQueue,
                                         pool: PendingPool, states: [UserState]) {
        var last: UInt32?
        for slot in listed.sorted() where slot != last {
            last = slot
            guard Int(slot) < states.count else { continue }
            var i = states[Int(slot)].pendingHead
            while i != 0 {
                let timing = pool.timing(of: i)
                let bucket = IdleBuckets.index(timing.due)
                if bucket == index {
                    timers.heap.push(.init(due: timing.due, sequence: timing.timer, user: slot))
                } else if bucket > index {
                    buckets.add(column: pendingColumn, slot: slot, due: timing.due)
                }
                i = pool.next(i)
            }
        }
    }

    /// When the earliest bucketed timer is due, if before `bound` (or at all, without one).
    func nextDue(before bound: Timestamp?, pool: PendingPool, states: [UserState]) -> Timestamp? {
        // Usually the heap's first timer comes before every bucket: no sorting then.
        guard let first = buckets.firstStart, bound.map({ first < $0 }) ?? true else { return nil }
        var best: Timestamp?
        for (start, c, slots) in buckets.inOrder {
            if let b = bound, b <= start { break }
            if let b = best, b <= start { break }
            for slot in slots {
                if c == pendingColumn {
                    // Every firing of the user is pending: one that is in the heap already is
                    // not before the heap's first timer.
                    guard Int(slot) < states.count else { continue }
                    var i = states[Int(slot)].pendingHead
                    while i != 0 {
                        let due = pool.timing(of: i).due
                        if best.map({ due < $0 }) ?? true { best = due }
                        i = pool.next(i)
                    }
                    continue
                }
                guard Int(slot) < columns[c].count, let due = due(c, slot: slot) else { continue }
                if best.map({ due < $0 }) ?? true { best = due }
            }
        }
        return best.flatMap { b in bound.map { b < $0 } ?? true ? b : nil }
    }

    /// The column holding the firing of timer `sequence`, if one does.
    func column(holding sequence: UInt64, slot: UInt32) -> Int? {
        // 0 marks an empty entry (a corrupt checkpoint may list a timer 0: it is not here).
        guard sequence != 0 else { return nil }
        for c in columns.indices where columns[c][Int(slot)].timer == sequence { return c }
        return nil
    }

    func pending(_ c: Int, slot: UInt32) -> UserState.Pending? {
        let e = columns[c][Int(slot)]
        guard e.timer != 0 else { return nil }
        return UserState.Pending(timer: e.timer, rule: ruleOf[c], ordinal: 0, due: e.triggerTime + periodOf[c], triggerTime: e.triggerTime,
                                 triggerEventID: e.triggerEventID, repeatsLeft: 0, event: PackedObject())
    }

    /// Every pending firing of a slot, in timer order: the columns' merged into `list`.
    func merged(_ list: [UserState.Pending], slot: UInt32) -> [UserState.Pending] {
        var out = list
        for c in columns.indices {
            guard let p = pending(c, slot: slot) else { continue }
            out.insert(p, at: out.firstIndex { $0.timer > p.timer } ?? out.count)
        }
        return out
    }
}

/// Slots with a column timer, by the hour their timer is due (it may have moved later since:
/// it is looked up when its bucket comes due). Each live column timer is in exactly one
/// bucket or in the timer heap.
struct IdleBuckets: Sendable {
    static let width: Int64 = 3_600_000_000

    struct Key: Hashable, Sendable {
        var index: Int64
        var column: Int
    }

    private var lists: [Key: [UInt32]] = [:]
    /// Buckets in order: due = the bucket's start, sequence = its column.
    private var order = TimerHeapOf<UInt32>()
    /// Slots listed.
    private(set) var count = 0

    static func index(_ t: Timestamp) -> Int64 {
        let q = t.microseconds / width
        return t.microseconds % width < 0 ? q - 1 : q
    }

    mutating func add(column: Int, slot: UInt32, due: Timestamp) {
        let key = Key(index: Self.index(due), column: column)
        var made = false
        lists[key, default: { made = true; return [] }()].append(slot)  // one lookup
        if made {
            order.push(.init(due: Timestamp(microseconds: key.index * Self.width), sequence: UInt64(column), user: 0))
        }
        count += 1
    }

    var firstStart: Timestamp? { order.first?.due }

    mutating func takeFirst() -> (column: Int, index: Int64, slots: [UInt32])? {
        guard let e = order.pop() else { return nil }
        let key = Key(index: Self.index(e.due), column: Int(e.sequence))
        let slots = lists.removeValue(forKey: key) ?? []
        count -= slots.count
        return (key.column, key.index, slots)
    }

    /// Every bucket by start time.
    var inOrder: [(start: Timestamp, column: Int, slots: [UInt32])] {
        lists.sorted { ($0.key.index, $0.key.column) < ($1.key.index, $1.key.column) }
            .map { (Timestamp(microseconds: $0.key.index * Self.width), $0.key.column, $0.value) }
    }
}

/// The per-user work, on one user's state; separate from the engine so the state is
/// mutated in place in the slot arrays.
struct RuleLogic {
    let plan: TriggerPlan
    let clock: Timestamp?

    func apply(_ event: Event, _ ep: EventPlan, slot: UInt32, user: inout UserState, counts: inout CountColumn,
               idle: inout IdleColumns, timers: inout TimerQueue, pool: inout PendingPool, windows: inout WindowPool,
               out: inout [TriggerOutput], dirty: inout DirtySlots) {
        let t = event.occurredAt
        let key = UserKey(shop: event.shopID, user: event.userID)
        dirty.mark(slot)

        // Facts.
        if t < user.firstSeen { user.firstSeen = t }
        if t > user.lastSeen { user.lastSeen = t }
        for i in ep.counted { counts.increment(slot, i) }
        // (Read only from here on: a slice of the column kept while it is written would copy it.)
        let userCounts = counts.counts(of: slot)
        if event.topic == .behavior, event.type == "profile_updated", case .object(let profile)? = event.body["profile"] {
            var merged = user.profile ?? JSONObject()
            for (k, v) in profile.members where plan.profileFields.contains(k) { merged[k] = v }
            user.profile = merged.isEmpty ? nil : merged
        }

        // Goals reached.
        if user.hasRare, !user.goals.isEmpty {
            user.goals.removeAll { g in
                // Expired once the clock (not this event: it may come from the faster
                // input) has passed the window.
                if g.until < (clock ?? t) { return true }
                if g.until < t { return false }
                guard g.from < t, ep.goalOf.contains(g.rule) else { return false }
                out.append(.conversion(Conversion(
                    notificationID: g.notificationID, ruleID: plan.rules[g.rule].id, shopID: key.shop,
                    userID: key.user, variant: nil, goalEventID: event.eventID, convertedAt: t)))
                return true
            }
        }

        // (Only `cancel_on` and goal events: `cancels(_:_:idle: false)` is false for every
        // other event, and a goal event is one.)
        if ep.cancelsPending {
            let ref = SeenRef(eventID: event.eventID, time: t, topic: event.topic, type: event.type, fields: event.body)
            // Cancellations: after the trigger, before the fire time, matching fields equal.
            // (Idle timers move with their rule's events below.)
            if user.pendingHead != 0 { pool.removeAll(from: &user.pendingHead) { cancels(ref, $0, idle: false) } }

            // A goal event after the due time of a firing that has not fired yet (its
            // partition's clock lags behind this event) is kept for when it fires.
            if !ep.goalOf.isEmpty, pool.contains(from: user.pendingHead, where: { $0.due < t && ep.goalOf.contains($0.rule) }) {
                user.lateGoalEvents.append(ref.trimmed(to: []))
            }
        }
        // An event ahead of this state's clock may precede triggers still to arrive on a
        // slower input: it is kept until the clock passes it, to cancel or convert them.
        if let clock, user.hasAhead { user.ahead.removeAll { $0.time <= clock } }
        if ep.cancelsOrConverts, clock.map({ t > $0 }) ?? true {
            let ref = SeenRef(eventID: event.eventID, time: t, topic: event.topic, type: event.type, fields: event.body)
            user.ahead.append(ref.trimmed(to: plan.matchFields))
        }

        for index in ep.resets where user.windowHead != 0 && plan.rules[index].shops?.contains(key.shop) ?? true {
            var list = windows.windows(from: user.windowHead)
            list.removeAll { $0.rule == index }
            windows.set(&user.windowHead, list)
        }
        for index in ep.listening {
            // Fields read in place: copying the whole rule costs a dozen retains an event.
            if let shops = plan.rules[index].shops, !shops.contains(key.shop) { continue }
            if let condition = plan.rules[index].condition {
                do {
                    guard try condition.isTrue(in: EventContext(event: event.body, user: user, counts: userCounts, plan: plan)) else { continue }
                } catch {
                    out.append(.candidate(candidate(index, key, trigger(event, index), user: user, firedAt: t, ordinal: 0,
                                                    failure: "expression_error:" + error.message)))
                    continue
                }
            }
            switch plan.rules[index].timing {
            case .immediate:
                fire(index, key, slot, trigger(event, index), user: &user, idle: &idle, firedAt: t, ordinal: 0, timers: &timers, pool: &pool, out: &out)
            case .wait(let d):
                schedule(index, slot, event, user: &user, idle: &idle, due: t + d, ordinal: 0, timers: &timers, pool: &pool)
            case .at(let expressions):
                let context = EventContext(event: event.body, user: user, counts: userCounts, plan: plan)
                for (i, e) in expressions.enumerated() {
                    do throws(EvaluationError) {
                        guard let due = try Expression.timestamp(e.evaluate(in: context)) else {
                            throw EvaluationError("at[\(i)] has no timestamp value for this event")
                        }
                        if due < t { continue }  // already past at the triggering event
                        schedule(index, slot, event, user: &user, idle: &idle, due: due, ordinal: i * 1000, timers: &timers, pool: &pool)
                    } catch {
                        out.append(.candidate(candidate(index, key, trigger(event, index), user: user, firedAt: t,
                                                        ordinal: i * 1000, failure: "expression_error:" + error.message)))
                    }
                }
            case .threshold(let count, let within, _):
                var list = windows.windows(from: user.windowHead)
                var w = list.first { $0.rule == index } ?? UserState.Window(rule: index, times: [])
                list.removeAll { $0.rule == index }
                w.times.append(t)
                w.times.removeAll { $0 <= t - within }
                let fires = w.times.count >= count
                if !fires { list.append(w) }
                windows.set(&user.windowHead, list)
                if fires {
                    fire(index, key, slot, trigger(event, index), user: &user, idle: &idle, firedAt: t, ordinal: 0, timers: &timers, pool: &pool, out: &out)
                }
            case .idle(let d):
                // The first pending firing of the rule whose quiet period this event falls in
                // (smallest timer: the column's or the list's).
                let first = pool.first(from: user.pendingHead) { $0.rule == index && $0.triggerTime < t && t < $0.due }
                let listed: UInt32? = first == 0 ? nil : first
                var inColumn: Int?
                if let c = idle.columnOf[index] {
                    let e = idle.columns[c][Int(slot)]
                    if e.timer != 0, e.triggerTime < t, t < e.triggerTime + d, listed.map({ e.timer < pool.timing(of: $0).timer }) ?? true {
                        inColumn = c
                    }
                }
                if let c = inColumn {
                    // The quiet period restarts: the same timer moves to the new end.
                    idle.columns[c][Int(slot)].triggerTime = t
                    idle.columns[c][Int(slot)].triggerEventID = event.eventID
                } else if let i = listed {
                    pool[i].triggerTime = t
                    pool[i].due = t + d
                    pool[i].triggerEventID = event.eventID
                    pool[i].event = PackedObject(plan.trimmed(event.body, rule: index))
                } else if !pool.contains(from: user.pendingHead, where: {
                              $0.rule == index && $0.triggerTime >= t && $0.triggerTime < t + d
                          }),
                          !(idle.columnOf[index].map { c in
                              let e = idle.columns[c][Int(slot)]
                              return e.timer != 0 && e.triggerTime >= t && e.triggerTime < t + d
                          } ?? false) {
                    // Not covered by a newer event's period (events can arrive late from a slower input).
                    schedule(index, slot, event, user: &user, idle: &idle, due: t + d, ordinal: 0, timers: &timers, pool: &pool)
                }
            }
        }
    }

    /// A timer popped from the queue: fire its firing if it is still pending and due.
    func fire(timer: TimerHeapOf<UInt32>.Entry, users: UserSlots, user: inout UserState, idle: inout IdleColumns,
              timers: inout TimerQueue, pool: inout PendingPool, out: inout [TriggerOutput], dirty: inout DirtySlots) {
        let slot = timer.user
        let p: UserState.Pending
        if let c = idle.column(holding: timer.sequence, slot: slot) {
            let e = idle.columns[c][Int(slot)]
            let due = e.triggerTime + idle.periodOf[c]
            if due > timer.due {
                // An idle timer that moved: wait for its new time.
                timers.heap.push(.init(due: due, sequence: timer.sequence, user: slot))
                return
            }
            guard let taken = idle.pending(c, slot: slot) else { return }
            p = taken
            idle.columns[c][Int(slot)] = IdleColumns.IdleTimer()
        } else {
            let i = pool.first(from: user.pendingHead) { $0.timer == timer.sequence }
            guard i != 0 else { return }
            if pool[i].due > timer.due {
                timers.heap.push(.init(due: pool[i].due, sequence: timer.sequence, user: slot))
                return
            }
            p = pool.remove(i, from: &user.pendingHead)
        }
        dirty.mark(slot)
        let key = users.key(slot)
        emit(p.rule, key, Candidate.TriggerRef(eventID: p.triggerEventID, time: p.triggerTime, body: p.event.object),
             user: &user, pool: pool, firedAt: p.due, ordinal: p.ordinal, out: &out)
        if p.repeatsLeft > 0, let r = plan.rules[p.rule].repeatEvery {
            var again = p
            again.ordinal += 1
            again.due = p.due + r.every
            again.repeatsLeft -= 1
            push(&again, slot, user: &user, idle: &idle, timers: &timers, pool: &pool)
        }
    }

    /// Whether an event cancels a pending firing: it happened after the trigger and before
    /// the fire time, it is one of the rule's `cancel_on` events with the `match` fields
    /// equal — or, for an idle timer, any of the rule's own events.
    func cancels(_ e: SeenRef, _ p: UserState.Pending, idle checkIdle: Bool = true) -> Bool {
        guard e.time > p.triggerTime, e.time < p.due else { return false }
        // (The rule's fields read in place: a copy of the rule is a dozen retains.)
        if case .idle = plan.rules[p.rule].timing {
            return checkIdle && plan.rules[p.rule].on.contains { $0.matches(topic: e.topic, type: e.type) }
        }
        guard let cancel = plan.rules[p.rule].cancel,
              cancel.events.contains(where: { $0.matches(topic: e.topic, type: e.type) }) else {
            return false
        }
        if cancel.match.isEmpty { return true }
        let body = JSONValue.object(e.fields)
        let trigger = JSONValue.object(p.event.object)
        return cancel.match.allSatisfy { field in
            guard let a = body[path: field], let b = trigger[path: field], !a.isNull else { return false }
            return a == b
        }
    }

    // MARK: Firing

    func trigger(_ event: Event, _ rule: Int) -> Candidate.TriggerRef {
        Candidate.TriggerRef(eventID: event.eventID, time: event.occurredAt, body: plan.trimmed(event.body, rule: rule))
    }

    func schedule(_ rule: Int, _ slot: UInt32, _ event: Event, user: inout UserState, idle: inout IdleColumns,
                  due: Timestamp, ordinal: Int, timers: inout TimerQueue, pool: inout PendingPool) {
        var p = UserState.Pending(timer: 0, rule: rule, ordinal: ordinal, due: due, triggerTime: event.occurredAt,
                                  triggerEventID: event.eventID, repeatsLeft: plan.rules[rule].repeatEvery?.times ?? 0,
                                  event: PackedObject(plan.trimmed(event.body, rule: rule)))
        push(&p, slot, user: &user, idle: &idle, timers: &timers, pool: &pool)
    }

    func push(_ p: inout UserState.Pending, _ slot: UInt32, user: inout UserState, idle: inout IdleColumns,
              timers: inout TimerQueue, pool: inout PendingPool) {
        // Already cancelled by an event processed before its trigger (a faster input).
        if user.hasAhead, user.ahead.contains(where: { cancels($0, p) }) { return }
        p.timer = timers.next()
        if idle.store(p, slot: slot) { return }
        pool.append(p, to: &user.pendingHead)
        idle.listPending(slot: slot, due: p.due)
    }

    /// An immediate firing, with its repeat chain scheduled.
    func fire(_ rule: Int, _ key: UserKey, _ slot: UInt32, _ trigger: Candidate.TriggerRef, user: inout UserState,
              idle: inout IdleColumns, firedAt: Timestamp, ordinal: Int, timers: inout TimerQueue, pool: inout PendingPool,
              out: inout [TriggerOutput]) {
        emit(rule, key, trigger, user: &user, pool: pool, firedAt: firedAt, ordinal: ordinal, out: &out)
        if let r = plan.rules[rule].repeatEvery {
            var p = UserState.Pending(timer: 0, rule: rule, ordinal: ordinal + 1, due: firedAt + r.every,
                                      triggerTime: trigger.time, triggerEventID: trigger.eventID,
                                      repeatsLeft: r.times - 1, event: PackedObject(trigger.body))
            push(&p, slot, user: &user, idle: &idle, timers: &timers, pool: &pool)
        }
    }

    func emit(_ rule: Int, _ key: UserKey, _ trigger: Candidate.TriggerRef, user: inout UserState, pool: PendingPool,
              firedAt: Timestamp, ordinal: Int, out: inout [TriggerOutput]) {
        let c = candidate(rule, key, trigger, user: user, firedAt: firedAt, ordinal: ordinal, failure: nil)
        out.append(.candidate(c))
        if let goal = plan.rules[rule].goal {
            let until = firedAt + goal.within
            let early = (user.lateGoalEvents + user.ahead).filter {
                $0.time > firedAt && $0.time <= until && goal.event.matches(topic: $0.topic, type: $0.type)
            }
            if let first = early.min(by: { $0.time < $1.time }) {
                out.append(.conversion(Conversion(notificationID: c.id, ruleID: plan.rules[rule].id, shopID: key.shop,
                                                  userID: key.user, variant: nil, goalEventID: first.eventID,
                                                  convertedAt: first.time)))
            } else {
                user.goals.append(.init(rule: rule, notificationID: c.id, from: firedAt, until: until))
            }
        }
        if !user.lateGoalEvents.isEmpty, !pool.contains(from: user.pendingHead, where: { plan.rules[$0.rule].goal != nil }) {
            user.lateGoalEvents.removeAll()
        }
    }

    func candidate(_ index: Int, _ key: UserKey, _ trigger: Candidate.TriggerRef, user: UserState, firedAt: Timestamp,
                   ordinal: Int, failure: String?) -> Candidate {
        let rule = plan.rules[index]
        return Candidate(
            id: Candidate.notificationID(ruleID: rule.id, shopID: key.shop, userID: key.user,
                                         triggerEventID: trigger.eventID, eventTime: trigger.time, ordinal: ordinal),
            ruleID: rule.id, shopID: key.shop, userID: key.user, priority: rule.notify.priority,
            channels: rule.notify.channels, template: rule.notify.template, escalate: rule.notify.escalate,
            tags: rule.notify.tags, triggerEventIDs: [trigger.eventID], eventTime: trigger.time, firedAt: firedAt,
            rulesVersion: plan.version, ordinal: ordinal, failure: failure, event: trigger.body,
            user: user.profile ?? JSONObject())
    }
}

extension Candidate {
    /// The triggering event as a firing remembers it.
    struct TriggerRef {
        var eventID: String
        var time: Timestamp
        var body: JSONObject
    }
}
