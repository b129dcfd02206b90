import Foundation
import HeraldCore
import HeraldRuntime
import Testing
import Yams

/// deploy/ parses, and everything it names — executables, flags, environment variables,
/// ports, probe paths, topics, consumer groups, partition bounds — exists in the code.
@Suite struct DeployFilesTests {
    static let deploy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("deploy")
    static let executables = ["herald", "herald-trigger", "herald-shaper", "herald-sink"]
    static let workers = ["herald-trigger", "herald-shaper", "herald-sink"]
    static let defaultMetricsPort = WorkerConfig(stage: "x").metricsPort

    func text(_ path: String) throws -> String {
        try String(contentsOf: Self.deploy.appendingPathComponent(path), encoding: .utf8)
    }

    /// `--help` of a command line (executable and subcommands), as the binary prints it.
    func help(_ command: [String]) throws -> String {
        let dir = NSTemporaryDirectory() + "herald-help-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try ManagedProcess(name: command.joined(separator: "-"), executable: Executables.path(command[0]),
                                   arguments: Array(command.dropFirst()) + ["--help"], logDirectory: dir)
        let deadline = Date().addingTimeInterval(30)
        while p.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        #expect(p.exitCode == 0, "\(command) --help: \(p.log)")
        return p.log
    }

    static func matches(_ pattern: String, in text: String) -> Set<String> {
        let regex = try! NSRegularExpression(pattern: pattern)
        return Set(regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).map {
            String(text[Range($0.range, in: text)!])
        })
    }

    /// Every `HERALD_*` variable the workers document in `--help`.
    func documentedEnvironment() throws -> Set<String> {
        try Self.workers.reduce(into: Set<String>()) { $0.formUnion(Self.matches("HERALD_[A-Z_]+", in: try help([$1]))) }
    }

    /// Checks a container command line: a known executable (and subcommand) and only flags its help lists.
    func checkCommand(_ command: [String], in file: String) throws {
        guard let exe = command.first else { Issue.record("\(file): empty command"); return }
        #expect(Self.executables.contains(exe), "\(file): unknown executable \(exe)")
        guard Self.executables.contains(exe) else { return }
        let sub = exe == "herald" ? Array(command.dropFirst().prefix { !$0.hasPrefix("-") }) : []
        let helpText = try help([exe] + sub)
        #expect(!helpText.contains("Error:"), "\(file): \(command) is not a command:\n\(helpText)")
        for arg in command where arg.hasPrefix("-") {
            #expect(helpText.contains(arg + " ") || helpText.contains(arg + "\n") || helpText.contains(arg + ","),
                    "\(file): \(exe) \(sub.joined(separator: " ")) has no flag \(arg)")
        }
    }

    func checkEnvironment(_ keys: some Sequence<String>, documented: Set<String>, in file: String) {
        for key in keys where key.hasPrefix("HERALD_") {
            #expect(documented.contains(key), "\(file): \(key) is read by no worker")
        }
    }

    @Test func composeFileNamesOnlyWhatExists() throws {
        let compose = try #require(try Yams.load(yaml: try text("docker-compose.yml")) as? [String: Any])
        let services = try #require(compose["services"] as? [String: [String: Any]])
        let documented = try documentedEnvironment()
        #expect(Set(Self.workers).isSubset(of: services.keys))
        for name in ["kafka", "postgres", "migrate", "topics", "grafana"] { #expect(services[name] != nil, "no \(name)") }
        #expect((services["kafka"]?["environment"] as? [String: Any])?["KAFKA_PROCESS_ROLES"] as? String == "broker,controller",
                "Kafka runs in KRaft mode")

        var builtImages: Set<String> = []
        for (_, s) in services {
            if let build = s["build"] as? [String: Any], let image = s["image"] as? String {
                let dockerfile = try #require(build["dockerfile"] as? String)
                #expect(dockerfile == "deploy/Dockerfile")
                builtImages.insert(image)
            }
        }
        for (name, s) in services {
            let image = try #require(s["image"] as? String, "\(name) has no image")
            if image.hasPrefix("herald:") {
                #expect(builtImages.contains(image), "\(name): \(image) is built by no service")
                let command = try #require(s["command"] as? [String], "\(name) has no command")
                try checkCommand(command, in: "docker-compose.yml \(name)")
                let env = try #require(s["environment"] as? [String: Any])
                checkEnvironment(env.keys, documented: documented, in: "docker-compose.yml \(name)")
                if Self.workers.contains(name) {
                    // Scalable: no fixed container name, no published host port.
                    #expect(s["container_name"] == nil && s["ports"] == nil, "\(name) would not scale")
                    #expect(command.first == name)
                    let port = Int(try #require(env["HERALD_METRICS_PORT"] as? String))
                    #expect(port == Self.defaultMetricsPort)
                    #expect((s["expose"] as? [String]) == [String(Self.defaultMetricsPort)])
                    let check = ((s["healthcheck"] as? [String: Any])?["test"] as? [String])?.joined(separator: " ") ?? ""
                    #expect(check.contains("/\(Self.defaultMetricsPort)") && check.contains("/readyz"))
                    let volumes = try #require(s["volumes"] as? [String])
                    let rulesFile = volumes.first!.replacingOccurrences(of: "${HERALD_RULES_FILE:-", with: "")
                        .split(separator: "}")[0]
                    let rules = try String(contentsOf: Self.deploy.appendingPathComponent(String(rulesFile)), encoding: .utf8)
                    #expect((try? RulesLoader.load(yaml: rules).get()) != nil, "\(rulesFile) is not a valid rules file")
                    #expect(volumes.first!.hasSuffix(":\(env["HERALD_RULES"] as! String):ro"))
                }
            } else {
                let tag = image.split(separator: ":").last.map(String.init) ?? ""
                #expect(image.contains(":") && tag != "latest", "\(name): pin \(image) to a version")
            }
        }
        let prometheus = try text("prometheus.yml")
        #expect(try Yams.load(yaml: prometheus) != nil)
        #expect(prometheus.contains("port: \(Self.defaultMetricsPort)"))
    }

    @Test func dockerfileBuildsEveryExecutableAndExposesTheMetricsPort() throws {
        let dockerfile = try text("Dockerfile")
        #expect(dockerfile.components(separatedBy: "\nFROM ").count >= 2, "multi-stage")
        for exe in Self.executables {
            #expect(dockerfile.contains("/out/\(exe) ") || dockerfile.contains("/out/\(exe)\n"), "\(exe) not copied")
            #expect(dockerfile.contains("--product \(exe) ") || dockerfile.contains("--product \(exe)\n"))
        }
        #expect(dockerfile.contains("EXPOSE \(Self.defaultMetricsPort)\n"))
    }

    @Test func kubernetesManifestsNameOnlyWhatExists() throws {
        let kustomization = try #require(try Yams.load(yaml: try text("kustomization.yaml")) as? [String: Any])
        let resources = try #require(kustomization["resources"] as? [String])
        var docs: [[String: Any]] = []
        for r in resources {
            for doc in try Yams.load_all(yaml: try text(r)) { docs.append(try #require(doc as? [String: Any], "\(r)")) }
        }
        func named(_ kind: String) -> [String: [String: Any]] {
            Dictionary(uniqueKeysWithValues: docs.filter { $0["kind"] as? String == kind }.map {
                (($0["metadata"] as! [String: Any])["name"] as! String, $0)
            })
        }
        let generated = ((kustomization["configMapGenerator"] as? [[String: Any]]) ?? []).map { $0["name"] as! String }
        for case let generator as [String: Any] in (kustomization["configMapGenerator"] as? [Any]) ?? [] {
            for file in generator["files"] as! [String] {
                #expect((try? RulesLoader.load(yaml: try text(file)).get()) != nil, "\(file) is not a valid rules file")
            }
        }
        let configMaps = Set(named("ConfigMap").keys).union(generated)
        let secrets = named("Secret")
        let documented = try documentedEnvironment()
        for (name, m) in named("ConfigMap").merging(secrets, uniquingKeysWith: { a, _ in a }) {
            let data = (m["data"] as? [String: Any]) ?? (m["stringData"] as? [String: Any]) ?? [:]
            checkEnvironment(data.keys, documented: documented, in: "k8s \(name)")
        }
        #expect(secrets["herald-credentials"] != nil)
        let metricsPort = (named("ConfigMap")["herald-env"]?["data"] as? [String: Any])?["HERALD_METRICS_PORT"] as? String
        #expect(metricsPort == String(Self.defaultMetricsPort))

        var partitions: Int?
        func pods(_ doc: [String: Any]) -> [String: Any] {
            ((doc["spec"] as! [String: Any])["template"] as! [String: Any])["spec"] as! [String: Any]
        }
        func checkPod(_ pod: [String: Any], _ name: String) throws {
            for case let c as [String: Any] in pod["containers"] as! [Any] {
                let command = try #require(c["command"] as? [String])
                try checkCommand(command, in: "k8s \(name)")
                if let i = command.firstIndex(of: "--partitions") { partitions = Int(command[i + 1]) }
                #expect(c["image"] as? String == "herald:latest")
                for case let from as [String: Any] in (c["envFrom"] as? [Any]) ?? [] {
                    if let ref = from["configMapRef"] as? [String: Any] { #expect(configMaps.contains(ref["name"] as! String)) }
                    if let ref = from["secretRef"] as? [String: Any] { #expect(secrets[ref["name"] as! String] != nil) }
                }
            }
            for case let v as [String: Any] in (pod["volumes"] as? [Any]) ?? [] {
                if let cm = v["configMap"] as? [String: Any] { #expect(configMaps.contains(cm["name"] as! String)) }
            }
        }
        for (name, job) in named("Job") { try checkPod(pods(job), name) }
        let deployments = named("Deployment")
        #expect(Set(deployments.keys) == Set(Self.workers))
        for (name, d) in deployments {
            let pod = pods(d)
            try checkPod(pod, name)
            let c = (pod["containers"] as! [[String: Any]])[0]
            #expect((c["command"] as! [String]).first == name)
            let ports = c["ports"] as! [[String: Any]]
            #expect(ports.first?["containerPort"] as? Int == Self.defaultMetricsPort)
            let live = ((c["livenessProbe"] as? [String: Any])?["httpGet"] as? [String: Any])?["path"] as? String
            let ready = ((c["readinessProbe"] as? [String: Any])?["httpGet"] as? [String: Any])?["path"] as? String
            #expect(live == "/healthz" && ready == "/readyz")
            #expect(MetricsServer.endpoints.contains(live ?? "") && MetricsServer.endpoints.contains(ready ?? ""))
        }
        let bound = try #require(partitions, "no topics job with --partitions")
        let inputs = Dictionary(uniqueKeysWithValues: PipelineStats.stages(TopicNames()).map { ($0.stage, $0.topics) })
        let scaled = named("ScaledObject")
        #expect(Set(scaled.keys) == Set(Self.workers))
        for (name, so) in scaled {
            let spec = so["spec"] as! [String: Any]
            let target = (spec["scaleTargetRef"] as! [String: Any])["name"] as! String
            #expect(deployments[target] != nil)
            #expect(spec["maxReplicaCount"] as? Int == bound, "\(name): replicas bounded by partitions")
            let triggers = spec["triggers"] as! [[String: Any]]
            #expect(!triggers.isEmpty)
            for trigger in triggers {
                #expect(trigger["type"] as? String == "kafka")
                let meta = trigger["metadata"] as! [String: Any]
                // The default group of a stage is its name (WorkerOptions).
                #expect(meta["consumerGroup"] as? String == WorkerConfig(stage: target).group)
                #expect(inputs[target]?.contains(meta["topic"] as? String ?? "") == true, "\(name): \(meta["topic"] ?? "")")
                #expect(meta["bootstrapServers"] as? String
                    == (named("ConfigMap")["herald-env"]?["data"] as? [String: Any])?["HERALD_BROKERS"] as? String)
                if let auth = (trigger["authenticationRef"] as? [String: Any])?["name"] as? String {
                    #expect(named("TriggerAuthentication")[auth] != nil)
                }
            }
        }
    }

    @Test func systemdUnitsRunExistingCommands() throws {
        let documented = try documentedEnvironment()
        let dir = Self.deploy.appendingPathComponent("systemd")
        let units = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".service") }
        #expect(units.count == 4)
        for unit in units {
            let text = try String(contentsOf: dir.appendingPathComponent(unit), encoding: .utf8)
            let exec = try #require(text.split(separator: "\n").first { $0.hasPrefix("ExecStart=") })
            let words = exec.dropFirst("ExecStart=".count).split(separator: " ").map(String.init)
            #expect(words[0].hasPrefix("/usr/local/bin/"))
            try checkCommand([String(words[0].dropFirst("/usr/local/bin/".count))] + words.dropFirst(), in: unit)
        }
        let env = try String(contentsOf: dir.appendingPathComponent("herald.env.example"), encoding: .utf8)
        let keys = env.split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap { $0.split(separator: "=").first.map(String.init) }
        #expect(!keys.isEmpty)
        checkEnvironment(keys, documented: documented, in: "herald.env.example")
    }
}
