import Foundation
import HeraldPostgres
import Logging
import Testing

/// Collects log messages, to check that server notices reach swift-log.
final class CollectingLogHandler: LogHandler, @unchecked Sendable {
    // @unchecked Sendable: `entries` is only touched under `lock`.
    private let lock = NSLock()
    private var entries: [(Logger.Level, String)] = []
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let text = "\(event.message) \(event.metadata.map { "\($0)" } ?? "")"
        lock.withLock { entries.append((event.level, text)) }
    }

    var logged: [(Logger.Level, String)] { lock.withLock { entries } }
}

@Suite struct NoticeTests {
    @Test func noticesGoToTheLoggerAtDebug() throws {
        let handler = CollectingLogHandler()
        let logger = Logger(label: "notice-test") { _ in handler }
        let connection = try PostgresConnection(try TestDatabase.conninfo(), logger: logger)
        try connection.execute("DO $$ BEGIN RAISE NOTICE 'hello from the server %', 42; END $$")
        let notices = handler.logged.filter { $0.1.contains("hello from the server 42") }
        #expect(notices.count == 1)
        #expect(notices.first?.0 == .debug)
    }
}
