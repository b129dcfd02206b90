import Foundation
import HeraldCore
import HeraldPostgres
@testable import HeraldRuntime
import Logging
import Testing

/// Rollups, escalations, partitions and retention against the real PostgreSQL.
@Suite struct SinkSchemaTests {
    let base = SinkWriterTests()

    /// Rows where `rule_stats_minute` (non-zero counts) and a `count(*)` over the
    /// notifications disagree, in either direction.
    func rollupMismatches(_ conn: PostgresConnection, _ schema: String) throws -> Int {
        let s = "\"\(schema)\""
        let r = try conn.execute("""
            WITH truth AS (
                SELECT date_trunc('minute', event_time) AS minute, shop_id, rule_id, coalesce(variant, '') AS variant,
                       status, coalesce(reason, '') AS reason, count(*)::bigint AS count
                FROM \(s).notifications GROUP BY 1, 2, 3, 4, 5, 6
            ), kept AS (
                SELECT minute, shop_id, rule_id, variant, status, reason, count FROM \(s).rule_stats_minute WHERE count <> 0
            )
            SELECT (SELECT count(*) FROM (TABLE truth EXCEPT TABLE kept) a) + (SELECT count(*) FROM (TABLE kept EXCEPT TABLE truth) b)
            """)
        return Int(r[0, 0]!)!
    }

    func count(_ conn: PostgresConnection, _ sql: String) throws -> Int {
        Int(try conn.execute(sql)[0, 0] ?? "0") ?? -1
    }

    @Test func rollupEqualsCountAfterReplaysAndTransitions() throws {
        let (conn, schema) = try base.migratedSchema()
        var writer = SinkWriter(schema: schema)
        try writer.prepare(conn)
        let minutes = ["2026-11-25T07:59:10Z", "2026-11-25T08:00:20Z", "2026-11-26T23:59:59Z"]
        // 300 notifications over three minutes (two days), two rules; a third start deferred.
        var first: [Outcome] = []
        for i in 0..<300 {
            let t = minutes[i % 3]
            if i % 3 == 0 {
                first.append(base.outcome("n\(i)", .deferred, reason: "quiet_hours", body: nil, eventTime: t, rule: "r\(i % 2)"))
            } else if i % 5 == 0 {
                first.append(base.outcome("n\(i)", .suppressed, reason: "frequency_cap", body: nil, eventTime: t, rule: "r\(i % 2)"))
            } else {
                first.append(base.outcome("n\(i)", .sent, eventTime: t, rule: "r\(i % 2)", variant: i % 4 == 1 ? "A" : "B"))
            }
        }
        try writer.write(outcomes: first, deadLetters: [], on: conn)
        #expect(try rollupMismatches(conn, schema) == 0)
        let s = "\"\(schema)\""
        #expect(try count(conn, "SELECT sum(count) FROM \(s).rule_stats_minute") == 300)

        // The deferred ones move on (sent with a variant, or suppressed), with a replay of the
        // whole first batch mixed into the same batch and another one after it.
        var second = first
        for o in first where o.status == .deferred {
            let n = Int(o.notificationID.dropFirst())!
            second.append(n % 2 == 0
                ? base.outcome(o.notificationID, .sent, decidedAt: "2026-11-26T00:00:00Z", eventTime: o.eventTime.rfc3339,
                               rule: o.ruleID, variant: "A")
                : base.outcome(o.notificationID, .suppressed, reason: "duplicate", body: nil, decidedAt: "2026-11-26T00:00:00Z",
                               eventTime: o.eventTime.rfc3339, rule: o.ruleID))
        }
        #expect(try writer.write(outcomes: second, deadLetters: [], on: conn) == 100)
        #expect(try writer.write(outcomes: second, deadLetters: [], on: conn) == 0)
        #expect(try writer.write(outcomes: first, deadLetters: [], on: conn) == 0)
        #expect(try rollupMismatches(conn, schema) == 0)
        #expect(try count(conn, "SELECT sum(count) FROM \(s).rule_stats_minute") == 300)
        #expect(try count(conn, "SELECT count(*) FROM \(s).notifications WHERE status = 'deferred'") == 0)
        #expect(try count(conn, "SELECT sum(count) FROM \(s).rule_stats_minute WHERE status = 'deferred'") == 0)
        // The views read the same counts.
        #expect(try count(conn, "SELECT sum(notifications) FROM \(s).outcomes_per_hour") == 300)
        #expect(try count(conn, "SELECT sum(sent) FROM \(s).funnel")
                == count(conn, "SELECT count(*) FROM \(s).notifications WHERE status = 'sent'"))
        #expect(try count(conn, "SELECT sum(notifications) FROM \(s).suppression_reasons WHERE reason = 'duplicate'") == 50)
    }

    /// A batch whose ids are all new is copied straight into `notifications`; one with a
    /// replayed, an upgraded and a downgrade-attempt row is refused there and takes the staged
    /// path, which inserts the new ids and changes only the deferred row.
    @Test func conflictingBatchTakesTheStagedPathAndOnlyUpgradesDeferred() throws {
        let (conn, schema) = try base.migratedSchema()
        var writer = SinkWriter(schema: schema)
        try writer.prepare(conn)
        let s = "\"\(schema)\""
        let first = [base.outcome("r1", .sent, variant: "A"), base.outcome("d1", .deferred, reason: "quiet_hours", body: nil),
                     base.outcome("s1", .suppressed, reason: "frequency_cap", body: nil)]
        #expect(try writer.write(outcomes: first, deadLetters: [], on: conn) == 3)
        #expect(writer.lastPath == .direct)
        #expect(try rollupMismatches(conn, schema) == 0)

        let second = [
            base.outcome("r1", .sent, variant: "A"),  // replayed
            base.outcome("d1", .sent, decidedAt: "2026-11-26T00:00:00Z", variant: "B", escalated: true),  // upgraded
            base.outcome("s1", .deferred, reason: "quiet_hours", body: nil, decidedAt: "2026-11-26T00:00:00Z"),  // downgrade attempt
            base.outcome("n1", .sent, rule: "r2", escalated: true),  // new
        ]
        #expect(try writer.write(outcomes: second, deadLetters: [], on: conn) == 2)
        #expect(writer.lastPath == .staged)
        let rows = try conn.execute("SELECT id, status, coalesce(reason, ''), coalesce(variant, '') FROM \(s).notifications ORDER BY id")
        #expect(rows.rows == [["d1", "sent", "", "B"], ["n1", "sent", "", ""], ["r1", "sent", "", "A"],
                              ["s1", "suppressed", "frequency_cap", ""]])
        #expect(try rollupMismatches(conn, schema) == 0)
        #expect(try count(conn, "SELECT sum(count) FROM \(s).rule_stats_minute") == 4)
        #expect(try conn.execute("SELECT notification_id FROM \(s).escalations ORDER BY 1").rows == [["d1"], ["n1"]])

        // After a refusal the next batch goes straight to the staged path, then the direct
        // `COPY` is tried again; a replay of everything changes nothing on either path.
        #expect(writer.stagedBatchesAhead == 1)
        #expect(try writer.write(outcomes: [base.outcome("n2", .sent)], deadLetters: [], on: conn) == 1)
        #expect(writer.lastPath == .staged)
        #expect(try writer.write(outcomes: [base.outcome("n3", .sent)], deadLetters: [], on: conn) == 1)
        #expect(writer.lastPath == .direct)
        #expect(try writer.write(outcomes: first + second, deadLetters: [], on: conn) == 0)
        #expect(writer.lastPath == .staged)
        #expect(try writer.write(outcomes: first + second, deadLetters: [], on: conn) == 0)
        #expect(try rollupMismatches(conn, schema) == 0)
        #expect(try count(conn, "SELECT sum(count) FROM \(s).rule_stats_minute") == 6)
        #expect(try count(conn, "SELECT count(*) FROM \(s).escalations") == 2)
    }

    /// With two writer lanes a batch is split by (shop, rule) and written on two connections;
    /// a conversion of a notification written by the other lane in the same batch still finds it.
    @Test func writerLanesSplitByShopAndRuleAndConversionsFollow() throws {
        let (conn, schema) = try base.migratedSchema()
        let s = "\"\(schema)\""
        var config = WorkerConfig(stage: SinkStage.name)
        config.postgres = ProcessInfo.processInfo.environment["HERALD_POSTGRES"]
        config.schema = schema
        var writer = SinkWriter(schema: schema)
        try writer.prepare(conn)
        let pipeline = SinkBatchWriter(conn: conn, writer: writer, lanes: 2, config: config, logger: base.logger,
                                       stop: StopSignal())
        defer { pipeline.close() }
        var batch = SinkBatch()
        batch.outcomes = (0..<200).map { i in
            i % 4 == 0 ? base.outcome(base.id("n\(i)"), .deferred, reason: "quiet_hours", body: nil, rule: "r\(i % 10)")
                       : base.outcome(base.id("n\(i)"), .sent, rule: "r\(i % 10)", variant: i % 2 == 0 ? "A" : "B")
        }
        let parts = SinkBatchWriter.split(batch.outcomes, lanes: 2)
        #expect(parts.allSatisfy { !$0.isEmpty })
        #expect(parts.map { Set($0.map(\.ruleID)) }.reduce(Set<String>()) { $0.intersection($1) }.isEmpty)
        let converted = parts[1][0]
        batch.conversions = [Conversion(notificationID: converted.notificationID, ruleID: converted.ruleID, shopID: "s1",
                                        userID: "u1", variant: nil, goalEventID: "g1",
                                        convertedAt: Timestamp(rfc3339: "2026-11-25T09:00:00Z")!)]
        pipeline.submit(batch, checkPartitions: false)
        try pipeline.wait()
        // The same batch again, with the deferred ones now sent: every lane takes its staged path.
        batch.outcomes += batch.outcomes.filter { $0.status == .deferred }.map {
            base.outcome($0.notificationID, .sent, decidedAt: "2026-11-26T00:00:00Z", rule: $0.ruleID)
        }
        pipeline.submit(batch, checkPartitions: false)
        try pipeline.wait()
        #expect(try count(conn, "SELECT count(*) FROM \(s).notifications WHERE status = 'sent'") == 200)
        #expect(try rollupMismatches(conn, schema) == 0)
        #expect(try count(conn, "SELECT sum(count) FROM \(s).rule_stats_minute") == 200)
        let conversion = try conn.execute("SELECT notification_id, notification_time = $1::timestamptz FROM \(s).conversions",
                                          [converted.eventTime.rfc3339])
        #expect(conversion.rows == [[converted.notificationID, "t"]])
    }

    @Test func sentEscalatedOutcomesOpenOneEscalation() throws {
        let (conn, schema) = try base.migratedSchema()
        var writer = SinkWriter(schema: schema)
        try writer.prepare(conn)
        let s = "\"\(schema)\""
        let deferred = base.outcome("e1", .deferred, reason: "quiet_hours", body: nil, escalated: true)
        let sent = base.outcome("e1", .sent, decidedAt: "2026-11-26T00:00:00Z", escalated: true)
        try writer.write(outcomes: [deferred], deadLetters: [], on: conn)
        #expect(try count(conn, "SELECT count(*) FROM \(s).escalations") == 0)
        try writer.write(outcomes: [sent, base.outcome("e2", .sent, escalated: true),
                                    base.outcome("e3", .sent, escalated: false)], deadLetters: [], on: conn)
        try writer.write(outcomes: [deferred, sent], deadLetters: [], on: conn)
        let rows = try conn.execute("SELECT notification_id, status, priority FROM \(s).escalation_queue ORDER BY 1")
        #expect(rows.rows == [["e1", "open", "normal"], ["e2", "open", "normal"]])
    }

    @Test func conversionsTakeTheNotificationsTimeAndVariantOnceEach() throws {
        let (conn, schema) = try base.migratedSchema()
        var writer = SinkWriter(schema: schema)
        try writer.prepare(conn)
        let s = "\"\(schema)\""
        let sent = base.outcome(base.id("c1"), .sent, variant: "A")
        let conversion = Conversion(notificationID: sent.notificationID, ruleID: "r1", shopID: "s1", userID: "u1", variant: nil,
                                    goalEventID: "g1", convertedAt: Timestamp(rfc3339: "2026-11-25T09:00:00Z")!)
        // The notification and its conversion in one batch, then the conversion replayed.
        try writer.write(outcomes: [sent], conversions: [conversion], deadLetters: [], on: conn)
        try writer.write(outcomes: [], conversions: [conversion], deadLetters: [], on: conn)
        let rows = try conn.execute("SELECT notification_id, notification_time = $1::timestamptz, variant FROM \(s).conversions",
                                    [sent.eventTime.rfc3339])
        #expect(rows.rows == [[sent.notificationID, "t", "A"]])
        let funnel = try conn.execute("SELECT rule_id, variant, sent, converted FROM \(s).funnel")
        #expect(funnel.rows == [["r1", "A", "1", "1"]])
    }

    @Test func engagementsFindTheirNotificationThroughTheTimeItsIDCarries() throws {
        let (conn, schema) = try base.migratedSchema()
        var writer = SinkWriter(schema: schema)
        try writer.prepare(conn)
        let s = "\"\(schema)\""
        // Two notifications with the same hash part a millisecond apart: only the id's own
        // millisecond is searched.
        let early = base.outcome(StableID.notificationID(eventTime: Timestamp(rfc3339: "2026-11-25T07:59:00Z")!, ["x"]),
                                 .sent, variant: "A")
        let late = base.outcome(StableID.notificationID(eventTime: Timestamp(rfc3339: "2026-11-25T07:59:00.001Z")!, ["x"]),
                                .sent, eventTime: "2026-11-25T07:59:00.001Z", rule: "r2")
        try writer.write(outcomes: [early, late], deadLetters: [], on: conn)
        let at = Timestamp(rfc3339: "2026-11-25T09:00:00Z")!
        func open(_ id: String, _ event: String) -> Engagement {
            Engagement(notificationID: id, kind: .opened, eventID: event, shopID: "s1", userID: "u1", occurredAt: at)
        }
        try writer.write(outcomes: [], engagements: [
            open(early.notificationID, "o1"), open(late.notificationID, "o2"), open(late.notificationID, "o2"),
            // Not Herald's ids, or never written: nothing to count against.
            open("n1", "o3"), open(base.id("never-written"), "o4"),
        ], deadLetters: [], on: conn)
        let rows = try conn.execute("""
            SELECT notification_id = $1, to_char(notification_time AT TIME ZONE 'UTC', 'HH24:MI:SS.MS'), rule_id, variant, event_id
            FROM \(s).engagements ORDER BY event_id
            """, [early.notificationID])
        #expect(rows.rows == [["t", "07:59:00.000", "r1", "A", "o1"], ["f", "07:59:00.001", "r2", nil, "o2"]])
    }

    @Test func partitionsAreCreatedAheadAndRetentionDropsExactlyTheOldOnes() throws {
        let (conn, schema) = try base.migratedSchema()
        let partitions = NotificationPartitions(schema: schema)
        let now = Timestamp(rfc3339: "2026-11-25T13:00:00Z")!
        #expect(try partitions.ensureAhead(now: now, on: conn) == 9)
        #expect(try partitions.ensureAhead(now: now, on: conn) == 0)
        #expect(try partitions.list(on: conn) == (24...32).map { "notifications_p202611\($0)" }.map {
            $0.replacingOccurrences(of: "20261131", with: "20261201").replacingOccurrences(of: "20261132", with: "20261202")
        })

        // Rows on four old days (the writer creates their partitions on demand) and today.
        var writer = SinkWriter(schema: schema)
        try writer.prepare(conn)
        let days = ["2026-08-01", "2026-08-26", "2026-08-27", "2026-08-28", "2026-11-25"]
        let outcomes = days.enumerated().flatMap { i, d in
            (0..<10).map { base.outcome("r\(i)-\($0)", .sent, eventTime: "\(d)T23:59:59Z") }
        }
        try writer.write(outcomes: outcomes, deadLetters: [], on: conn)
        #expect(try partitions.list(on: conn).count == 13)

        // Keep 90 days from 2026-11-25T13:00Z: the cutoff is 2026-08-27T13:00Z, so the
        // 08-01 and 08-26 partitions end before it; 08-27 ends after it and stays.
        let cutoff = now - .days(90)
        #expect(NotificationPartitions.endsAtOrBefore("notifications_p20260826", cutoff))
        #expect(!NotificationPartitions.endsAtOrBefore("notifications_p20260827", cutoff))
        let dropped = try partitions.drop(endingBefore: cutoff, on: conn)
        #expect(dropped == ["notifications_p20260801", "notifications_p20260826"])
        #expect(try partitions.drop(endingBefore: cutoff, on: conn) == [])
        let s = "\"\(schema)\""
        #expect(try count(conn, "SELECT count(*) FROM \(s).notifications") == 30)
        #expect(try count(conn, "SELECT count(*) FROM \(s).notifications WHERE event_time < '2026-08-27'") == 0)

        // An outcome for a dropped day is still written: the writer recreates the partition.
        writer.forgetPartitions()
        try writer.write(outcomes: [base.outcome("late", .sent, eventTime: "2026-08-01T10:00:00Z")], deadLetters: [], on: conn)
        #expect(try count(conn, "SELECT count(*) FROM \(s).notifications WHERE id = 'late'") == 1)
    }

    @Test func retentionCommandDropsWholeOldPartitionsAndSaysWhich() throws {
        let (conn, schema) = try base.migratedSchema()
        let partitions = NotificationPartitions(schema: schema)
        let today = NotificationPartitions.day(of: .now)
        try partitions.ensure(days: (today - 120)...(today - 118), on: conn)
        try partitions.ensureAhead(on: conn)
        let old = (118...120).reversed().map { NotificationPartitions.date(ofDay: today - Int64($0)) }
            .map { "notifications_p" + $0.replacingOccurrences(of: "-", with: "") }
        let log = NSTemporaryDirectory() + "retention-\(schema).log"
        let argv = [Executables.path("herald"), "retention", "--keep", "90d", "--schema", schema,
                    "--postgres", ProcessInfo.processInfo.environment["HERALD_POSTGRES"]!]
        #expect(try Spawn.run(argv + ["--dry-run"], log: log) == 0)
        #expect(try String(contentsOfFile: log, encoding: .utf8).contains("would drop \(schema).\(old[0])"))
        #expect(try partitions.list(on: conn).count == 12)
        #expect(try Spawn.run(argv, log: log) == 0)
        let output = try String(contentsOfFile: log, encoding: .utf8)
        for name in old { #expect(output.contains("dropped \(schema).\(name)"), "\(output)") }
        #expect(output.contains("dropped 3 partitions"), "\(output)")
        #expect(try partitions.list(on: conn).count == 9)
        #expect(try Spawn.run(argv, log: log) == 0)
        #expect(try String(contentsOfFile: log, encoding: .utf8).contains("nothing to drop"))
    }
}
