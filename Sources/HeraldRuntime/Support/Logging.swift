import Logging

public enum HeraldLogging {
    /// Logs on standard error: human-readable, or one JSON object per line with
    /// `format: "json"`. Call once, first thing in `main`.
    public static func bootstrap(level: String, format: String = "text") {
        let parsed = Logger.Level(rawValue: level) ?? .info
        LoggingSystem.bootstrap { label in
            if format == "json" {
                var handler = JSONLogHandler(label: label)
                handler.logLevel = parsed
                return handler
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = parsed
            return handler
        }
    }
}
