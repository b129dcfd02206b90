import ArgumentParser
import Foundation
import HeraldKafka
import HeraldRuntime
import Logging

struct BrokerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker",
        abstract: "A development Kafka broker: librdkafka's mock cluster (real protocol, in memory, short retention). Never for production.")

    @Option(help: "Partitions of every Herald topic it creates.")
    var partitions: Int32 = 8

    @Option(help: "Number of mock brokers.")
    var brokers: Int = 1

    @Option(help: "Write the bootstrap servers to this file once ready.")
    var bootstrapFile: String?

    @Option(help: "Log level.")
    var logLevel: String = "info"

    func run() async throws {
        HeraldLogging.bootstrap(level: logLevel)
        let logger = Logger(label: "herald-broker")
        let partitions = self.partitions
        let brokers = self.brokers
        let bootstrapFile = self.bootstrapFile
        let code = await WorkerService.main(name: "herald-broker", logger: logger) { stop in
            let cluster = try MockCluster(brokers: brokers, logger: logger)
            for topic in TopicNames().all {
                try cluster.createTopic(topic, partitions: partitions)
            }
            Console.say("bootstrap servers: \(cluster.bootstrapServers)")
            Console.say("topics: \(TopicNames().all.joined(separator: ", ")) (\(partitions) partitions each)")
            if let bootstrapFile {
                let tmp = bootstrapFile + ".tmp"
                try cluster.bootstrapServers.write(toFile: tmp, atomically: false, encoding: .utf8)
                _ = rename(tmp, bootstrapFile)
            }
            while stop.sleep(3600) {}
            withExtendedLifetime(cluster) {}
        }
        if code != 0 { throw ExitCode(code) }
    }
}
