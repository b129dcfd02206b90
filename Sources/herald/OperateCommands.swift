import ArgumentParser
import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import HeraldRuntime
import Logging

struct LoadgenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadgen",
        abstract: "Send a card-delivery shop's traffic to Kafka at a steady rate: browsing, carts, checkouts, payments and failures, card delivery and its delays, logins and attacks, support messages in Chinese and English, logistics, bills.")

    @Option(help: "Events per second.")
    var rate: Int = 1000

    @Option(help: "How long to send, e.g. 30s, 5m.")
    var duration: String = "60s"

    @Option(help: "Distinct customers.")
    var users: Int = 10_000

    @Option(help: "Seed of the generator: the same seed sends the same events (times aside).")
    var seed: UInt64 = 42

    @OptionGroup var options: WorkerOptions

    func run() throws {
        let config = try options.resolve(stage: "herald-loadgen")
        HeraldLogging.bootstrap(level: options.logLevel ?? "warning", format: config.logFormat)
        guard rate > 0, users > 0 else { throw ValidationError("--rate and --users must be positive") }
        guard let span = TimeSpan(parsing: duration), span > .zero else {
            throw ValidationError("--duration takes a duration such as 30s or 5m; got '\(duration)'")
        }
        let producer = try KafkaProducer(config: config.kafka, logger: Logger(label: "herald-loadgen"))
        var traffic = ShopTraffic(users: users, seed: seed)
        traffic.wallClock = true
        traffic.fullScenarios = true
        let total = Int(Double(span.microseconds) / 1_000_000 * Double(rate))
        let started = Date()
        var byTopic: [LogicalTopic: Int] = [:]
        var byType: [String: Int] = [:]
        var lastProgress = Date.distantPast
        func progress(_ sent: Int, final: Bool = false) {
            let elapsed = max(Date().timeIntervalSince(started), 0.001)
            let line = String(format: "%6.1fs  sent %d/%d  %.0f events/s  orders %d  behavior %d  in flight %d",
                              elapsed, sent, total, Double(sent) / elapsed, byTopic[.orders] ?? 0,
                              byTopic[.behavior] ?? 0, producer.inFlight)
            FileHandle.standardError.write(Data(("\r" + line + (final ? "\n" : "")).utf8))
        }
        for i in 0..<total {
            // Keep to the schedule: event i leaves at started + i/rate.
            let due = started.addingTimeInterval(Double(i) / Double(rate))
            let ahead = due.timeIntervalSinceNow
            if ahead > 0 { Thread.sleep(forTimeInterval: ahead) }
            let m = traffic.nextFull()
            let topic = m.topic == .orders ? config.topics.orders : config.topics.behavior
            try producer.send(topic: topic, key: m.key, value: m.value)
            byTopic[m.topic, default: 0] += 1
            if let type = Self.type(of: m.value) { byType["\(m.topic).\(type)", default: 0] += 1 }
            if Date().timeIntervalSince(lastProgress) >= 1 {
                lastProgress = Date()
                producer.poll()
                progress(i + 1)
            }
        }
        try producer.flush(timeout: .seconds(60))
        progress(total, final: true)
        Console.table(["event", "sent"], byType.sorted { $0.key < $1.key }.map { [$0.key, String($0.value)] })
    }

    static func type(of value: [UInt8]) -> String? {
        guard case .object(let o)? = try? JSONParser.parse(value) else { return nil }
        return o["type"]?.stringValue
    }
}

struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Outcomes by rule and status and dead letters over a recent window (PostgreSQL), and each stage's consumer lag (Kafka).")

    @Option(help: "How far back to count, e.g. 15m, 1h, 1d.")
    var window: String = "1h"

    @OptionGroup var options: WorkerOptions

    func run() throws {
        let config = try options.resolve(stage: "herald-stats")
        HeraldLogging.bootstrap(level: options.logLevel ?? "error", format: config.logFormat)
        let logger = Logger(label: "herald-stats")
        guard let span = TimeSpan(parsing: window), span > .zero else {
            throw ValidationError("--window takes a duration such as 15m or 1h; got '\(window)'")
        }
        var failed = false
        if let conninfo = config.postgres {
            do {
                let conn = try PostgresConnection(conninfo, logger: logger)
                Console.say("Outcomes in the last \(span) (\(config.schema).notifications):")
                Console.table(["rule", "status", "reason", "count"],
                              try PipelineStats.outcomes(conn, schema: config.schema, window: span))
                Console.say("")
                Console.say("Dead letters in the last \(span) (\(config.schema).dead_letters):")
                Console.table(["stage", "reason", "count"],
                              try PipelineStats.deadLetters(conn, schema: config.schema, window: span))
                Console.say("")
            } catch {
                Console.error("PostgreSQL: \(error)")
                failed = true
            }
        } else {
            Console.say("(no --postgres / HERALD_POSTGRES: outcomes and dead letters skipped)\n")
        }
        do {
            let lags = try PipelineStats.lag(config: config, logger: logger)
            Console.say("Consumer lag (high watermark − committed offset) at \(config.brokers):")
            Console.table(["stage", "topic", "partitions", "lag"],
                          lags.map { [$0.stage, $0.topic, String($0.partitions), String($0.lag)] })
        } catch {
            Console.error("Kafka: \(error)")
            failed = true
        }
        if failed { throw ExitCode(1) }
    }
}
