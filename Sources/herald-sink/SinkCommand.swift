import ArgumentParser
import HeraldRuntime

@main
struct SinkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: SinkStage.name, abstract: "Writes outcomes and dead letters to PostgreSQL in idempotent batches.")

    @OptionGroup var options: WorkerOptions

    func run() async throws {
        try await WorkerMain.run(options, stage: SinkStage.name, needsRules: false) { config, rules, logger, stop in
            try SinkStage.run(config: config, logger: logger, stop: stop)
        }
    }
}
