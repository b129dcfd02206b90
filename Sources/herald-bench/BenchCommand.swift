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
        subcommands: [SinkBench.self, TriggerLogicBench.self, TriggerBench.self, ShapeLogicBench.self, EndToEndBench.self,
                      BurstBench.self, StateBench.self, CheckpointCodecBench.self, RestoreBench.self, SoakCommand.self, ChaosCommand.self])
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

    @Option(help: "herald-sink --batch-size (its default).")
    var batchSize = WorkerConfig.sinkBatchSize

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
        let load = LoadAverage.text
        let r = try withLargeStack { try TriggerLogicBenchmark(rules: ruleSet, events: events, users: users).run() }
        print(String(format: "%d events of %d bytes on average, %d users (%d with state)", r.events, r.averageBytes, r.users, r.usersWithState))
        print("load average at the start: \(load), at the end: \(LoadAverage.text)")
        print("events/s, wall clock and per CPU second of the measuring thread:")
        print(String(format: "parse:            %.0f wall, %.0f CPU", r.parseEPS, r.parseCPUEPS))
        print(String(format: "trigger logic:    %.0f wall, %.0f CPU (target ≥ 1,000,000); %.1f%% produce candidates",
                     r.triggerEPS, r.triggerCPUEPS, r.candidateShare * 100))
        print(String(format: "parse + trigger:  %.0f wall, %.0f CPU (target ≥ 400,000)", r.parseAndTriggerEPS, r.parseAndTriggerCPUEPS))
        print(String(format: "state (in-process engine): %.0f bytes per user (the worker's: herald-bench state)", r.stateBytesPerUser))
        print(String(format: "returning freed memory (as the workers do after checkpoints): %.1f ms, RSS %d → %d MiB",
                     r.trimSeconds * 1000, r.residentBeforeTrim >> 20, r.residentAfterTrim >> 20))
        try output.record([
            "trigger_logic_eps": r.triggerEPS.rounded(), "parse_eps": r.parseEPS.rounded(),
            "parse_trigger_eps": r.parseAndTriggerEPS.rounded(), "trigger_candidate_share": (r.candidateShare * 1000).rounded() / 1000,
            "trigger_logic_cpu_eps": r.triggerCPUEPS.rounded(), "parse_cpu_eps": r.parseCPUEPS.rounded(),
            "parse_trigger_cpu_eps": r.parseAndTriggerCPUEPS.rounded(), "trigger_logic_load_average": load,
            "state_bytes_per_user_logic": r.stateBytesPerUser.rounded(), "trigger_logic_users": r.users,
            "trigger_logic_trim_ms": (r.trimSeconds * 10_000).rounded() / 10,
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

    @Option(name: .customLong("trigger-env"), help: "NAME=VALUE added to herald-trigger's environment, repeatable (e.g. HERALD_BATCH_SIZE=20000).")
    var triggerEnvironment: [String] = []

    @OptionGroup var output: ReportOptions

    func run() throws {
        HeraldLogging.bootstrap(level: logLevel)
        var env: [String: String] = [:]
        for entry in triggerEnvironment {
            guard let eq = entry.firstIndex(of: "=") else { throw ValidationError("--trigger-env takes NAME=VALUE") }
            env[String(entry[..<eq])] = String(entry[entry.index(after: eq)...])
        }
        let load = LoadAverage.text
        let r = try TriggerThroughputBenchmark(events: events, users: users, rulesPath: rules, workerEnvironment: env,
                                               logger: Logger(label: "herald-bench")).run()
        print(String(format: "consume ceiling: %.0f events/s (%.2f s, %d partitions per topic)", r.consumeCeilingEPS, r.consumeSeconds, r.partitions))
        print(String(format: "herald-trigger:  %.0f events/s (%.2f s)", r.triggerEPS, r.triggerSeconds))
        print(String(format: "trigger_ratio:   %.3f (target ≥ 0.5)", r.triggerRatio))
        print("load average at the start: \(load)")
        try output.record([
            "trigger_load_average": load,
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
        print(String(format: "per CPU second of the shaping thread: %.0f candidates/s", r.shapeCPUCPS))
        print("load average: \(LoadAverage.text)")
        for (k, v) in r.byStatus.sorted(by: { $0.key < $1.key }) { print("  \(k): \(v)") }
        try output.record(["shape_logic_cps": r.shapeCPS.rounded(), "shape_logic_cpu_cps": r.shapeCPUCPS.rounded(),
                           "shape_logic_candidates": r.candidates])
    }
}

struct EndToEndBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2e",
        abstract: "The whole pipeline at a fixed rate: event produced to Kafka → row committed in PostgreSQL, for immediate rules.")

    @Option(help: "Events per second.")
    var rate = 10_000

    @Option(help: "Seconds of measured traffic.")
    var seconds = 60.0

    @Option(help: "Seconds of traffic before, drained before the measurement starts.")
    var warmup = 5.0

    @Option(help: "herald-sink --flush-interval (default: the sink's own).")
    var sinkFlushInterval: String?

    @Option(help: "Distinct users.")
    var users = 100_000

    @Option(help: "Rules file.")
    var rules = "deploy/rules/herald.yaml"

    @OptionGroup var output: ReportOptions

    func run() throws {
        HeraldLogging.bootstrap(level: "warning")
        let load = LoadAverage.text
        let r = try EndToEndLatencyBenchmark(rate: rate, seconds: seconds, warmup: warmup, users: users, rulesPath: rules,
                                             sinkFlushInterval: sinkFlushInterval, logger: Logger(label: "herald-bench")).run()
        print(String(format: "sent %d events in %.1f s (%.0f/s), %d partitions per topic", r.events, r.seconds,
                     Double(r.events) / r.seconds, r.partitions))
        print("rows of \(r.rules.joined(separator: ", ")): \(r.rows) measured, \(r.updatedRows) left out (updated after their first write)")
        print(String(format: "e2e latency: p50 %.1f ms, p99 %.1f ms (target ≤ 100), max %.1f ms", r.p50, r.p99, r.max))
        var values: [String: Any] = [:]
        for st in r.stages {
            print("  \(st.stage): " + String(format: "p50 %.0f ms, p99 %.0f ms", st.p50, st.p99))
            let key = st.stage.replacingOccurrences(of: "herald-", with: "")
            values["e2e_\(key)_p50_ms"] = st.p50.rounded()
            values["e2e_\(key)_p99_ms"] = st.p99.rounded()
        }
        print("load average at the start: \(load)")
        try output.record(values.merging([
            "e2e_p50_ms": (r.p50 * 10).rounded() / 10, "e2e_p99_ms": (r.p99 * 10).rounded() / 10,
            "e2e_max_ms": (r.max * 10).rounded() / 10, "e2e_rows": r.rows, "e2e_rate_eps": rate,
            "e2e_seconds": (r.seconds * 10).rounded() / 10, "e2e_partitions": r.partitions, "e2e_load_average": load,
            "e2e_sink_flush_interval": sinkFlushInterval ?? "default (200ms)",
        ]) { _, new in new })
    }
}

struct BurstBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "burst",
        abstract: "Peak shaving: steady traffic, a burst at a multiple of what the capped sink sustains, steady again.")

    @Option(help: "herald-sink --max-rows-per-second: what the pipeline sustains (one row per event).")
    var cap = 1000

    @Option(help: "The burst, as a multiple of the cap.")
    var factor = 5

    @Option(help: "Seconds of the burst.")
    var burstSeconds = 60.0

    @Option(help: "Events per second before and after the burst.")
    var steadyRate = 200

    @Option(help: "Seconds of steady traffic before the burst, and after the drain.")
    var steadySeconds = 10.0

    @Option(help: "Distinct users.")
    var users = 100_000

    @Option(help: "Rules file.")
    var rules = "deploy/rules/herald.yaml"

    @OptionGroup var output: ReportOptions

    func run() throws {
        HeraldLogging.bootstrap(level: "warning")
        guard steadyRate < cap else { throw ValidationError("--steady-rate must be below --cap, or the backlog never drains") }
        let load = LoadAverage.text
        let r = try PeakShavingBenchmark(cap: cap, factor: factor, steadyRate: steadyRate, steadySeconds: steadySeconds,
                                         burstSeconds: burstSeconds, users: users, rulesPath: rules,
                                         logger: Logger(label: "herald-bench")).run()
        print(String(format: "sent %d events (%d in the %.0f s burst at %d/s), %d partitions per topic", r.events, r.burstEvents,
                     r.burstSeconds, factor * cap, r.partitions))
        print("notifications expected: \(r.expected); lost: \(r.lost) (must be 0); unexpected: \(r.unexpected)")
        print(String(format: "max PostgreSQL rows/s: %d in one second, %.0f averaged over 10 s (cap %d)",
                     r.maxRowsPerSecond, r.maxRowsPerSecond10s, cap))
        print(String(format: "drained %.1f s after the burst", r.drainSeconds))
        for (k, v) in r.peakRSSMiB.sorted(by: { $0.key < $1.key }) { print("peak RSS \(k): " + String(format: "%.0f MiB", v)) }
        print("load average at the start: \(load)")
        var values: [String: Any] = [
            "burst_lost": r.lost, "burst_unexpected": r.unexpected, "burst_expected": r.expected,
            "burst_max_pg_rps": r.maxRowsPerSecond, "burst_max_pg_rps_10s": r.maxRowsPerSecond10s.rounded(),
            "burst_cap_rps": cap, "burst_rate_eps": factor * cap, "burst_seconds": r.burstSeconds,
            "burst_drain_s": (r.drainSeconds * 10).rounded() / 10,
            "burst_peak_rss_mb": (r.peakRSSMiB.values.max() ?? 0).rounded(), "burst_load_average": load,
        ]
        for (name, v) in r.peakRSSMiB {
            // herald-trigger-1 → burst_peak_rss_mb_trigger
            let stage = name.split(separator: "-").dropFirst().first.map(String.init) ?? name
            values["burst_peak_rss_mb_\(stage)"] = v.rounded()
        }
        try output.record(values)
        if r.lost > 0 { throw ExitCode(1) }
    }
}

struct StateBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state",
        abstract: "Resident memory per user of a herald-trigger process holding N users' state.")

    @Option(help: "Users, one event each.")
    var users = 1_000_000

    @Option(help: "Rules file.")
    var rules = "deploy/rules/herald.yaml"

    @OptionGroup var output: ReportOptions

    func run() throws {
        HeraldLogging.bootstrap(level: "warning")
        let load = LoadAverage.text
        let r = try StateSizeBenchmark(users: users, rulesPath: rules, logger: Logger(label: "herald-bench")).run()
        print(String(format: "herald-trigger RSS idle %.0f MiB, holding %d users %.0f MiB (peak %.0f MiB); drained in %.1f s",
                     Double(r.idleBytes) / 1_048_576, r.users, Double(r.fullBytes) / 1_048_576,
                     Double(r.peakBytes) / 1_048_576, r.seconds))
        print(String(format: "state: %.0f bytes per user (target ≤ 256)", r.bytesPerUser))
        print("load average at the start: \(load)")
        try output.record([
            "state_bytes_per_user": r.bytesPerUser.rounded(), "state_users": r.users,
            "state_idle_rss_mb": (Double(r.idleBytes) / 1_048_576).rounded(),
            "state_full_rss_mb": (Double(r.fullBytes) / 1_048_576).rounded(), "state_load_average": load,
        ])
    }
}

/// The 1, 5 and 15-minute load averages, for the record: the machine is shared.
enum LoadAverage {
    static var text: String {
        ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "").split(separator: " ").prefix(3).joined(separator: " ")
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

    func run() throws {
        HeraldLogging.bootstrap(level: "warning")
        var o = Chaos.Options()
        o.events = events
        o.rate = rate
        o.users = users
        o.partitions = partitions
        o.seed = seed ?? UInt64.random(in: 1...999_999)
        o.actions = actions
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
                     seen.reduce(0) { $0 + $1.hashes.count } / 8))  // 8 bytes a hash
        print(String(format: "encode (takeDirtyStates): %.0f users/s (%.2f s)", Double(records.count) / seconds(encode), seconds(encode)))
        print(String(format: "restore (users, timers, seen set): %.0f users/s (%.2f s)", Double(records.count) / seconds(decode), seconds(decode)))
    }
}
