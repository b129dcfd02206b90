import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
@testable import HeraldRuntime
import Logging
import Testing

/// herald-sink with `--max-rows-per-second`: a backlog already in Kafka is written no faster
/// than the cap (a lower bound on the time, so a slow machine cannot make it fail), and
/// completely.
@Suite struct SinkRateLimitTests {
    let logger = Logger(label: "sink-rate")

    @Test func aBacklogIsWrittenAtNoMoreThanTheCap() throws {
        let pipeline = try LocalPipeline(rules: PipelineEndToEndTests.rules, partitions: 4, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure()
        let producer = try pipeline.producer()
        let outcomes = SinkBenchmark.outcomes(3000)
        for o in outcomes { try producer.send(topic: TopicNames().outcomes, key: o.userID, value: o.json) }
        try producer.flush(timeout: .seconds(60))

        try pipeline.startWorker("herald-sink", arguments: ["--max-rows-per-second", "1000", "--batch-size", "500"])
        let conn = try pipeline.connect()
        let s = "\"\(pipeline.schema)\""
        let clock = ContinuousClock()
        var first: ContinuousClock.Instant?
        #expect(try pipeline.await(timeout: 60, every: 0.05) {
            let n = Int(try conn.execute("SELECT count(*) FROM \(s).notifications")[0, 0]!)!
            if n > 0, first == nil { first = clock.now }
            return n == 3000
        })
        // Six batches of 500 at 1,000 rows/s: the last five each wait 0.5 s for their budget.
        let spread = try #require(first).duration(to: clock.now)
        #expect(spread >= .milliseconds(2400), "3,000 rows written in \(spread)")
        #expect(try conn.execute("SELECT sum(count) FROM \(s).rule_stats_minute")[0, 0] == "3000")
    }
}
