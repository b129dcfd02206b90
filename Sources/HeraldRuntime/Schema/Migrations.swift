import Foundation
import HeraldPostgres
import Logging

/// `herald migrate`: creates and upgrades the schema. Versioned (each step runs once,
/// recorded in `schema_migrations`), idempotent, and safe to run from several processes
/// at once (an advisory lock serialises them).
public struct Migrator: Sendable {
    public let schema: String

    public init(schema: String) {
        precondition(SQLIdentifier.isValid(schema))
        self.schema = schema
    }

    /// Each step's SQL, with `$S` standing for the quoted schema name.
    static let steps: [(version: Int, name: String, sql: String)] = [
        (1, "notifications and dead letters", """
        CREATE TABLE $S.notifications (
            id                text PRIMARY KEY,
            shop_id           text NOT NULL,
            user_id           text NOT NULL,
            rule_id           text NOT NULL,
            variant           text,
            priority          text NOT NULL,
            channels          text[] NOT NULL,
            status            text NOT NULL,
            reason            text,
            merged_into       text,
            title             text,
            body              text,
            escalated         boolean NOT NULL DEFAULT false,
            tags              text[] NOT NULL DEFAULT '{}',
            trigger_event_ids text[] NOT NULL,
            event_time        timestamptz NOT NULL,
            due_at            timestamptz,
            decided_at        timestamptz NOT NULL,
            created_at        timestamptz NOT NULL DEFAULT now(),
            updated_at        timestamptz NOT NULL DEFAULT now(),
            rules_version     text NOT NULL
        );
        CREATE INDEX notifications_shop_rule_time ON $S.notifications (shop_id, rule_id, event_time);
        CREATE INDEX notifications_time ON $S.notifications (event_time);
        CREATE TABLE $S.dead_letters (
            id               bigserial PRIMARY KEY,
            stage            text NOT NULL,
            reason           text NOT NULL,
            detail           text NOT NULL,
            source_topic     text NOT NULL,
            source_partition integer NOT NULL,
            source_offset    bigint NOT NULL,
            payload          bytea NOT NULL,
            payload_size     integer NOT NULL,
            received_at      timestamptz NOT NULL,
            written_at       timestamptz NOT NULL DEFAULT now(),
            UNIQUE (source_topic, source_partition, source_offset)
        );
        CREATE INDEX dead_letters_received ON $S.dead_letters (received_at);
        """),
        (2, "conversions", """
        CREATE TABLE $S.conversions (
            notification_id text NOT NULL,
            rule_id         text NOT NULL,
            shop_id         text NOT NULL,
            user_id         text NOT NULL,
            variant         text,
            goal_event_id   text NOT NULL,
            converted_at    timestamptz NOT NULL,
            written_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (notification_id)
        );
        CREATE INDEX conversions_rule_time ON $S.conversions (rule_id, converted_at);
        """),
    ]

    public static var latestVersion: Int { steps.last!.version }

    /// Applies the missing steps; returns the versions applied.
    @discardableResult
    public func migrate(_ conn: PostgresConnection, logger: Logger) throws -> [Int] {
        let s = SQLIdentifier.quoted(schema)
        return try conn.transaction {
            // One migrator at a time, whatever the schema name.
            try conn.execute("SELECT pg_advisory_xact_lock(7262461)")
            try conn.execute("CREATE SCHEMA IF NOT EXISTS \(s)")
            try conn.execute("""
                CREATE TABLE IF NOT EXISTS \(s).schema_migrations (
                    version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
                """)
            let done = Set(try conn.execute("SELECT version FROM \(s).schema_migrations").rows.compactMap { $0[0].flatMap(Int.init) })
            var applied: [Int] = []
            for step in Self.steps where !done.contains(step.version) {
                logger.info("applying migration", metadata: ["version": "\(step.version)", "name": "\(step.name)"])
                try conn.execute(step.sql.replacingOccurrences(of: "$S", with: s))
                try conn.execute("INSERT INTO \(s).schema_migrations (version, name) VALUES ($1, $2)",
                                 [String(step.version), step.name])
                applied.append(step.version)
            }
            return applied
        }
    }

    /// The schema version in the database (0 when not migrated).
    public func currentVersion(_ conn: PostgresConnection) throws -> Int {
        let r = try conn.execute("SELECT to_regclass($1) IS NOT NULL", ["\(schema).schema_migrations"])
        guard r[0, 0] == "t" else { return 0 }
        return Int(try conn.execute("SELECT coalesce(max(version), 0) FROM \(SQLIdentifier.quoted(schema)).schema_migrations")[0, 0] ?? "0") ?? 0
    }
}
