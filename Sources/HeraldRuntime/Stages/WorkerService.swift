import Dispatch
import Foundation
import Logging
import ServiceLifecycle

/// SIGTERM/SIGINT that arrive while a worker is still starting (before its ServiceGroup
/// listens) set `stop` instead of killing the process: the worker then stops gracefully as
/// soon as it runs. Keep the returned sources for the life of the process.
public func stopOnTerminationSignals(_ stop: StopSignal) -> [any DispatchSourceSignal] {
    [SIGTERM, SIGINT].map { sig in
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler { stop.set() }
        source.resume()
        return source
    }
}

/// A worker as a `Service`: its blocking loop runs on a dedicated thread, and graceful
/// shutdown (SIGTERM/SIGINT) asks it to finish the batch, commit and leave the group.
public struct WorkerService: Service {
    let name: String
    let stop: StopSignal
    let body: @Sendable (StopSignal) throws -> Void

    public init(name: String, stop: StopSignal = StopSignal(), body: @escaping @Sendable (StopSignal) throws -> Void) {
        self.name = name
        self.stop = stop
        self.body = body
    }

    public func run() async throws {
        let stop = self.stop
        try await withGracefulShutdownHandler {
            try await runOnDedicatedThread(name: name) { try body(stop) }
        } onGracefulShutdown: {
            stop.set()
        }
    }

    /// `main` of a worker executable: runs `body` until it returns or a signal stops it.
    public static func main(name: String, logger: Logger, stop: StopSignal = StopSignal(),
                            body: @escaping @Sendable (StopSignal) throws -> Void) async -> Int32 {
        let service = WorkerService(name: name, stop: stop, body: body)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            cancellationSignals: [],
            logger: logger))
        do {
            try await group.run()
            logger.info("stopped")
            return 0
        } catch {
            logger.critical("stopped on error", metadata: ["error": "\(error)"])
            return 1
        }
    }
}
