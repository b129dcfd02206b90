import Foundation
import HeraldCore
import HeraldPostgres
@testable import HeraldRuntime
import Logging
import Testing

/// The sink's writes against the real PostgreSQL that scripts/test starts.
@Suite struct SinkWriterTests {
    let logger = Logger(label: "sink-writer-tests")

    /// A fresh, migrated schema for one test.
    func migratedSchema() throws -> (PostgresConnection, String) {
        guard let conninfo = ProcessInfo.processInfo.environment["HERALD_POSTGRES"] else {
            throw WorkerError.configuration("HERALD_POSTGRES is not set: run the tests through scripts/test")
        }
        let conn = try PostgresConnection(conninfo, logger: logger)
        let schema = "sink_" + String(UUID().uuidString.lowercased().filter(\.isHexDigit).prefix(12))
        try Migrator(schema: schema).migrate(conn, logger: logger)
        return (conn, schema)
    }

    func outcome(_ id: String, _ status: OutcomeStatus, reason: String? = nil, body: String? = "hello",
                 decidedAt: String = "2026-11-25T08:00:00Z", eventTime: String = "2026-11-25T07:59:00Z",
                 rule: String = "r1", variant: String? = nil, escalated: Bool = false) -> Outcome {
        Outcome(notificationID: id, status: status, reason: reason, ruleID: rule, shopID: "s1", userID: "u1",
                priority: .normal, channels: ["in_app", "sms"], variant: variant, title: nil, body: body, mergedInto: nil,
                dueAt: status == .deferred ? Timestamp(rfc3339: "2026-11-26T00:00:00Z") : nil, escalated: escalated,
                tags: ["a \"quoted\" tag", "back\\slash"], triggerEventIDs: ["e1"],
                eventTime: Timestamp(rfc3339: eventTime)!, decidedAt: Timestamp(rfc3339: decidedAt)!,
                rulesVersion: "v1")
    }

    /// A notification id as Herald makes them, carrying `eventTime` (the default of `outcome`):
    /// conversions and engagements find their notification through it.
    func id(_ name: String, eventTime: String = "2026-11-25T07:59:00Z") -> String {
        StableID.notificationID(eventTime: Timestamp(rfc3339: eventTime)!, [name])
    }

    func row(_ conn: PostgresConnection, _ schema: String, _ id: String) throws -> [String?] {
        let r = try conn.execute("SELECT status, reason, body, channels, tags, due_at IS NOT NULL FROM \"\(schema)\".notifications WHERE id = $1", [id])
        return r.rowCount == 1 ? r.rows[0] : []
    }

    @Test func migrateIsVersionedAndIdempotent() throws {
        let (conn, schema) = try migratedSchema()
        let migrator = Migrator(schema: schema)
        #expect(try migrator.currentVersion(conn) == Migrator.latestVersion)
        #expect(try migrator.migrate(conn, logger: logger) == [])
        #expect(try Migrator(schema: "never_created_\(schema)").currentVersion(conn) == 0)
    }

    @Test func replayedOutcomesNeverMakeASecondRow() throws {
        let (conn, schema) = try migratedSchema()
        var writer = SinkWriter(schema: schema)
        try writer.prepare(conn)
        let batch = (0..<500).map { outcome("n\($0)", .sent) }
        #expect(try writer.write(outcomes: batch, deadLetters: [], on: conn) == 500)
        #expect(try writer.write(outcomes: batch, deadLetters: [], on: conn) == 0)
        #expect(try conn.execute("SELECT count(*) FROM \"\(schema)\".notifications")[0, 0] == "500")
        #expect(try row(conn, schema, "n7") == ["sent", nil, "hello", "{in_app,sms}", #"{"a \"quoted\" tag","back\\slash"}"#, "f"])
    }

    /// The COPY text is written field by field: every column must arrive as the value itself,
    /// compared here with the same values sent as statement parameters (no COPY involved).
    @Test func everyColumnArrivesExactlyThroughTheCopyText() throws {
        let (conn, schema) = try migratedSchema()
        var writer = SinkWriter(schema: schema)
        try writer.prepare(conn)
        let hostile = "tab\t nl\n cr\r back\\slash \\N \\. quote\" {brace,comma} 中文 ✓ \u{1F600}"
        var o = outcome("h1", .deferred, reason: hostile, body: hostile, variant: "\\N", escalated: true)
        o.title = ""
        o.mergedInto = "NULL"
        o.channels = [hostile, "", "NULL"]
        o.tags = []
        o.triggerEventIDs = ["\"\\", "a,b"]
        o.eventTime = Timestamp(microseconds: 1_764_057_540_123_456)
        o.decidedAt = Timestamp(microseconds: 1_764_057_600_500_000)
        o.dueAt = Timestamp(microseconds: 1_764_115_200_000_001)
        var plain = outcome("h2", .sent)
        plain.eventTime = o.eventTime
        for batch in [[o, plain], [o]] {
            try writer.write(outcomes: batch, deadLetters: [], on: conn)
            let r = try conn.execute("""
                SELECT count(*) FROM "\(schema)".notifications
                WHERE id = $1 AND shop_id = $2 AND user_id = $3 AND rule_id = $4 AND variant = $5 AND priority = $6
                  AND channels = $7::text[] AND status = $8 AND reason = $9 AND merged_into = $10 AND title = $11
                  AND body = $12 AND escalated AND tags = $13::text[] AND trigger_event_ids = $14::text[]
                  AND event_time = $15::timestamptz AND due_at = $16::timestamptz AND decided_at = $17::timestamptz
                  AND rules_version = $18
                """, [o.notificationID, o.shopID, o.userID, o.ruleID, o.variant, o.priority.rawValue,
                      PostgresArray.literal(o.channels), o.status.rawValue, o.reason, o.mergedInto, o.title, o.body,
                      PostgresArray.literal(o.tags), PostgresArray.literal(o.triggerEventIDs), o.eventTime.rfc3339,
                      o.dueAt!.rfc3339, o.decidedAt.rfc3339, o.rulesVersion])
            #expect(r[0, 0] == "1")
        }
        // The second write (a replay of h1) went through the staged path's COPY.
        #expect(writer.lastPath == .staged)
        #expect(try conn.execute("SELECT count(*) FROM \"\(schema)\".notifications")[0, 0] == "2")
    }

    @Test func deferredMovesToFinalAndFinalNeverMovesBack() throws {
        let (conn, schema) = try migratedSchema()
        var writer = SinkWriter(schema: schema)
        try writer.prepare(conn)
        try writer.write(outcomes: [outcome("d1", .deferred, reason: "quiet_hours", body: nil)], deadLetters: [], on: conn)
        #expect(try row(conn, schema, "d1").prefix(2) == ["deferred", "quiet_hours"])
        try writer.write(outcomes: [outcome("d1", .sent, decidedAt: "2026-11-26T00:00:00Z")], deadLetters: [], on: conn)
        #expect(try row(conn, schema, "d1") == ["sent", nil, "hello", "{in_app,sms}", #"{"a \"quoted\" tag","back\\slash"}"#, "f"])
        // A replayed deferral, or another final status, changes nothing.
        try writer.write(outcomes: [outcome("d1", .deferred, reason: "quiet_hours", body: nil),
                                    outcome("d1", .suppressed, reason: "frequency_cap", body: nil)], deadLetters: [], on: conn)
        #expect(try row(conn, schema, "d1").prefix(2) == ["sent", nil])
        // Within one batch the final status wins over a deferral that comes after it.
        try writer.write(outcomes: [outcome("d2", .suppressed, reason: "duplicate", body: nil),
                                    outcome("d2", .deferred, reason: "quiet_hours", body: nil)], deadLetters: [], on: conn)
        #expect(try row(conn, schema, "d2").prefix(2) == ["suppressed", "duplicate"])
    }

    @Test func deadLettersAreUniqueBySourceAndKeepTheBytes() throws {
        let (conn, schema) = try migratedSchema()
        var writer = SinkWriter(schema: schema)
        try writer.prepare(conn)
        let payload: [UInt8] = [0x00, 0xFF, 0x7B, 0x22]
        let letter = DeadLetter(stage: "herald-trigger", reason: "invalid_json", detail: "NUL byte at byte 0",
                                sourceTopic: "orders", sourcePartition: 2, sourceOffset: 41, payload: payload,
                                receivedAt: Timestamp(rfc3339: "2026-11-25T08:00:00Z")!)
        try writer.write(outcomes: [], deadLetters: [letter, letter], on: conn)
        try writer.write(outcomes: [], deadLetters: [letter], on: conn)
        let r = try conn.execute("SELECT count(*), min(encode(payload, 'hex')), min(payload_size) FROM \"\(schema)\".dead_letters")
        #expect(r.rows == [["1", "00ff7b22", "4"]])
    }
}
