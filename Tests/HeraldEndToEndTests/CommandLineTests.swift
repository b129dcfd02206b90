import Foundation
import HeraldCore
import HeraldRuntime
import Logging
import Testing

/// `herald rules check` and `herald replay` as a user runs them.
@Suite struct CommandLineTests {
    let logger = Logger(label: "cli-tests")
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized.path

    func run(_ arguments: [String], in dir: String) throws -> (code: Int32, output: String) {
        let p = try ManagedProcess(name: "herald-\(UUID().uuidString.prefix(6))", executable: Executables.path("herald"),
                                   arguments: arguments, logDirectory: dir)
        let deadline = Date().addingTimeInterval(60)
        while p.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        return (p.stop(), p.log)
    }

    func workDirectory() throws -> String {
        let dir = (NSTemporaryDirectory() as NSString).appendingPathComponent("herald-cli-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func rulesCheckAcceptsTheSpecExampleAndRefusesErrors() throws {
        let dir = try workDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ok = try run(["rules", "check", Self.repo + "/deploy/rules/herald.yaml"], in: dir)
        #expect(ok.code == 0, "\(ok.output)")
        #expect(ok.output.contains("ok: 10 rules, 13 templates"))
        #expect(ok.output.contains("login-risk: on behavior.login_failed; 3 within 10m, reset on behavior.login_success → security_alert [urgent]"))

        let bad = (dir as NSString).appendingPathComponent("bad.yaml")
        try """
        templates: { t: { body: "hi" } }
        rules:
          - { id: a, on: orders.x, wait: soon, notify: { template: t } }
          - { id: b, on: orders.x, where: "event.amount >", notify: { template: nope } }
        """.write(toFile: bad, atomically: true, encoding: .utf8)
        let refused = try run(["rules", "check", bad], in: dir)
        #expect(refused.code == 1)
        #expect(refused.output.contains("\(bad):3:34: error: wait must be a duration such as 90s, 5m, 1h30m or 3d"))
        #expect(refused.output.contains("\(bad):4:50: error: where: the expression ends too early"))
        #expect(refused.output.contains("\(bad):4:73: error: rule 'b' uses unknown template 'nope'"))
        #expect(refused.output.contains("3 errors"))
    }

    @Test func replayReportsAndSkipsInvalidLinesAndStopsTheClockWhenAsked() throws {
        let dir = try workDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let rules = (dir as NSString).appendingPathComponent("rules.yaml")
        try """
        templates: { t: { body: "{{ event.sku }} is waiting" } }
        rules:
          - { id: cart, on: behavior.cart_add, wait: 1h, cancel_on: [behavior.checkout_start], notify: { template: t } }
        """.write(toFile: rules, atomically: true, encoding: .utf8)
        let events = (dir as NSString).appendingPathComponent("events.jsonl")
        try """
        {"topic":"behavior","value":{"event_id":"1","type":"cart_add","shop_id":"s","user_id":"a","occurred_at":"2026-11-25T08:00:00Z","sku":"X"}}
        not json
        {"topic":"payments","value":{}}
        {"topic":"behavior","value":{"event_id":"2","type":"cart_add","shop_id":"s","user_id":"b","occurred_at":"2026-11-25T08:10:00Z","sku":"Y"}}
        {"topic":"behavior","value":{"event_id":"3","type":"checkout_start","shop_id":"s","user_id":"b","occurred_at":"2026-11-25T08:20:00Z"}}
        {"topic":"behavior","value":{"event_id":"4","type":"cart_add","shop_id":"s","user_id":"c","occurred_at":"2026-11-25T09:30:00Z","sku":"Z"}}
        """.write(toFile: events, atomically: true, encoding: .utf8)
        let out = (dir as NSString).appendingPathComponent("out.jsonl")
        let all = try run(["replay", "--rules", rules, "--events", events, "--out", out], in: dir)
        #expect(all.code == 0, "\(all.output)")
        #expect(all.output.contains("\(events):2: skipped: invalid_json"))
        #expect(all.output.contains("\(events):3: skipped: invalid_line"))
        let outcomes = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").map { try Outcome(json: Array($0.utf8)) }
        #expect(outcomes.map { "\($0.userID) \($0.status.rawValue) \($0.decidedAt) \($0.body ?? "")" } == [
            "a sent 2026-11-25T09:00:00Z X is waiting", "c sent 2026-11-25T10:30:00Z Z is waiting",
        ])
        let early = try run(["replay", "--rules", rules, "--events", events, "--out", out, "--until", "2026-11-25T10:00:00Z"], in: dir)
        #expect(early.code == 0)
        #expect(try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").count == 1)
    }
}
