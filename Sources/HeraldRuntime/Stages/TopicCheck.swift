import HeraldKafka
import Logging

enum TopicCheck {
    /// Waits until the broker answers and every topic exists; with `coPartitioned`, refuses
    /// to start when their partition counts differ (SPEC §1).
    static func waitForTopics(_ topics: [String], coPartitioned: Bool, config: WorkerConfig,
                              logger: Logger, stop: StopSignal) throws -> [String: Int32] {
        let admin = try KafkaAdmin(config: config.kafka, logger: logger)
        var backoff = Backoff(initial: 0.5, max: 10)
        while !stop.isSet {
            do {
                var counts: [String: Int32] = [:]
                var missing: [String] = []
                for t in topics {
                    if let n = try admin.partitionCount(topic: t, timeout: .seconds(5)) {
                        counts[t] = n
                    } else {
                        missing.append(t)
                    }
                }
                if missing.isEmpty {
                    if coPartitioned, Set(counts.values).count > 1 {
                        let listing = topics.map { "\($0) has \(counts[$0]!)" }.joined(separator: ", ")
                        throw WorkerError.configuration(
                            "topics read together must have the same partition count, so that one worker owns all events of a user: \(listing)")
                    }
                    return counts
                }
                let delay = backoff.take()
                logger.warning("waiting for topics to exist (create them with `herald topics create`)", metadata: [
                    "missing": "\(missing.joined(separator: ","))", "retry_in_s": "\(delay)",
                ])
                stop.sleep(delay)
            } catch let error as WorkerError {
                throw error
            } catch {
                let delay = backoff.take()
                logger.warning("waiting for the Kafka brokers", metadata: [
                    "brokers": "\(config.brokers)", "error": "\(error)", "retry_in_s": "\(delay)",
                ])
                stop.sleep(delay)
            }
        }
        return [:]
    }
}
