import ArgumentParser
import Foundation
import HeraldRuntime
import Logging

/// Benchmarks, each measured against its ceiling in the same run (`scripts/bench`).
@main
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "herald-bench", abstract: "Herald benchmarks, each against a ceiling measured in the same run.",
        subcommands: [SinkBench.self])
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
