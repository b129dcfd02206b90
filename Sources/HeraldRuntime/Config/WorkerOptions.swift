import ArgumentParser
import Foundation
import HeraldCore
import HeraldKafka
import Logging

/// Flags every worker takes (SPEC §9). Each also comes from an environment variable
/// (`--brokers` from `HERALD_BROKERS`, …); a flag wins over the environment.
public struct WorkerOptions: ParsableArguments, Sendable {
    @Option(help: "Kafka bootstrap servers, host:port[,host:port…] (env HERALD_BROKERS).")
    public var brokers: String?

    @Option(help: "PostgreSQL connection URL or key=value string (env HERALD_POSTGRES). Never logged.")
    public var postgres: String?

    @Option(help: "Rules file or directory (env HERALD_RULES).")
    public var rules: String?

    @Option(help: "Consumer group id (env HERALD_GROUP; default: the stage's name).")
    public var group: String?

    @Option(name: .customShort("X"), parsing: .unconditionalSingleValue,
            help: "librdkafka property key=value, repeatable: SASL, TLS, tuning (env HERALD_KAFKA_PROPERTIES, ';'-separated). Values are never logged.")
    public var kafkaProperties: [String] = []

    @Option(help: "Topic carrying order events (env HERALD_TOPIC_ORDERS).")
    public var topicOrders: String?
    @Option(help: "Topic carrying behavior events (env HERALD_TOPIC_BEHAVIOR).")
    public var topicBehavior: String?
    @Option(help: "Topic of candidates, trigger → shaper (env HERALD_TOPIC_CANDIDATES).")
    public var topicCandidates: String?
    @Option(help: "Topic of outcomes, shaper → sink and delivery (env HERALD_TOPIC_OUTCOMES).")
    public var topicOutcomes: String?
    @Option(help: "Topic of dead letters (env HERALD_TOPIC_DEADLETTER).")
    public var topicDeadletter: String?

    @Option(help: "PostgreSQL schema (env HERALD_SCHEMA).")
    public var schema: String?

    @Option(help: "Most messages handled per batch (env HERALD_BATCH_SIZE).")
    public var batchSize: Int?

    @Option(help: "Log level: trace, debug, info, notice, warning, error (env HERALD_LOG_LEVEL).")
    public var logLevel: String?

    @Option(help: "Log format: text (human-readable) or json (one object per line) (env HERALD_LOG_FORMAT).")
    public var logFormat: String?

    @Option(help: "Port of the HTTP endpoint serving /metrics, /healthz and /readyz; 0 turns it off (env HERALD_METRICS_PORT; default 9400).")
    public var metricsPort: Int?

    @Option(help: "How far the wall clock must pass a timer's due time on a caught-up partition before it fires, e.g. 5s (env HERALD_GRACE; default 5s).")
    public var grace: String?

    @Option(help: "How often per-user state is checkpointed with offsets, e.g. 10s (env HERALD_CHECKPOINT_INTERVAL; default 10s).")
    public var checkpointInterval: String?

    public init() {}

    static func env(_ name: String) -> String? {
        let v = ProcessInfo.processInfo.environment[name]
        return v?.isEmpty == false ? v : nil
    }

    /// A duration flag such as `5s`, `2m`, `1h`; nil when not given.
    static func span(_ text: String?, flag: String) throws -> TimeSpan? {
        guard let text else { return nil }
        guard let span = TimeSpan(parsing: text), span >= .zero else {
            throw ValidationError("\(flag) takes a duration such as 5s, 2m or 1h; got '\(text)'")
        }
        return span
    }

    /// The resolved configuration, flags over environment over defaults.
    public func resolve(stage: String) throws -> WorkerConfig {
        var c = WorkerConfig(stage: stage)
        c.brokers = brokers ?? Self.env("HERALD_BROKERS") ?? "localhost:9092"
        c.postgres = postgres ?? Self.env("HERALD_POSTGRES")
        c.rulesPath = rules ?? Self.env("HERALD_RULES")
        c.group = group ?? Self.env("HERALD_GROUP") ?? stage
        var props: [String: String] = [:]
        let envProps = Self.env("HERALD_KAFKA_PROPERTIES")?.split(separator: ";").map(String.init) ?? []
        for entry in envProps + kafkaProperties {
            guard let eq = entry.firstIndex(of: "="), eq != entry.startIndex else {
                throw ValidationError("-X takes key=value, got '\(Redaction.redactProperty(entry))'")
            }
            props[String(entry[..<eq])] = String(entry[entry.index(after: eq)...])
        }
        c.kafkaProperties = props
        c.topics.orders = topicOrders ?? Self.env("HERALD_TOPIC_ORDERS") ?? c.topics.orders
        c.topics.behavior = topicBehavior ?? Self.env("HERALD_TOPIC_BEHAVIOR") ?? c.topics.behavior
        c.topics.candidates = topicCandidates ?? Self.env("HERALD_TOPIC_CANDIDATES") ?? c.topics.candidates
        c.topics.outcomes = topicOutcomes ?? Self.env("HERALD_TOPIC_OUTCOMES") ?? c.topics.outcomes
        c.topics.deadletter = topicDeadletter ?? Self.env("HERALD_TOPIC_DEADLETTER") ?? c.topics.deadletter
        c.schema = schema ?? Self.env("HERALD_SCHEMA") ?? c.schema
        guard SQLIdentifier.isValid(c.schema) else {
            throw ValidationError("schema '\(c.schema)' must match [a-z_][a-z0-9_]* (at most 63 characters)")
        }
        if let b = batchSize ?? Self.env("HERALD_BATCH_SIZE").flatMap(Int.init) {
            guard b > 0 else { throw ValidationError("--batch-size must be positive") }
            c.batchSize = b
        }
        c.logLevel = logLevel ?? Self.env("HERALD_LOG_LEVEL") ?? "info"
        guard Logger.Level(rawValue: c.logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical; got '\(c.logLevel)'")
        }
        c.logFormat = logFormat ?? Self.env("HERALD_LOG_FORMAT") ?? "text"
        guard ["text", "json"].contains(c.logFormat) else {
            throw ValidationError("--log-format must be text or json, got '\(c.logFormat)'")
        }
        if let p = metricsPort ?? Self.env("HERALD_METRICS_PORT").map({ Int($0) ?? -1 }) {
            guard (0...65535).contains(p) else { throw ValidationError("--metrics-port must be 0…65535") }
            c.metricsPort = p
        }
        c.grace = try Self.span(grace ?? Self.env("HERALD_GRACE"), flag: "--grace") ?? c.grace
        c.checkpointInterval = try Self.span(checkpointInterval ?? Self.env("HERALD_CHECKPOINT_INTERVAL"),
                                             flag: "--checkpoint-interval") ?? c.checkpointInterval
        guard c.checkpointInterval > .zero else { throw ValidationError("--checkpoint-interval must be positive") }
        return c
    }
}

/// A worker's resolved configuration.
public struct WorkerConfig: Sendable {
    public var stage: String
    public var brokers = "localhost:9092"
    public var postgres: String?
    public var rulesPath: String?
    public var group: String
    public var kafkaProperties: [String: String] = [:]
    public var topics = TopicNames()
    public var schema = "herald"
    /// Most messages per batch: 5,000, and 20,000 for herald-sink, whose per-batch costs
    /// (transactions, rollup keys, offset commits) are worth amortising over more rows while
    /// it drains a backlog (docs/decisions.md, "The sink's batches"); `--flush-interval` bounds
    /// a batch's wait when traffic is light.
    public var batchSize = 5000
    public var logLevel = "info"
    public var logFormat = "text"
    /// 0: no HTTP endpoint.
    public var metricsPort = 9400
    /// How long past the wall clock a caught-up partition waits before its timers fire (SPEC §5).
    public var grace = TimeSpan.seconds(5)
    /// How often per-user state and offsets are checkpointed (issue 5).
    public var checkpointInterval: TimeSpan = .seconds(10)

    public init(stage: String) {
        self.stage = stage
        self.group = stage
        if stage == "herald-sink" { batchSize = Self.sinkBatchSize }
    }

    /// herald-sink's default `--batch-size`.
    public static let sinkBatchSize = 20_000

    public var kafka: KafkaClientConfig { KafkaClientConfig(brokers: brokers, properties: kafkaProperties) }
}
