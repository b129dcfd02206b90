import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import HeraldRuntime
import Logging
import Testing

/// /metrics, /healthz and /readyz of real worker processes, and secrets kept out of logs.
@Suite(.serialized) struct ObservabilityTests {
    let logger = Logger(label: "observability")

    func scrape(_ pipeline: LocalPipeline, _ worker: ManagedProcess, _ path: String = "/metrics") -> (status: Int, body: String)? {
        HTTPGet.local(port: pipeline.metricsPorts[worker.name]!, path: path)
    }

    @Test func metricsOfEveryStageCountAKnownWorkload() throws {
        let pipeline = try LocalPipeline(rules: PipelineEndToEndTests.rules, partitions: 4, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure()
        let trigger = try pipeline.startWorker("herald-trigger")
        let shaper = try pipeline.startWorker("herald-shaper")
        let sink = try pipeline.startWorker("herald-sink")

        // 1,000 payment failures (one notification each) and 20 malformed messages on orders.
        let producer = try pipeline.producer()
        var traffic = ShopTraffic(users: 100, seed: 3)
        for i in 0..<1000 {
            let m = traffic.make(.orders, "payment_failed", user: i % 100)
            try producer.send(topic: "orders", key: m.key, value: m.value)
        }
        for kind in 0..<20 { try producer.send(topic: "orders", key: nil, value: ShopTraffic.malformed(kind)) }
        try producer.flush(timeout: .seconds(60))

        // Done when the sink has committed every row and sees no lag on any partition.
        var sinkText = ""
        let done = try pipeline.await(timeout: 180) {
            guard let r = scrape(pipeline, sink), r.status == 200 else { return false }
            sinkText = r.body
            let lag = PrometheusText.samples(r.body, "herald_consumer_lag")
            return PrometheusText.value(r.body, "herald_rows_written_total", #"table="notifications""#) == 1000
                && PrometheusText.value(r.body, "herald_rows_written_total", #"table="dead_letters""#) == 20
                && lag.count == 8 && lag.allSatisfy { $0.value == 0 }
        }
        #expect(done, "sink metrics:\n\(sinkText)\n\(pipeline.logs)")

        let t = try #require(scrape(pipeline, trigger)).body
        #expect(PrometheusText.value(t, "herald_events_consumed_total", #"topic="orders""#) == 1020)
        #expect(PrometheusText.value(t, "herald_rules_fired_total", #"rule="payment-failed""#) == 1000)
        #expect(PrometheusText.value(t, "herald_candidates_total") == 1000)
        // ShopTraffic.malformed kinds 0-7, 0-7, 0-3.
        let letters = Dictionary(uniqueKeysWithValues: PrometheusText.samples(t, "herald_dead_letters_total").map { ($0.labels, $0.value) })
        #expect(letters == [#"reason="invalid_json""#: 9, #"reason="not_an_object""#: 3, #"reason="missing_field""#: 3,
                            #"reason="wrong_type""#: 3, #"reason="bad_timestamp""#: 2])
        #expect(PrometheusText.value(t, "herald_assigned_partitions") == 8)
        #expect(PrometheusText.value(t, "herald_paused_partitions") == 0)
        #expect((PrometheusText.value(t, "herald_batch_duration_seconds_count") ?? 0) > 0)
        #expect(t.contains("# TYPE herald_checkpoint_duration_seconds histogram"))

        let s = try #require(scrape(pipeline, shaper)).body
        // 1000 candidates, and the trigger's clock (`TriggerWatermark`) between them.
        #expect((PrometheusText.value(s, "herald_events_consumed_total", #"topic="herald.candidates""#) ?? 0) > 1000)
        #expect(PrometheusText.value(s, "herald_outcomes_total", #"status="sent",reason="""#) == 1000)

        #expect(PrometheusText.value(sinkText, "herald_events_consumed_total", #"topic="herald.outcomes""#) == 1000)
        #expect(PrometheusText.value(sinkText, "herald_events_consumed_total", #"topic="herald.deadletter""#) == 20)
        #expect(PrometheusText.value(sinkText, "herald_end_to_end_latency_seconds_count") == 1000)
        #expect(PrometheusText.value(sinkText, "herald_end_to_end_latency_seconds_bucket", #"le="+Inf""#) == 1000)

        for w in [trigger, shaper, sink] {
            #expect(scrape(pipeline, w, "/healthz")?.status == 200)
            let ready = scrape(pipeline, w, "/readyz")
            #expect(ready?.status == 200, "\(w.name): \(ready?.body ?? "no answer")")
        }
        #expect(scrape(pipeline, sink, "/nope")?.status == 404)
    }

    /// A server of the test's own, so stopping it disturbs no other test. While it is down
    /// and outcomes arrive, the sink pauses its partitions; when it is back, it resumes and
    /// writes every row.
    @Test func readinessAndBackPressureFollowPostgreSQL() throws {
        let pipeline = try LocalPipeline(rules: PipelineEndToEndTests.rules, partitions: 2, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure()
        let server = try ThrowawayPostgres()
        defer { server.stop() }
        try Migrator(schema: pipeline.schema).migrate(try PostgresConnection(server.conninfo, logger: logger), logger: logger)
        let sink = try pipeline.startWorker("herald-sink", overrides: ["HERALD_POSTGRES": server.conninfo])

        func readyz() -> (status: Int, body: String)? { scrape(pipeline, sink, "/readyz") }
        #expect(try pipeline.await(timeout: 60) { readyz()?.status == 200 }, "\(readyz()?.body ?? "")\n\(sink.log)")
        try server.stopServer()
        #expect(try pipeline.await(timeout: 30) { readyz()?.body.contains("postgres unreachable") == true })
        #expect(readyz()?.status == 503)
        #expect(scrape(pipeline, sink, "/healthz")?.status == 200)

        // Outcomes arrive while the server is down (trigger and shaper use the shared server).
        try pipeline.startWorker("herald-trigger")
        try pipeline.startWorker("herald-shaper")
        let producer = try pipeline.producer()
        var traffic = ShopTraffic(users: 50, seed: 11)
        for i in 0..<200 {
            let m = traffic.make(.orders, "payment_failed", user: i % 50)
            try producer.send(topic: "orders", key: m.key, value: m.value)
        }
        try producer.flush(timeout: .seconds(30))
        func metric(_ name: String, _ labels: String = "") -> Double? {
            scrape(pipeline, sink).flatMap { PrometheusText.value($0.body, name, labels) }
        }
        // 2 partitions each of herald.outcomes and herald.deadletter.
        #expect(try pipeline.await(timeout: 60) { metric("herald_paused_partitions") == 4 }, "\(sink.log.suffix(3000))")

        try server.startServer()
        #expect(try pipeline.await(timeout: 60) {
            metric("herald_rows_written_total", #"table="notifications""#) == 200 && metric("herald_paused_partitions") == 0
        }, "\(sink.log.suffix(3000))")
        #expect(try pipeline.await(timeout: 30) { readyz()?.status == 200 }, "\(readyz()?.body ?? "")")
        let conn = try PostgresConnection(server.conninfo, logger: logger)
        #expect(try conn.execute("SELECT count(*) FROM \"\(pipeline.schema)\".notifications")[0, 0] == "200")
        #expect(sink.log.contains("pausing consumption: PostgreSQL writes are failing"))
        #expect(sink.log.contains("resuming consumption"))
        #expect(sink.stop() == 0)
    }

    static let documentedFlags = [
        "--brokers", "--postgres", "--rules", "--group", "--metrics-port", "--grace", "--checkpoint-interval",
        "--log-format", "--log-level", "--batch-size", "--schema", "--topic-orders", "--topic-behavior",
        "--topic-candidates", "--topic-outcomes", "--topic-deadletter", "-X", "HERALD_BROKERS", "HERALD_METRICS_PORT",
    ]

    @Test func secretsNeverAppearInLogsOrHelp() throws {
        let pipeline = try LocalPipeline(rules: PipelineEndToEndTests.rules, logger: logger)
        defer { pipeline.stop() }
        let secrets = ["Pg-S3cret-1", "Sasl-S3cret-2", "Key-S3cret-3", "Env-S3cret-4"]
        let env = [
            "HERALD_POSTGRES": "postgresql://herald:\(secrets[0])@127.0.0.1:1/herald?connect_timeout=1",
            "HERALD_KAFKA_PROPERTIES": "sasl.password=\(secrets[3])",
        ]
        let args = ["--brokers", "127.0.0.1:1", "--log-level", "debug", "--log-format", "json", "--metrics-port", "0",
                    "-X", "sasl.username=bob", "-X", "sasl.password=\(secrets[1])", "-X", "ssl.key.password=\(secrets[2])",
                    "--rules", pipeline.rulesPath]
        let sink = try ManagedProcess(name: "sink", executable: Executables.path("herald-sink"), arguments: args,
                                      environment: env, logDirectory: pipeline.workDirectory)
        let trigger = try ManagedProcess(name: "trigger", executable: Executables.path("herald-trigger"), arguments: args,
                                         environment: env, logDirectory: pipeline.workDirectory)
        #expect(try pipeline.await(timeout: 60) { sink.log.contains("waiting for PostgreSQL") }, "\(sink.log)")
        #expect(try pipeline.await(timeout: 60) { trigger.log.contains("waiting for the Kafka brokers") }, "\(trigger.log)")
        #expect(sink.stop() == 0)
        #expect(trigger.stop() == 0)
        for p in [sink, trigger] {
            for s in secrets { #expect(!p.log.contains(s), "\(p.name) logged \(s)") }
            // --log-format json: every line is one object carrying the stage.
            for line in p.log.split(separator: "\n") {
                guard case .object(let o)? = try? JSONParser.parse(String(line)) else {
                    Issue.record("not a JSON object: \(line)")
                    continue
                }
                #expect(o["stage"]?.stringValue == p.name.replacingOccurrences(of: "sink", with: "herald-sink")
                    .replacingOccurrences(of: "trigger", with: "herald-trigger"))
            }
            #expect(p.log.contains(#""postgres":"postgresql://herald:***@127.0.0.1:1/herald"#), "\(p.log.prefix(2000))")
        }

        for tool in ["herald-trigger", "herald-shaper", "herald-sink"] {
            let help = try ManagedProcess(name: "\(tool)-help", executable: Executables.path(tool),
                                          arguments: args + ["--help"], environment: env, logDirectory: pipeline.workDirectory)
            #expect(try pipeline.await(timeout: 30) { !help.isRunning })
            for s in secrets { #expect(!help.log.contains(s)) }
            for flag in Self.documentedFlags { #expect(help.log.contains(flag), "\(tool) --help lacks \(flag)") }
        }
    }
}
