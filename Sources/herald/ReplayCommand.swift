import ArgumentParser
import Foundation
import HeraldCore
import HeraldRuntime

struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Run the trigger and shaper logic over recorded events with an event-time clock; print the outcomes.",
        discussion: """
            Input is JSON Lines, one {"topic": "orders" | "behavior", "value": {…event…}} per line, in consumption \
            order. After the last event the clock advances from timer to timer until none is left (or --until). \
            Output is one outcome or conversion record per line, as on herald.outcomes.
            """)

    @Option(help: "Rules file or directory.")
    var rules: String

    @Option(help: "Events, JSON Lines.")
    var events: String

    @Option(help: "Write records here instead of standard output.")
    var out: String?

    @Option(help: "Stop the clock at this RFC 3339 time.")
    var until: String?

    func run() throws {
        try withLargeStack { try replay() }
    }

    func replay() throws {
        let ruleSet: RuleSet
        do {
            ruleSet = try RulesFiles.load(rules)
        } catch {
            Console.error("\(error)")
            throw ExitCode(2)
        }
        var untilTime: Timestamp?
        if let until {
            guard let t = Timestamp(rfc3339: until) else { throw ValidationError("--until must be an RFC 3339 time") }
            untilTime = t
        }
        guard let input = FileHandle(forReadingAtPath: events) else { throw ValidationError("cannot read \(events)") }
        let output: FileHandle
        if let out {
            guard FileManager.default.createFile(atPath: out, contents: nil), let h = FileHandle(forWritingAtPath: out) else {
                throw ValidationError("cannot write \(out)")
            }
            output = h
        } else {
            output = FileHandle.standardOutput
        }

        var replay = Replay(rules: ruleSet)
        var buffer: [UInt8] = []
        var written = 0
        var lines = 0
        var invalid = 0
        let started = Date()
        var lastProgress = started
        func write(_ records: [Replay.Record]) {
            guard !records.isEmpty else { return }
            for r in records {
                buffer.append(contentsOf: r.json)
                buffer.append(0x0A)
            }
            written += records.count
            if buffer.count > 1 << 20 {
                output.write(Data(buffer))
                buffer.removeAll(keepingCapacity: true)
            }
        }
        try LineReader.forEachLine(input) { line in
            lines += 1
            if line.isEmpty { return }
            switch Replay.parseLine(line) {
            case .failure(let rejection):
                invalid += 1
                Console.error("\(events):\(lines): skipped: \(rejection)")
            case .success(let event):
                if let untilTime, event.occurredAt > untilTime { return }
                write(replay.process(event))
            }
            if lines % 100_000 == 0, Date().timeIntervalSince(lastProgress) > 1 {
                lastProgress = Date()
                Console.error(String(format: "%d lines, %d records, %.0f lines/s", lines, written,
                                     Double(lines) / Date().timeIntervalSince(started)))
            }
        }
        write(replay.finish(until: untilTime))
        output.write(Data(buffer))
        if out != nil { try output.close() }
        Console.error("replayed \(lines - invalid) events (\(invalid) invalid lines skipped), wrote \(written) records")
        if replay.order.late > 0 {
            // The same condition herald-trigger counts in herald_trigger_late_events_total.
            Console.error("warning: \(replay.order.late) events came after events with later times had been applied "
                + "(a topic out of event-time order, or more than \(replay.order.limit) events held while the other "
                + "topic lagged): they were applied in file order, which the live pipeline's partitions need not reproduce")
        }
    }
}

/// Reads a file line by line in large chunks.
enum LineReader {
    static func forEachLine(_ handle: FileHandle, _ body: ([UInt8]) throws -> Void) throws {
        var pending: [UInt8] = []
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            pending.append(contentsOf: chunk)
            var start = 0
            while let nl = pending[start...].firstIndex(of: 0x0A) {
                try body(Array(pending[start..<nl]))
                start = nl + 1
            }
            pending.removeFirst(start)
        }
        if !pending.isEmpty { try body(pending) }
    }
}
