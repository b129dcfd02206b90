import ArgumentParser
import HeraldCore

/// herald-sink's own flags; each also from an environment variable.
public struct SinkOptions: ParsableArguments, Sendable {
    @Option(help: "Longest a batch is held open for more messages, e.g. 200ms, 1s (env HERALD_FLUSH_INTERVAL).")
    public var flushInterval: String?

    @Option(help: "Most notification rows and dead letters written per second, to shave peaks; Kafka holds the backlog (env HERALD_MAX_ROWS_PER_SECOND; default: unlimited).")
    public var maxRowsPerSecond: Int?

    @Option(help: "PostgreSQL connections writing each batch in parallel, its outcomes split by shop and rule (env HERALD_SINK_WRITERS; default 2).")
    public var writers: Int?

    public init() {}

    public func resolve() throws -> SinkConfig {
        var c = SinkConfig()
        if let text = flushInterval ?? WorkerOptions.env("HERALD_FLUSH_INTERVAL") {
            guard let d = SinkConfig.parseInterval(text), d > .zero else {
                throw ValidationError("--flush-interval takes a positive duration such as 200ms or 1s, got '\(text)'")
            }
            c.flushInterval = d
        }
        if let text = maxRowsPerSecond.map(String.init) ?? WorkerOptions.env("HERALD_MAX_ROWS_PER_SECOND") {
            guard let n = Int(text), n > 0 else {
                throw ValidationError("--max-rows-per-second takes a positive integer, got '\(text)'")
            }
            c.maxRowsPerSecond = n
        }
        if let text = writers.map(String.init) ?? WorkerOptions.env("HERALD_SINK_WRITERS") {
            guard let n = Int(text), (1...64).contains(n) else {
                throw ValidationError("--writers takes an integer from 1 to 64, got '\(text)'")
            }
            c.writers = n
        }
        return c
    }
}

public struct SinkConfig: Sendable {
    public var flushInterval: Duration = .milliseconds(200)
    public var maxRowsPerSecond: Int?
    /// Writer lanes: connections that write parts of a batch in parallel.
    public var writers = 2

    public init() {}

    /// `250ms`, or a duration `TimeSpan` understands (`1s`, `1m30s`).
    static func parseInterval(_ text: String) -> Duration? {
        if text.hasSuffix("ms"), let ms = Int(text.dropLast(2)) { return .milliseconds(ms) }
        return TimeSpan(parsing: text).map { .microseconds($0.microseconds) }
    }
}
