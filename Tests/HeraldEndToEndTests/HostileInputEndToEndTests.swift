import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import HeraldRuntime
import Logging
import Testing

/// Issue 9: hostile messages mixed into real traffic, and retention overtaking a stopped
/// consumer, against real worker processes, a `herald broker` and PostgreSQL.
@Suite(.serialized) struct HostileInputEndToEndTests {
    let logger = Logger(label: "hostile")

    @Test func everyHostileCaseHasItsPreciseReason() {
        let now = Timestamp.now
        for c in HostileEvents.all(now: now) {
            switch EventDecoder.decode(c.bytes, topic: .orders, notAfter: now + EventDecoder.maxFutureSkew) {
            case .success: Issue.record("\(c.name): accepted")
            case .failure(let r): #expect(r.reason == c.reason, "\(c.name): \(r)")
            }
        }
    }

    @Test func hostileMessagesAreDeadLetteredWhileRealTrafficFlows() throws {
        let pipeline = try LocalPipeline(rules: PipelineEndToEndTests.rules, partitions: 4, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure()
        try pipeline.startWorkers()
        let trigger = pipeline.workers[0]

        // 2,000 payment failures for 200 users, every hostile case twice, interleaved.
        let hostile = HostileEvents.all(now: .now)
        let producer = try KafkaProducer(
            config: KafkaClientConfig(brokers: pipeline.bootstrapServers, properties: ["message.max.bytes": "4000000"]),
            logger: logger)
        var traffic = ShopTraffic(users: 200, seed: 11)
        var sent = 0
        for i in 0..<2000 {
            let m = traffic.make(.orders, "payment_failed", user: i % 200)
            try producer.send(topic: "orders", key: m.key, value: m.value)
            if i % 10 == 0, sent < hostile.count * 2 {
                let c = hostile[sent % hostile.count]
                try producer.send(topic: sent % 2 == 0 ? "orders" : "behavior", key: nil, value: c.bytes)
                sent += 1
            }
        }
        while sent < hostile.count * 2 {
            try producer.send(topic: "behavior", key: nil, value: hostile[sent % hostile.count].bytes)
            sent += 1
        }
        try producer.flush(timeout: .seconds(60))

        let conn = try pipeline.connect()
        let s = "\"\(pipeline.schema)\""
        let done = try pipeline.await(timeout: 240) {
            let n = Int(try conn.execute("SELECT count(*) FROM \(s).notifications")[0, 0]!)!
            let d = Int(try conn.execute("SELECT count(*) FROM \(s).dead_letters")[0, 0]!)!
            return n >= 2000 && d >= hostile.count * 2
        }
        #expect(done, "pipeline did not finish:\n\(pipeline.logs)")
        #expect(try conn.execute("SELECT count(*) FROM \(s).notifications WHERE status = 'sent'")[0, 0] == "2000")

        var expected: [String: Int] = [:]
        for c in hostile { expected[c.reason, default: 0] += 2 }
        let rows = try conn.execute("SELECT reason, count(*) FROM \(s).dead_letters GROUP BY 1").rows
        var got: [String: Int] = [:]
        for r in rows { got[r[0]!] = Int(r[1]!)! }
        #expect(got == expected)
        // The original bytes are kept up to 64 KiB, never more, with the original size beside them.
        let sizes = try conn.execute("""
            SELECT max(octet_length(payload)), max(payload_size), count(*) FILTER (WHERE detail = '')
            FROM \(s).dead_letters
            """)
        #expect(sizes[0, 0] == String(DeadLetter.maxPayloadBytes))
        #expect(Int(sizes[0, 1]!)! > 1 << 20)
        #expect(sizes[0, 2] == "0")
        let future = try conn.execute("SELECT detail FROM \(s).dead_letters WHERE reason = 'future_timestamp' ORDER BY detail LIMIT 1")
        #expect(future[0, 0]?.hasPrefix("occurred_at ") == true && future[0, 0]?.contains("ahead of the worker's clock") == true)

        // No worker restarted, not even a consumer session.
        for w in pipeline.workers {
            #expect(w.isRunning, "\(w.name) exited")
            let metrics = HTTPGet.local(port: pipeline.metricsPorts[w.name]!, path: "/metrics")?.body ?? ""
            #expect(PrometheusText.value(metrics, HeraldMetrics.sessions) == 1, "\(w.name):\n\(metrics)")
        }
        let triggerMetrics = HTTPGet.local(port: pipeline.metricsPorts[trigger.name]!, path: "/metrics")?.body ?? ""
        #expect(PrometheusText.samples(triggerMetrics, HeraldMetrics.deadLetters).reduce(0) { $0 + $1.value } == Double(hostile.count * 2))
        let codes = pipeline.stop()
        #expect(codes.values.allSatisfy { $0 == 0 }, "\(codes)")
    }

    @Test func retentionOvertakingAStoppedTriggerIsReportedNotSkipped() throws {
        let pipeline = try LocalPipeline(rules: PipelineEndToEndTests.rules, partitions: 1, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure()
        let trigger = try pipeline.startWorker("herald-trigger")
        try pipeline.startWorker("herald-shaper")
        try pipeline.startWorker("herald-sink")
        let conn = try pipeline.connect()
        let s = "\"\(pipeline.schema)\""
        func count(_ sql: String) throws -> Int { Int(try conn.execute(sql)[0, 0]!)! }

        let producer = try pipeline.producer()
        var traffic = ShopTraffic(users: 10, seed: 5)
        for i in 0..<10 {
            let m = traffic.make(.orders, "payment_failed", user: i)
            try producer.send(topic: "orders", key: m.key, value: m.value)
        }
        try producer.flush(timeout: .seconds(30))
        #expect(try pipeline.await(timeout: 120) { try count("SELECT count(*) FROM \(s).notifications") == 10 }, "\(pipeline.logs)")
        #expect(trigger.stop() == 0)

        // While the trigger is stopped, ~8 MiB arrive: the broker keeps only the newest ~5 MiB.
        let pad = String(repeating: "p", count: 2000)
        for i in 0..<4000 {
            let body = #"{"event_id":"pv-\#(i)","type":"page_view","shop_id":"s1","user_id":"u\#(i % 10)","occurred_at":"2026-11-25T09:00:00Z","pad":"\#(pad)"}"#
            try producer.send(topic: "orders", key: "u\(i % 10)", value: Array(body.utf8))
        }
        for i in 10..<20 {
            let m = traffic.make(.orders, "payment_failed", user: i % 10)
            try producer.send(topic: "orders", key: m.key, value: m.value)
        }
        try producer.flush(timeout: .seconds(60))

        let restarted = try pipeline.startWorker("herald-trigger")
        #expect(try pipeline.await(timeout: 120) {
            try count("SELECT count(*) FROM \(s).notifications") == 20
                && count("SELECT count(*) FROM \(s).dead_letters WHERE reason = 'retention_lost'") == 1
        }, "\(pipeline.logs)")
        let row = try conn.execute("""
            SELECT stage, source_topic, source_partition, source_offset, detail, payload_size FROM \(s).dead_letters
            WHERE reason = 'retention_lost'
            """)
        #expect(row[0, 0] == "herald-trigger" && row[0, 1] == "orders" && row[0, 2] == "0")
        // The first lost offset is the one after the 10 events the trigger had processed.
        #expect(row[0, 3] == "10")
        let detail = row[0, 4] ?? ""
        let range = detail.split(separator: " ")[1].split(separator: "-").compactMap { Int($0) }
        #expect(range.count == 2 && range[0] == 10 && range[1] > 1000, "\(detail)")
        let lost = range.count == 2 ? range[1] - range[0] + 1 : -1
        #expect(detail.contains("(\(lost) messages) of orders[0] were deleted by retention"), "\(detail)")

        let metrics = HTTPGet.local(port: pipeline.metricsPorts[restarted.name]!, path: "/metrics")?.body ?? ""
        #expect(PrometheusText.value(metrics, HeraldMetrics.retentionLost, #"topic="orders",partition="0""#) == Double(lost), "\(metrics)")
        let errorLine = restarted.log.split(separator: "\n").first { $0.contains("deleted by retention") } ?? ""
        #expect(errorLine.contains("error") && errorLine.contains("first_lost_offset") && errorLine.contains("\(range.count == 2 ? range[1] : -1)"),
                "\(restarted.log.suffix(3000))")
        #expect(restarted.isRunning)
    }

    @Test func retentionOvertakingAStoppedSinkIsReportedNotSkipped() throws {
        let pipeline = try LocalPipeline(rules: PipelineEndToEndTests.rules, partitions: 1, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure()
        let sink = try pipeline.startWorker("herald-sink")
        let conn = try pipeline.connect()
        let s = "\"\(pipeline.schema)\""
        func count(_ sql: String) throws -> Int { Int(try conn.execute(sql)[0, 0]!)! }
        let producer = try pipeline.producer()
        // Dead letters as another stage would publish them, ~2 KiB each.
        func letter(_ i: Int) -> [UInt8] {
            DeadLetter(stage: "herald-trigger", reason: "invalid_json", detail: "test \(i)", sourceTopic: "orders", sourcePartition: 0,
                       sourceOffset: Int64(i), payload: Array(repeating: UInt8(ascii: "x"), count: 1500), receivedAt: .now).json
        }
        for i in 0..<10 { try producer.send(topic: "herald.deadletter", key: nil, value: letter(i)) }
        try producer.flush(timeout: .seconds(30))
        #expect(try pipeline.await(timeout: 120) { try count("SELECT count(*) FROM \(s).dead_letters") == 10 }, "\(pipeline.logs)")
        #expect(sink.stop() == 0)

        for i in 10..<4010 { try producer.send(topic: "herald.deadletter", key: nil, value: letter(i)) }
        try producer.flush(timeout: .seconds(60))
        let restarted = try pipeline.startWorker("herald-sink")
        var detail = ""
        #expect(try pipeline.await(timeout: 120) {
            let r = try conn.execute("""
                SELECT detail FROM \(s).dead_letters
                WHERE reason = 'retention_lost' AND stage = 'herald-sink' AND source_topic = 'herald.deadletter' AND source_offset = 10
                """)
            guard r.rowCount == 1 else { return false }
            detail = r[0, 0] ?? ""
            // Everything still in the topic is written too, up to the last letter.
            return try count("SELECT count(*) FROM \(s).dead_letters WHERE detail = 'test 4009'") == 1
        }, "\(pipeline.logs)")
        let range = detail.split(separator: " ").dropFirst().first?.split(separator: "-").compactMap { Int($0) } ?? []
        #expect(range.count == 2 && range[0] == 10 && range[1] > 1000, "\(detail)")
        let written = try count("SELECT count(*) FROM \(s).dead_letters WHERE reason = 'invalid_json'")
        // Nothing silently skipped: the 10 first letters, the lost range, and every letter after it.
        if range.count == 2 { #expect(written == 10 + (4010 - range[1] - 1), "\(detail)") }
        #expect(restarted.log.contains("deleted by retention"))
    }
}
