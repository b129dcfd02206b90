import Foundation
import HeraldCore
import HeraldKafka
import Logging

/// herald-trigger: orders + behavior → rule evaluation → herald.candidates.
public enum TriggerStage {
    public static let name = "herald-trigger"

    public static func run(config: WorkerConfig, rules: RuleSet, logger: Logger, stop: StopSignal) throws {
        let topics = config.topics
        _ = try TopicCheck.waitForTopics([topics.orders, topics.behavior], coPartitioned: true,
                                         config: config, logger: logger, stop: stop)
        var engine = TriggerEngine(rules: rules)
        let stage = StreamStage(config: config, inputs: [topics.orders, topics.behavior], logger: logger) { message, out in
            guard let logical = topics.logical(message.topic) else { return }
            switch EventDecoder.decode(message.value, topic: logical) {
            case .failure(let rejection):
                logger.debug("dead-lettered an event", metadata: [
                    "topic": "\(message.topic)", "partition": "\(message.partition)",
                    "offset": "\(message.offset)", "reason": "\(rejection)",
                ])
                let letter = DeadLetter(stage: name, reason: rejection.reason, detail: rejection.detail, message: message)
                out.append(OutputRecord(topic: topics.deadletter, key: message.key, value: letter.json))
            case .success(let event):
                for candidate in engine.process(event) {
                    HeraldMetrics.fired(candidate)
                    out.append(OutputRecord(topic: topics.candidates, key: Array(candidate.userID.utf8), value: candidate.json))
                }
            }
        }
        try stage.run(stop: stop)
    }
}

/// herald-shaper: herald.candidates → shaping → herald.outcomes.
public enum ShaperStage {
    public static let name = "herald-shaper"

    public static func run(config: WorkerConfig, rules: RuleSet, logger: Logger, stop: StopSignal) throws {
        let topics = config.topics
        _ = try TopicCheck.waitForTopics([topics.candidates], coPartitioned: false, config: config, logger: logger, stop: stop)
        var shaper = Shaper(rules: rules)
        let stage = StreamStage(config: config, inputs: [topics.candidates], logger: logger) { message, out in
            let candidate: Candidate
            do throws(MessageDecodingError) {
                candidate = try Candidate(json: message.value)
            } catch {
                let letter = DeadLetter(stage: name, reason: "invalid_candidate", detail: error.message, message: message)
                out.append(OutputRecord(topic: topics.deadletter, key: message.key, value: letter.json))
                return
            }
            for outcome in shaper.process(candidate) {
                HeraldMetrics.decided(outcome)
                out.append(OutputRecord(topic: topics.outcomes, key: Array(outcome.userID.utf8), value: outcome.json))
            }
        }
        try stage.run(stop: stop)
    }
}

extension Timestamp {
    /// The wall clock.
    public static var now: Timestamp {
        Timestamp(microseconds: Int64((Date().timeIntervalSince1970 * 1_000_000).rounded()))
    }
}
