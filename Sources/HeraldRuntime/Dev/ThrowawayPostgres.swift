import Foundation

/// A throwaway PostgreSQL server for development and tests: a fresh cluster in a temp folder,
/// listening only on a unix socket in that folder, with database `herald`.
///
/// Does the same as `herald_pg_start` in `scripts/lib/postgres.sh`: uses the newest
/// `/usr/lib/postgresql/*/bin` (or `HERALD_PG_BIN`, or `initdb` on `PATH`), runs `initdb` and
/// `pg_ctl` as the `postgres` user (through `runuser -u postgres --`) when running as root, trust
/// authentication, durability off (fsync, synchronous_commit, full_page_writes).
///
///     let server = try ThrowawayPostgres()
///     let connection = try PostgresConnection(server.conninfo, logger: logger)
///     …
///     server.stop()   // also done by deinit
// @unchecked Sendable: the mutable state (`running`, `stopped`) is only touched under `lock`.
public final class ThrowawayPostgres: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// libpq key=value conninfo: `host=SOCKDIR port=PORT user=postgres dbname=herald`.
    public let conninfo: String
    /// The temp folder holding the data directory, the socket and the logs.
    public let directory: URL
    public let dataDirectory: URL
    public let port: Int
    /// The PostgreSQL bin directory used.
    public let binDirectory: URL

    private let runAsPostgres: Bool
    private let serverOptions: String
    private let lock = NSLock()
    private var running = false
    private var removed = false

    /// Creates the cluster, starts the server and creates database `herald`. `settings` are
    /// extra server settings (`-c name=value`), e.g. `track_commit_timestamp: "on"` for
    /// `herald-bench e2e`.
    public init(settings: [String: String] = [:]) throws {
        let bin = try Self.findBinDirectory()
        binDirectory = bin
        runAsPostgres = geteuid() == 0

        let name = "herald-pg-" + UUID().uuidString.prefix(8).lowercased()
        // Under /tmp, not NSTemporaryDirectory(): unix socket paths are limited to ~107 bytes.
        directory = URL(fileURLWithPath: "/tmp").appendingPathComponent(name, isDirectory: true)
        dataDirectory = directory.appendingPathComponent("data", isDirectory: true)
        try FileManager.default.createDirectory(
            at: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700]
        )
        port = Self.freePort()
        serverOptions = "-p \(port) -k \(directory.path) -c listen_addresses='' "
            + "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            + settings.sorted { $0.key < $1.key }.map { " -c \($0.key)=\($0.value)" }.joined()
        conninfo = "host=\(directory.path) port=\(port) user=postgres dbname=herald"

        do {
            if runAsPostgres {
                try FileManager.default.setAttributes(
                    [.ownerAccountName: "postgres", .groupOwnerAccountName: "postgres"],
                    ofItemAtPath: directory.path
                )
            }
            try run(tool: "initdb", [
                "-D", dataDirectory.path, "-A", "trust", "-U", "postgres", "--no-sync",
                "-E", "UTF8", "--no-locale",
            ], log: "initdb.log")
            try startServer()
            try run(tool: "createdb", [
                "-h", directory.path, "-p", String(port), "-U", "postgres", "herald",
            ], log: "createdb.log")
        } catch {
            stop()
            throw error
        }
    }

    deinit {
        stop()
    }

    /// Whether the server was started and not stopped since.
    public var isRunning: Bool {
        lock.withLock { running }
    }

    /// Starts the server (`pg_ctl start -w`) on the same folder and port.
    public func startServer() throws {
        try lock.withLock {
            guard !removed else { throw Failure(description: "ThrowawayPostgres was stopped and removed") }
            guard !running else { return }
            try pgCtl(["start", "-w", "-l", directory.appendingPathComponent("server.log").path, "-o", serverOptions])
            running = true
        }
    }

    /// Stops the server (`pg_ctl stop -m fast`), keeping the data, to simulate an outage.
    public func stopServer() throws {
        try lock.withLock {
            guard running else { return }
            try pgCtl(["stop", "-w", "-m", "fast"])
            running = false
        }
    }

    /// Stops and starts the server again: existing connections break, new ones work.
    public func restart() throws {
        try stopServer()
        try startServer()
    }

    /// Stops the server and removes the folder. Idempotent; also called by `deinit`.
    public func stop() {
        lock.withLock {
            guard !removed else { return }
            if running || FileManager.default.fileExists(atPath: dataDirectory.appendingPathComponent("postmaster.pid").path) {
                if (try? pgCtl(["stop", "-w", "-m", "fast"])) == nil {
                    _ = try? pgCtl(["stop", "-w", "-m", "immediate"])
                }
            }
            running = false
            removed = true
            try? FileManager.default.removeItem(at: directory)
        }
    }

    // MARK: - Helpers

    private func pgCtl(_ arguments: [String]) throws {
        try run(tool: "pg_ctl", ["-D", dataDirectory.path] + arguments, log: "pg_ctl.log")
    }

    /// Runs a tool from the bin directory (as `postgres` when root), output appended to `log`.
    private func run(tool: String, _ arguments: [String], log: String) throws {
        let executable = binDirectory.appendingPathComponent(tool).path
        let logURL = directory.appendingPathComponent(log)
        let argv: [String]
        if runAsPostgres {
            argv = [Self.which("runuser") ?? "/usr/sbin/runuser", "-u", "postgres", "--", executable] + arguments
        } else {
            argv = [executable] + arguments
        }
        let status = try Spawn.run(argv, directory: directory.path, log: logURL.path)
        guard status == 0 else {
            let text = (try? String(contentsOf: logURL, encoding: .utf8)) ?? ""
            let serverLog = (try? String(contentsOf: directory.appendingPathComponent("server.log"), encoding: .utf8)) ?? ""
            throw Failure(description: """
                \(tool) \(arguments.joined(separator: " ")) failed (status \(status)):
                \(text.suffix(2000))\(serverLog.isEmpty ? "" : "\nserver.log:\n\(serverLog.suffix(2000))")
                """)
        }
    }

    /// Newest `/usr/lib/postgresql/N/bin` with initdb and pg_ctl, or `HERALD_PG_BIN`, or `PATH`.
    static func findBinDirectory() throws -> URL {
        let fm = FileManager.default
        func usable(_ dir: String) -> Bool {
            fm.isExecutableFile(atPath: dir + "/initdb") && fm.isExecutableFile(atPath: dir + "/pg_ctl")
        }
        if let override = ProcessInfo.processInfo.environment["HERALD_PG_BIN"], !override.isEmpty {
            guard usable(override) else {
                throw Failure(description: "HERALD_PG_BIN=\(override) has no initdb/pg_ctl")
            }
            return URL(fileURLWithPath: override, isDirectory: true)
        }
        let root = "/usr/lib/postgresql"
        let versions = ((try? fm.contentsOfDirectory(atPath: root)) ?? [])
            .compactMap { name -> (Int, String)? in
                guard let major = Int(name.split(separator: ".").first ?? "") else { return nil }
                return usable("\(root)/\(name)/bin") ? (major, "\(root)/\(name)/bin") : nil
            }
            .sorted { $0.0 > $1.0 }
        if let newest = versions.first {
            return URL(fileURLWithPath: newest.1, isDirectory: true)
        }
        if let initdb = which("initdb") {
            let dir = (initdb as NSString).deletingLastPathComponent
            if usable(dir) { return URL(fileURLWithPath: dir, isDirectory: true) }
        }
        throw Failure(description: """
            no PostgreSQL server binaries found (looked for /usr/lib/postgresql/*/bin/initdb and pg_ctl, \
            and initdb on PATH); install them first, e.g. `apt-get install -y postgresql`
            """)
    }

    static func which(_ tool: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for dir in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(dir)/\(tool)") {
            return "\(dir)/\(tool)"
        }
        for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(tool)") {
            return "\(dir)/\(tool)"
        }
        return nil
    }

    /// A TCP port that is free now (bind to port 0 on 127.0.0.1). The server itself listens on
    /// the unix socket only (`listen_addresses=''`), so the port just has to be unique.
    static func freePort() -> Int {
        let fallback = Int.random(in: 20000..<30000)
        #if canImport(Glibc) || canImport(Darwin)
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { return fallback }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian
        let size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) }
        }
        guard bound == 0 else { return fallback }
        var length = size
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { return fallback }
        return Int(UInt16(bigEndian: address.sin_port))
        #else
        return fallback
        #endif
    }
}
