import ArgumentParser
import HeraldCore
import Logging

/// The shared `main` of the worker executables: resolve configuration, start logging,
/// validate the rules file (refusing to start on any error), then run the stage as a
/// service until it stops or a signal asks it to.
public enum WorkerMain {
    public static func run(
        _ options: WorkerOptions, stage: String, needsRules: Bool,
        body: @escaping @Sendable (WorkerConfig, RuleSet?, Logger, StopSignal) throws -> Void
    ) async throws {
        let stop = StopSignal()
        let signals = stopOnTerminationSignals(stop)
        defer { signals.forEach { $0.cancel() } }
        let config = try options.resolve(stage: stage)
        HeraldLogging.bootstrap(level: config.logLevel, format: config.logFormat)
        var logger = Logger(label: stage)
        logger[metadataKey: "stage"] = "\(stage)"
        logger.info("starting", metadata: config.loggable)
        let observability = Observability.start(config: config, logger: logger)
        defer { observability.stop() }
        var rules: RuleSet?
        if needsRules {
            let loaded = try RulesFiles.load(config.rulesPath)
            logger.info("rules loaded", metadata: ["rules": "\(loaded.rules.count)", "version": "\(loaded.version)"])
            rules = loaded
        }
        let log = logger
        let ruleSet = rules
        let code = await WorkerService.main(name: stage, logger: log, stop: stop) { stop in
            try body(config, ruleSet, log, stop)
        }
        if code != 0 { throw ExitCode(code) }
    }
}
