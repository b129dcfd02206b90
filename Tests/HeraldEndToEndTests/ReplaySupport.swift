import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import HeraldRuntime

/// What `herald replay` says the pipeline must write for some events, and what it wrote,
/// in one comparable form: notification id → "rule user status reason variant decided_at".
struct ReplayExpectation {
    var notifications: [String: String] = [:]
    var conversions = Set<String>()

    /// Writes `messages` as a replay input file and runs `herald replay` on it with the clock
    /// stopped at `until`.
    static func run(_ messages: [ShopTraffic.Message], pipeline: LocalPipeline, until: Timestamp) throws -> ReplayExpectation {
        var lines: [UInt8] = []
        for m in messages {
            lines += Array(#"{"topic":"\#(m.topic.rawValue)","value":"#.utf8) + m.value + Array("}\n".utf8)
        }
        let eventsFile = (pipeline.workDirectory as NSString).appendingPathComponent("events.jsonl")
        let outFile = (pipeline.workDirectory as NSString).appendingPathComponent("outcomes.jsonl")
        try Data(lines).write(to: URL(fileURLWithPath: eventsFile))
        let replay = try ManagedProcess(
            name: "replay", executable: Executables.path("herald"),
            arguments: ["replay", "--rules", pipeline.rulesPath, "--events", eventsFile, "--out", outFile,
                        "--until", until.rfc3339],
            logDirectory: pipeline.workDirectory)
        guard try pipeline.await(timeout: 120, { !replay.isRunning }), replay.exitCode == 0 else {
            throw WorkerError.configuration("herald replay failed:\n\(replay.log)")
        }
        var expected = ReplayExpectation()
        for line in try String(contentsOfFile: outFile, encoding: .utf8).split(separator: "\n") {
            let bytes = Array(line.utf8)
            if Conversion.kind(of: bytes) == "conversion" {
                let c = try Conversion(json: bytes)
                expected.conversions.insert("\(c.notificationID) \(c.goalEventID)")
            } else {
                let o = try Outcome(json: bytes)
                expected.notifications[o.notificationID] =
                    "\(o.ruleID) \(o.userID) \(o.status.rawValue) \(o.reason ?? "-") \(o.variant ?? "-") \(o.decidedAt.rfc3339)"
            }
        }
        return expected
    }

    /// The rows the live pipeline wrote, in the same form.
    static func live(_ conn: PostgresConnection, schema: String) throws -> ReplayExpectation {
        let s = "\"\(schema)\""
        var live = ReplayExpectation()
        for r in try conn.execute("""
            SELECT id, rule_id, user_id, status, coalesce(reason, '-'), coalesce(variant, '-'), decided_at FROM \(s).notifications
            """).rows {
            let decided = Timestamp(rfc3339: r[6]!.replacingOccurrences(of: " ", with: "T").replacingOccurrences(of: "+00", with: "Z"))
            live.notifications[r[0]!] = "\(r[1]!) \(r[2]!) \(r[3]!) \(r[4]!) \(r[5]!) \(decided?.rfc3339 ?? r[6]!)"
        }
        live.conversions = Set(try conn.execute("SELECT notification_id || ' ' || goal_event_id FROM \(s).conversions").rows.map { $0[0]! })
        return live
    }

    /// Notifications that differ (missing or changed) and that are extra, a few of each.
    func differences(from live: ReplayExpectation) -> String {
        if live == self { return "" }
        let missing = notifications.filter { live.notifications[$0.key] != $0.value }
        let extra = live.notifications.filter { notifications[$0.key] == nil }
        return "missing or changed \(missing.count): \(missing.prefix(5).map { "\($0.key) \($0.value) → \(live.notifications[$0.key] ?? "none")" }); "
            + "extra \(extra.count): \(extra.prefix(5)); conversions missing \(conversions.subtracting(live.conversions).count), "
            + "extra \(live.conversions.subtracting(conversions).count)"
    }
}

extension ReplayExpectation: Equatable {}
