/// The events of one state's inputs — partition N of `orders` and of `behavior` live,
/// the whole file in `herald replay` — put back into event-time order before the trigger
/// applies them (SPEC §5).
///
/// A user's state (profile, counts, first/last seen, threshold windows) must not depend on
/// which input happened to be read first: an order read before the `profile_updated` that
/// preceded it would otherwise render the old nickname live and the new one in replay. So
/// an event waits here until every input has progressed to its time — the condition under
/// which a timer may fire — and events leave in the order (occurred_at, input, arrival);
/// at equal times the first input (`orders`) goes first.
///
/// Events that arrive after an event later in that order has been applied (their own
/// partition is out of time order, or `limit` forced one out early) are counted in `late`:
/// their effect depends on the read order, and replay may differ for them.
public struct EventOrder: Sendable {
    public struct Entry: Sendable {
        public var event: Event
        /// Index of the input (0: `orders`, 1: `behavior`).
        public var input: Int
        /// Where it was read (the Kafka offset, or the line in replay).
        public var offset: Int64
    }

    /// What the heap holds for an event (its time and input are in the heap's key).
    private struct Held: Sendable {
        var event: Event
        var offset: Int64
    }

    /// Events held at most; beyond it the oldest leaves before the watermark reaches it (0:
    /// none are held, events are applied in the order read).
    public let limit: Int
    /// By (occurred_at, input, arrival): the timers' heap, with the input in the top bit of
    /// the sequence and the arrival below it.
    private var heap = TimerHeapOf<Held>()
    private var sequence: UInt64 = 0
    private var lastOut: (time: Timestamp, input: Int)?
    /// Events that arrived behind one already applied (see the type's comment).
    public private(set) var late = 0
    /// Events let out by `limit` before the inputs had progressed to them.
    public private(set) var forced = 0

    /// The input index of a topic: `orders` first at equal times.
    public static func input(_ topic: LogicalTopic) -> Int { topic == .orders ? 0 : 1 }

    private static func input(of e: TimerHeapOf<Held>.Entry) -> Int { Int(e.sequence >> 63) }

    public init(limit: Int = 100_000) {
        self.limit = max(0, limit)
    }

    public var count: Int { heap.count }
    public var isEmpty: Bool { heap.isEmpty }

    public mutating func add(_ event: Event, input: Int, offset: Int64 = 0) {
        if let last = lastOut, event.occurredAt < last.time || (event.occurredAt == last.time && input < last.input) {
            late += 1
        }
        sequence &+= 1
        heap.push(.init(due: event.occurredAt, sequence: UInt64(input) << 63 | sequence,
                        user: Held(event: event, offset: offset)))
    }

    /// The next event to apply once every input has progressed to `watermark` (nil: some
    /// input has not delivered anything yet). An event at exactly the watermark waits unless
    /// it is of the first input: another input may still deliver one at that time, which
    /// would go before it.
    public mutating func next(upTo watermark: Timestamp?) -> Entry? {
        guard let head = heap.first else { return nil }
        if let w = watermark, head.due < w || (head.due == w && Self.input(of: head) == 0) {
            return pop()
        }
        if heap.count > limit {
            forced += 1
            return pop()
        }
        return nil
    }

    /// Every event held, in order (the end of a replay's input).
    public mutating func drain() -> [Entry] {
        var out: [Entry] = []
        out.reserveCapacity(heap.count)
        while let e = pop() { out.append(e) }
        return out
    }

    /// The oldest offset still held, per input: where reading must resume for these
    /// events to be applied after a restart.
    public func oldestOffsets() -> [Int: Int64] {
        var out: [Int: Int64] = [:]
        for e in heap.entries {
            let input = Self.input(of: e)
            out[input] = min(out[input] ?? e.user.offset, e.user.offset)
        }
        return out
    }

    private mutating func pop() -> Entry? {
        guard let top = heap.pop() else { return nil }
        let input = Self.input(of: top)
        lastOut = (top.due, input)
        return Entry(event: top.user.event, input: input, offset: top.user.offset)
    }
}
