import Foundation

/// Unbuffered output for progress lines, so they show while a command works even when
/// standard output is a pipe.
public enum Console {
    public static func say(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

    public static func error(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    /// A left-aligned table, indented by two spaces.
    public static func table(_ header: [String], _ rows: [[String]]) {
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in c + String(repeating: " ", count: max(0, widths[i] - c.count)) }
                .joined(separator: "  ")
        }
        say("  " + line(header))
        say("  " + line(widths.map { String(repeating: "-", count: $0) }))
        if rows.isEmpty { say("  (none)") }
        for r in rows { say("  " + line(r)) }
    }
}
