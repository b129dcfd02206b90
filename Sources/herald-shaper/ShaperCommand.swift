import ArgumentParser
import HeraldRuntime

@main
struct ShaperCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: ShaperStage.name, abstract: "Decides on candidates (dedupe, opt-out, quiet hours, caps) and emits outcomes.")

    @OptionGroup var options: WorkerOptions

    func run() async throws {
        try await WorkerMain.run(options, stage: ShaperStage.name, needsRules: true) { config, rules, logger, stop in
            try ShaperStage.run(config: config, rules: rules!, logger: logger, stop: stop)
        }
    }
}
