import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import Logging

/// The whole pipeline on one machine: a `herald broker` process, PostgreSQL (given or
/// throwaway), and the three workers as separate processes. Used by `herald dev` and the
/// end-to-end tests.
public final class LocalPipeline {
    public let workDirectory: String
    public let partitions: Int
    public private(set) var bootstrapServers = ""
    public private(set) var postgres = ""
    public let rulesPath: String
    public let logger: Logger
    public private(set) var broker: ManagedProcess?
    public private(set) var workers: [ManagedProcess] = []
    /// The PostgreSQL server this pipeline started, if it started one.
    public private(set) var throwaway: ThrowawayPostgres?
    private var workerCount = 0

    /// `rules` is the rules file's text; it is written into the work directory. `postgres`,
    /// when given, is the server to use (and stop) instead of HERALD_POSTGRES or a new one.
    public init(rules: String, partitions: Int = 8, postgres: ThrowawayPostgres? = nil, logger: Logger) throws {
        throwaway = postgres
        workDirectory = (NSTemporaryDirectory() as NSString).appendingPathComponent("herald-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
        rulesPath = (workDirectory as NSString).appendingPathComponent("rules.yaml")
        try rules.write(toFile: rulesPath, atomically: true, encoding: .utf8)
        self.partitions = partitions
        self.logger = logger
    }

    /// Starts the broker (creating every topic) and PostgreSQL (HERALD_POSTGRES, or a
    /// throwaway server), and migrates the schema.
    ///
    /// `bootstrapServers`, when given, is a broker the caller already runs (an in-process
    /// `MockCluster` whose faults a test injects), with every topic created; no broker
    /// process is started then.
    public func startInfrastructure(timeout: Double = 30, bootstrapServers given: String? = nil) throws {
        if let given {
            bootstrapServers = given
        } else {
            try startBroker(timeout: timeout)
        }
        try startPostgres()
    }

    private func startBroker(timeout: Double) throws {
        let bootstrapFile = (workDirectory as NSString).appendingPathComponent("bootstrap")
        broker = try ManagedProcess(
            name: "broker", executable: Executables.path("herald"),
            arguments: ["broker", "--partitions", String(partitions), "--bootstrap-file", bootstrapFile],
            logDirectory: workDirectory)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: bootstrapFile, encoding: .utf8), !text.isEmpty {
                bootstrapServers = text.trimmingCharacters(in: .whitespacesAndNewlines)
                break
            }
            guard broker?.isRunning == true else { throw WorkerError.configuration("broker exited:\n\(broker?.log ?? "")") }
            Thread.sleep(forTimeInterval: 0.05)
        }
        guard !bootstrapServers.isEmpty else { throw WorkerError.configuration("broker did not start in \(timeout)s") }
    }

    private func startPostgres() throws {
        if let throwaway {
            postgres = throwaway.conninfo
        } else if let given = ProcessInfo.processInfo.environment["HERALD_POSTGRES"], !given.isEmpty {
            postgres = given
        } else {
            let pg = try ThrowawayPostgres()
            throwaway = pg
            postgres = pg.conninfo
        }
        let conn = try PostgresConnection(postgres, logger: logger)
        try Migrator(schema: schema).migrate(conn, logger: logger)
    }

    /// Each pipeline gets its own schema so runs never see each other's rows.
    public lazy var schema: String = "herald_" + String(UUID().uuidString.lowercased().filter(\.isHexDigit).prefix(10))

    public var environment: [String: String] {
        // The mock cluster holds a rebalance for session.timeout.ms minus 1 s when a member
        // joins or leaves a non-empty group: a short session keeps scaling tests quick.
        // Checkpoints every second: tests and `herald dev` see committed offsets soon.
        ["HERALD_BROKERS": bootstrapServers, "HERALD_POSTGRES": postgres, "HERALD_RULES": rulesPath,
         "HERALD_SCHEMA": schema, "HERALD_CHECKPOINT_INTERVAL": "1s",
         "HERALD_KAFKA_PROPERTIES": "session.timeout.ms=6000;heartbeat.interval.ms=500"]
    }

    /// Each worker's /metrics port, by process name.
    public private(set) var metricsPorts: [String: Int] = [:]

    /// Starts a worker with `environment` plus `overrides` and a free metrics port of its own.
    @discardableResult
    public func startWorker(_ executable: String, arguments: [String] = [],
                            overrides: [String: String] = [:]) throws -> ManagedProcess {
        workerCount += 1
        let name = "\(executable)-\(workerCount)"
        let port = ThrowawayPostgres.freePort()
        metricsPorts[name] = port
        let env = environment.merging(["HERALD_METRICS_PORT": String(port)]) { _, new in new }
            .merging(overrides) { _, new in new }
        let p = try ManagedProcess(name: name, executable: Executables.path(executable),
                                   arguments: arguments, environment: env, logDirectory: workDirectory)
        workers.append(p)
        return p
    }

    /// `kill -9` of a worker: no chance to finish its batch or commit. It leaves `workers`,
    /// so `await` does not take its exit for a failure; start a replacement with `startWorker`.
    public func kill9(_ worker: ManagedProcess) {
        worker.kill9()
        workers.removeAll { $0 === worker }
    }

    public func startWorkers() throws {
        for w in ["herald-trigger", "herald-shaper", "herald-sink"] { try startWorker(w) }
    }

    public func connect() throws -> PostgresConnection {
        try PostgresConnection(postgres, logger: logger)
    }

    public func producer() throws -> KafkaProducer {
        try KafkaProducer(config: KafkaClientConfig(brokers: bootstrapServers), logger: logger)
    }

    /// Polls `body` until it returns true or `timeout` passes; `progress` is called each round.
    public func await(timeout: Double, every interval: Double = 0.25, _ body: () throws -> Bool) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try body() { return true }
            for w in workers where !w.isRunning && w.exitCode != 0 {
                throw WorkerError.configuration("\(w.name) exited with \(w.exitCode ?? -1):\n\(w.log.suffix(4000))")
            }
            Thread.sleep(forTimeInterval: interval)
        }
        return false
    }

    /// Stops workers (SIGTERM), the broker and a throwaway PostgreSQL; returns the workers' exit codes.
    @discardableResult
    public func stop(keepFiles: Bool = false) -> [String: Int32] {
        var codes: [String: Int32] = [:]
        for w in workers { codes[w.name] = w.stop() }
        workers = []
        broker?.stop()
        broker = nil
        throwaway?.stop()
        throwaway = nil
        if !keepFiles { try? FileManager.default.removeItem(atPath: workDirectory) }
        return codes
    }

    deinit { stop(keepFiles: true) }

    /// The last lines of every process's log, for failure messages.
    public var logs: String {
        ([broker].compactMap { $0 } + workers).map { "== \($0.name)\n\($0.log.suffix(3000))" }.joined(separator: "\n")
    }
}
