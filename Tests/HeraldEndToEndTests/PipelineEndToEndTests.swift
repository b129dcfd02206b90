import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import HeraldRuntime
import Logging
import Testing

/// The executables as separate processes, talking real Kafka protocol over TCP to a
/// `herald broker` process, writing to the real PostgreSQL that scripts/test starts.
@Suite(.serialized) struct PipelineEndToEndTests {
    static let rules = """
    version: 1
    templates:
      refund_notice:
        title: "Payment failed"
        body: "Payment for order {{ event.order_id }} of {{ event.user_id }} failed; any charge is refunded within 3 days."
    rules:
      - id: payment-failed
        on: orders.payment_failed
        notify: { template: refund_notice, priority: high }
    """

    let logger = Logger(label: "e2e")

    @Test func paymentFailuresBecomeSentRowsAndMalformedInputBecomesDeadLetters() throws {
        let pipeline = try LocalPipeline(rules: Self.rules, partitions: 8, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure()
        try pipeline.startWorkers()

        // 10,000 payment_failed events for 1,000 users, and 100 malformed messages.
        let ruleSet = try RulesLoader.load(yaml: Self.rules).get()
        var engine = TriggerEngine(rules: ruleSet)
        var shaper = Shaper(rules: ruleSet)
        var expected: [String: Outcome] = [:]
        let producer = try pipeline.producer()
        var traffic = ShopTraffic(users: 1000, seed: 7)
        for i in 0..<10_000 {
            let m = traffic.make(.orders, "payment_failed", user: i % 1000)
            let event = try EventDecoder.decode(m.value, topic: .orders).get()
            for c in engine.process(event).compactMap(\.candidate) {
                for o in shaper.process(c) { expected[o.notificationID] = o }
            }
            try producer.send(topic: "orders", key: m.key, value: m.value)
            if i % 100 == 50 {
                try producer.send(topic: i % 200 == 50 ? "orders" : "behavior", key: nil, value: ShopTraffic.malformed(i / 100))
            }
        }
        try producer.flush(timeout: .seconds(60))
        #expect(expected.count == 10_000)

        let conn = try pipeline.connect()
        let s = "\"\(pipeline.schema)\""
        let done = try pipeline.await(timeout: 240) {
            let n = Int(try conn.execute("SELECT count(*) FROM \(s).notifications")[0, 0]!)!
            let d = Int(try conn.execute("SELECT count(*) FROM \(s).dead_letters")[0, 0]!)!
            return n >= 10_000 && d >= 100
        }
        #expect(done, "pipeline did not finish:\n\(pipeline.logs)")

        let rows = try conn.execute("SELECT id, status, rule_id, user_id, body, priority, reason FROM \(s).notifications")
        #expect(rows.rowCount == 10_000)
        var mismatches = 0
        for r in rows.rows {
            guard let id = r[0], let want = expected[id] else { mismatches += 1; continue }
            if r[1] != "sent" || r[2] != "payment-failed" || r[3] != want.userID || r[4] != want.body
                || r[5] != "high" || r[6] != nil {
                mismatches += 1
            }
        }
        #expect(mismatches == 0)
        #expect(try conn.execute("SELECT count(DISTINCT user_id) FROM \(s).notifications")[0, 0] == "1000")

        let letters = try conn.execute("""
            SELECT stage, reason, count(*) FROM \(s).dead_letters GROUP BY 1, 2 ORDER BY 1, 2
            """).rows.map { $0.map { $0 ?? "" } }
        #expect(letters == [
            // ShopTraffic.malformed cycles through 8 kinds; 100 messages give 13 of kinds 0-3.
            ["herald-trigger", "invalid_json", "49"], ["herald-trigger", "missing_field", "13"],
            ["herald-trigger", "not_an_object", "13"], ["herald-trigger", "wrong_type", "13"],
            ["herald-trigger", "bad_timestamp", "12"],
        ].sorted { $0.lexicographicallyPrecedes($1) })
        let sample = try conn.execute("""
            SELECT source_topic, payload, payload_size, detail FROM \(s).dead_letters
            WHERE reason = 'not_an_object' ORDER BY source_offset LIMIT 1
            """)
        #expect(sample[0, 1] == "\\x5b312c20322c20335d")  // "[1, 2, 3]" byte for byte
        #expect(sample[0, 2] == "9")
        #expect(sample[0, 3] == "the message is a JSON array, not an object")

        // Graceful shutdown: every worker exits 0 on SIGTERM.
        let codes = pipeline.stop()
        #expect(codes.values.allSatisfy { $0 == 0 }, "\(codes)")
    }

    @Test func anInvalidRulesFileIsRefusedWithFileLineAndColumn() throws {
        let pipeline = try LocalPipeline(rules: "rules:\n  - id: a\n    on: orders.x\n    notify: { template: nope }\n",
                                         logger: logger)
        defer { pipeline.stop() }
        let worker = try ManagedProcess(
            name: "trigger", executable: Executables.path("herald-trigger"),
            arguments: ["--rules", pipeline.rulesPath, "--brokers", "127.0.0.1:1"], logDirectory: pipeline.workDirectory)
        let exited = try pipeline.await(timeout: 30) { !worker.isRunning }
        #expect(exited)
        #expect(worker.exitCode != 0)
        #expect(worker.log.contains("\(pipeline.rulesPath):4:25: error: rule 'a' uses unknown template 'nope'"), "\(worker.log)")
    }

    @Test func workersWaitForUnreachableDependenciesAndStopCleanly() throws {
        let pipeline = try LocalPipeline(rules: Self.rules, logger: logger)
        defer { pipeline.stop() }
        let trigger = try ManagedProcess(
            name: "trigger", executable: Executables.path("herald-trigger"),
            arguments: ["--rules", pipeline.rulesPath, "--brokers", "127.0.0.1:1"], logDirectory: pipeline.workDirectory)
        let sink = try ManagedProcess(
            name: "sink", executable: Executables.path("herald-sink"),
            arguments: ["--brokers", "127.0.0.1:1", "--postgres", "host=127.0.0.1 port=1 user=herald password=hunter2 connect_timeout=1"],
            logDirectory: pipeline.workDirectory)
        #expect(try pipeline.await(timeout: 60) { trigger.log.contains("waiting for the Kafka brokers") }, "\(trigger.log)")
        #expect(try pipeline.await(timeout: 60) { sink.log.contains("waiting for PostgreSQL") }, "\(sink.log)")
        #expect(trigger.isRunning && sink.isRunning)
        #expect(!sink.log.contains("hunter2"))
        #expect(trigger.stop() == 0)
        #expect(sink.stop() == 0)
    }
}
