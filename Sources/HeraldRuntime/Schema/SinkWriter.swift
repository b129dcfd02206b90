import HeraldCore
import HeraldPostgres

/// Writes a batch of outcomes and dead letters in one transaction (SPEC §7):
/// `COPY` into a staging table, then one set-based upsert by notification id in which a
/// final status never moves back and a replayed outcome changes nothing.
struct SinkWriter {
    let schema: String

    init(schema: String) {
        self.schema = schema
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

    /// Returns the number of notification rows inserted or changed.
    @discardableResult
    func write(outcomes: [Outcome], conversions: [Conversion] = [], deadLetters: [DeadLetter],
               on conn: PostgresConnection) throws -> Int {
        let s = SQLIdentifier.quoted(schema)
        return try conn.transaction {
            var changed = 0
            if !outcomes.isEmpty {
                try conn.copyFrom("COPY herald_staged_outcomes (seq, \(Self.columns)) FROM STDIN") { rows in
                    for (i, o) in outcomes.enumerated() {
                        rows.append([
                            String(i), o.notificationID, o.shopID, o.userID, o.ruleID, o.variant, o.priority.rawValue,
                            PostgresArray.literal(o.channels), o.status.rawValue, o.reason, o.mergedInto, o.title, o.body,
                            o.escalated ? "t" : "f", PostgresArray.literal(o.tags), PostgresArray.literal(o.triggerEventIDs),
                            o.eventTime.rfc3339, o.dueAt?.rfc3339, o.decidedAt.rfc3339, o.rulesVersion,
                        ])
                    }
                }
                // Within a batch the last status change of an id wins, except that a final
                // status is never replaced by `deferred`; across batches the same holds in
                // the ON CONFLICT clause.
                let r = try conn.execute("""
                    INSERT INTO \(s).notifications AS n (\(Self.columns))
                    SELECT DISTINCT ON (id) \(Self.columns) FROM herald_staged_outcomes
                    ORDER BY id, (status <> 'deferred') DESC, seq DESC
                    ON CONFLICT (id) DO UPDATE SET
                        status = excluded.status, reason = excluded.reason, variant = excluded.variant,
                        merged_into = excluded.merged_into, title = excluded.title, body = excluded.body,
                        escalated = excluded.escalated, due_at = excluded.due_at, decided_at = excluded.decided_at,
                        channels = excluded.channels, updated_at = now()
                    WHERE n.status = 'deferred'
                      AND (excluded.status <> 'deferred' OR excluded.decided_at > n.decided_at)
                    """)
                changed = r.affectedRows
            }
            // One conversion per notification: the first goal event.
            for c in conversions {
                try conn.execute("""
                    INSERT INTO \(s).conversions (notification_id, rule_id, shop_id, user_id, variant, goal_event_id, converted_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7)
                    ON CONFLICT (notification_id) DO NOTHING
                    """,
                    [c.notificationID, c.ruleID, c.shopID, c.userID, c.variant, c.goalEventID, c.convertedAt.rfc3339])
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
