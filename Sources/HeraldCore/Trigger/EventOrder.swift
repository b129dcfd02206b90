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
        var sequence: UInt64

        fileprivate static func < (a: Entry, b: Entry) -> Bool {
            if a.event.occurredAt != b.event.occurredAt { return a.event.occurredAt < b.event.occurredAt }
            if a.input != b.input { return a.input < b.input }
            return a.sequence < b.sequence
        }
    }

    /// Events held at most; beyond it the oldest leaves before the watermark reaches it (0:
    /// none are held, events are applied in the order read).
    public let limit: Int
    private var heap: [Entry] = []
    private var sequence: UInt64 = 0
    private var lastOut: (time: Timestamp, input: Int)?
    /// Events that arrived behind one already applied (see the type's comment).
    public private(set) var late = 0
    /// Events let out by `limit` before the inputs had progressed to them.
    public private(set) var forced = 0

    /// The input index of a topic: `orders` first at equal times.
    public static func input(_ topic: LogicalTopic) -> Int { topic == .orders ? 0 : 1 }

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
        heap.append(Entry(event: event, input: input, offset: offset, sequence: sequence))
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i] < heap[parent] else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    /// The next event to apply once every input has progressed to `watermark` (nil: some
    /// input has not delivered anything yet). An event at exactly the watermark waits unless
    /// it is of the first input: another input may still deliver one at that time, which
    /// would go before it.
    public mutating func next(upTo watermark: Timestamp?) -> Entry? {
        guard let head = heap.first else { return nil }
        if let w = watermark, head.event.occurredAt < w || (head.event.occurredAt == w && head.input == 0) {
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
        while !heap.isEmpty { out.append(pop()) }
        return out
    }

    /// The oldest offset still held, per input: where reading must resume for these
    /// events to be applied after a restart.
    public func oldestOffsets() -> [Int: Int64] {
        var out: [Int: Int64] = [:]
        for e in heap { out[e.input] = min(out[e.input] ?? e.offset, e.offset) }
        return out
    }

    private mutating func pop() -> Entry {
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count, heap[l] < heap[m] { m = l }
                if r < heap.count, heap[r] < heap[m] { m = r }
                if m == i { break }
                heap.swapAt(i, m)
                i = m
            }
        }
        lastOut = (top.event.occurredAt, top.input)
        return top
    }
}
