import Foundation

/// What `herald dev` shows while the pipeline works and after: each worker's own counters,
/// read from its /metrics endpoint.
public struct PipelineProgress {
    public struct Stage {
        public var name: String
        public var consumed: Double
        public var emitted: Double
        public var deadLetters: Double
        public var lag: Double
        public var batches: Double
    }

    public let stages: [Stage]

    /// Scrapes every running worker of `pipeline` (one stage per worker in `herald dev`).
    public init(_ pipeline: LocalPipeline) {
        stages = pipeline.workers.compactMap { w in
            guard let port = pipeline.metricsPorts[w.name], let text = HTTPGet.local(port: port, path: "/metrics")?.body
            else { return nil }
            func sum(_ name: String) -> Double { PrometheusText.samples(text, name).reduce(0) { $0 + $1.value } }
            let emitted = w.name.hasPrefix("herald-trigger") ? sum(HeraldMetrics.candidates)
                : w.name.hasPrefix("herald-shaper") ? sum(HeraldMetrics.outcomes) : sum(HeraldMetrics.rowsWritten)
            return Stage(name: w.name.split(separator: "-").dropLast().joined(separator: "-"),
                         consumed: sum(HeraldMetrics.eventsConsumed), emitted: emitted,
                         deadLetters: sum(HeraldMetrics.deadLetters), lag: sum(HeraldMetrics.consumerLag),
                         batches: sum(HeraldMetrics.batchDuration + "_count"))
        }
    }

    /// `trigger 4000 in → 2100 out · shaper …` for a progress line.
    public var line: String {
        stages.map { "\($0.name.replacingOccurrences(of: "herald-", with: "")) \(Int($0.consumed))→\(Int($0.emitted))" }
            .joined(separator: "  ")
    }

    /// Rows for a summary table: stage, consumed, emitted, dead letters, batches, lag.
    public var rows: [[String]] {
        stages.map { s in
            [s.name, String(Int(s.consumed)), String(Int(s.emitted)), String(Int(s.deadLetters)), String(Int(s.batches)),
             String(Int(s.lag))]
        }
    }
}
