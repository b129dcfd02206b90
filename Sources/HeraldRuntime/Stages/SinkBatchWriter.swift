import Foundation
import HeraldCore
import HeraldPostgres
import Logging

/// Writes one batch at a time on its own thread (libpq blocks), so that herald-sink polls and
/// decodes the next batch meanwhile. A failed write is retried with backoff for a while on
/// the same connection (reconnecting when it broke); past that, `wait` throws and the session
/// ends without committing the batch's offsets.
// @unchecked Sendable: `conn` and `writer` are touched only by the write thread between
// `submit` and the end of the job, and only by the session's thread otherwise (`wait` and
// `close` return after the job is done); `job`, `result`, `busy` and `closed` are guarded by
// `condition`.
final class SinkBatchWriter: @unchecked Sendable {
    private(set) var conn: PostgresConnection
    private(set) var writer: SinkWriter
    private let logger: Logger
    private let stop: StopSignal
    private let condition = NSCondition()
    private var job: (batch: SinkBatch, checkPartitions: Bool)?
    private var result: Result<Void, any Error>?
    private var busy = false
    private var retrying = false
    private var closed = false
    private var thread: Thread?

    init(conn: PostgresConnection, writer: SinkWriter, config: WorkerConfig, logger: Logger, stop: StopSignal) {
        self.conn = conn
        self.writer = writer
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
        while true {
            do {
                try writer.write(outcomes: batch.outcomes, conversions: batch.conversions, engagements: batch.engagements, deadLetters: batch.letters,
                                 on: conn)
                logger.debug("batch written", metadata: [
                    "outcomes": "\(batch.outcomes.count)", "conversions": "\(batch.conversions.count)",
                    "dead_letters": "\(batch.letters.count)",
                ])
                return
            } catch let error as PostgresError {
                guard Date() < giveUp, !stop.isSet else { throw error }
                condition.withLock { retrying = true }
                let delay = backoff.take()
                logger.warning("batch write failed; retrying", metadata: ["error": "\(error)", "retry_in_s": "\(delay)"])
                stop.sleep(delay)
                if error.isConnectionFailure || !conn.isHealthy {
                    if (try? conn.reconnect()) != nil { try? writer.prepare(conn) }
                }
            }
        }
    }
}
