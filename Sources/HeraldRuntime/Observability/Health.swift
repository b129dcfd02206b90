import Foundation
import HeraldKafka
import HeraldPostgres
import Logging
import Synchronization

/// What `/readyz` reports. The stage loop says whether partitions are assigned; a probe
/// thread checks every 5 s that the brokers answer a metadata request and every second that
/// PostgreSQL answers `SELECT 1`, so the HTTP thread never waits on a dependency.
public final class Health: Sendable {
    private let assignedCount = Atomic<Int>(0)
    private let brokerUp = Atomic<Bool>(false)
    private let postgresUp = Atomic<Bool>(false)
    private let checksPostgresFlag = Atomic<Bool>(false)
    private var checksPostgres: Bool { checksPostgresFlag.load(ordering: .relaxed) }

    /// The process's one worker reports here.
    public static let shared = Health()

    init() {}

    func setAssigned(_ n: Int) { assignedCount.store(n, ordering: .relaxed) }

    public struct Report: Sendable {
        public var ready: Bool
        public var text: String
    }

    public var report: Report {
        let assigned = assignedCount.load(ordering: .relaxed)
        let broker = brokerUp.load(ordering: .relaxed)
        let postgres = checksPostgres ? postgresUp.load(ordering: .relaxed) : true
        var lines = ["assigned_partitions \(assigned)", "broker \(broker ? "reachable" : "unreachable")"]
        if checksPostgres { lines.append("postgres \(postgres ? "reachable" : "unreachable")") }
        let ready = assigned > 0 && broker && postgres
        return Report(ready: ready, text: (ready ? "ready\n" : "not ready\n") + lines.joined(separator: "\n") + "\n")
    }

    /// Starts the probe thread; it runs until `stop` is set.
    func startProbes(config: WorkerConfig, topic: String, logger: Logger, stop: StopSignal) {
        checksPostgresFlag.store(config.postgres != nil, ordering: .relaxed)
        var quiet = logger
        quiet.logLevel = .critical
        let probeLogger = quiet
        let thread = Thread { [self] in
            var admin: KafkaAdmin?
            var postgres: PostgresConnection?
            var round = 0
            while !stop.isSet {
                // A metadata request lists every topic of the cluster: every 5 s is enough.
                if round % 5 == 0 {
                    if admin == nil { admin = try? KafkaAdmin(config: config.kafka, logger: probeLogger) }
                    let broker = (try? admin?.partitionCount(topic: topic, timeout: .seconds(2))) != nil
                    brokerUp.store(broker, ordering: .relaxed)
                }
                round += 1
                if checksPostgres, let conninfo = config.postgres {
                    // One connection, kept while it answers; reopened when it does not.
                    var up = (try? postgres?.execute("SELECT 1")) != nil
                    if !up {
                        postgres = try? PostgresConnection(Self.withConnectTimeout(conninfo), logger: probeLogger)
                        up = (try? postgres?.execute("SELECT 1")) != nil
                    }
                    postgresUp.store(up, ordering: .relaxed)
                }
                stop.sleep(1)
            }
        }
        thread.name = "health-probes"
        thread.start()
    }

    /// A probe must not hang on an unreachable host: add a 2 s connect timeout unless the
    /// conninfo already has one (both URL and key=value forms).
    static func withConnectTimeout(_ conninfo: String) -> String {
        if conninfo.contains("connect_timeout") { return conninfo }
        if conninfo.hasPrefix("postgres://") || conninfo.hasPrefix("postgresql://") {
            return conninfo + (conninfo.contains("?") ? "&" : "?") + "connect_timeout=2"
        }
        return conninfo + " connect_timeout=2"
    }
}
