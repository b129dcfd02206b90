import Foundation
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

    @Test(.enabled(if: ProcessInfo.processInfo.environment["HERALD_BATCH_SIZE"] == nil))
    func theSinkTakesLargerBatchesByDefault() throws {
        #expect(try WorkerOptions.parse([]).resolve(stage: "herald-trigger").batchSize == 5000)
        #expect(try WorkerOptions.parse([]).resolve(stage: "herald-sink").batchSize == 20_000)
        #expect(try WorkerOptions.parse(["--batch-size", "7"]).resolve(stage: "herald-sink").batchSize == 7)
    }
}

#if canImport(Glibc)
import Glibc

@Suite struct MetricsServerTests {
    /// Scrapers that reset the connection before reading must not stop the endpoint.
    /// (SIGPIPE itself is not observable here: the test process survives it even with a
    /// plain `write`, so MSG_NOSIGNAL in the server is not proven by this test.)
    @Test func survivesClientsThatHangUpAndKeepsAnswering() throws {
        let registry = MetricsRegistry()
        registry.declare("big_total", .counter, help: "Enough series to need several writes.", labels: ["n"])
        for n in 0..<5000 { registry.increment("big_total", [String(n)]) }
        let server = try MetricsServer(port: 0, registry: registry, health: Health.shared, logger: .init(label: "t"))
        defer { server.shutdown() }
        for _ in 0..<20 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(server.port).bigEndian)
            addr.sin_addr = in_addr(s_addr: in_addr_t(0x7F00_0001).bigEndian)
            let connected = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            #expect(connected == 0)
            let request = Array("GET /metrics HTTP/1.1\r\n\r\n".utf8)
            _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            // Linger 0: close sends a reset instead of a FIN.
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            close(fd)
        }
        let r = try #require(HTTPGet.local(port: server.port, path: "/metrics"))
        #expect(r.status == 200)
        #expect(PrometheusText.samples(r.body, "big_total").count == 5000)
        #expect(HTTPGet.local(port: server.port, path: "/healthz")?.body == "alive\n")
    }
}
#endif
