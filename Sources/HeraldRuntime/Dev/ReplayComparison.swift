import Foundation
import HeraldCore
import HeraldPostgres

/// What a pipeline wrote to PostgreSQL, in a form that compares exactly with what
/// `herald replay` computes from the same events: notifications by id (every decided
/// field), conversions, open escalations and engagements.
public struct PipelineRows: Sendable, Equatable {
    /// id → "rule user status reason variant merged_into due_at decided_at escalated body".
    public var notifications: [String: String] = [:]
    /// "notification_id goal_event_id".
    public var conversions: Set<String> = []
    /// Notification ids.
    public var escalations: Set<String> = []
    /// "notification_id kind event_id".
    public var engagements: Set<String> = []

    public init() {}

    static func row(rule: String, user: String, status: String, reason: String?, variant: String?, mergedInto: String?,
                    dueAt: Timestamp?, decidedAt: Timestamp?, escalated: Bool, body: String?) -> String {
        [rule, user, status, reason ?? "-", variant ?? "-", mergedInto ?? "-", dueAt?.rfc3339 ?? "-",
         decidedAt?.rfc3339 ?? "?", escalated ? "escalated" : "-", body.map { "«\($0)»" } ?? "-"].joined(separator: " ")
    }

    /// The rows in `schema`.
    public static func read(_ conn: PostgresConnection, schema: String) throws -> PipelineRows {
        let s = SQLIdentifier.quoted(schema)
        var out = PipelineRows()
        for r in try conn.execute("""
            SELECT id, rule_id, user_id, status, reason, variant, merged_into,
                   to_char(due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                   to_char(decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), escalated, body
            FROM \(s).notifications
            """).rows {
            guard let id = r[0] else { continue }
            out.notifications[id] = row(rule: r[1] ?? "?", user: r[2] ?? "?", status: r[3] ?? "?", reason: r[4], variant: r[5],
                                        mergedInto: r[6], dueAt: r[7].flatMap { Timestamp(rfc3339: $0) },
                                        decidedAt: r[8].flatMap { Timestamp(rfc3339: $0) }, escalated: r[9] == "t", body: r[10])
        }
        out.conversions = Set(try conn.execute("SELECT notification_id || ' ' || goal_event_id FROM \(s).conversions").rows
            .compactMap { $0[0] })
        out.escalations = Set(try conn.execute("SELECT notification_id FROM \(s).escalations").rows.compactMap { $0[0] })
        out.engagements = Set(try conn.execute("SELECT notification_id || ' ' || kind || ' ' || event_id FROM \(s).engagements")
            .rows.compactMap { $0[0] })
        return out
    }

    /// Runs `herald replay --rules R --events E --until T --out …` as a process (the command
    /// operators use) and reads what it computed: the last record of each notification id
    /// is its final state, as the sink's upsert keeps it. Engagements are not replay's
    /// (the sink records an open against a notification it has): pass them in `engagements`.
    public static func replay(rulesPath: String, eventsFile: String, until: Timestamp?, directory: String,
                              timeout: Double = 600) throws -> PipelineRows {
        let outFile = (directory as NSString).appendingPathComponent("replay-outcomes.jsonl")
        let process = try ManagedProcess(
            name: "replay", executable: Executables.path("herald"),
            arguments: ["replay", "--rules", rulesPath, "--events", eventsFile, "--out", outFile]
                + (until.map { ["--until", $0.rfc3339] } ?? []),
            logDirectory: directory)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        guard process.exitCode == 0 else {
            process.kill9()
            throw WorkerError.configuration("herald replay failed (\(process.exitCode ?? -1)):\n\(process.log.suffix(3000))")
        }
        var out = PipelineRows()
        var final: [String: Outcome] = [:]
        var firstGoal: [String: String] = [:]
        for line in try String(contentsOfFile: outFile, encoding: .utf8).split(separator: "\n") {
            let bytes = Array(line.utf8)
            if Conversion.kind(of: bytes) == "conversion" {
                let c = try Conversion(json: bytes)
                // The sink keeps the first goal event of a notification.
                if firstGoal[c.notificationID] == nil { firstGoal[c.notificationID] = c.goalEventID }
            } else {
                let o = try Outcome(json: bytes)
                // A final status never moves back to deferred (SPEC §7).
                if let previous = final[o.notificationID], previous.status.isFinal, !o.status.isFinal { continue }
                final[o.notificationID] = o
            }
        }
        out.conversions = Set(firstGoal.map { "\($0.key) \($0.value)" })
        for (id, o) in final {
            out.notifications[id] = row(rule: o.ruleID, user: o.userID, status: o.status.rawValue, reason: o.reason, variant: o.variant,
                                        mergedInto: o.mergedInto, dueAt: o.dueAt, decidedAt: o.decidedAt, escalated: o.escalated,
                                        body: o.body)
            if o.status == .sent && o.escalated { out.escalations.insert(id) }
        }
        return out
    }
}

/// The differences between expected and actual rows, per table.
public struct RowDiff: Sendable {
    public var table: String
    /// Expected, not written: key → expected row.
    public var missing: [(key: String, row: String)] = []
    /// Written, not expected: key → written row.
    public var extra: [(key: String, row: String)] = []
    /// Written with other values: key, expected, written.
    public var changed: [(key: String, expected: String, got: String)] = []

    public var isEmpty: Bool { missing.isEmpty && extra.isEmpty && changed.isEmpty }

    public static func compare(expected: PipelineRows, got: PipelineRows) -> [RowDiff] {
        var notifications = RowDiff(table: "notifications")
        for (id, row) in expected.notifications.sorted(by: { $0.key < $1.key }) {
            if let live = got.notifications[id] {
                if live != row { notifications.changed.append((id, row, live)) }
            } else {
                notifications.missing.append((id, row))
            }
        }
        for (id, row) in got.notifications.sorted(by: { $0.key < $1.key }) where expected.notifications[id] == nil {
            notifications.extra.append((id, row))
        }
        func sets(_ table: String, _ e: Set<String>, _ g: Set<String>) -> RowDiff {
            var d = RowDiff(table: table)
            d.missing = e.subtracting(g).sorted().map { ($0, "") }
            d.extra = g.subtracting(e).sorted().map { ($0, "") }
            return d
        }
        return [notifications, sets("conversions", expected.conversions, got.conversions),
                sets("escalations", expected.escalations, got.escalations),
                sets("engagements", expected.engagements, got.engagements)]
    }

    /// "notifications: 3 missing, 0 extra, 1 changed" and up to `limit` examples of each.
    public func report(limit: Int = 10) -> String {
        var lines = ["\(table): \(missing.count) missing, \(extra.count) extra, \(changed.count) changed"]
        for m in missing.prefix(limit) { lines.append("  missing \(m.key) \(m.row)") }
        for x in extra.prefix(limit) { lines.append("  extra   \(x.key) \(x.row)") }
        for c in changed.prefix(limit) {
            lines.append("  changed \(c.key)\n    expected \(c.expected)\n    written  \(c.got)")
        }
        return lines.joined(separator: "\n")
    }
}
