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
}
