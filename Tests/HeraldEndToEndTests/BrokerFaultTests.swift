import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import HeraldRuntime
import Logging
import Testing

/// Issue 9, item 1 (short form for scripts/test): the workers run as processes against an
/// in-process mock cluster of 3 brokers whose faults the test injects while traffic flows;
/// the final rows equal those computed by the same core logic without any fault. Last, every
/// worker is killed with SIGKILL mid-batch and restarted.
@Suite(.serialized) struct BrokerFaultTests {
    let logger = Logger(label: "faults")

    // Kafka ApiKeys and error codes (Kafka protocol).
    static let produce: Int16 = 0, fetch: Int16 = 1, offsetCommit: Int16 = 8, joinGroup: Int16 = 11
    static let notLeader: Int32 = 6, requestTimedOut: Int32 = 7, coordinatorLoading: Int32 = 14,
               coordinatorNotAvailable: Int32 = 15, notCoordinator: Int32 = 16

    @Test func brokerFaultsLoseAndDoubleNothing() throws {
        let cluster = try MockCluster(brokers: 3, logger: logger)
        for topic in TopicNames().all { try cluster.createTopic(topic, partitions: 4) }
        let pipeline = try LocalPipeline(rules: PipelineEndToEndTests.rules, partitions: 4, logger: logger)
        defer { pipeline.stop() }
        try pipeline.startInfrastructure(bootstrapServers: cluster.bootstrapServers)
        try pipeline.startWorkers()

        let ruleSet = try RulesLoader.load(yaml: PipelineEndToEndTests.rules).get()
        var engine = TriggerEngine(rules: ruleSet)
        var shaper = Shaper(rules: ruleSet)
        var expected: [String: Outcome] = [:]
        let producer = try pipeline.producer()
        var traffic = ShopTraffic(users: 300, seed: 23)
        var i = 0
        func send(_ n: Int) throws {
            for _ in 0..<n {
                let m = traffic.make(.orders, "payment_failed", user: i % 300)
                let event = try EventDecoder.decode(m.value, topic: .orders).get()
                for c in engine.process(event).compactMap(\.candidate) {
                    for o in shaper.process(c) { expected[o.notificationID] = o }
                }
                try producer.send(topic: "orders", key: m.key, value: m.value)
                i += 1
            }
        }
        let conn = try pipeline.connect()
        let s = "\"\(pipeline.schema)\""
        func rows() throws -> Int { Int(try conn.execute("SELECT count(*) FROM \(s).notifications")[0, 0]!)! }
        func drained() throws -> Bool {
            try producer.flush(timeout: .seconds(60))
            return try pipeline.await(timeout: 180) { try rows() == expected.count }
        }

        var faults: [String] = []
        // 1. Undisturbed start.
        try send(300)
        #expect(try drained(), "start:\n\(pipeline.logs)")
        // 2. Produce, fetch, commit and join requests fail (retriable codes).
        cluster.pushRequestErrors(apiKey: Self.produce, errors: [Self.notLeader, Self.requestTimedOut, Self.notLeader])
        cluster.pushRequestErrors(apiKey: Self.fetch, errors: [Self.notLeader, Self.notLeader])
        cluster.pushRequestErrors(apiKey: Self.offsetCommit, errors: [Self.coordinatorLoading, Self.notCoordinator])
        cluster.pushRequestErrors(apiKey: Self.joinGroup, errors: [Self.coordinatorNotAvailable])
        try send(300)
        #expect(try drained(), "request errors:\n\(pipeline.logs)")
        faults.append("request errors")
        // 3. Leaders move while traffic flows.
        try send(150)
        for (n, topic) in TopicNames().all.enumerated() {
            for p in 0..<Int32(4) { try cluster.setPartitionLeader(topic: topic, partition: p, brokerID: Int32(1 + (n + Int(p)) % 3)) }
        }
        try send(150)
        #expect(try drained(), "leader changes:\n\(pipeline.logs)")
        faults.append("leader changes")
        // 4. A broker goes down for a few seconds (the fault's length, not a wait for a condition).
        for b: Int32 in [2, 3] {
            try cluster.setBrokerDown(b)
            try send(150)
            Thread.sleep(forTimeInterval: 3)
            try cluster.setBrokerUp(b)
            #expect(try drained(), "broker \(b) down:\n\(pipeline.logs)")
            faults.append("broker \(b) down 3 s")
        }

        // 5. Every worker killed with SIGKILL while a batch is in flight, then restarted:
        //    they resume from the committed offsets and the sink upserts repeated ids.
        let before = try rows()
        try send(300)
        try producer.flush(timeout: .seconds(60))
        #expect(try pipeline.await(timeout: 120) { try rows() > before }, "\(pipeline.logs)")
        for w in pipeline.workers { pipeline.kill9(w) }
        try pipeline.startWorkers()
        // The replacements have rejoined (partitions assigned, brokers and PostgreSQL answering).
        for w in pipeline.workers {
            #expect(try pipeline.await(timeout: 120) {
                HTTPGet.local(port: pipeline.metricsPorts[w.name]!, path: "/readyz")?.status == 200
            }, "\(w.name) never ready:\n\(w.log.suffix(3000))")
        }
        #expect(try drained(), "kill -9:\n\(pipeline.logs)")
        faults.append("kill -9 of every worker")

        let got = try conn.execute("SELECT id, status FROM \(s).notifications").rows
        #expect(got.count == expected.count && expected.count == i)
        #expect(Set(got.compactMap { $0[0] }) == Set(expected.keys))
        #expect(got.allSatisfy { $0[1] == "sent" })
        #expect(try conn.execute("SELECT count(*) FROM \(s).dead_letters")[0, 0] == "0")
        #expect(faults.count == 5)
        let codes = pipeline.stop()
        #expect(codes.values.allSatisfy { $0 == 0 }, "\(codes)")
    }
}
