import Foundation
import HeraldCore
import HeraldPostgres
import Logging

/// Writes one batch at a time on its own thread (libpq blocks), so that herald-sink polls and
/// decodes the next batch meanwhile. With several writer lanes (`--writers`), a batch's
/// outcomes are split by (shop, rule) — so lanes never share a notification id or a rollup
/// row — and each lane writes its part in its own transaction on its own connection, in
/// parallel; conversions, engagements and dead letters follow on the first lane once every
/// lane has committed (a conversion must find its notification). A failed lane is retried
/// with backoff for a while on its connection (reconnecting when it broke); lanes that
/// committed are not written again. Past that, `wait` throws and the session ends without
/// committing the batch's offsets; the batch is re-read, and the lanes that had committed
/// replay as no-ops (writes are idempotent by notification id).
// @unchecked Sendable: the lanes' connections and writers are touched only by the write
// thread (and, during one batch, each lane by the one worker writing it) between `submit`
// and the end of the job, and only by the session's thread otherwise (`wait` and `close`
// return after the job is done); `job`, `result`, `busy` and `closed` are guarded by
// `condition`.
final class SinkBatchWriter: @unchecked Sendable {
    /// One connection and its writer.
    final class Lane {
        var conn: PostgresConnection?
        var writer: SinkWriter
        /// The error of this lane's last part, in a parallel write.
        var failure: (any Error)?

        init(conn: PostgresConnection?, writer: SinkWriter) {
            self.conn = conn
            self.writer = writer
        }
    }

    private let lanes: [Lane]
    private let conninfo: String?
    /// Lane 0's connection and writer (the session's own).
    var conn: PostgresConnection { lanes[0].conn! }
    var writer: SinkWriter { lanes[0].writer }
    private let logger: Logger
    private let stop: StopSignal
    private let condition = NSCondition()
    private var job: (batch: SinkBatch, checkPartitions: Bool)?
    private var result: Result<Void, any Error>?
    private var busy = false
    private var retrying = false
    private var closed = false
    private var thread: Thread?

    init(conn: PostgresConnection, writer: SinkWriter, lanes count: Int = 1, config: WorkerConfig, logger: Logger,
         stop: StopSignal) {
        // Extra lanes connect on first use, like a reconnect.
        self.lanes = [Lane(conn: conn, writer: writer)]
            + (1..<max(count, 1)).map { _ in Lane(conn: nil, writer: SinkWriter(schema: writer.schema)) }
        self.conninfo = config.postgres
        self.logger = logger
        self.stop = stop
        // The thread holds the writer until `close` ends its loop.
        let thread = Thread { self.loop() }
        thread.name = "herald-sink-writer"
        self.thread = thread
        thread.start()
    }

    /// Hands a batch to the write thread; the previous one must have been waited for.
    func submit(_ batch: SinkBatch, checkPartitions: Bool) {
        condition.withLock {
            precondition(!busy && !closed, "submit while a batch is in flight")
            job = (batch, checkPartitions)
            busy = true
            condition.broadcast()
        }
    }

    /// Waits for the submitted batch; throws its write error.
    func wait() throws {
        while try !wait(timeout: .seconds(3600)) {}
    }

    /// Waits up to `timeout` for the submitted batch: true once it is written (throwing its
    /// write error), false while it is still being written or retried.
    func wait(timeout: Duration) throws -> Bool {
        let deadline = Date().addingTimeInterval(Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18)
        let r: Result<Void, any Error>?? = condition.withLock {
            while busy {
                if !condition.wait(until: deadline) { return .none }
            }
            defer { result = nil }
            return .some(result)
        }
        guard let r else { return false }
        try r?.get()
        return true
    }

    /// Whether the batch in flight has failed at least once and is being retried.
    var isRetrying: Bool { condition.withLock { retrying } }

    /// Waits for any batch in flight, then ends the thread.
    func close() {
        condition.withLock {
            while busy { condition.wait() }
            closed = true
            condition.broadcast()
        }
        for lane in lanes.dropFirst() { lane.conn = nil }
    }

    private func loop() {
        while true {
            let next: (batch: SinkBatch, checkPartitions: Bool)? = condition.withLock {
                while job == nil, !closed { condition.wait() }
                defer { job = nil }
                return job
            }
            guard let next else { return }
            if next.checkPartitions { _ = try? writer.partitions.ensureAhead(on: conn) }
            let r = Result { try writeWithRetry(next.batch) }
            condition.withLock {
                result = r
                retrying = false
                busy = false
                condition.broadcast()
            }
        }
    }

    /// Retries a failed batch for a while (the consumer keeps its partitions and polls no
    /// more); past that the session ends, the consumer leaves the group, and the batch is
    /// re-read after recovery.
    private func writeWithRetry(_ batch: SinkBatch) throws {
        var backoff = Backoff(initial: 0.2, max: 5)
        let giveUp = Date().addingTimeInterval(30)
        let parts = Self.split(batch.outcomes, lanes: lanes.count)
        // One transaction per non-empty part, then the rest of the batch on lane 0 — or, with
        // one part only, everything in one transaction.
        var pending = parts.indices.filter { !parts[$0].isEmpty }
        var restPending = pending.count > 1 && !(batch.conversions.isEmpty && batch.engagements.isEmpty && batch.letters.isEmpty)
        if pending.count <= 1 { pending = [pending.first ?? 0] }
        let together = pending.count == 1
        while true {
            do {
                if together {
                    let lane = pending[0]
                    try write(lane: lane) { writer, conn in
                        try writer.write(parts[lane], conversions: batch.conversions,
                                         engagements: batch.engagements, deadLetters: batch.letters, on: conn)
                    }
                } else {
                    let failed = try writeInParallel(parts, lanes: pending)
                    pending = failed.lanes
                    if let error = failed.error { throw error }
                    if restPending {
                        try write(lane: 0) { writer, conn in
                            try writer.write(outcomes: [], conversions: batch.conversions, engagements: batch.engagements,
                                             deadLetters: batch.letters, on: conn)
                        }
                        restPending = false
                    }
                }
                logger.debug("batch written", metadata: [
                    "outcomes": "\(batch.outcomes.count)", "conversions": "\(batch.conversions.count)",
                    "dead_letters": "\(batch.letters.count)", "lanes": "\(parts.filter { !$0.isEmpty }.count)",
                ])
                return
            } catch let error as PostgresError {
                guard Date() < giveUp, !stop.isSet else { throw error }
                condition.withLock { retrying = true }
                let delay = backoff.take()
                logger.warning("batch write failed; retrying", metadata: ["error": "\(error)", "retry_in_s": "\(delay)"])
                stop.sleep(delay)
                for lane in lanes {
                    if let conn = lane.conn, error.isConnectionFailure || !conn.isHealthy {
                        if (try? conn.reconnect()) != nil { try? lane.writer.prepare(conn) }
                    }
                }
            }
        }
    }

    /// Writes `parts[i]` on lane i for each i in `lanes`, in parallel; returns the lanes that
    /// failed and the first of their errors.
    private func writeInParallel(_ parts: [OutcomeRows], lanes indices: [Int]) throws -> (lanes: [Int], error: PostgresError?) {
        DispatchQueue.concurrentPerform(iterations: indices.count) { k in
            let lane = indices[k]
            do {
                try write(lane: lane) { writer, conn in
                    try writer.write(parts[lane], deadLetters: [], on: conn)
                }
                lanes[lane].failure = nil
            } catch {
                lanes[lane].failure = error
            }
        }
        let failed = indices.filter { lanes[$0].failure != nil }
        guard let first = failed.first.flatMap({ lanes[$0].failure }) else { return ([], nil) }
        // Anything but a PostgreSQL error ends the session at once, as before.
        guard let error = first as? PostgresError else { throw first }
        return (failed, error)
    }

    /// Runs `body` with lane `index`'s writer and connection (connecting the lane first).
    private func write(lane index: Int, _ body: (inout SinkWriter, PostgresConnection) throws -> Void) throws {
        let lane = lanes[index]
        if lane.conn == nil {
            guard let conninfo else { throw PostgresError(message: "no PostgreSQL conninfo for a writer lane") }
            let conn = try PostgresConnection(conninfo, logger: logger)
            try lane.writer.prepare(conn)
            lane.conn = conn
        }
        try body(&lane.writer, lane.conn!)
    }

    /// Splits outcomes into one part per lane by (shop, rule): every outcome of a notification,
    /// and every row of one rollup key, lands in the same part.
    static func split(_ outcomes: [Outcome], lanes: Int) -> [OutcomeRows] {
        guard lanes > 1 else { return [OutcomeRows(outcomes)] }
        var parts = [[Int]](repeating: [], count: lanes)
        for i in outcomes.indices {
            // FNV-1a: stable across processes (Swift's Hasher is seeded per process).
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            for b in outcomes[i].shopID.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
            h = (h ^ 0xff) &* 0x100_0000_01b3
            for b in outcomes[i].ruleID.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
            parts[Int(h % UInt64(lanes))].append(i)
        }
        return parts.map { OutcomeRows(outcomes, indices: $0) }
    }
}
