import Foundation
import HeraldCore
import HeraldPostgres
@testable import HeraldRuntime
import Logging
import Testing

/// Checkpoints in the real PostgreSQL that scripts/test starts: incremental writes, loads,
/// and fencing of a worker that lost its partitions.
@Suite struct CheckpointStoreTests {
    let logger = Logger(label: "checkpoint-store-tests")

    func store(group: String = "herald-trigger") throws -> (CheckpointStore, PostgresConnection, String) {
        guard let conninfo = ProcessInfo.processInfo.environment["HERALD_POSTGRES"] else {
            throw WorkerError.configuration("HERALD_POSTGRES is not set: run the tests through scripts/test")
        }
        let conn = try PostgresConnection(conninfo, logger: logger)
        let schema = "ckpt_" + String(UUID().uuidString.lowercased().filter(\.isHexDigit).prefix(12))
        try Migrator(schema: schema).migrate(conn, logger: logger)
        return (try CheckpointStore(conn: conn, schema: schema, group: group), conn, schema)
    }

    func user(_ id: String, _ bytes: [UInt8]?) -> UserStateRecord {
        UserStateRecord(shopID: "s1", userID: id, state: bytes)
    }

    @Test func incrementalWritesLoadAsTheirSum() throws {
        let (store, _, _) = try store()
        let claim = try store.claim(3, keeping: nil)
        #expect(claim == (1, false))
        let empty = try store.load(3, epoch: claim.epoch)
        #expect(empty.meta == nil && empty.users.isEmpty && empty.offsets.isEmpty)

        // Bytes that need escaping in COPY text and hex: every value 0…255.
        let all = (0...255).map { UInt8($0) }
        try store.save([CheckpointWrite(partition: 3, epoch: 1, meta: [1, 2, 3], offsets: ["orders": 10, "behavior": 7],
                                        users: [user("a", all), user("b", [9]), user("ü\tx\\y", [])],
                                        seen: [SeenEventsChunk(generationStart: Timestamp(microseconds: 1_000), hashes: Array(repeating: 7, count: 32))],
                                        seenGenerations: [Timestamp(microseconds: 1_000)])])
        try store.save([CheckpointWrite(partition: 3, epoch: 1, meta: [4], offsets: ["orders": 12, "behavior": 7],
                                        users: [user("b", nil), user("c", [5, 5])],
                                        seen: [SeenEventsChunk(generationStart: Timestamp(microseconds: 9_000), hashes: Array(repeating: 8, count: 16))],
                                        seenGenerations: [Timestamp(microseconds: 9_000)])])
        let loaded = try store.load(3, epoch: 1)
        #expect(loaded.meta == [4])
        #expect(loaded.offsets == ["orders": 12, "behavior": 7])
        let users = Dictionary(uniqueKeysWithValues: loaded.users.map { ($0.userID, $0.state) })
        #expect(users == ["a": all, "ü\tx\\y": [], "c": [5, 5]])
        // The generation no longer in use is gone.
        #expect(loaded.seen == [SeenEventsChunk(generationStart: Timestamp(microseconds: 9_000), hashes: Array(repeating: 8, count: 16))])
        // Another partition number is separate.
        #expect(try store.load(4, epoch: 1).users.isEmpty)
    }

    @Test func aWorkerThatLostItsPartitionCannotOverwriteItsSuccessor() throws {
        let (old, conn, schema) = try store()
        let first = try old.claim(0, keeping: nil)
        try old.save([CheckpointWrite(partition: 0, epoch: first.epoch, meta: [1], offsets: ["orders": 5], users: [user("a", [1])])])
        // A second worker takes partition 0 over (the first one paused, say, past its session).
        let (new, _, _) = try { () throws -> (CheckpointStore, PostgresConnection, String) in
            let c = try PostgresConnection(ProcessInfo.processInfo.environment["HERALD_POSTGRES"]!, logger: logger)
            return (try CheckpointStore(conn: c, schema: schema, group: "herald-trigger"), c, schema)
        }()
        let second = try new.claim(0, keeping: nil)
        #expect(second == (2, false))
        try new.save([CheckpointWrite(partition: 0, epoch: second.epoch, meta: [2], offsets: ["orders": 9], users: [user("a", [2])])])
        // The first worker wakes up and tries to write its stale state: refused, nothing written.
        #expect(throws: CheckpointFenced.self) {
            try old.save([CheckpointWrite(partition: 0, epoch: first.epoch, meta: [1], offsets: ["orders": 6],
                                          users: [user("a", [1]), user("z", [1])])])
        }
        let loaded = try new.load(0, epoch: second.epoch)
        #expect(loaded.meta == [2] && loaded.offsets == ["orders": 9])
        #expect(loaded.users == [user("a", [2])])
        // Keeping in-memory state is allowed only while nobody else claimed the partition.
        #expect(try old.claim(0, keeping: first.epoch).kept == false)
        let third = try old.claim(0, keeping: nil)
        #expect(try old.claim(0, keeping: third.epoch).kept == true)
        _ = conn
    }

    @Test func groupsDoNotShareCheckpoints() throws {
        let (trigger, conn, schema) = try store(group: "herald-trigger")
        let shaper = try CheckpointStore(conn: conn, schema: schema, group: "herald-shaper")
        _ = try trigger.claim(1, keeping: nil)
        _ = try shaper.claim(1, keeping: nil)
        try trigger.save([CheckpointWrite(partition: 1, epoch: 1, meta: [1], offsets: ["orders": 1], users: [user("a", [1])])])
        try shaper.save([CheckpointWrite(partition: 1, epoch: 1, meta: [2], offsets: ["herald.candidates": 3], users: [user("a", [2])])])
        #expect(try trigger.load(1, epoch: 1).users == [user("a", [1])])
        #expect(try shaper.load(1, epoch: 1).offsets == ["herald.candidates": 3])
    }
}
