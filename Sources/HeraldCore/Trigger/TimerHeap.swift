/// A min-heap of timers by (due, sequence): the sequence breaks ties in creation order, so
/// timers fire in the same order on every run. `Target` says what the entry is for: a user
/// slot for the trigger's and the shaper's timers (no strings to retain), an event held for
/// event-time order in `EventOrder` (whose sequence also carries the input).
struct TimerHeapOf<Target: Sendable>: Sendable {
    struct Entry: Sendable {
        var due: Timestamp
        var sequence: UInt64
        var user: Target
    }

    private(set) var entries: [Entry] = []

    var isEmpty: Bool { entries.isEmpty }
    var count: Int { entries.count }
    var first: Entry? { entries.first }

    static func less(_ a: Entry, _ b: Entry) -> Bool {
        a.due < b.due || (a.due == b.due && a.sequence < b.sequence)
    }

    mutating func reserveCapacity(_ n: Int) { entries.reserveCapacity(n) }

    /// Changes whose timer each entry is; the order (due, sequence) stays.
    mutating func mapTargets(_ f: (Target) -> Target) {
        for i in entries.indices { entries[i].user = f(entries[i].user) }
    }

    mutating func push(_ e: Entry) {
        entries.append(e)
        var i = entries.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard Self.less(entries[i], entries[parent]) else { break }
            entries.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Entry? {
        guard !entries.isEmpty else { return nil }
        entries.swapAt(0, entries.count - 1)
        let top = entries.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < entries.count, Self.less(entries[l], entries[m]) { m = l }
            if r < entries.count, Self.less(entries[r], entries[m]) { m = r }
            if m == i { break }
            entries.swapAt(i, m)
            i = m
        }
        return top
    }
}
