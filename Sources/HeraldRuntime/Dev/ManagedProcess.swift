import Foundation
import Synchronization

/// A child process (broker or worker) whose output goes to a log file, for `herald dev`
/// and the multi-process tests.
public final class ManagedProcess: Sendable {
    public let name: String
    public let logPath: String
    public let pid: pid_t
    /// The exit status once reaped.
    private let status = Mutex<Int32?>(nil)

    public init(name: String, executable: String, arguments: [String], environment: [String: String] = [:],
                logDirectory: String) throws {
        self.name = name
        self.logPath = (logDirectory as NSString).appendingPathComponent("\(name).log")
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { _, new in new }
        pid = try Spawn.start([executable] + arguments, environment: env, log: logPath)
    }

    private func reap(block: Bool) -> Int32? {
        status.withLock { s in
            if s == nil { s = Spawn.wait(pid, block: block) }
            return s
        }
    }

    public var isRunning: Bool { reap(block: false) == nil }
    public var exitCode: Int32? { reap(block: false) }

    /// Sends a signal (if still running).
    public func signal(_ sig: Int32) {
        if isRunning { kill(pid, sig) }
    }

    /// SIGTERM, then waits up to `timeout` seconds before SIGKILL. Returns the exit status.
    @discardableResult
    public func stop(timeout: Double = 20) -> Int32 {
        signal(SIGTERM)
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        signal(SIGKILL)
        return reap(block: true) ?? -1
    }

    /// `kill -9`: no chance to finish anything.
    public func kill9() {
        signal(SIGKILL)
        _ = reap(block: true)
    }

    public var log: String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    deinit {
        if isRunning { stop(timeout: 5) }
    }
}

public enum Executables {
    /// Where the herald executables are: `HERALD_BIN_DIR`, else beside the running binary.
    public static var directory: String {
        if let dir = ProcessInfo.processInfo.environment["HERALD_BIN_DIR"], !dir.isEmpty { return dir }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (exe as NSString).deletingLastPathComponent
    }

    public static func path(_ name: String) -> String {
        (directory as NSString).appendingPathComponent(name)
    }
}
