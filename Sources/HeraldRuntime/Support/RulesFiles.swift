import Foundation
import HeraldCore

/// Reads a rules file, or every `.yaml`/`.yml` file of a directory (merged by id), and
/// validates it the way `herald rules check` does.
public enum RulesFiles {
    public static func sources(at path: String) throws -> [RulesLoader.Source] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw WorkerError.configuration("rules file \(path) does not exist")
        }
        var files = [path]
        if isDir.boolValue {
            files = try FileManager.default.contentsOfDirectory(atPath: path)
                .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }
                .sorted()
                .map { (path as NSString).appendingPathComponent($0) }
            if files.isEmpty { throw WorkerError.configuration("rules directory \(path) has no .yaml files") }
        }
        return try files.map { file in
            guard let data = FileManager.default.contents(atPath: file) else {
                throw WorkerError.configuration("cannot read rules file \(file)")
            }
            guard let text = String(data: data, encoding: .utf8) else {
                throw WorkerError.configuration("rules file \(file) is not UTF-8")
            }
            return RulesLoader.Source(path: file, contents: text)
        }
    }

    /// The validated rule set, or a configuration error listing every problem with file:line:column.
    public static func load(_ path: String?) throws -> RuleSet {
        guard let path else { throw WorkerError.configuration("no rules file: pass --rules or set HERALD_RULES") }
        switch RulesLoader.load(try sources(at: path)) {
        case .success(let rules): return rules
        case .failure(let error): throw WorkerError.configuration("invalid rules file:\n\(error)")
        }
    }
}

public enum WorkerError: Error, CustomStringConvertible {
    /// Bad configuration: refused at start with a precise message (SPEC §8).
    case configuration(String)

    public var description: String {
        switch self {
        case .configuration(let m): return m
        }
    }
}
