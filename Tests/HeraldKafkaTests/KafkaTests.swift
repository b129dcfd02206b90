import Foundation
import HeraldKafka
import Logging
import Testing

@Suite("HeraldKafka against librdkafka's mock cluster")
struct KafkaTests {
    @Test("produce keyed messages, consume each exactly once in order per partition")
    func produceAndConsume() async throws {
        let total = 400
        let (messages, extra) = try await onThread {
            let cluster = try MockCluster(logger: testLogger("mock"))
            let topic = unique("orders")
            try cluster.createTopic(topic, partitions: 4)
            let config = KafkaClientConfig(brokers: cluster.bootstrapServers)
            let producer = try KafkaProducer(config: config, logger: testLogger("producer"))
            for i in 0..<total {
                try producer.send(topic: topic, key: "user-\(i % 25)", value: "value-\(i)".bytes)
            }
            try producer.flush(timeout: .seconds(10))
            precondition(producer.inFlight == 0)

            let consumer = try KafkaConsumer(config: consumerConfig(cluster), groupID: unique("g"), topics: [topic], logger: testLogger("consumer"))
            let messages = try consumer.consume(count: total)
            // Nothing extra arrives afterwards.
            let extra = try consumer.poll(maxMessages: 100, timeout: .milliseconds(300))
            consumer.close()
            return (messages, extra)
        }

        #expect(messages.count == total)
        #expect(extra.isEmpty)
        let values = messages.map { $0.value.string }
        #expect(Set(values) == Set((0..<total).map { "value-\($0)" }))
        for message in messages {
            let i = Int(message.value.string.dropFirst("value-".count))!
            #expect(message.key?.string == "user-\(i % 25)")
            #expect(message.timestampMs != nil)
        }
        var partitionOfKey: [String: Int32] = [:]
        for message in messages {
            let key = message.key!.string
            #expect(partitionOfKey[key, default: message.partition] == message.partition, "key \(key) on two partitions")
            partitionOfKey[key] = message.partition
        }
        #expect(Set(partitionOfKey.values).count > 1, "keys should spread over partitions")
        for partition in Int32(0)..<4 {
            let offsets = messages.filter { $0.partition == partition }.map(\.offset)
            #expect(offsets == Array(0..<Int64(offsets.count)), "partition \(partition) offsets ascending, no gaps")
        }
    }

    @Test("a new consumer in the group resumes after the committed offsets")
    func commitAndResume() async throws {
        let committedOffsets: [TopicPartition: Int64] = [TopicPartition("commits", 0): 30, TopicPartition("commits", 1): 10]
        let (firstCount, stored, rest, extra) = try await onThread {
            let cluster = try MockCluster(logger: testLogger("mock"))
            let topic = "commits"
            try cluster.createTopic(topic, partitions: 2)
            let producer = try KafkaProducer(config: KafkaClientConfig(brokers: cluster.bootstrapServers), logger: testLogger("producer"))
            for i in 0..<100 {
                try producer.send(topic: topic, partition: Int32(i % 2), key: nil, value: "m\(i)".bytes)
            }
            try producer.flush(timeout: .seconds(10))

            let group = unique("g")
            let first = try KafkaConsumer(config: consumerConfig(cluster), groupID: group, topics: [topic], logger: testLogger("c1"))
            let all = try first.consume(count: 100)
            try first.commit(committedOffsets)
            let stored = try first.committed(Array(committedOffsets.keys), timeout: .seconds(5))
            first.close()
            first.close()  // idempotent

            let second = try KafkaConsumer(config: consumerConfig(cluster), groupID: group, topics: [topic], logger: testLogger("c2"))
            let rest = try second.consume(count: 60)
            let extra = try second.poll(maxMessages: 100, timeout: .milliseconds(300))
            return (all.count, stored, rest, extra)
        }
        #expect(firstCount == 100)
        #expect(stored == committedOffsets)
        #expect(rest.count == 60)
        #expect(extra.isEmpty)
        #expect(rest.filter { $0.partition == 0 }.map(\.offset) == Array(30..<50))
        #expect(rest.filter { $0.partition == 1 }.map(\.offset) == Array(10..<50))
    }

    struct RebalanceObservations: Sendable {
        var aAlone: [TopicPartition] = []
        var split = false
        var aSplit: [TopicPartition] = []
        var bSplit: [TopicPartition] = []
        var aSeen: [Seen] = []
        var aSeenAfterClose: [Seen] = []
        var bSeen: [Seen] = []
        var aAssignmentAfterClose: [TopicPartition] = []
        var bAfterClose: [TopicPartition] = []
        var pollAfterCloseThrew = false
    }

    @Test("two consumers split a topic; closing one hands everything to the other")
    func rebalance() async throws {
        let topic = "rebalance"
        let all = Set((0..<4).map { TopicPartition(topic, Int32($0)) })
        let seen = try await onThread {
            var seen = RebalanceObservations()
            let cluster = try MockCluster(logger: testLogger("mock"))
            try cluster.createTopic(topic, partitions: 4)
            let config = consumerConfig(cluster)
            let group = unique("g")
            let logA = RebalanceLog()
            let logB = RebalanceLog()
            let a = try KafkaConsumer(config: config, groupID: group, topics: [topic], logger: testLogger("a"), onRebalance: logA.handler())
            try pollUntil(step: { _ = try a.poll(maxMessages: 10, timeout: .milliseconds(100)) }) { a.assignment.count == 4 }
            seen.aAlone = a.assignment

            let b = try KafkaConsumer(config: config, groupID: group, topics: [topic], logger: testLogger("b"), onRebalance: logB.handler())
            seen.split = try pollUntil(step: {
                _ = try a.poll(maxMessages: 10, timeout: .milliseconds(50))
                _ = try b.poll(maxMessages: 10, timeout: .milliseconds(50))
            }) { a.assignment.count == 2 && b.assignment.count == 2 }
            seen.aSplit = a.assignment
            seen.bSplit = b.assignment
            seen.aSeen = logA.seen

            a.close()
            seen.aSeenAfterClose = logA.seen
            seen.aAssignmentAfterClose = a.assignment
            try pollUntil(step: { _ = try b.poll(maxMessages: 10, timeout: .milliseconds(100)) }) { b.assignment.count == 4 }
            seen.bAfterClose = b.assignment
            seen.bSeen = logB.seen
            seen.pollAfterCloseThrew = (try? a.poll(maxMessages: 1, timeout: .zero)) == nil
            return seen
        }
        #expect(Set(seen.aAlone) == all)
        #expect(seen.split)
        #expect(Set(seen.aSplit).union(seen.bSplit) == all)
        #expect(Set(seen.aSplit).isDisjoint(with: seen.bSplit))
        // Eager protocol: A got everything, gave it all back, got its half. (A loaded machine
        // can see one more revoke/assign round of the same half: the mock's group timers.)
        #expect(Array(seen.aSeen.prefix(2)) == [.assigned(all), .revoked(all)])
        #expect(seen.aSeen.last == .assigned(Set(seen.aSplit)))
        #expect(seen.aSeen.dropFirst(2).allSatisfy { $0 == .assigned(Set(seen.aSplit)) || $0 == .revoked(Set(seen.aSplit)) })
        #expect(seen.aSeenAfterClose == seen.aSeen + [.revoked(Set(seen.aSplit))], "close fires the final revoke")
        #expect(seen.aAssignmentAfterClose.isEmpty)
        #expect(Set(seen.bAfterClose) == all)
        #expect(seen.bSeen.first == .assigned(Set(seen.bSplit)))
        #expect(seen.bSeen.last == .assigned(all))
        #expect(seen.pollAfterCloseThrew)
    }

    @Test("range assignment keeps co-partitioned topics together")
    func coPartitioning() async throws {
        let (orders, behavior) = ("orders", "behavior")
        let (settled, assignments) = try await onThread {
            let cluster = try MockCluster(logger: testLogger("mock"))
            try cluster.createTopic(orders, partitions: 4)
            try cluster.createTopic(behavior, partitions: 4)
            let group = unique("g")
            let a = try KafkaConsumer(config: consumerConfig(cluster), groupID: group, topics: [orders, behavior], logger: testLogger("a"))
            let b = try KafkaConsumer(config: consumerConfig(cluster), groupID: group, topics: [orders, behavior], logger: testLogger("b"))
            let settled = try pollUntil(step: {
                _ = try a.poll(maxMessages: 10, timeout: .milliseconds(50))
                _ = try b.poll(maxMessages: 10, timeout: .milliseconds(50))
            }) { a.assignment.count == 4 && b.assignment.count == 4 }
            return (settled, [a.assignment, b.assignment])
        }
        #expect(settled)
        for mine in assignments {
            let orderPartitions = Set(mine.filter { $0.topic == orders }.map(\.partition))
            let behaviorPartitions = Set(mine.filter { $0.topic == behavior }.map(\.partition))
            #expect(orderPartitions.count == 2)
            #expect(orderPartitions == behaviorPartitions)
        }
        #expect(Set(assignments[0]).isDisjoint(with: assignments[1]))
    }

    @Test("offsets returned from onRebalance set the start position")
    func explicitStartOffsets() async throws {
        let (messages, extra, seen) = try await onThread {
            let cluster = try MockCluster(logger: testLogger("mock"))
            let topic = "start"
            try cluster.createTopic(topic, partitions: 1)
            let producer = try KafkaProducer(config: KafkaClientConfig(brokers: cluster.bootstrapServers), logger: testLogger("producer"))
            for i in 0..<10 {
                try producer.send(topic: topic, key: "k", value: "m\(i)".bytes)
            }
            try producer.flush(timeout: .seconds(10))

            let log = RebalanceLog()
            log.offsetsToReturn = [TopicPartition(topic, 0): 7]
            let consumer = try KafkaConsumer(config: consumerConfig(cluster), groupID: unique("g"), topics: [topic], logger: testLogger("c"), onRebalance: log.handler())
            let messages = try consumer.consume(count: 3)
            let extra = try consumer.poll(maxMessages: 10, timeout: .milliseconds(300))
            return (messages, extra, log.seen)
        }
        #expect(seen == [.assigned([TopicPartition("start", 0)])])
        #expect(messages.map(\.offset) == [7, 8, 9])
        #expect(messages.map { $0.value.string } == ["m7", "m8", "m9"])
        #expect(extra.isEmpty)
    }

    @Test("paused partitions deliver nothing until resumed")
    func pauseResume() async throws {
        let (before, whilePaused, resumed, marks) = try await onThread {
            let cluster = try MockCluster(logger: testLogger("mock"))
            let topic = "pause"
            try cluster.createTopic(topic, partitions: 2)
            let producer = try KafkaProducer(config: KafkaClientConfig(brokers: cluster.bootstrapServers), logger: testLogger("producer"))
            func produce(_ tag: String) throws {
                for i in 0..<5 {
                    for partition in Int32(0)..<2 {
                        try producer.send(topic: topic, partition: partition, key: nil, value: "\(tag)-\(partition)-\(i)".bytes)
                    }
                }
                try producer.flush(timeout: .seconds(10))
            }
            try produce("before")
            let consumer = try KafkaConsumer(config: consumerConfig(cluster), groupID: unique("g"), topics: [topic], logger: testLogger("c"))
            let before = try consumer.consume(count: 10)

            let paused = TopicPartition(topic, 0)
            try consumer.pause([paused])
            try produce("after")
            var whilePaused: [KafkaMessage] = []
            // Poll for a fixed window: we are checking that nothing arrives.
            try pollUntil(timeout: .milliseconds(1500), step: {
                whilePaused += try consumer.poll(maxMessages: 100, timeout: .milliseconds(100))
            }) { false }

            try consumer.resume([paused])
            let resumed = try consumer.consume(count: 5)
            let marks = try consumer.watermarks(paused, timeout: .seconds(5))
            return (before.count, whilePaused, resumed, [marks.low, marks.high])
        }
        #expect(before == 10)
        #expect(whilePaused.count == 5)
        #expect(whilePaused.allSatisfy { $0.partition == 1 })
        #expect(resumed.count == 5)
        #expect(resumed.allSatisfy { $0.partition == 0 })
        #expect(resumed.map(\.offset) == [5, 6, 7, 8, 9])
        #expect(marks == [0, 10])
    }

    @Test("admin creates topics, reports partition counts, rejects mismatches")
    func admin() async throws {
        let (counts, mismatch) = try await onThread {
            let cluster = try MockCluster(logger: testLogger("mock"))
            let admin = try KafkaAdmin(config: KafkaClientConfig(brokers: cluster.bootstrapServers), logger: testLogger("admin"))
            try admin.createTopics([(name: "a", partitions: 3), (name: "b", partitions: 5)], timeout: .seconds(10))
            try admin.createTopics([(name: "a", partitions: 3)], timeout: .seconds(10))
            var mismatch: KafkaError?
            do {
                try admin.createTopics([(name: "a", partitions: 4)], timeout: .seconds(10))
            } catch let error as KafkaError {
                mismatch = error
            }
            let counts = try ["a", "b", "missing", "missing"].map { try admin.partitionCount(topic: $0, timeout: .seconds(5)) }
            return (counts, mismatch)
        }
        #expect(counts == [3, 5, nil, nil])
        let error = try #require(mismatch)
        #expect(error.message.contains("a"))
        #expect(error.message.contains("exists with 3 partitions, wanted 4"))
    }

    @Test("send applies back-pressure when the local queue is full")
    func backPressure() async throws {
        let (maxInFlight, high) = try await onThread {
            let cluster = try MockCluster(logger: testLogger("mock"))
            let topic = "pressure"
            try cluster.createTopic(topic, partitions: 1)
            let config = KafkaClientConfig(brokers: cluster.bootstrapServers, properties: ["queue.buffering.max.messages": "10"])
            let producer = try KafkaProducer(config: config, logger: testLogger("producer"))
            var maxInFlight = 0
            for i in 0..<1000 {
                try producer.send(topic: topic, key: "k\(i)", value: "v\(i)".bytes)
                maxInFlight = max(maxInFlight, producer.inFlight)
            }
            try producer.flush(timeout: .seconds(20))
            let consumer = try KafkaConsumer(config: consumerConfig(cluster), groupID: unique("g"), topics: [topic], logger: testLogger("c"))
            let marks = try consumer.watermarks(TopicPartition(topic, 0), timeout: .seconds(5))
            return (maxInFlight, marks.high)
        }
        #expect(maxInFlight <= 20, "the local queue bound holds")
        #expect(high == 1000)
    }

    @Test("a delivery failure surfaces from flush, once")
    func deliveryErrorFromFlush() async throws {
        let (failure, secondFlush, recovered) = try await onThread {
            let cluster = try MockCluster(logger: testLogger("mock"))
            let topic = "down"
            try cluster.createTopic(topic, partitions: 1)
            let config = KafkaClientConfig(brokers: cluster.bootstrapServers, properties: [
                "message.timeout.ms": "1500",
                // Reconnect quickly once the broker is back (default backoff grows to 10 s).
                "reconnect.backoff.max.ms": "200",
            ])
            let producer = try KafkaProducer(config: config, logger: testLogger("producer"))
            try producer.send(topic: topic, key: "k", value: "ok".bytes)
            try producer.flush(timeout: .seconds(10))

            try cluster.setBrokerDown(1)
            for i in 0..<5 {
                try producer.send(topic: topic, key: "k", value: "lost-\(i)".bytes)
            }
            var failure: KafkaError?
            do { try producer.flush(timeout: .seconds(10)) } catch let error as KafkaError { failure = error }
            // Reported once: the next flush has nothing to report.
            var secondFlush: KafkaError?
            do { try producer.flush(timeout: .seconds(5)) } catch let error as KafkaError { secondFlush = error }

            try cluster.setBrokerUp(1)
            // The first attempt may still time out while the client reconnects.
            var recovered: KafkaError?
            for _ in 0..<3 {
                try producer.send(topic: topic, key: "k", value: "again".bytes)
                do {
                    try producer.flush(timeout: .seconds(15))
                    recovered = nil
                    break
                } catch let error as KafkaError { recovered = error }
            }
            return (failure, secondFlush, recovered)
        }
        let error = try #require(failure, "flush must report the failed deliveries")
        #expect(error.isTimeout, "expected a message timeout, got \(error)")
        #expect(secondFlush == nil, "\(String(describing: secondFlush))")
        #expect(recovered == nil, "\(String(describing: recovered))")
    }

    @Test("invalid configuration is rejected without echoing secrets")
    func configErrors() async throws {
        let secret = "hunter2-very-secret"
        var rejected: KafkaError?
        do {
            _ = try KafkaProducer(
                config: KafkaClientConfig(brokers: "127.0.0.1:1", properties: ["sasl.oauthbearer.method": secret]),
                logger: testLogger("producer")
            )
        } catch let error as KafkaError {
            rejected = error
        }
        let error = try #require(rejected, "an invalid enum value must throw")
        #expect(!error.description.contains(secret))
        #expect(error.description.contains("sasl.oauthbearer.method"))
        #expect(throws: KafkaError.self) {
            _ = try KafkaProducer(config: KafkaClientConfig(brokers: "127.0.0.1:1", properties: ["no.such.property": "1"]), logger: testLogger("p"))
        }
    }
}

@Test("secrets never reach the log, not even through librdkafka's own warnings")
func secretsAreRedactedInLogs() async throws {
    let store = CapturingLogHandler.Store()
    let logger = Logger(label: "capture") { _ in CapturingLogHandler(store: store) }
    let secret = "hunter2-very-secret"
    try await onThread {
        // librdkafka's CONFWARN quotes sasl.mechanism's value when SASL is not enabled.
        let producer = try KafkaProducer(
            config: KafkaClientConfig(
                brokers: "127.0.0.1:1",
                properties: ["sasl.mechanism": secret, "sasl.password": secret + "-pw", "ssl.key.password": "s3cr3t!"]
            ),
            logger: logger
        )
        producer.poll()
    }
    let lines = store.lines.withLock { $0 }
    #expect(lines.contains { $0.contains("<redacted>") }, "the configuration dump and CONFWARN are logged, redacted")
    #expect(!lines.contains { $0.contains(secret) || $0.contains("s3cr3t!") }, "\(lines.filter { $0.contains(secret) })")
}
