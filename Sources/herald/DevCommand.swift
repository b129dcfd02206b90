import ArgumentParser
import Foundation
import HeraldCore
import HeraldKafka
import HeraldRuntime
import Logging

struct DevCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev",
        abstract: "Run the whole pipeline on this machine: a development broker, a throwaway PostgreSQL (unless HERALD_POSTGRES is set), the three workers as processes, and a shop's traffic; then print what PostgreSQL holds.")

    @Option(help: "Events the simulated shop sends.")
    var events: Int = 5000

    @Option(help: "Distinct customers.")
    var users: Int = 500

    @Option(help: "Partitions per topic.")
    var partitions: Int = 8

    @Option(help: "Seconds to wait for the pipeline to write everything.")
    var timeout: Double = 180

    @Flag(help: "Keep the work folder (logs, rules) after stopping.")
    var keep = false

    func run() throws {
        try withLargeStack { try runPipeline() }
    }

    func runPipeline() throws {
        HeraldLogging.bootstrap(level: "warning")
        let logger = Logger(label: "herald-dev")
        let started = Date()
        let pipeline = try LocalPipeline(rules: DevRules.yaml, partitions: partitions, logger: logger)
        pipeline.schema = ProcessInfo.processInfo.environment["HERALD_POSTGRES"] == nil ? "herald" : "herald_dev"
        var succeeded = false
        defer {
            say("stopping the pipeline…")
            let codes = pipeline.stop(keepFiles: keep || !succeeded)
            let bad = codes.filter { $0.value != 0 }
            if !bad.isEmpty { say("workers that did not exit cleanly: \(bad)") }
            if keep || !succeeded { say("logs and rules kept in \(pipeline.workDirectory)") }
        }

        say("starting the development broker and PostgreSQL…")
        try pipeline.startInfrastructure()
        say("broker at \(pipeline.bootstrapServers), PostgreSQL schema \(pipeline.schema)")
        try pipeline.startWorkers()
        say("started herald-trigger, herald-shaper and herald-sink (rules in \(pipeline.rulesPath))")
        let interrupt = stopEverythingOnInterrupt(pipeline)
        defer { interrupt.cancel() }

        // The simulated shop; the expected outcome count comes from the same rule engine
        // the trigger runs.
        guard case .success(let rules) = RulesLoader.load(yaml: DevRules.yaml) else { throw ExitCode(1) }
        var replay = Replay(rules: rules)
        // Six hours of a shop's past: delayed rules fall due while the pipeline runs.
        var traffic = ShopTraffic(users: users, start: .now - .hours(6))
        let producer = try pipeline.producer()
        let topics = TopicNames()
        var expected = 0
        var malformed = 0
        for i in 0..<events {
            if i % 100 == 99 {
                try producer.send(topic: i % 200 == 199 ? topics.behavior : topics.orders, key: nil,
                                  value: ShopTraffic.malformed(malformed))
                malformed += 1
                continue
            }
            let m = traffic.next()
            if case .success(let event) = EventDecoder.decode(m.value, topic: m.topic) {
                expected += replay.process(event).filter(\.isOutcome).count
            }
            try producer.send(topic: m.topic == .orders ? topics.orders : topics.behavior, key: m.key, value: m.value)
        }
        try producer.flush(timeout: .seconds(30))
        // Timers due by now (less the workers' grace period) fire too.
        expected += replay.finish(until: .now - .seconds(10)).filter(\.isOutcome).count
        say("sent \(events) events (\(malformed) of them malformed) for \(users) customers; expecting \(expected) notifications")

        let conn = try pipeline.connect()
        let s = SQLIdentifier.quoted(pipeline.schema)
        var lastPrint = Date.distantPast
        var written = (0, 0)
        let done = try pipeline.await(timeout: timeout) {
            let n = Int(try conn.execute("SELECT count(*) FROM \(s).notifications")[0, 0] ?? "0") ?? 0
            let d = Int(try conn.execute("SELECT count(*) FROM \(s).dead_letters")[0, 0] ?? "0") ?? 0
            written = (n, d)
            if Date().timeIntervalSince(lastPrint) >= 1 || (n >= expected && d >= malformed) {
                lastPrint = Date()
                say(String(format: "  %6.1fs  notifications %d/%d  dead letters %d/%d  ",
                           Date().timeIntervalSince(started), n, expected, d, malformed) + PipelineProgress(pipeline).line)
            }
            return n >= expected && d >= malformed
        }
        guard done else {
            say("timed out after \(Int(timeout))s with \(written.0)/\(expected) notifications and \(written.1)/\(malformed) dead letters")
            say(pipeline.logs)
            throw ExitCode(1)
        }

        say("")
        say("Outcomes in PostgreSQL (\(s).notifications):")
        let byRule = try conn.execute("""
            SELECT rule_id, status, coalesce(reason, ''), count(*) FROM \(s).notifications
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            """)
        printTable(["rule", "status", "reason", "count"], byRule.rows.map { $0.map { $0 ?? "" } })
        say("")
        say("Dead letters (\(s).dead_letters):")
        let letters = try conn.execute("""
            SELECT stage, reason, count(*) FROM \(s).dead_letters GROUP BY 1, 2 ORDER BY 1, 2
            """)
        printTable(["stage", "reason", "count"], letters.rows.map { $0.map { $0 ?? "" } })
        say("")
        say("A few sent messages:")
        let samples = try conn.execute("""
            SELECT DISTINCT ON (rule_id) rule_id, user_id, body FROM \(s).notifications
            WHERE status = 'sent' ORDER BY rule_id, id
            """)
        printTable(["rule", "user", "body"], samples.rows.map { $0.map { $0 ?? "" } })
        // Lag is sampled every second; give the last sample a moment to show the drained state.
        _ = try? pipeline.await(timeout: 5) { PipelineProgress(pipeline).stages.allSatisfy { $0.lag == 0 } }
        say("")
        say("The workers, from their /metrics (\(pipeline.metricsPorts.values.sorted().map(String.init).joined(separator: ", "))):")
        printTable(["stage", "consumed", "emitted", "dead letters", "batches", "lag"], PipelineProgress(pipeline).rows)
        say(String(format: "\ndone in %.1fs", Date().timeIntervalSince(started)))
        succeeded = true
    }

    /// Ctrl-C or SIGTERM: stop the children (and the throwaway server) before exiting.
    func stopEverythingOnInterrupt(_ pipeline: LocalPipeline) -> DispatchSourceSignal {
        let processes = pipeline.workers + [pipeline.broker].compactMap { $0 }
        let server = pipeline.throwaway
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        signal(SIGINT, SIG_IGN)
        source.setEventHandler {
            Console.say("\ninterrupted: stopping the pipeline…")
            for p in processes { p.stop() }
            server?.stop()
            Foundation.exit(130)
        }
        source.resume()
        return source
    }

    func say(_ text: String) {
        Console.say(text)
    }

    func printTable(_ header: [String], _ rows: [[String]]) {
        Console.table(header, rows)
    }
}
