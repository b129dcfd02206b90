import Foundation

/// Writes one checkpoint at a time on a thread of its own, with a connection of its own
/// (libpq blocks), so that the stage keeps consuming while PostgreSQL works. The stage waits
/// for the checkpoint in flight before it submits the next one, and before a rebalance or a
/// stop; only then are its offsets committed to Kafka.
// @unchecked Sendable: `store` is used only by the writer thread; `job`, `result` and
// `closed` are guarded by `condition`; `inFlight` is touched only by the stage's thread.
final class CheckpointWriter: @unchecked Sendable {
    private let store: CheckpointStore
    private let condition = NSCondition()
    private var job: [CheckpointWrite]?
    private var result: Result<Void, any Error>?
    private var closed = false
    /// The checkpoint submitted and not yet finished, and when it was taken.
    private(set) var inFlight: (writes: [CheckpointWrite], started: ContinuousClock.Instant)?

    init(store: CheckpointStore) {
        self.store = store
        let thread = Thread { self.loop() }
        thread.name = "herald-checkpoint-writer"
        thread.start()
    }

    func submit(_ writes: [CheckpointWrite], started: ContinuousClock.Instant) {
        precondition(inFlight == nil, "submit while a checkpoint is in flight")
        inFlight = (writes, started)
        condition.withLock {
            job = writes
            condition.broadcast()
        }
    }

    /// Waits for the checkpoint in flight: its writes once committed (nil when none was in
    /// flight), or its error.
    func finish() throws -> (writes: [CheckpointWrite], started: ContinuousClock.Instant)? {
        guard let done = inFlight else { return nil }
        inFlight = nil
        let r: Result<Void, any Error> = condition.withLock {
            while result == nil { condition.wait() }
            defer { result = nil }
            return result!
        }
        try r.get()
        return done
    }

    /// Ends the thread once the job in flight (if any) is done.
    func close() {
        condition.withLock {
            closed = true
            condition.broadcast()
        }
    }

    private func loop() {
        while true {
            let next: [CheckpointWrite]? = condition.withLock {
                while job == nil, !closed { condition.wait() }
                defer { job = nil }
                return job
            }
            guard let next else { return }
            let r = Result { try store.save(next) }
            condition.withLock {
                result = r
                condition.broadcast()
            }
        }
    }
}
