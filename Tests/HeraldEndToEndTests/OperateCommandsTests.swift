import Foundation
import HeraldCore
import HeraldKafka
import HeraldRuntime
import Logging
import Testing

/// `herald topics create`, `herald loadgen` and `herald stats` as an operator runs them.
@Suite(.serialized) struct OperateCommandsTests {
    let logger = Logger(label: "operate")

    func run(_ pipeline: LocalPipeline, _ arguments: [String], timeout: Double = 120) throws -> ManagedProcess {
        let p = try ManagedProcess(name: "herald-\(arguments[0])-\(UUID().uuidString.prefix(4))", executable: Executables.path("herald"),
                                   arguments: arguments, environment: pipeline.environment, logDirectory: pipeline.workDirectory)
        #expect(try pipeline.await(timeout: timeout) { !p.isRunning }, "\(arguments) did not finish: \(p.log)")
        return p
    }

    @Test func loadgenFeedsThePipelineAndStatsShowsOutcomesAndNoLag() throws {
        let pipeline = try LocalPipeline(rules: DevRules.yaml, partitions: 4, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure()

        // The broker made every topic with 4 partitions: another count is refused by name.
        let wrong = try run(pipeline, ["topics", "create", "--partitions", "6"])
        #expect(wrong.exitCode == 2)
        #expect(wrong.log.contains("orders has 4") && wrong.log.contains("herald.outcomes has 4"), "\(wrong.log)")
        let same = try run(pipeline, ["topics", "create", "--partitions", "4"])
        #expect(same.exitCode == 0, "\(same.log)")
        #expect(same.log.contains("orders: 4 partitions (already there)"))

        try pipeline.startWorkers()
        let load = try run(pipeline, ["loadgen", "--rate", "500", "--duration", "4s", "--users", "200"])
        #expect(load.exitCode == 0, "\(load.log)")
        #expect(load.log.contains("sent 2000/2000"), "\(load.log)")
        #expect(load.log.contains("behavior.login_failed"))

        // Wait until every stage has caught up, then read the numbers as an operator would.
        // Idle stages commit what they have applied, so caught up is a lag of 0 everywhere —
        // on herald.candidates too, between two of herald-trigger's clock records (one a
        // second per partition, which herald-shaper's deferred messages wake by).
        var lags: [PipelineStats.StageLag] = []
        var config = WorkerConfig(stage: "test")
        config.brokers = pipeline.bootstrapServers
        #expect(try pipeline.await(timeout: 120) {
            lags = (try? PipelineStats.lag(config: config, logger: logger)) ?? []
            return lags.count == 5 && lags.allSatisfy { $0.lag == 0 }
        }, "\(lags)\n\(pipeline.logs)")
        let conn = try pipeline.connect()
        let written = Int(try conn.execute("SELECT count(*) FROM \"\(pipeline.schema)\".notifications")[0, 0]!)!
        #expect(written > 0)

        let stats = try run(pipeline, ["stats", "--window", "1h"])
        #expect(stats.exitCode == 0, "\(stats.log)")
        let byRule = try PipelineStats.outcomes(conn, schema: pipeline.schema, window: .hours(1))
        #expect(byRule.reduce(0) { $0 + Int($1[3])! } == written)
        for row in byRule { #expect(stats.log.contains(row[0]) && stats.log.contains(row[3])) }
        #expect(stats.log.contains("herald-sink") && stats.log.contains("herald.outcomes"))
    }
}
