import HeraldCore
import HeraldPostgres

/// Writes a batch of outcomes and dead letters in one transaction (SPEC §7):
/// `COPY` into a staging table, then one set-based statement that upserts by notification
/// id (a final status never moves back, a replayed outcome changes nothing), moves the
/// `rule_stats_minute` counts of exactly the rows it changed, and opens an escalation for
/// each notification that became `sent` with `escalated`.
struct SinkWriter {
    let schema: String
    let partitions: NotificationPartitions
    /// Days whose partition this writer has seen exist (cleared when a write fails).
    private(set) var knownDays: Set<Int64> = []

    init(schema: String) {
        self.schema = schema
        self.partitions = NotificationPartitions(schema: schema)
    }

    static let columns = "id, shop_id, user_id, rule_id, variant, priority, channels, status, reason, merged_into, title, body, escalated, tags, trigger_event_ids, event_time, due_at, decided_at, rules_version"

    /// Creates the connection's staging table; once per connection.
    func prepare(_ conn: PostgresConnection) throws {
        try conn.execute("""
            CREATE TEMP TABLE IF NOT EXISTS herald_staged_outcomes (
                seq bigint NOT NULL, id text, shop_id text, user_id text, rule_id text, variant text, priority text,
                channels text[], status text, reason text, merged_into text, title text, body text, escalated boolean,
                tags text[], trigger_event_ids text[], event_time timestamptz, due_at timestamptz,
                decided_at timestamptz, rules_version text
            ) ON COMMIT DELETE ROWS
            """)
    }

    /// One `COPY` row: `seq` then `columns`.
    static func stagedRow(_ o: Outcome, seq: Int) -> [String?] {
        [
            String(seq), o.notificationID, o.shopID, o.userID, o.ruleID, o.variant, o.priority.rawValue,
            PostgresArray.literal(o.channels), o.status.rawValue, o.reason, o.mergedInto, o.title, o.body,
            o.escalated ? "t" : "f", PostgresArray.literal(o.tags), PostgresArray.literal(o.triggerEventIDs),
            o.eventTime.rfc3339, o.dueAt?.rfc3339, o.decidedAt.rfc3339, o.rulesVersion,
        ]
    }

    /// Makes sure a partition exists for every day the outcomes fall on (its own short
    /// transaction, before the batch's, so the batch never waits on DDL it does not need).
    mutating func ensurePartitions(for outcomes: [Outcome], on conn: PostgresConnection) throws {
        var missing: Set<Int64> = []
        for o in outcomes {
            let d = NotificationPartitions.day(of: o.eventTime)
            if !knownDays.contains(d) { missing.insert(d) }
        }
        for d in missing.sorted() {
            try partitions.ensure(days: d...d, on: conn)
            knownDays.insert(d)
        }
    }

    /// Forget which partitions exist (retention may have dropped some).
    mutating func forgetPartitions() { knownDays.removeAll() }

    /// Returns the number of notification rows inserted or changed.
    @discardableResult
    mutating func write(outcomes: [Outcome], conversions: [Conversion] = [], engagements: [Engagement] = [],
                        deadLetters: [DeadLetter], on conn: PostgresConnection) throws -> Int {
        do {
            try ensurePartitions(for: outcomes, on: conn)
            return try writeBatch(outcomes: outcomes, conversions: conversions, engagements: engagements,
                                  deadLetters: deadLetters, on: conn)
        } catch {
            forgetPartitions()
            throw error
        }
    }

    private func writeBatch(outcomes: [Outcome], conversions: [Conversion], engagements: [Engagement],
                            deadLetters: [DeadLetter], on conn: PostgresConnection) throws -> Int {
        let s = SQLIdentifier.quoted(schema)
        return try conn.transaction {
            var changed = 0
            if !outcomes.isEmpty {
                try conn.copyFrom("COPY herald_staged_outcomes (seq, \(Self.columns)) FROM STDIN") { rows in
                    for (i, o) in outcomes.enumerated() { rows.append(Self.stagedRow(o, seq: i)) }
                }
                // Within a batch the last status change of an id wins, except that a final
                // status is never replaced by `deferred`; across batches the same holds in the
                // ON CONFLICT clause. `prev` reads the statement's snapshot, so it holds the
                // rows as they were before `up` changed them: the rollup subtracts their old
                // key and adds the new one. Rows `up` leaves alone (replays) count nothing.
                let r = try conn.execute("""
                    WITH batch AS (
                        SELECT DISTINCT ON (id) \(Self.columns) FROM herald_staged_outcomes
                        ORDER BY id, (status <> 'deferred') DESC, seq DESC
                    ), prev AS (
                        SELECT n.id, n.event_time, n.shop_id, n.rule_id, n.variant, n.status, n.reason
                        FROM \(s).notifications n JOIN batch b USING (id, event_time)
                    ), up AS (
                        INSERT INTO \(s).notifications AS n (\(Self.columns))
                        SELECT \(Self.columns) FROM batch
                        ON CONFLICT (id, event_time) DO UPDATE SET
                            status = excluded.status, reason = excluded.reason, variant = excluded.variant,
                            merged_into = excluded.merged_into, title = excluded.title, body = excluded.body,
                            escalated = excluded.escalated, due_at = excluded.due_at, decided_at = excluded.decided_at,
                            channels = excluded.channels, tags = excluded.tags, updated_at = now()
                        WHERE n.status = 'deferred'
                          AND (excluded.status <> 'deferred' OR excluded.decided_at > n.decided_at)
                        RETURNING n.id, n.event_time, n.shop_id, n.user_id, n.rule_id, n.variant, n.priority, n.status,
                                  n.reason, n.escalated, n.tags
                    ), delta AS (
                        SELECT event_time, shop_id, rule_id, variant, status, reason, 1 AS d FROM up
                        UNION ALL
                        SELECT p.event_time, p.shop_id, p.rule_id, p.variant, p.status, p.reason, -1
                        FROM prev p JOIN up USING (id, event_time)
                    ), counted AS (
                        INSERT INTO \(s).rule_stats_minute AS r (minute, shop_id, rule_id, variant, status, reason, count)
                        SELECT date_trunc('minute', event_time), shop_id, rule_id, coalesce(variant, ''), status,
                               coalesce(reason, ''), sum(d)
                        FROM delta GROUP BY 1, 2, 3, 4, 5, 6 HAVING sum(d) <> 0
                        ON CONFLICT (minute, shop_id, rule_id, variant, status, reason)
                            DO UPDATE SET count = r.count + excluded.count
                    ), escalated AS (
                        INSERT INTO \(s).escalations (notification_id, shop_id, user_id, rule_id, priority, tags, event_time)
                        SELECT id, shop_id, user_id, rule_id, priority, tags, event_time FROM up
                        WHERE status = 'sent' AND escalated
                        ON CONFLICT (notification_id) DO NOTHING
                    )
                    SELECT count(*) FROM up
                    """)
                changed = Int(r[0, 0] ?? "0") ?? 0
            }
            // One conversion per notification: the first goal event. After the outcomes, so a
            // conversion finds a notification written in the same batch: it takes that
            // notification's event time (the funnel's cohort) and variant.
            for c in conversions {
                try conn.execute("""
                    INSERT INTO \(s).conversions
                        (notification_id, notification_time, shop_id, user_id, rule_id, variant, goal_event_id, converted_at)
                    SELECT $1, coalesce(n.event_time, $7::timestamptz), $2, $3, $4, coalesce($5, n.variant), $6, $7
                    FROM (SELECT 1) one LEFT JOIN LATERAL (
                        SELECT event_time, variant FROM \(s).notifications WHERE id = $1 LIMIT 1) n ON true
                    ON CONFLICT (notification_id) DO NOTHING
                    """, [c.notificationID, c.shopID, c.userID, c.ruleID, c.variant, c.goalEventID, c.convertedAt.rfc3339])
            }
            // Engagements take the notification's cohort time, shop, rule and variant from its
            // row; an open of a notification Herald never wrote has nothing to count against.
            for e in engagements {
                try conn.execute("""
                    INSERT INTO \(s).engagements
                        (notification_id, notification_time, shop_id, rule_id, variant, kind, event_id, occurred_at)
                    SELECT n.id, n.event_time, n.shop_id, n.rule_id, n.variant, $2, $3, $4
                    FROM \(s).notifications n WHERE n.id = $1
                    ORDER BY n.event_time LIMIT 1
                    ON CONFLICT (notification_id, kind, event_id) DO NOTHING
                    """, [e.notificationID, e.kind.rawValue, e.eventID, e.occurredAt.rfc3339])
            }
            for d in deadLetters {
                try conn.execute("""
                    INSERT INTO \(s).dead_letters
                        (stage, reason, detail, source_topic, source_partition, source_offset, payload, payload_size, received_at)
                    VALUES ($1, $2, $3, $4, $5, $6, decode($7, 'hex'), $8, $9)
                    ON CONFLICT (source_topic, source_partition, source_offset) DO NOTHING
                    """,
                    [d.stage, d.reason, d.detail, d.sourceTopic, String(d.sourcePartition), String(d.sourceOffset),
                     Hex.encode(d.payload), String(d.payloadSize), d.receivedAt.rfc3339])
            }
            return changed
        }
    }
}

enum PostgresArray {
    /// A `text[]` input literal: every element double-quoted with `"` and `\` escaped.
    static func literal(_ values: [String]) -> String {
        var out = "{"
        for (i, v) in values.enumerated() {
            if i > 0 { out += "," }
            out += "\""
            for ch in v.unicodeScalars {
                if ch == "\"" || ch == "\\" { out += "\\" }
                out.unicodeScalars.append(ch)
            }
            out += "\""
        }
        return out + "}"
    }
}

enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
