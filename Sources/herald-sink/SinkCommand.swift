import ArgumentParser
import HeraldRuntime

@main
struct SinkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: SinkStage.name, abstract: "Writes outcomes and dead letters to PostgreSQL in idempotent batches.")

    @OptionGroup var options: WorkerOptions
    @OptionGroup var sinkOptions: SinkOptions

    func run() async throws {
        let sink = try sinkOptions.resolve()
        try await WorkerMain.run(options, stage: SinkStage.name, needsRules: false) { config, rules, logger, stop in
            try SinkStage.run(config: config, sink: sink, logger: logger, stop: stop)
        }
    }
}
