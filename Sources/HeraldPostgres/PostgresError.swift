/// An error reported by PostgreSQL or by libpq.
///
/// Messages never contain the connection password: connection errors are passed
/// through ``PostgresConnection/redact(_:)`` and every error text is scrubbed of the
/// password values found in the conninfo.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    /// Five-character SQLSTATE, e.g. `"23505"` (unique violation); nil for client-side errors.
    public var sqlState: String?
    /// Primary message (never contains the password).
    public var message: String
    public var detail: String?
    public var hint: String?
    /// True when the connection is unusable: `CONNECTION_BAD`, the server went away
    /// (SQLSTATE class 08, 57P01…57P03) or libpq returned no result.
    /// Call ``PostgresConnection/reconnect()`` (or open a new connection) and retry.
    public var isConnectionFailure: Bool

    public init(
        sqlState: String? = nil,
        message: String,
        detail: String? = nil,
        hint: String? = nil,
        isConnectionFailure: Bool = false
    ) {
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
        self.isConnectionFailure = isConnectionFailure
    }

    public var description: String {
        var text = "PostgresError"
        if let sqlState { text += "(\(sqlState))" }
        if isConnectionFailure { text += "[connection]" }
        text += ": \(message)"
        if let detail { text += " — DETAIL: \(detail)" }
        if let hint { text += " — HINT: \(hint)" }
        return text
    }

    /// Whether a SQLSTATE means the session is gone.
    static func isConnectionState(_ sqlState: String?) -> Bool {
        guard let sqlState else { return false }
        return sqlState.hasPrefix("08") || ["57P01", "57P02", "57P03"].contains(sqlState)
    }
}
