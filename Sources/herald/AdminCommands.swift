import ArgumentParser
import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import HeraldRuntime
import Logging

/// Resolves the options, sets up logging and connects to PostgreSQL, for one-shot commands.
func connectToPostgres(_ options: WorkerOptions, stage: String) throws -> (WorkerConfig, PostgresConnection, Logger) {
    let config = try options.resolve(stage: stage)
    HeraldLogging.bootstrap(level: config.logLevel)
    let logger = Logger(label: stage)
    guard let conninfo = config.postgres else {
        throw ValidationError("no PostgreSQL: pass --postgres or set HERALD_POSTGRES")
    }
    return (config, try PostgresConnection(conninfo, logger: logger), logger)
}

struct MigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate", abstract: "Create or upgrade the PostgreSQL schema (versioned, idempotent).")

    @OptionGroup var options: WorkerOptions

    func run() throws {
        let (config, conn, logger) = try connectToPostgres(options, stage: "herald-migrate")
        let migrator = Migrator(schema: config.schema)
        let applied = try migrator.migrate(conn, logger: logger)
        let version = try migrator.currentVersion(conn)
        if applied.isEmpty {
            print("schema \(config.schema) is up to date at version \(version)")
        } else {
            print("schema \(config.schema) migrated to version \(version) (applied \(applied.map(String.init).joined(separator: ", ")))")
        }
        let created = try NotificationPartitions(schema: config.schema).ensureAhead(on: conn)
        print("notification partitions through \(NotificationPartitions.daysAhead) days ahead: \(created) created")
    }
}

struct RetentionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retention",
        abstract: "Drop whole daily partitions of notifications older than --keep (never row-by-row deletes).")

    @Option(help: "How much to keep, e.g. 90d: a partition is dropped once its whole day is older than now minus this.")
    var keep: String

    @Flag(help: "Only print what would be dropped.")
    var dryRun = false

    @OptionGroup var options: WorkerOptions

    func run() throws {
        guard let span = TimeSpan(parsing: keep), span > .zero else {
            throw ValidationError("--keep takes a positive duration such as 90d or 12h, got '\(keep)'")
        }
        let (config, conn, _) = try connectToPostgres(options, stage: "herald-retention")
        let cutoff = Timestamp.now - span
        let partitions = NotificationPartitions(schema: config.schema)
        let dropped: [String]
        if dryRun {
            dropped = try partitions.list(on: conn).filter { NotificationPartitions.endsAtOrBefore($0, cutoff) }
        } else {
            dropped = try partitions.drop(endingBefore: cutoff, on: conn)
        }
        let verb = dryRun ? "would drop" : "dropped"
        if dropped.isEmpty {
            print("nothing to drop: no partition of \(config.schema).notifications ends before \(cutoff.rfc3339)")
        } else {
            for name in dropped { print("\(verb) \(config.schema).\(name)") }
            print("\(verb) \(dropped.count) partition\(dropped.count == 1 ? "" : "s") ending before \(cutoff.rfc3339)")
        }
    }
}

struct TopicsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topics", abstract: "Manage Herald's Kafka topics.", subcommands: [Create.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create orders, behavior and the herald topics with the same partition count.")

        @Option(help: "Partitions of every topic.")
        var partitions: Int32

        @OptionGroup var options: WorkerOptions

        func run() throws {
            let config = try options.resolve(stage: "herald-topics")
            HeraldLogging.bootstrap(level: config.logLevel)
            guard partitions > 0 else { throw ValidationError("--partitions must be positive") }
            let admin = try KafkaAdmin(config: config.kafka, logger: Logger(label: "herald-topics"))
            // Existing topics first: a clear refusal names every topic whose count differs
            // (partition counts can only grow, and growing them moves users between workers).
            var existing: [String: Int32] = [:]
            for t in config.topics.all {
                if let n = try admin.partitionCount(topic: t, timeout: .seconds(30)) { existing[t] = n }
            }
            let wrong = config.topics.all.filter { existing[$0].map { $0 != partitions } ?? false }
            guard wrong.isEmpty else {
                Console.error("error: topics exist with other partition counts than --partitions \(partitions): "
                    + wrong.map { "\($0) has \(existing[$0]!)" }.joined(separator: ", ")
                    + ". Use --partitions \(existing[wrong[0]]!) or other topic names (--topic-orders, …).")
                throw ExitCode(2)
            }
            let missing = config.topics.all.filter { existing[$0] == nil }
            try admin.createTopics(missing.map { (name: $0, partitions: partitions) }, timeout: .seconds(30))
            for t in config.topics.all {
                print("\(t): \(partitions) partitions\(existing[t] == nil ? " (created)" : " (already there)")")
            }
        }
    }
}

struct RulesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rules", abstract: "Work with rules files.", subcommands: [Check.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a rules file or directory: every error with file:line:column; non-zero exit on any.")

        @Argument(help: "Rules file, or a directory of .yaml files merged by id.")
        var path: String

        func run() throws {
            let sources: [RulesLoader.Source]
            do {
                sources = try RulesFiles.sources(at: path)
            } catch {
                Console.error("\(error)")
                throw ExitCode(2)
            }
            switch RulesLoader.load(sources) {
            case .failure(let error):
                Console.error(error.description)
                Console.error("\(error.diagnostics.count) error\(error.diagnostics.count == 1 ? "" : "s")")
                throw ExitCode(1)
            case .success(let rules):
                Console.say("ok: \(rules.rules.count) rules, \(rules.templates.count) templates, version \(rules.version)")
                for rule in rules.rules {
                    Console.say("  \(rule.id): \(RuleSummary.describe(rule))")
                }
            }
        }
    }
}
