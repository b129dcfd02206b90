import Foundation
import HeraldCore
import Logging
import Synchronization

/// `--log-format json`: one JSON object per line on standard error, with the time, level,
/// logger label, message, source and every metadata key (stage, topic, partition, …).
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        log(level: event.level, message: event.message, metadata: event.metadata, source: event.source,
            file: event.file, function: event.function, line: event.line)
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?,
                    source: String, file: String, function: String, line: UInt) {
        var fields: [(String, JSONValue)] = [
            ("ts", .string(Timestamp.now.rfc3339)), ("level", .string(level.rawValue)),
            ("logger", .string(label)), ("message", .string(message.description)),
        ]
        let merged = metadata.merging(explicit ?? [:]) { _, new in new }
        for key in merged.keys.sorted() where !["ts", "level", "logger", "message"].contains(key) {
            fields.append((key, Self.json(merged[key]!)))
        }
        let line = JSONValue.object(JSONObject(fields)).jsonString + "\n"
        // Whole lines from every thread (stage loop, librdkafka callbacks, HTTP, probes).
        Self.output.withLock { _ in FileHandle.standardError.write(Data(line.utf8)) }
    }

    private static let output = Mutex(())

    static func json(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let s): return .string(s)
        case .stringConvertible(let c): return .string(c.description)
        case .array(let a): return .array(a.map(json))
        case .dictionary(let d): return .object(JSONObject(d.keys.sorted().map { ($0, json(d[$0]!)) }))
        }
    }
}
