import Foundation
import HeraldCore
import HeraldPostgres
import Logging

/// How long a herald-trigger worker takes to take over a partition holding N users' state
/// (issue 5: 1,000,000 users in under 10 s): the state is built by the trigger-logic
/// benchmark's traffic, checkpointed into PostgreSQL, then claimed, read and decoded.
public struct RestoreBenchmark {
    public struct Result: Sendable {
        public var users: Int
        public var stateBytes: Int
        public var saveSeconds: Double
        public var loadSeconds: Double
        public var decodeSeconds: Double
        public var restoreSeconds: Double { loadSeconds + decodeSeconds }
    }

    public let rules: RuleSet
    public let users: Int
    public let events: Int
    public let conninfo: String
    public let logger: Logger

    public init(rules: RuleSet, users: Int, events: Int, conninfo: String, logger: Logger) {
        self.rules = rules
        self.users = users
        self.events = events
        self.conninfo = conninfo
        self.logger = logger
    }

    public func run() throws -> Result {
        var engine = TriggerEngine(rules: rules)
        var out: [TriggerOutput] = []
        for (topic, bytes) in TriggerLogicBenchmark.generate(events: events, users: users) {
            let e = try EventDecoder.decode(bytes, topic: topic).get()
            out.removeAll(keepingCapacity: true)
            engine.advance(to: e.occurredAt, into: &out)
            engine.process(e, into: &out)
        }
        let conn = try PostgresConnection(conninfo, logger: logger)
        let schema = "restore_bench_" + String(UUID().uuidString.lowercased().filter(\.isHexDigit).prefix(8))
        try Migrator(schema: schema).migrate(conn, logger: logger)
        defer { _ = try? conn.execute("DROP SCHEMA \(SQLIdentifier.quoted(schema)) CASCADE") }
        let store = try CheckpointStore(conn: conn, schema: schema, group: "herald-trigger")
        let claim = try store.claim(0, keeping: nil)
        let users = engine.takeDirtyStates()
        let write = CheckpointWrite(partition: 0, epoch: claim.epoch, meta: engine.encodeMeta(), offsets: ["orders": 1],
                                    users: users, seen: engine.takeNewSeenEvents(), seenGenerations: engine.seenGenerations)
        let stateBytes = users.reduce(0) { $0 + ($1.state?.count ?? 0) }
        let saveSeconds = try Self.seconds { try store.save([write]) }
        try conn.execute("VACUUM ANALYZE \(SQLIdentifier.quoted(schema)).checkpoint_users")

        // A new worker: its own connection, claims the partition, reads and decodes it.
        let reader = try PostgresConnection(conninfo, logger: logger)
        let next = try CheckpointStore(conn: reader, schema: schema, group: "herald-trigger")
        var loaded: StoredCheckpoint?
        let loadSeconds = try Self.seconds {
            let c = try next.claim(0, keeping: nil)
            loaded = try next.load(0, epoch: c.epoch)
        }
        guard let loaded, let meta = loaded.meta, loaded.users.count == users.count else {
            throw WorkerError.configuration("restore benchmark: read \(loaded?.users.count ?? 0) of \(users.count) users")
        }
        var restored: TriggerEngine?
        let decodeSeconds = try Self.seconds {
            restored = try TriggerEngine.restore(rules: rules, meta: meta, users: loaded.users, seen: loaded.seen)
        }
        guard restored?.userCount == engine.userCount else {
            throw WorkerError.configuration("restore benchmark: restored \(restored?.userCount ?? 0) of \(engine.userCount) users")
        }
        return Result(users: users.count, stateBytes: stateBytes, saveSeconds: saveSeconds, loadSeconds: loadSeconds,
                      decodeSeconds: decodeSeconds)
    }

    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = ContinuousClock.now
        try body()
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
