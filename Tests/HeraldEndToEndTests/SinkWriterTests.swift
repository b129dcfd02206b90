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
