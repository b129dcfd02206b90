import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import HeraldRuntime
import Logging
import Testing

/// PostgreSQL stops in the middle of a multi-process run and comes back: the sink waits,
/// retries with backoff, and the final rows are exactly those sent — none lost, none doubled.
///
/// The server stopped here is a dedicated throwaway cluster (stopped and started with its
/// own pg_ctl, like `HERALD_PG_CTL`), not the shared HERALD_POSTGRES server: the other
/// suites run in parallel and would fail while the shared one is down.
@Suite struct PostgresOutageTests {
    let logger = Logger(label: "pg-outage")

    @Test func sinkResumesAfterPostgresRestartWithoutLosingOrDoublingRows() throws {
        let server = try ThrowawayPostgres()
        let pipeline = try LocalPipeline(rules: PipelineEndToEndTests.rules, partitions: 4, postgres: server, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure()
        try pipeline.startWorkers()
        let s = "\"\(pipeline.schema)\""

        let ruleSet = try RulesLoader.load(yaml: PipelineEndToEndTests.rules).get()
        var engine = TriggerEngine(rules: ruleSet)
        var shaper = Shaper(rules: ruleSet)
        var expected: Set<String> = []
        let producer = try pipeline.producer()
        var traffic = ShopTraffic(users: 500, seed: 11)
        func produce(_ range: Range<Int>) throws {
            for i in range {
                let m = traffic.make(.orders, "payment_failed", user: i % 500)
                let event = try EventDecoder.decode(m.value, topic: .orders).get()
                for c in engine.process(event).compactMap(\.candidate) {
                    for o in shaper.process(c) { expected.insert(o.notificationID) }
                }
                try producer.send(topic: "orders", key: m.key, value: m.value)
            }
            try producer.flush(timeout: .seconds(60))
        }
        func rows(_ conn: PostgresConnection) throws -> Int {
            Int(try conn.execute("SELECT count(*) FROM \(s).notifications")[0, 0]!)!
        }

        // First half written, then the server stops while the second half is in flight.
        try produce(0..<3000)
        var conn = try pipeline.connect()
        #expect(try pipeline.await(timeout: 120) { try rows(conn) == 3000 }, "first half not written:\n\(pipeline.logs)")
        try server.stopServer()
        try produce(3000..<6000)
        let sink = try #require(pipeline.workers.first { $0.name.hasPrefix("herald-sink") })
        #expect(try pipeline.await(timeout: 120) { sink.log.contains("batch write failed; retrying") },
                "the sink never noticed:\n\(sink.log.suffix(3000))")
        #expect(sink.isRunning)
        // Not ready while PostgreSQL is down (SPEC §8), ready again once it answers.
        let port = pipeline.metricsPorts[sink.name]!
        #expect(try pipeline.await(timeout: 30) { HTTPGet.local(port: port, path: "/readyz")?.status == 503 },
                "\(String(describing: HTTPGet.local(port: port, path: "/readyz")))")

        try server.startServer()
        #expect(try pipeline.await(timeout: 60) { HTTPGet.local(port: port, path: "/readyz")?.status == 200 },
                "\(String(describing: HTTPGet.local(port: port, path: "/readyz")))")
        conn = try pipeline.connect()
        #expect(try pipeline.await(timeout: 180) { try rows(conn) >= 6000 }, "did not resume:\n\(pipeline.logs)")

        let ids = try conn.execute("SELECT id FROM \(s).notifications").rows.compactMap { $0[0] }
        #expect(ids.count == 6000)
        #expect(Set(ids) == expected)
        #expect(try conn.execute("SELECT sum(count) FROM \(s).rule_stats_minute")[0, 0] == "6000")
        let codes = pipeline.stop()
        #expect(codes.values.allSatisfy { $0 == 0 }, "\(codes)")
    }
}
