import Foundation
import HeraldCore
import HeraldPostgres

/// The daily partitions of `notifications` (one per UTC day, `notifications_pYYYYMMDD`),
/// through the SQL functions that migration 1 installs, so that no partition name or bound
/// is ever put into SQL text here.
public struct NotificationPartitions: Sendable {
    public let schema: String
    /// Days created ahead of today by `ensureAhead`.
    public static let daysAhead = 7

    public init(schema: String) {
        precondition(SQLIdentifier.isValid(schema))
        self.schema = schema
    }

    /// The UTC day number (days since 1970-01-01) of a timestamp.
    public static func day(of t: Timestamp) -> Int64 {
        let us = t.microseconds
        return us >= 0 ? us / 86_400_000_000 : (us + 1) / 86_400_000_000 - 1
    }

    static func date(ofDay day: Int64) -> String {
        String(Timestamp(seconds: day * 86_400).rfc3339.prefix(10))
    }

    /// Creates the partitions of days `first...last` that are missing; returns how many it created.
    @discardableResult
    public func ensure(days: ClosedRange<Int64>, on conn: PostgresConnection) throws -> Int {
        let r = try conn.execute("SELECT \(SQLIdentifier.quoted(schema)).ensure_notification_partitions($1::date, $2::date)",
                                 [Self.date(ofDay: days.lowerBound), Self.date(ofDay: days.upperBound)])
        return Int(r[0, 0] ?? "0") ?? 0
    }

    /// Yesterday through `daysAhead` days after `now`: what the sink and `herald migrate` keep ready.
    @discardableResult
    public func ensureAhead(now: Timestamp = .now, on conn: PostgresConnection) throws -> Int {
        let today = Self.day(of: now)
        return try ensure(days: (today - 1)...(today + Int64(Self.daysAhead)), on: conn)
    }

    /// Drops, whole, every partition whose day ends at or before `cutoff`; returns their names.
    public func drop(endingBefore cutoff: Timestamp, on conn: PostgresConnection) throws -> [String] {
        try conn.transaction {
            try conn.execute("SELECT * FROM \(SQLIdentifier.quoted(schema)).drop_notification_partitions($1)",
                             [cutoff.rfc3339]).rows.compactMap { $0[0] }
        }
    }

    /// Whether partition `name` (`notifications_pYYYYMMDD`) covers a day ending at or before `cutoff`.
    public static func endsAtOrBefore(_ name: String, _ cutoff: Timestamp) -> Bool {
        let digits = name.dropFirst("notifications_p".count)
        guard name.hasPrefix("notifications_p"), digits.count == 8,
              let start = Timestamp(rfc3339: "\(digits.prefix(4))-\(digits.dropFirst(4).prefix(2))-\(digits.suffix(2))T00:00:00Z")
        else { return false }
        return start + .days(1) <= cutoff
    }

    /// The existing partitions' names, oldest first.
    public func list(on conn: PostgresConnection) throws -> [String] {
        try conn.execute("""
            SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = to_regclass($1) ORDER BY c.relname
            """, ["\(schema).notifications"]).rows.compactMap { $0[0] }
    }
}

