import Foundation
import HeraldKafka
import Logging
import Synchronization

/// Loggers for tests: warnings and above to stderr (HERALD_TEST_LOG_LEVEL overrides).
func testLogger(_ label: String) -> Logger {
    var logger = Logger(label: "herald.kafka.test.\(label)") { StreamLogHandler.standardError(label: $0) }
    let level = ProcessInfo.processInfo.environment["HERALD_TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:))
    logger.logLevel = level ?? .warning
    return logger
}

/// Runs blocking Kafka work on its own thread, as Herald's workers do, so
/// parallel tests never block Swift's cooperative pool. The body returns what
/// the test then checks with `#expect` in the test's own context.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            do { continuation.resume(returning: try body()) } catch { continuation.resume(throwing: error) }
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
}

/// Consumer properties for tests that rebalance (see MockCluster.fastRebalanceConsumerProperties).
func consumerConfig(_ cluster: MockCluster) -> KafkaClientConfig {
    KafkaClientConfig(brokers: cluster.bootstrapServers, properties: MockCluster.fastRebalanceConsumerProperties)
}

/// A fresh group/topic name per test, so nothing leaks between tests.
func unique(_ prefix: String) -> String {
    "\(prefix)-\(UUID().uuidString.prefix(8))"
}

/// Polls until `condition` holds or the deadline passes; returns whether it held.
/// The polling itself (`step`) must make progress — it is a consumer poll, not a sleep.
@discardableResult
func pollUntil(timeout: Duration = .seconds(20), step: () throws -> Void, _ condition: () -> Bool) rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        try step()
        if condition() { return true }
    }
    return condition()
}

/// Records rebalance events; used from the polling thread only.
final class RebalanceLog {
    var events: [RebalanceEvent] = []
    var offsetsToReturn: [TopicPartition: Int64] = [:]

    var assignedCount: Int { events.filter { if case .assigned = $0 { true } else { false } }.count }
    var revokedCount: Int { events.filter { if case .revoked = $0 { true } else { false } }.count }

    func handler() -> (RebalanceEvent) -> [TopicPartition: Int64] {
        { [self] event in
            events.append(event)
            if case .assigned = event { return offsetsToReturn }
            return [:]
        }
    }
}

extension KafkaConsumer {
    /// Consumes until `count` messages arrived or `timeout` passed.
    func consume(count: Int, timeout: Duration = .seconds(20)) throws -> [KafkaMessage] {
        var received: [KafkaMessage] = []
        try pollUntil(timeout: timeout, step: {
            received += try poll(maxMessages: 500, timeout: .milliseconds(200))
        }) { received.count >= count }
        return received
    }
}

/// A rebalance event in a Sendable, comparable form for `#expect`.
enum Seen: Sendable, Equatable {
    case assigned(Set<TopicPartition>)
    case revoked(Set<TopicPartition>)
}

extension RebalanceLog {
    var seen: [Seen] {
        events.map { event in
            switch event {
            case .assigned(let ps): .assigned(Set(ps))
            case .revoked(let ps): .revoked(Set(ps))
            }
        }
    }
}

extension String {
    var bytes: [UInt8] { Array(utf8) }
}

extension Array where Element == UInt8 {
    var string: String { String(decoding: self, as: UTF8.self) }
}

/// Keeps every rendered log line, for checks on what gets logged.
struct CapturingLogHandler: LogHandler {
    final class Store: Sendable {
        let lines = Mutex<[String]>([])
    }

    let store: Store
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        let line = "\(event.level) \(event.message) \(all.map { "\($0)=\($1)" }.sorted().joined(separator: " "))"
        store.lines.withLock { $0.append(line) }
    }
}
