import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import Logging

/// A partition number's checkpoint as stored: the stage's partition-level state, the next
/// offset of each input topic, the users' states and (herald-trigger) the event-id horizon.
struct StoredCheckpoint {
    var partition: Int32
    var epoch: Int64
    /// nil: the partition was never checkpointed (start empty, from the group's offsets).
    var meta: [UInt8]?
    var offsets: [String: Int64]
    var users: [UserStateRecord]
    var seen: [SeenEventsChunk]
}

/// What one checkpoint writes for one partition number: changes only.
struct CheckpointWrite: Sendable {
    var partition: Int32
    var epoch: Int64
    var meta: [UInt8]
    var offsets: [String: Int64]
    /// Changed users; a nil state deletes the user's row.
    var users: [UserStateRecord]
    var seen: [SeenEventsChunk] = []
    /// When given, seen-set chunks of other generations are deleted.
    var seenGenerations: [Timestamp]?
}

/// Another worker has taken these partitions over since this one claimed them: its state
/// is stale and must not be written.
struct CheckpointFenced: Error, CustomStringConvertible {
    var partitions: [Int32]
    var description: String { "partitions \(partitions) were taken over by another worker (fenced)" }
}

/// Checkpoints of one consumer group in PostgreSQL (`checkpoints`, `checkpoint_offsets`,
/// `checkpoint_users`, `checkpoint_seen`; migration 4).
///
/// Ownership is fenced by an epoch per partition number: a worker claims a partition by
/// bumping its epoch, and every write first locks the partition's row and checks that the
/// epoch is still its own, so a worker that lost a partition without noticing (a long
/// pause) can never overwrite the state of its successor.
final class CheckpointStore {
    let conn: PostgresConnection
    let group: String
    let owner: String
    private let s: String

    init(conn: PostgresConnection, schema: String, group: String) throws {
        self.conn = conn
        self.group = group
        self.s = SQLIdentifier.quoted(schema)
        self.owner = "\(ProcessInfo.processInfo.hostName):\(getpid())"
        try prepare()
    }

    /// The session's staging table for user rows (after a reconnect too).
    func prepare() throws {
        try conn.execute("""
            CREATE TEMP TABLE IF NOT EXISTS herald_checkpoint_stage (
                partition integer NOT NULL, shop_id text NOT NULL, user_id text NOT NULL, state bytea
            ) ON COMMIT DELETE ROWS
            """)
    }

    /// Claims `partition` for this worker. With `keeping` (the epoch this worker last wrote
    /// the partition under), the claim succeeds only if nobody has claimed it since — then
    /// the state still in memory is the stored one and need not be loaded (`kept`).
    func claim(_ partition: Int32, keeping epoch: Int64?) throws -> (epoch: Int64, kept: Bool) {
        if let epoch {
            let r = try conn.execute("""
                UPDATE \(s).checkpoints SET epoch = epoch + 1, owner = $4, updated_at = now()
                WHERE group_id = $1 AND partition = $2 AND epoch = $3 RETURNING epoch
                """, [group, String(partition), String(epoch), owner])
            if r.rowCount == 1, let e = r[0, 0].flatMap(Int64.init) { return (e, true) }
        }
        let r = try conn.execute("""
            INSERT INTO \(s).checkpoints (group_id, partition, epoch, owner) VALUES ($1, $2, 1, $3)
            ON CONFLICT (group_id, partition) DO UPDATE
                SET epoch = \(s).checkpoints.epoch + 1, owner = excluded.owner, updated_at = now()
            RETURNING epoch
            """, [group, String(partition), owner])
        guard let e = r[0, 0].flatMap(Int64.init) else {
            throw PostgresError(message: "claiming partition \(partition) returned no epoch")
        }
        return (e, false)
    }

    /// Reads a claimed partition's checkpoint.
    func load(_ partition: Int32, epoch: Int64) throws -> StoredCheckpoint {
        let p = String(partition)
        var meta: [UInt8]?
        try conn.queryBinary("SELECT meta FROM \(s).checkpoints WHERE group_id = $1 AND partition = $2", [group, p]) {
            meta = $0[0]
        }
        var offsets: [String: Int64] = [:]
        for row in try conn.execute("""
            SELECT topic, next_offset FROM \(s).checkpoint_offsets WHERE group_id = $1 AND partition = $2
            """, [group, p]).rows {
            if let topic = row[0], let o = row[1].flatMap(Int64.init) { offsets[topic] = o }
        }
        var users: [UserStateRecord] = []
        if meta != nil {
            try conn.queryBinary("""
                SELECT shop_id, user_id, state FROM \(s).checkpoint_users WHERE group_id = $1 AND partition = $2
                """, [group, p]) { row in
                users.append(UserStateRecord(shopID: String(decoding: row[0] ?? [], as: UTF8.self),
                                             userID: String(decoding: row[1] ?? [], as: UTF8.self), state: row[2]))
            }
        }
        var seen: [SeenEventsChunk] = []
        if meta != nil {
            try conn.queryBinary("""
                SELECT generation_start, hashes FROM \(s).checkpoint_seen
                WHERE group_id = $1 AND partition = $2 ORDER BY chunk
                """, [group, p]) { row in
                guard let g = row[0], g.count == 8, let hashes = row[1] else { return }
                let start = g.reduce(Int64(0)) { $0 << 8 | Int64($1) }
                seen.append(SeenEventsChunk(generationStart: Timestamp(microseconds: start), hashes: hashes))
            }
        }
        return StoredCheckpoint(partition: partition, epoch: epoch, meta: meta, offsets: offsets, users: users, seen: seen)
    }

    /// Writes the partitions' changes in one transaction, after checking that every one of
    /// them is still this worker's (`CheckpointFenced` otherwise, and nothing is written).
    func save(_ writes: [CheckpointWrite]) throws {
        guard !writes.isEmpty else { return }
        try conn.transaction {
            let numbers = "{" + writes.map { String($0.partition) }.joined(separator: ",") + "}"
            var current: [Int32: Int64] = [:]
            for row in try conn.execute("""
                SELECT partition, epoch FROM \(s).checkpoints
                WHERE group_id = $1 AND partition = ANY($2::integer[]) ORDER BY partition FOR UPDATE
                """, [group, numbers]).rows {
                if let p = row[0].flatMap(Int32.init), let e = row[1].flatMap(Int64.init) { current[p] = e }
            }
            let fenced = writes.filter { current[$0.partition] != $0.epoch }.map(\.partition)
            guard fenced.isEmpty else { throw CheckpointFenced(partitions: fenced) }

            let changed = writes.reduce(0) { $0 + $1.users.count }
            if changed > 0 {
                try conn.copyFrom("COPY herald_checkpoint_stage (partition, shop_id, user_id, state) FROM STDIN") { rows in
                    for w in writes {
                        let p = String(w.partition)
                        for u in w.users { rows.append([p, u.shopID, u.userID, u.state.map(Hex.bytea)]) }
                    }
                }
                try conn.execute("""
                    INSERT INTO \(s).checkpoint_users (group_id, partition, shop_id, user_id, state)
                    SELECT $1, partition, shop_id, user_id, state FROM herald_checkpoint_stage WHERE state IS NOT NULL
                    ON CONFLICT (group_id, partition, shop_id, user_id) DO UPDATE SET state = excluded.state
                    """, [group])
                if writes.contains(where: { $0.users.contains { $0.state == nil } }) {
                    try conn.execute("""
                        DELETE FROM \(s).checkpoint_users u USING herald_checkpoint_stage g
                        WHERE g.state IS NULL AND u.group_id = $1 AND u.partition = g.partition
                          AND u.shop_id = g.shop_id AND u.user_id = g.user_id
                        """, [group])
                }
            }
            // Every partition's meta, offsets and seen-set chunks: one statement each, whatever
            // the number of partitions.
            func ints(_ values: [Int32]) -> String { "{" + values.map(String.init).joined(separator: ",") + "}" }
            func bigints(_ values: [Int64]) -> String { "{" + values.map(String.init).joined(separator: ",") + "}" }
            try conn.execute("""
                UPDATE \(s).checkpoints c SET meta = m.meta, updated_at = now()
                FROM unnest($2::integer[], $3::bytea[]) AS m(partition, meta)
                WHERE c.group_id = $1 AND c.partition = m.partition
                """, [group, ints(writes.map(\.partition)), PostgresArray.literal(writes.map { Hex.bytea($0.meta) })])
            let offsets = writes.flatMap { w in w.offsets.sorted { $0.key < $1.key }.map { (w.partition, $0.key, $0.value) } }
            if !offsets.isEmpty {
                try conn.execute("""
                    INSERT INTO \(s).checkpoint_offsets (group_id, partition, topic, next_offset)
                    SELECT $1, o.partition, o.topic, o.next_offset
                    FROM unnest($2::integer[], $3::text[], $4::bigint[]) AS o(partition, topic, next_offset)
                    ON CONFLICT (group_id, partition, topic) DO UPDATE SET next_offset = excluded.next_offset
                    """, [group, ints(offsets.map(\.0)), PostgresArray.literal(offsets.map(\.1)), bigints(offsets.map(\.2))])
            }
            let chunks = writes.flatMap { w in w.seen.filter { !$0.hashes.isEmpty }.map { (w.partition, $0) } }
            if !chunks.isEmpty {
                try conn.execute("""
                    INSERT INTO \(s).checkpoint_seen (group_id, partition, generation_start, hashes)
                    SELECT $1, c.partition, c.generation_start, c.hashes
                    FROM unnest($2::integer[], $3::bigint[], $4::bytea[]) WITH ORDINALITY AS c(partition, generation_start, hashes, n)
                    ORDER BY c.n
                    """, [group, ints(chunks.map(\.0)), bigints(chunks.map(\.1.generationStart.microseconds)),
                          PostgresArray.literal(chunks.map { Hex.bytea($0.1.hashes) })])
            }
            // Chunks of generations no longer in use; a partition listed with no generation
            // (a NULL pair) loses all of them.
            let pruned = writes.compactMap { w in w.seenGenerations.map { (w.partition, $0) } }
            if !pruned.isEmpty {
                let pairs = pruned.flatMap { p, gs in gs.isEmpty ? [(p, Int64?.none)] : gs.map { (p, Int64?.some($0.microseconds)) } }
                try conn.execute("""
                    DELETE FROM \(s).checkpoint_seen c
                    USING (SELECT k.partition, coalesce(array_agg(k.generation_start) FILTER (WHERE k.generation_start IS NOT NULL),
                                                        '{}') AS generations
                           FROM unnest($2::integer[], $3::bigint[]) AS k(partition, generation_start) GROUP BY k.partition) AS k
                    WHERE c.group_id = $1 AND c.partition = k.partition AND c.generation_start <> ALL(k.generations)
                    """, [group, ints(pairs.map(\.0)), "{" + pairs.map { $0.1.map(String.init) ?? "NULL" }.joined(separator: ",") + "}"])
            }
        }
    }
}

extension Hex {
    /// `bytea` in PostgreSQL's hex input format.
    static func bytea(_ bytes: [UInt8]) -> String { "\\x" + encode(bytes) }
}
