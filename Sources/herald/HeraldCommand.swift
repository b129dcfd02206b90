import ArgumentParser
import HeraldRuntime

@main
struct HeraldCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "herald",
        abstract: "Herald: timely, deduplicated customer-service messages from shop event streams.",
        subcommands: [DevCommand.self, BrokerCommand.self, MigrateCommand.self, RetentionCommand.self, TopicsCommand.self,
                      RulesCommand.self, ReplayCommand.self, LoadgenCommand.self, StatsCommand.self])
}
