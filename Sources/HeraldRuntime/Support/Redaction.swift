import HeraldPostgres

/// Secrets never reach logs (SPEC §8).
public enum Redaction {
    static let secretKeyFragments = ["password", "secret", "sasl", "ssl.key", "token", "credential"]

    public static func isSecretKey(_ key: String) -> Bool {
        let k = key.lowercased()
        return secretKeyFragments.contains { k.contains($0) }
    }

    /// `sasl.password=…` → `sasl.password=<redacted>`.
    public static func redactProperty(_ entry: String) -> String {
        guard let eq = entry.firstIndex(of: "=") else { return entry }
        let key = String(entry[..<eq])
        return isSecretKey(key) ? "\(key)=<redacted>" : entry
    }

    public static func postgres(_ conninfo: String) -> String {
        PostgresConnection.redact(conninfo)
    }
}

/// PostgreSQL identifiers Herald accepts for its schema name. They are checked once and
/// then quoted; no data is ever spliced into SQL.
public enum SQLIdentifier {
    public static func isValid(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.count <= 63 else { return false }
        guard first == "_" || ("a"..."z").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ("a"..."z").contains($0) || ("0"..."9").contains($0) }
    }

    public static func quoted(_ name: String) -> String {
        precondition(isValid(name), "identifier was not validated")
        return "\"\(name)\""
    }
}
