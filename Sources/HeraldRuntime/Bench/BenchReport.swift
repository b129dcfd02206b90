import Foundation

/// `bench/results.json` (keys merged across benchmark subcommands) and the results table in
/// `docs/performance.md`, between the `bench-results` markers.
public struct BenchReport {
    public var resultsPath: String
    public var markdownPath: String

    public init(resultsPath: String, markdownPath: String) {
        self.resultsPath = resultsPath
        self.markdownPath = markdownPath
    }

    static let begin = "<!-- bench-results:begin (written by herald-bench) -->"
    static let end = "<!-- bench-results:end -->"

    /// The machine, for the record: cores and memory.
    public static var machine: (cores: Int, memoryGiB: Double) {
        let info = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let kib = info.split(separator: "\n").first { $0.hasPrefix("MemTotal:") }
            .flatMap { Double($0.split(separator: " ")[1]) } ?? 0
        return (ProcessInfo.processInfo.activeProcessorCount, (kib / 1_048_576 * 10).rounded() / 10)
    }

    /// Merges `values` into the results file and rewrites the table from all of its keys.
    public func record(_ values: [String: Any], command: String) throws {
        var all: [String: Any] = [:]
        if let data = FileManager.default.contents(atPath: resultsPath),
           let old = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            all = old
        }
        let machine = Self.machine
        all.merge(values) { _, new in new }
        all["machine_cores"] = machine.cores
        all["machine_memory_gib"] = machine.memoryGiB
        all["date"] = ISO8601DateFormatter().string(from: Date())
        all["command"] = command
        try FileManager.default.createDirectory(atPath: (resultsPath as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        let data = try JSONSerialization.data(withJSONObject: all, options: [.prettyPrinted, .sortedKeys])
        try (String(decoding: data, as: UTF8.self) + "\n").write(toFile: resultsPath, atomically: true, encoding: .utf8)

        var table = "\(Self.begin)\n"
        table += "Command: `\(all["command"] ?? command)` · machine: \(machine.cores) cores, \(machine.memoryGiB) GiB · date: \(all["date"] ?? "")\n\n"
        table += "| key | value |\n|---|---|\n"
        for key in all.keys.sorted() where !["command", "date", "machine_cores", "machine_memory_gib"].contains(key) {
            let v = all[key]!
            let text = (v as? Double).map { $0 == $0.rounded() || $0 > 1000 ? String(Int($0.rounded())) : String(format: "%.3f", $0) }
                ?? "\(v)"
            table += "| `\(key)` | \(text) |\n"
        }
        table += Self.end
        var doc = (try? String(contentsOfFile: markdownPath, encoding: .utf8)) ?? "# Performance\n\n\(Self.begin)\n\(Self.end)\n"
        if let a = doc.range(of: Self.begin), let b = doc.range(of: Self.end, range: a.upperBound..<doc.endIndex) {
            doc.replaceSubrange(a.lowerBound..<b.upperBound, with: table)
        } else {
            doc += "\n\(table)\n"
        }
        try doc.write(toFile: markdownPath, atomically: true, encoding: .utf8)
    }
}
