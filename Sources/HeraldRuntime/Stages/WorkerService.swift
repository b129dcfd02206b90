import Logging
import ServiceLifecycle

/// A worker as a `Service`: its blocking loop runs on a dedicated thread, and graceful
/// shutdown (SIGTERM/SIGINT) asks it to finish the batch, commit and leave the group.
public struct WorkerService: Service {
    let name: String
    let body: @Sendable (StopSignal) throws -> Void

    public init(name: String, body: @escaping @Sendable (StopSignal) throws -> Void) {
        self.name = name
        self.body = body
    }

    public func run() async throws {
        let stop = StopSignal()
        try await withGracefulShutdownHandler {
            try await runOnDedicatedThread(name: name) { try body(stop) }
        } onGracefulShutdown: {
            stop.set()
        }
    }

    /// `main` of a worker executable: runs `body` until it returns or a signal stops it.
    public static func main(name: String, logger: Logger, body: @escaping @Sendable (StopSignal) throws -> Void) async -> Int32 {
        let service = WorkerService(name: name, body: body)
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
