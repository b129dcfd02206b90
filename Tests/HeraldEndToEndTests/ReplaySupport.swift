import Foundation
import HeraldCore
import HeraldRuntime

/// What `herald replay` says the pipeline must write for some events, in the form the
/// live pipeline's rows are read in (`PipelineRows`: every decided field, bodies included).
enum ReplayRows {
    /// Writes `messages` as a replay input file and runs `herald replay` on it with the clock
    /// stopped at `until`.
    static func expected(_ messages: [ShopTraffic.Message], pipeline: LocalPipeline, until: Timestamp) throws -> PipelineRows {
        var lines: [UInt8] = []
        for m in messages {
            lines += Replay.line(topic: m.topic, value: m.value)
        }
        let eventsFile = (pipeline.workDirectory as NSString).appendingPathComponent("events.jsonl")
        try Data(lines).write(to: URL(fileURLWithPath: eventsFile))
        return try PipelineRows.replay(rulesPath: pipeline.rulesPath, eventsFile: eventsFile, until: until,
                                       directory: pipeline.workDirectory, timeout: 120)
    }

    /// "" when equal; otherwise each table's differences, a few of each.
    static func differences(expected: PipelineRows, live: PipelineRows) -> String {
        RowDiff.compare(expected: expected, got: live).filter { !$0.isEmpty }.map { $0.report(limit: 5) }.joined(separator: "\n")
    }
}
