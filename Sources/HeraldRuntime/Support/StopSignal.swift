import Foundation
import Synchronization

/// Set once to ask a blocking loop to finish its batch and stop.
public final class StopSignal: Sendable {
    private let flag = Atomic<Bool>(false)

    public init() {}

    public var isSet: Bool { flag.load(ordering: .acquiring) }

    public func set() { flag.store(true, ordering: .releasing) }

    /// Sleeps up to `seconds`, waking early when stopped; returns false when stopped.
    @discardableResult
    public func sleep(_ seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if isSet { return false }
            Thread.sleep(forTimeInterval: min(0.05, max(0, deadline.timeIntervalSinceNow)))
        }
        return !isSet
    }
}

/// Exponential backoff with a ceiling, for waiting on a dependency that is down.
public struct Backoff: Sendable {
    public var next: Double
    public let max: Double

    public init(initial: Double = 0.2, max: Double = 10) {
        self.next = initial
        self.max = max
    }

    public mutating func take() -> Double {
        let d = next
        next = Swift.min(next * 2, max)
        return d
    }
}

/// Runs blocking work (librdkafka poll, libpq calls) on its own thread, off Swift's
/// cooperative pool, and awaits its result.
public func runOnDedicatedThread<T: Sendable>(name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            do {
                continuation.resume(returning: try body())
            } catch {
                continuation.resume(throwing: error)
            }
        }
        thread.name = name
        thread.stackSize = 8 << 20
        thread.start()
    }
}

/// Runs `body` on a thread with a large stack and waits for it. Commands that run the rule
/// engine over whole files use it: Swift's cooperative threads have small stacks.
public func withLargeStack<T>(_ body: () throws -> T) throws -> T {
    try withoutActuallyEscaping(body) { escapable in
        let box = LargeStackBox(body: escapable)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            box.run()
            done.signal()
        }
        thread.stackSize = 64 << 20
        thread.start()
        done.wait()
        return try box.result!.get()
    }
}

// @unchecked Sendable: `body` runs on exactly one thread while the caller blocks on a
// semaphore, and `result` is read only after that thread has signalled it.
private final class LargeStackBox<T>: @unchecked Sendable {
    private var body: (() throws -> T)?
    var result: Result<T, any Error>?

    init(body: @escaping () throws -> T) {
        self.body = body
    }

    func run() {
        result = Result { try body!() }
        // Released before the caller resumes: the closure must not outlive the call.
        body = nil
    }
}
