import ArgumentParser
import Foundation
import HeraldCore
import HeraldRuntime
import Logging

/// Benchmarks, each measured against its ceiling in the same run (`scripts/bench`).
@main
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "herald-bench", abstract: "Herald benchmarks, each against a ceiling measured in the same run.",
        subcommands: [SinkBench.self, TriggerLogicBench.self, TriggerBench.self, ShapeLogicBench.self, CheckpointCodecBench.self,
                      RestoreBench.self, SoakCommand.self, ChaosCommand.self])
}

/// Where every subcommand records its numbers.
struct ReportOptions: ParsableArguments {
    @Option(help: "Results file; keys are merged with what is there.")
    var results = "bench/results.json"

    @Option(help: "Markdown file whose results table is rewritten.")
    var report = "docs/performance.md"

    func record(_ values: [String: Any]) throws {
        let command = ProcessInfo.processInfo.environment["HERALD_BENCH_COMMAND"]
            ?? (["herald-bench"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
        try BenchReport(resultsPath: results, markdownPath: report).record(values, command: command)
        print("results in \(results); table in \(report)")
    }
}

struct SinkBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sink",
        abstract: "Raw COPY of N notification rows (the ceiling) and herald-sink draining N outcomes from Kafka.")

    @Option(help: "Rows in each measurement.")
    var rows = 1_000_000

    @Option(help: "Partitions of the broker's topics (0: enough that the mock broker's retention drops nothing).")
    var partitions = 0

    @Option(help: "herald-sink --batch-size.")
    var batchSize = 5000

    @Option(help: "Log level.")
    var logLevel = "warning"

    @OptionGroup var output: ReportOptions

    func run() throws {
        HeraldLogging.bootstrap(level: logLevel)
        let result = try SinkBenchmark(rows: rows, partitions: partitions, batchSize: batchSize,
                                       logger: Logger(label: "herald-bench")).run()
        print(String(format: "copy ceiling: %.0f rows/s (%.2f s)", result.copyCeilingRPS, result.copySeconds))
        print(String(format: "herald-sink:  %.0f rows/s (%.2f s after %.2f s to its first batch, %d partitions)",
                     result.sinkRPS, result.sinkSeconds, result.sinkStartupSeconds, result.partitions))
        print(String(format: "sink_ratio:   %.3f (target ≥ 0.5)", result.sinkRatio))
        try output.record([
            "copy_ceiling_rps": result.copyCeilingRPS.rounded(), "sink_rps": result.sinkRPS.rounded(),
            "sink_ratio": (result.sinkRatio * 1000).rounded() / 1000, "sink_rows": result.rows,
            "sink_partitions": result.partitions, "sink_startup_s": (result.sinkStartupSeconds * 100).rounded() / 100,
        ])
    }
}

struct TriggerLogicBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trigger-logic",
        abstract: "The trigger's parsing and rule evaluation on one core with the SPEC §3 rules file, and its state per user.")

    @Option(help: "Events to process.")
    var events = 3_000_000

    @Option(help: "Distinct users.")
    var users = 1_000_000

    @Option(help: "Rules file.")
    var rules = "deploy/rules/herald.yaml"

    @OptionGroup var output: ReportOptions

    func run() throws {
        let ruleSet = try RulesFiles.load(rules)
        let r = try withLargeStack { try TriggerLogicBenchmark(rules: ruleSet, events: events, users: users).run() }
        print(String(format: "%d events of %d bytes on average, %d users (%d with state)", r.events, r.averageBytes, r.users, r.usersWithState))
        print(String(format: "parse:            %.0f events/s", r.parseEPS))
        print(String(format: "trigger logic:    %.0f events/s (target ≥ 1,000,000); %.1f%% produce candidates", r.triggerEPS, r.candidateShare * 100))
        print(String(format: "parse + trigger:  %.0f events/s (target ≥ 400,000)", r.parseAndTriggerEPS))
        print(String(format: "state:            %.0f bytes per user (target ≤ 256)", r.stateBytesPerUser))
        try output.record([
            "trigger_logic_eps": r.triggerEPS.rounded(), "parse_eps": r.parseEPS.rounded(),
            "parse_trigger_eps": r.parseAndTriggerEPS.rounded(), "trigger_candidate_share": (r.candidateShare * 1000).rounded() / 1000,
            "state_bytes_per_user": r.stateBytesPerUser.rounded(), "trigger_logic_users": r.users,
        ])
    }
}

struct TriggerBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trigger",
        abstract: "The consume ceiling (a minimal consumer-group loop) and one herald-trigger process draining the same events.")

    @Option(help: "Events in each measurement.")
    var events = 1_000_000

    @Option(help: "Distinct users.")
    var users = 100_000

    @Option(help: "Rules file.")
    var rules = "deploy/rules/herald.yaml"

    @Option(help: "Log level.")
    var logLevel = "warning"

    @OptionGroup var output: ReportOptions

    func run() throws {
        HeraldLogging.bootstrap(level: logLevel)
        let r = try TriggerThroughputBenchmark(events: events, users: users, rulesPath: rules,
                                               logger: Logger(label: "herald-bench")).run()
        print(String(format: "consume ceiling: %.0f events/s (%.2f s, %d partitions per topic)", r.consumeCeilingEPS, r.consumeSeconds, r.partitions))
        print(String(format: "herald-trigger:  %.0f events/s (%.2f s)", r.triggerEPS, r.triggerSeconds))
        print(String(format: "trigger_ratio:   %.3f (target ≥ 0.5)", r.triggerRatio))
        try output.record([
            "consume_ceiling_eps": r.consumeCeilingEPS.rounded(), "trigger_eps": r.triggerEPS.rounded(),
            "trigger_ratio": (r.triggerRatio * 1000).rounded() / 1000, "trigger_events": r.events,
            "trigger_partitions": r.partitions,
        ])
    }
}

struct ShapeLogicBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shape-logic",
        abstract: "The shaper's seven steps on one core with the SPEC §3 policies (quiet hours, caps, dedupe, merge, A/B).")

    @Option(help: "Candidates to shape.")
    var candidates = 1_000_000

    @Option(help: "Distinct users.")
    var users = 200_000

    @Option(help: "Rules file.")
    var rules = "deploy/rules/herald.yaml"

    @OptionGroup var output: ReportOptions

    func run() throws {
        let ruleSet = try RulesFiles.load(rules)
        let r = ShapeLogicBenchmark(rules: ruleSet, candidates: candidates, users: users).run()
        print(String(format: "%d candidates, %d users, %d outcomes", r.candidates, r.users, r.outcomes))
        print(String(format: "shape logic: %.0f candidates/s (target ≥ 500,000)", r.shapeCPS))
        for (k, v) in r.byStatus.sorted(by: { $0.key < $1.key }) { print("  \(k): \(v)") }
        try output.record(["shape_logic_cps": r.shapeCPS.rounded(), "shape_logic_candidates": r.candidates])
    }
}

struct SoakCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "The whole pipeline under steady traffic: memory per worker, lag per stage, and lost notifications (must be 0).")

    @Option(help: "How long to send traffic, e.g. 10m.")
    var duration = "10m"

    @Option(help: "Events per second.")
    var rate = 500

    @Option(help: "Distinct users.")
    var users = 20_000

    @Option(help: "Partitions per topic.")
    var partitions = 8

    func run() throws {
        HeraldLogging.bootstrap(level: "warning")
        guard let span = TimeSpan(parsing: duration), span > .zero else { throw ValidationError("--duration such as 10m") }
        let r = try withLargeStack {
            try Soak(duration: span, rate: rate, users: users, partitions: partitions, logger: Logger(label: "herald-soak")).run()
        }
        let first = r.samples.first(where: { $0.elapsed >= 30 }) ?? r.samples.first
        let last = r.samples.last
        print("")
        print(String(format: "sent %d events in %.0f s (%.0f/s); drained in %.1f s after the last", r.events, r.seconds,
                     Double(r.events) / r.seconds, r.drainSeconds))
        print("| worker | RSS after 30 s | RSS at the end | growth |")
        print("|---|---|---|---|")
        for name in (last?.rssMiB.keys.sorted() ?? []) {
            let a = first?.rssMiB[name] ?? 0, b = last?.rssMiB[name] ?? 0
            print("| \(name) | " + String(format: "%.0f MiB | %.0f MiB | %+.0f MiB |", a, b, b - a))
        }
        var maxLag: [String: Int64] = [:]
        for sample in r.samples { for (k, v) in sample.lag { maxLag[k] = max(maxLag[k] ?? 0, v) } }
        print("max lag: " + maxLag.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        print("notifications replay expects: \(r.expected); lost: \(r.lost); unexpected: \(r.unexpected); dead letters: \(r.deadLetters)")
        if r.lost > 0 || r.unexpected > 0 { throw ExitCode(1) }
    }
}

struct ChaosCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos",
        abstract: "The pipeline under traffic while workers are killed (-9), started and scaled 1–3 per stage; rows must equal replay's.",
        discussion: """
            The schedule of kills, starts and scale changes comes from --seed (printed; the same seed gives the same \
            schedule). At the end every notification, conversion, escalation and engagement row in PostgreSQL is \
            compared with `herald replay` of the same events; any missing, extra or changed row exits 1.
            """)

    @Option(help: "Events to send.")
    var events = 50_000

    @Option(help: "Events per second.")
    var rate = 400

    @Option(help: "Distinct users.")
    var users = 2_000

    @Option(help: "Partitions per topic.")
    var partitions = 8

    @Option(help: "Seed of the traffic and the schedule (default: random, printed).")
    var seed: UInt64?

    @Option(help: "Chaos actions over the run: per stage two of three are kill -9, the third a scale change.")
    var actions = 45

    @Option(help: "Stages to kill and scale, comma-separated: trigger, shaper, sink.")
    var disturb = "trigger,shaper,sink"

    @Flag(help: "Send profile_updated events too (their order against orders events is not event time in herald-trigger).")
    var profileUpdates = false

    func run() throws {
        HeraldLogging.bootstrap(level: "warning")
        var o = Chaos.Options()
        o.events = events
        o.rate = rate
        o.users = users
        o.partitions = partitions
        o.seed = seed ?? UInt64.random(in: 1...999_999)
        o.actions = actions
        o.profileUpdates = profileUpdates
        o.disturb = try disturb.split(separator: ",").map { name in
            guard let stage = Chaos.Stage(rawValue: "herald-" + name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--disturb takes trigger, shaper and sink")
            }
            return stage
        }
        let options = o
        let r = try withLargeStack { try Chaos(options: options, logger: Logger(label: "herald-chaos")).run() }
        print("")
        print(String(format: "seed %llu: sent %d events in %.0f s; rows compared %.1f s after the last", options.seed, r.events,
                     r.seconds, r.drainSeconds))
        print("| stage | kill -9 | started | scale changes | SIGTERM (scale down) |")
        print("|---|---|---|---|---|")
        for stage in Chaos.Stage.allCases {
            let c = r.counts[stage] ?? Chaos.StageCounts()
            print("| \(stage.rawValue) | \(c.kills) | \(c.starts) | \(c.scaleChanges) | \(c.gracefulStops) |")
        }
        let statuses = Dictionary(grouping: r.expected.notifications.values, by: { String($0.split(separator: " ")[2]) })
            .mapValues(\.count).sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        print("replay: \(r.expected.notifications.count) notifications (\(statuses)), \(r.expected.conversions.count) conversions, "
            + "\(r.expected.escalations.count) escalations, \(r.expected.engagements.count) engagements")
        for d in r.diffs { print(d.report()) }
        print("dead letters: \(r.deadLetters)")
        let unclean = r.stopCodes.filter { $0.value != 0 }
        print("workers stopped with SIGTERM: \(r.stopCodes.count), exit status not 0: \(unclean.isEmpty ? "none" : "\(unclean)")")
        print(r.identical ? "IDENTICAL: rows equal replay's" : "DIFFERENT: rows differ from replay's")
        if !r.identical { throw ExitCode(1) }
    }
}

struct RestoreBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "A herald-trigger partition holding N users' state: checkpoint it to PostgreSQL, then claim, read and decode it as a new worker would.")

    @Option(help: "Users with state.")
    var users = 1_000_000

    @Option(help: "Events that build the state (the trigger-logic traffic).")
    var events = 3_000_000

    @Option(help: "Rules file.")
    var rules = "deploy/rules/herald.yaml"

    @OptionGroup var output: ReportOptions

    func run() throws {
        guard let conninfo = ProcessInfo.processInfo.environment["HERALD_POSTGRES"] else {
            throw ValidationError("set HERALD_POSTGRES (scripts/bench does)")
        }
        let ruleSet = try RulesFiles.load(rules)
        var logger = Logger(label: "herald-bench")
        logger.logLevel = .warning
        let r = try withLargeStack {
            try RestoreBenchmark(rules: ruleSet, users: users, events: events, conninfo: conninfo, logger: logger).run()
        }
        print(String(format: "%d users, %.0f bytes of state each on average", r.users, Double(r.stateBytes) / Double(max(r.users, 1))))
        print(String(format: "checkpoint (all users): %.2f s", r.saveSeconds))
        print(String(format: "restore: %.2f s (read %.2f s, decode %.2f s; target < 10 s for 1,000,000 users)",
                     r.restoreSeconds, r.loadSeconds, r.decodeSeconds))
        try output.record([
            "restore_users": r.users, "restore_s": (r.restoreSeconds * 100).rounded() / 100,
            "restore_read_s": (r.loadSeconds * 100).rounded() / 100, "restore_decode_s": (r.decodeSeconds * 100).rounded() / 100,
            "checkpoint_bytes_per_user": (Double(r.stateBytes) / Double(max(r.users, 1))).rounded(),
            "checkpoint_all_s": (r.saveSeconds * 100).rounded() / 100,
        ])
    }
}

struct CheckpointCodecBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint-codec",
        abstract: "Encoding every user's trigger state after the trigger-logic workload, and restoring an engine from it (no I/O).")

    @Option(help: "Events to process before the checkpoint.")
    var events = 3_000_000

    @Option(help: "Distinct users.")
    var users = 1_000_000

    @Option(help: "Rules file.")
    var rules = "deploy/rules/herald.yaml"

    func run() throws {
        let ruleSet = try RulesFiles.load(rules)
        var engine = TriggerEngine(rules: ruleSet)
        for (topic, bytes) in TriggerLogicBenchmark.generate(events: events, users: users) {
            let e = try EventDecoder.decode(bytes, topic: topic).get()
            _ = engine.advance(to: e.occurredAt)
            _ = engine.process(e)
        }
        let clock = ContinuousClock()
        var records: [UserStateRecord] = []
        let encode = clock.measure { records = engine.takeDirtyStates() }
        let seen = engine.takeNewSeenEvents()
        let meta = engine.encodeMeta()
        let bytes = records.reduce(0) { $0 + ($1.state?.count ?? 0) }
        var restored: TriggerEngine?
        let decode = try clock.measure {
            restored = try TriggerEngine.restore(rules: ruleSet, meta: meta, users: records, seen: seen)
        }
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        print(String(format: "%d users, %.1f bytes of state per user on average, %d timers, %d seen-event hashes",
                     records.count, Double(bytes) / Double(max(records.count, 1)), restored?.timerCount ?? 0,
                     seen.reduce(0) { $0 + $1.hashes.count } / 16))
        print(String(format: "encode (takeDirtyStates): %.0f users/s (%.2f s)", Double(records.count) / seconds(encode), seconds(encode)))
        print(String(format: "restore (users, timers, seen set): %.0f users/s (%.2f s)", Double(records.count) / seconds(decode), seconds(decode)))
    }
}
