import ArgumentParser
import HeraldRuntime

@main
struct TriggerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: TriggerStage.name, abstract: "Evaluates rules over orders and behavior events and emits candidates.")

    @OptionGroup var options: WorkerOptions

    func run() async throws {
        try await WorkerMain.run(options, stage: TriggerStage.name, needsRules: true) { config, rules, logger, stop in
            try TriggerStage.run(config: config, rules: rules!, logger: logger, stop: stop)
        }
    }
}
