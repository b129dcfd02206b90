import HeraldCore
import HeraldRuntime
import Testing

@Suite struct MetricsRegistryTests {
    @Test func rendersPrometheusTextWithEscapedLabelsAndCumulativeBuckets() {
        let r = MetricsRegistry()
        r.declare("c_total", .counter, help: "A counter.", labels: ["reason"])
        r.declare("h_seconds", .histogram, help: "A histogram.", buckets: [0.1, 1])
        r.increment("c_total", [#"bad "quote"\"#], by: 2)
        r.increment("c_total", ["ok"])
        for v in [0.05, 0.5, 5] { r.observe("h_seconds", value: v) }
        #expect(r.render() == """
            # HELP c_total A counter.
            # TYPE c_total counter
            c_total{reason="bad \\"quote\\"\\\\"} 2
            c_total{reason="ok"} 1
            # HELP h_seconds A histogram.
            # TYPE h_seconds histogram
            h_seconds_bucket{le="0.1"} 1
            h_seconds_bucket{le="1"} 2
            h_seconds_bucket{le="+Inf"} 3
            h_seconds_sum 5.55
            h_seconds_count 3

            """)
        #expect(PrometheusText.value(r.render(), "c_total", #"reason="ok""#) == 1)
    }

    @Test func workerOptionsResolveDurationsFormatsAndPorts() throws {
        let c = try WorkerOptions.parse(["--grace", "1m30s", "--checkpoint-interval", "2s", "--log-format", "json",
                                         "--metrics-port", "9555", "-X", "sasl.password=x"]).resolve(stage: "t")
        #expect(c.grace == .seconds(90))
        #expect(c.checkpointInterval == .seconds(2))
        #expect(c.logFormat == "json")
        #expect(c.metricsPort == 9555)
        #expect(c.loggable["kafka_properties"] == "sasl.password=<redacted>")
        #expect(throws: (any Error).self) { try WorkerOptions.parse(["--grace", "soon"]).resolve(stage: "t") }
        #expect(throws: (any Error).self) { try WorkerOptions.parse(["--log-format", "xml"]).resolve(stage: "t") }
        #expect(throws: (any Error).self) { try WorkerOptions.parse(["--metrics-port", "70000"]).resolve(stage: "t") }
    }
}
