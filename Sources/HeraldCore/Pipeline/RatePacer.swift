/// Paces batched writes to at most `rowsPerSecond` on average (peak shaving): before a batch
/// of n rows is written, `reserve(n, at:)` says how long to wait. No burst credit builds up
/// while idle, so over any interval the rows written are at most rate × interval plus one
/// batch.
public struct RatePacer: Sendable {
    public let rowsPerSecond: Double
    /// Budget in rows: negative while earlier batches are still being paid for.
    private var budget: Double = 0
    private var last: Double?

    public init(rowsPerSecond: Double) {
        precondition(rowsPerSecond > 0)
        self.rowsPerSecond = rowsPerSecond
    }

    /// Seconds to wait, from `now` (any monotonic clock in seconds), before writing `rows`.
    public mutating func reserve(_ rows: Int, at now: Double) -> Double {
        if let last { budget = min(0, budget + (now - last) * rowsPerSecond) }
        last = now
        budget -= Double(rows)
        return budget >= 0 ? 0 : -budget / rowsPerSecond
    }
}
