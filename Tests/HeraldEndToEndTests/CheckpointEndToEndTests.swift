import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import HeraldRuntime
import Logging
import Testing

/// herald-trigger and herald-shaper checkpoint their state with their offsets (issue 5):
/// killed workers are replaced without losing or doubling anything, a stopped worker
/// leaves a checkpoint at the end of its input, and inputs that are not co-partitioned are
/// refused.
@Suite(.serialized) struct CheckpointEndToEndTests {
    let logger = Logger(label: "checkpoint-e2e")

    /// The sum of a group's checkpointed offsets.
    func checkpointed(_ conn: PostgresConnection, _ schema: String, group: String) throws -> Int {
        Int(try conn.execute("SELECT coalesce(sum(next_offset), 0) FROM \"\(schema)\".checkpoint_offsets WHERE group_id = $1",
                             [group])[0, 0] ?? "0") ?? 0
    }

    @Test func killedTriggerAndShaperWorkersResumeFromTheirCheckpoints() throws {
        let messages = RuleEngineEndToEndTests.traffic(count: 12_000, users: 400)
        let pipeline = try LocalPipeline(rules: RuleEngineEndToEndTests.rules, partitions: 4, logger: logger)
        defer { pipeline.stop(keepFiles: ProcessInfo.processInfo.environment["HERALD_KEEP"] != nil) }
        try pipeline.startInfrastructure()
        let replay = try ReplayRows.expected(messages, pipeline: pipeline, until: .now - .minutes(1))
        #expect(replay.notifications.count > 1000)

        let conn = try pipeline.connect()
        let producer = try pipeline.producer()
        // The traffic is 60 days old and arrives in rounds: between rounds the partitions are
        // caught up, and with the usual grace their clocks would jump to the wall clock and
        // fire every timer, which replay (one pass over all events) would not. With a grace
        // longer than that, the clocks follow event time only, as replay's does, until the
        // last workers, which run with the usual grace and fire what is left.
        let eventTimeOnly = ["HERALD_GRACE": "3650d"]
        var trigger = try pipeline.startWorker("herald-trigger", overrides: eventTimeOnly)
        var shaper = try pipeline.startWorker("herald-shaper", overrides: eventTimeOnly)
        try pipeline.startWorker("herald-sink")
        // Four rounds: a quarter of the traffic, then — as soon as each worker has
        // checkpointed some of it, with more still in memory — both are killed without
        // warning and replaced.
        let rounds = 4
        var kills = 0
        for round in 0..<rounds {
            let triggerBefore = try checkpointed(conn, pipeline.schema, group: "herald-trigger")
            let shaperBefore = try checkpointed(conn, pipeline.schema, group: "herald-shaper")
            let chunk = messages[(messages.count * round / rounds)..<(messages.count * (round + 1) / rounds)]
            for m in chunk { try producer.send(topic: m.topic.rawValue, key: m.key, value: m.value) }
            try producer.flush(timeout: .seconds(60))
            #expect(try pipeline.await(timeout: 60) {
                try checkpointed(conn, pipeline.schema, group: "herald-trigger") > triggerBefore
                    && checkpointed(conn, pipeline.schema, group: "herald-shaper") > shaperBefore
            }, "no checkpoint in round \(round):\n\(pipeline.logs)")
            pipeline.kill9(trigger)
            pipeline.kill9(shaper)
            kills += 2
            let last = round == rounds - 1
            trigger = try pipeline.startWorker("herald-trigger", overrides: last ? [:] : eventTimeOnly)
            shaper = try pipeline.startWorker("herald-shaper", overrides: last ? [:] : eventTimeOnly)
        }
        #expect(kills == 8)
        let done = try pipeline.await(timeout: 240) { try PipelineRows.read(conn, schema: pipeline.schema) == replay }
        let live = try PipelineRows.read(conn, schema: pipeline.schema)
        #expect(done, "rows differ from replay after kills: \(ReplayRows.differences(expected: replay, live: live))\n\(pipeline.logs)")
        #expect(ReplayRows.differences(expected: replay, live: live) == "")
        let letters = try conn.execute("SELECT stage, reason, detail FROM \"\(pipeline.schema)\".dead_letters LIMIT 5").rows
        #expect(letters.isEmpty, "\(letters)")

        // A SIGTERM'd worker checkpoints the end of its input and exits 0; Kafka sees the same offsets.
        #expect(trigger.stop() == 0, "\(trigger.log.suffix(3000))")
        let total = messages.count
        #expect(try checkpointed(conn, pipeline.schema, group: "herald-trigger") == total)
        let reader = try KafkaOffsetReader(config: KafkaClientConfig(brokers: pipeline.bootstrapServers),
                                           groupID: "herald-trigger", logger: logger)
        let partitions = ["orders", "behavior"].flatMap { t in (0..<Int32(4)).map { TopicPartition(t, $0) } }
        let committed = try reader.committed(partitions, timeout: .seconds(10)).values.reduce(0) { $0 + Int($1) }
        #expect(committed == total)
    }

    @Test func inputsWithDifferentPartitionCountsAreRefused() throws {
        let cluster = try MockCluster(logger: logger)
        try cluster.createTopic("orders", partitions: 4)
        try cluster.createTopic("behavior", partitions: 2)
        for t in ["herald.candidates", "herald.outcomes", "herald.deadletter"] { try cluster.createTopic(t, partitions: 4) }
        let pipeline = try LocalPipeline(rules: RuleEngineEndToEndTests.cartRules, partitions: 4, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure(bootstrapServers: cluster.bootstrapServers)
        let trigger = try pipeline.startWorker("herald-trigger")
        #expect(throws: WorkerError.self) { _ = try pipeline.await(timeout: 60) { false } }
        #expect(trigger.exitCode != 0 && trigger.exitCode != nil)
        #expect(trigger.log.contains("orders") && trigger.log.contains("behavior") && trigger.log.contains("same partition count"),
                "\(trigger.log.suffix(2000))")
    }

    @Test func anAssignmentThatSplitsPartitionNumbersIsRefused() throws {
        let pipeline = try LocalPipeline(rules: RuleEngineEndToEndTests.cartRules, partitions: 2, logger: logger)
        defer { pipeline.stop() }
        for stage in ["herald-trigger", "herald-shaper"] {
            let worker = try pipeline.startWorker(stage, arguments: ["-X", "partition.assignment.strategy=roundrobin"],
                                                  overrides: ["HERALD_BROKERS": "127.0.0.1:1"])
            #expect(throws: WorkerError.self) { _ = try pipeline.await(timeout: 60) { false } }
            #expect(worker.exitCode != nil && worker.exitCode != 0)
            #expect(worker.log.contains("partition.assignment.strategy=roundrobin is not supported by \(stage)"), "\(worker.log.suffix(2000))")
            pipeline.kill9(worker)
        }
    }
}
