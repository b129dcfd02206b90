import Foundation
import HeraldPostgres
import Logging
import Testing

/// The test database: `HERALD_POSTGRES` (libpq key=value or URL conninfo). Start a throwaway one with
/// `source scripts/lib/postgres.sh; herald_pg_start; swift test; herald_pg_stop`.
enum TestDatabase {
    struct Unset: Error, CustomStringConvertible {
        var description: String {
            "HERALD_POSTGRES is not set: the HeraldPostgres tests need a PostgreSQL server. Run them as "
                + "`source scripts/lib/postgres.sh && herald_pg_start && swift test; herald_pg_stop`, "
                + "or export HERALD_POSTGRES='host=… port=… user=… dbname=…'."
        }
    }

    static let logger = Logger(label: "herald.postgres.tests")

    static func conninfo() throws -> String {
        guard let value = ProcessInfo.processInfo.environment["HERALD_POSTGRES"], !value.isEmpty else {
            throw Unset()
        }
        return value
    }

    static func connect() throws -> PostgresConnection {
        try PostgresConnection(conninfo(), logger: logger)
    }

    /// key=value pairs of a simple (unquoted) key=value conninfo.
    static func parameters(_ conninfo: String) -> [String: String] {
        var result: [String: String] = [:]
        for pair in conninfo.split(whereSeparator: \.isWhitespace) {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { result[String(parts[0])] = String(parts[1]) }
        }
        return result
    }

    /// The same server as `HERALD_POSTGRES`, written as a `postgresql://` URL.
    static func urlConninfo(password: String? = nil) throws -> String {
        let conninfo = try conninfo()
        if conninfo.hasPrefix("postgresql://") || conninfo.hasPrefix("postgres://") { return conninfo }
        let p = parameters(conninfo)
        let user = p["user"] ?? "postgres"
        let userinfo = password.map { "\(user):\($0)@" } ?? "\(user)@"
        let db = p["dbname"] ?? "postgres"
        var query: [String] = []
        var authority = ""
        if let host = p["host"] {
            if host.hasPrefix("/") {
                query.append("host=" + (host.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? host))
                if let port = p["port"] { query.append("port=\(port)") }
            } else {
                authority = host + (p["port"].map { ":\($0)" } ?? "")
            }
        }
        return "postgresql://\(userinfo)\(authority)/\(db)" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
    }
}

/// A connection whose `search_path` is a fresh schema, dropped at the end, so tests can run in parallel.
func withSchema<T>(_ body: (PostgresConnection, String) throws -> T) throws -> T {
    let connection = try TestDatabase.connect()
    let schema = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
    try connection.execute("CREATE SCHEMA \(schema); SET search_path TO \(schema)")
    defer { _ = try? connection.execute("DROP SCHEMA \(schema) CASCADE") }
    return try body(connection, schema)
}

/// Runs `body` expecting a `PostgresError` and returns it.
func expectPostgresError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> PostgresError? {
    do {
        try body()
        Issue.record("expected a PostgresError, nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let error as PostgresError {
        return error
    } catch {
        Issue.record("expected a PostgresError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}
