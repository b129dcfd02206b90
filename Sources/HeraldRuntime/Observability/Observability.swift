import Logging

/// A worker's HTTP endpoint and readiness probes, for the life of `WorkerMain.run`.
struct Observability {
    let server: MetricsServer?
    let probes: StopSignal

    static func start(config: WorkerConfig, logger: Logger) -> Observability {
        let probes = StopSignal()
        Health.shared.startProbes(config: config, topic: config.topics.outcomes, logger: logger, stop: probes)
        guard config.metricsPort != 0 else { return Observability(server: nil, probes: probes) }
        do {
            let server = try MetricsServer(port: config.metricsPort, registry: HeraldMetrics.registry,
                                           health: Health.shared, logger: logger)
            return Observability(server: server, probes: probes)
        } catch {
            // The work matters more than its metrics; /healthz failing to answer makes
            // the orchestrator notice (docs/decisions.md).
            logger.error("no metrics endpoint", metadata: ["error": "\(error)"])
            return Observability(server: nil, probes: probes)
        }
    }

    func stop() {
        probes.set()
        server?.shutdown()
    }
}

extension WorkerConfig {
    /// The configuration as log metadata, secrets redacted.
    public var loggable: Logger.Metadata {
        var m: Logger.Metadata = [
            "brokers": "\(brokers)", "group": "\(group)", "schema": "\(schema)",
            "topics": "\(topics.all.joined(separator: ","))", "batch_size": "\(batchSize)",
            "metrics_port": "\(metricsPort)", "grace": "\(grace)", "checkpoint_interval": "\(checkpointInterval)",
        ]
        if let postgres { m["postgres"] = "\(Redaction.postgres(postgres))" }
        if let rulesPath { m["rules"] = "\(rulesPath)" }
        if !kafkaProperties.isEmpty {
            m["kafka_properties"] = "\(kafkaProperties.keys.sorted().map { Redaction.redactProperty("\($0)=\(kafkaProperties[$0]!)") }.joined(separator: ","))"
        }
        return m
    }
}
