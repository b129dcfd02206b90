import HeraldCore
import HeraldPostgres

/// Writes a batch of outcomes and dead letters in one transaction (SPEC §7): upserts by
/// notification id (a final status never moves back, a replayed outcome changes nothing),
/// moves the `rule_stats_minute` counts of exactly the rows it changed, and opens an
/// escalation for each notification that became `sent` with `escalated`.
///
/// Most batches hold only notifications PostgreSQL has never seen, so the writer first tries
/// the cheap path: `COPY` straight into `notifications` (inside a savepoint), with the rollup
/// deltas summed here. If any id is already there (a replay, `deferred` → final, another sink
/// that wrote it meanwhile) the primary key refuses the `COPY`, the savepoint is rolled back,
/// and the batch takes the staged path: `COPY` into a staging table, an insert of the new ids
/// (`ON CONFLICT DO NOTHING`), then the previous-version upsert for the ids that conflicted.
/// After a refused `COPY` the next batches go straight to the staged path for a while.
struct SinkWriter {
    let schema: String
    let partitions: NotificationPartitions
    /// Days whose partition this writer has seen exist (cleared when a write fails).
    private(set) var knownDays: Set<Int64> = []
    /// Batches still to send through the staged path before the direct `COPY` is tried again.
    private(set) var stagedBatchesAhead = 0
    /// How many batches a refused direct `COPY` sends through the staged path (doubles while
    /// refusals repeat, so a long replay wastes at most one `COPY` in `maxStagedRun` batches).
    private(set) var stagedRun = 1
    static let maxStagedRun = 64
    /// How the last batch of outcomes was written (for tests and logs).
    private(set) var lastPath: Path?

    enum Path: Equatable { case direct, staged }

    init(schema: String) {
        self.schema = schema
        self.partitions = NotificationPartitions(schema: schema)
    }

    static let columns = "id, shop_id, user_id, rule_id, variant, priority, channels, status, reason, merged_into, title, body, escalated, tags, trigger_event_ids, event_time, due_at, decided_at, rules_version"

    /// Creates the connection's staging table; once per connection.
    func prepare(_ conn: PostgresConnection) throws {
        try conn.execute("""
            CREATE TEMP TABLE IF NOT EXISTS herald_staged_notifications (
                id text, shop_id text, user_id text, rule_id text, variant text, priority text,
                channels text[], status text, reason text, merged_into text, title text, body text, escalated boolean,
                tags text[], trigger_event_ids text[], event_time timestamptz, due_at timestamptz,
                decided_at timestamptz, rules_version text
            ) ON COMMIT DELETE ROWS
            """)
    }

    /// One `COPY` row in the order of `columns`, written field by field into `rows` (no
    /// intermediate strings for the arrays and timestamps).
    static func appendRow(_ o: Outcome, to rows: inout CopyRows) {
        rows.field(o.notificationID); rows.field(o.shopID); rows.field(o.userID); rows.field(o.ruleID)
        rows.field(o.variant); rows.field(o.priority.rawValue); rows.arrayField(o.channels)
        rows.field(o.status.rawValue); rows.field(o.reason); rows.field(o.mergedInto); rows.field(o.title)
        rows.field(o.body); rows.field(o.escalated ? "t" : "f"); rows.arrayField(o.tags)
        rows.arrayField(o.triggerEventIDs); rows.asciiField(o.eventTime.appendRFC3339)
        if let due = o.dueAt { rows.asciiField(due.appendRFC3339) } else { rows.field(nil) }
        rows.asciiField(o.decidedAt.appendRFC3339); rows.field(o.rulesVersion)
        rows.endRow()
    }

    /// One outcome per notification id: the last final status if the batch has one (a final
    /// status is never replaced by `deferred`), otherwise the last deferral. In order of
    /// first appearance.
    static func latestPerID(_ rows: OutcomeRows) -> OutcomeRows {
        let all = rows.outcomes
        var index: [String: Int] = [:]
        index.reserveCapacity(rows.count)
        var out: [Int] = []
        out.reserveCapacity(rows.count)
        for i in rows.indices {
            if let k = index[all[i].notificationID] {
                if all[i].status != .deferred || all[out[k]].status == .deferred { out[k] = i }
            } else {
                index[all[i].notificationID] = out.count
                out.append(i)
            }
        }
        return OutcomeRows(all, indices: out)
    }

    /// Makes sure a partition exists for every day the outcomes fall on (its own short
    /// transaction, before the batch's, so the batch never waits on DDL it does not need).
    mutating func ensurePartitions(for rows: OutcomeRows, on conn: PostgresConnection) throws {
        var missing: Set<Int64> = []
        for i in rows.indices {
            let d = NotificationPartitions.day(of: rows.outcomes[i].eventTime)
            if !knownDays.contains(d) { missing.insert(d) }
        }
        for d in missing.sorted() {
            try partitions.ensure(days: d...d, on: conn)
            knownDays.insert(d)
        }
    }

    /// The `timestamptz` bounds [from, to) of the event time a notification id carries
    /// (`StableID.eventTimeRange`); an empty range for an id Herald did not make.
    static func eventTimeBounds(ofNotificationID id: String) -> (String, String) {
        guard let range = StableID.eventTimeRange(ofNotificationID: id) else { return ("infinity", "infinity") }
        return (range.from?.rfc3339 ?? "-infinity", range.to?.rfc3339 ?? "infinity")
    }

    /// Forget which partitions exist (retention may have dropped some).
    mutating func forgetPartitions() { knownDays.removeAll() }

    /// Returns the number of notification rows inserted or changed.
    @discardableResult
    mutating func write(outcomes: [Outcome], conversions: [Conversion] = [], engagements: [Engagement] = [],
                        deadLetters: [DeadLetter], on conn: PostgresConnection) throws -> Int {
        try write(OutcomeRows(outcomes), conversions: conversions, engagements: engagements, deadLetters: deadLetters,
                  on: conn)
    }

    /// Writes `rows` (some of a batch's outcomes), conversions, engagements and dead letters.
    @discardableResult
    mutating func write(_ rows: OutcomeRows, conversions: [Conversion] = [], engagements: [Engagement] = [],
                        deadLetters: [DeadLetter], on conn: PostgresConnection) throws -> Int {
        do {
            try ensurePartitions(for: rows, on: conn)
            return try writeBatch(outcomes: Self.latestPerID(rows).sortedByEventTime(), conversions: conversions,
                                  engagements: engagements, deadLetters: deadLetters, on: conn)
        } catch {
            forgetPartitions()
            throw error
        }
    }

    private mutating func writeBatch(outcomes: OutcomeRows, conversions: [Conversion], engagements: [Engagement],
                                     deadLetters: [DeadLetter], on conn: PostgresConnection) throws -> Int {
        let s = SQLIdentifier.quoted(schema)
        return try conn.transaction {
            var changed = 0
            if !outcomes.isEmpty {
                changed = try writeOutcomes(outcomes, on: conn)
            }
            // One conversion per notification: the first goal event. After the outcomes, so a
            // conversion finds a notification written in the same batch: it takes that
            // notification's event time (the funnel's cohort) and variant. A notification is found
            // by id within the millisecond its id carries (the primary key starts with
            // event_time; there is no index on id alone).
            for c in conversions {
                let (from, to) = Self.eventTimeBounds(ofNotificationID: c.notificationID)
                try conn.execute("""
                    INSERT INTO \(s).conversions
                        (notification_id, notification_time, shop_id, user_id, rule_id, variant, goal_event_id, converted_at)
                    SELECT $1, coalesce(n.event_time, $7::timestamptz), $2, $3, $4, coalesce($5, n.variant), $6, $7
                    FROM (SELECT 1) one LEFT JOIN LATERAL (
                        SELECT event_time, variant FROM \(s).notifications
                        WHERE event_time >= $8 AND event_time < $9 AND id = $1 LIMIT 1) n ON true
                    ON CONFLICT (notification_id) DO NOTHING
                    """, [c.notificationID, c.shopID, c.userID, c.ruleID, c.variant, c.goalEventID, c.convertedAt.rfc3339,
                          from, to])
            }
            // Engagements take the notification's cohort time, shop, rule and variant from its
            // row; an open of a notification Herald never wrote has nothing to count against.
            for e in engagements {
                let (from, to) = Self.eventTimeBounds(ofNotificationID: e.notificationID)
                try conn.execute("""
                    INSERT INTO \(s).engagements
                        (notification_id, notification_time, shop_id, rule_id, variant, kind, event_id, occurred_at)
                    SELECT n.id, n.event_time, n.shop_id, n.rule_id, n.variant, $2, $3, $4
                    FROM \(s).notifications n WHERE n.event_time >= $5 AND n.event_time < $6 AND n.id = $1
                    ORDER BY n.event_time LIMIT 1
                    ON CONFLICT (notification_id, kind, event_id) DO NOTHING
                    """, [e.notificationID, e.kind.rawValue, e.eventID, e.occurredAt.rfc3339, from, to])
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

    /// Writes deduplicated outcomes inside the batch's transaction; returns the rows changed.
    private mutating func writeOutcomes(_ outcomes: OutcomeRows, on conn: PostgresConnection) throws -> Int {
        if stagedBatchesAhead == 0 {
            do {
                try writeDirect(outcomes, on: conn)
                stagedRun = 1
                lastPath = .direct
                return outcomes.count
            } catch let error as PostgresError where error.sqlState == "23505" {
                // Some id is already stored: the savepoint is rolled back, nothing was written.
                stagedBatchesAhead = stagedRun
                stagedRun = min(stagedRun * 2, Self.maxStagedRun)
            }
        } else {
            stagedBatchesAhead -= 1
        }
        lastPath = .staged
        return try writeStaged(outcomes, on: conn)
    }

    /// Every id is new: `COPY` into `notifications`, rollup deltas summed here, escalations
    /// for the `sent` ones. Throws unique_violation (23505), having written nothing, if any
    /// of them is already stored.
    private func writeDirect(_ outcomes: OutcomeRows, on conn: PostgresConnection) throws {
        let s = SQLIdentifier.quoted(schema)
        _ = try conn.transaction {
            try conn.copyFrom("COPY \(s).notifications (\(Self.columns)) FROM STDIN") { rows in
                outcomes.forEach { Self.appendRow($0, to: &rows) }
            }
        }
        try addRollup(RollupDeltas(adding: outcomes), on: conn)
        let escalated = outcomes.indices.filter { outcomes.outcomes[$0].status == .sent && outcomes.outcomes[$0].escalated }
            .map { outcomes.outcomes[$0] }
        if !escalated.isEmpty {
            try conn.execute("""
                INSERT INTO \(s).escalations (notification_id, shop_id, user_id, rule_id, priority, tags, event_time)
                SELECT id, shop, usr, rule, prio, tags::text[], t
                FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
                    AS e(id, shop, usr, rule, prio, tags, t)
                ON CONFLICT (notification_id) DO NOTHING
                """, [
                    PostgresArray.literal(escalated.map(\.notificationID)), PostgresArray.literal(escalated.map(\.shopID)),
                    PostgresArray.literal(escalated.map(\.userID)), PostgresArray.literal(escalated.map(\.ruleID)),
                    PostgresArray.literal(escalated.map(\.priority.rawValue)),
                    PostgresArray.literal(escalated.map { PostgresArray.literal($0.tags) }),
                    PostgresArray.literal(escalated.map(\.eventTime.rfc3339)),
                ])
        }
    }

    /// Adds summed deltas to `rule_stats_minute`, in key order (concurrent sinks lock the rows
    /// in the same order).
    private func addRollup(_ deltas: RollupDeltas, on conn: PostgresConnection) throws {
        let entries = deltas.counts.filter { $0.value != 0 }
        guard !entries.isEmpty else { return }
        let keys = Array(entries.keys)
        try conn.execute("""
            INSERT INTO \(SQLIdentifier.quoted(schema)).rule_stats_minute AS r
                (minute, shop_id, rule_id, variant, status, reason, count)
            SELECT date_trunc('minute', m), sh, ru, va, st, re, c
            FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])
                AS d(m, sh, ru, va, st, re, c)
            ORDER BY 1, 2, 3, 4, 5, 6
            ON CONFLICT (minute, shop_id, rule_id, variant, status, reason)
                DO UPDATE SET count = r.count + excluded.count
            """, [
                PostgresArray.literal(keys.map { Timestamp(microseconds: $0.minute).rfc3339 }),
                PostgresArray.literal(keys.map(\.shopID)), PostgresArray.literal(keys.map(\.ruleID)),
                PostgresArray.literal(keys.map(\.variant)), PostgresArray.literal(keys.map(\.status)),
                PostgresArray.literal(keys.map(\.reason)), PostgresArray.literal(keys.map { String(entries[$0]!) }),
            ])
    }

    /// Some ids may be stored already: `COPY` into the staging table, insert the new ids
    /// (`ON CONFLICT DO NOTHING`, counting them in the rollup and taking them out of staging),
    /// then the previous-version upsert for what is left, in a statement of its own so that it
    /// sees rows another sink committed meanwhile.
    private func writeStaged(_ outcomes: OutcomeRows, on conn: PostgresConnection) throws -> Int {
        let s = SQLIdentifier.quoted(schema)
        try conn.copyFrom("COPY herald_staged_notifications (\(Self.columns)) FROM STDIN") { rows in
            outcomes.forEach { Self.appendRow($0, to: &rows) }
        }
        let inserted = Int(try conn.execute("""
            WITH ins AS (
                INSERT INTO \(s).notifications (\(Self.columns))
                SELECT \(Self.columns) FROM herald_staged_notifications
                ON CONFLICT (event_time, shop_id, rule_id, id) DO NOTHING
                RETURNING id, event_time, shop_id, user_id, rule_id, variant, priority, status, reason, escalated, tags
            ), counted AS (
                INSERT INTO \(s).rule_stats_minute AS r (minute, shop_id, rule_id, variant, status, reason, count)
                SELECT date_trunc('minute', event_time), shop_id, rule_id, coalesce(variant, ''), status,
                       coalesce(reason, ''), count(*)
                FROM ins GROUP BY 1, 2, 3, 4, 5, 6
                ON CONFLICT (minute, shop_id, rule_id, variant, status, reason)
                    DO UPDATE SET count = r.count + excluded.count
            ), escalated AS (
                INSERT INTO \(s).escalations (notification_id, shop_id, user_id, rule_id, priority, tags, event_time)
                SELECT id, shop_id, user_id, rule_id, priority, tags, event_time FROM ins
                WHERE status = 'sent' AND escalated
                ON CONFLICT (notification_id) DO NOTHING
            ), done AS (
                DELETE FROM herald_staged_notifications st USING ins
                WHERE st.id = ins.id AND st.event_time = ins.event_time
            )
            SELECT count(*) FROM ins
            """)[0, 0] ?? "0") ?? 0
        guard inserted < outcomes.count else { return inserted }
        // What is left conflicted: only a `deferred` row moves, to a final status or a later
        // deferral. `prev` reads the statement's snapshot, so it holds the rows as they were
        // before `up` changed them: the rollup subtracts their old key and adds the new one.
        // Rows `up` leaves alone (replays) count nothing.
        let r = try conn.execute("""
            WITH prev AS (
                SELECT n.id, n.event_time, n.shop_id, n.rule_id, n.variant, n.status, n.reason
                FROM \(s).notifications n JOIN herald_staged_notifications b USING (event_time, shop_id, rule_id, id)
            ), up AS (
                INSERT INTO \(s).notifications AS n (\(Self.columns))
                SELECT \(Self.columns) FROM herald_staged_notifications
                ON CONFLICT (event_time, shop_id, rule_id, id) DO UPDATE SET
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
                FROM prev p JOIN up USING (event_time, shop_id, rule_id, id)
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
        return inserted + (Int(r[0, 0] ?? "0") ?? 0)
    }
}

/// Rollup deltas of one batch, summed per `rule_stats_minute` key.
struct RollupDeltas {
    struct Key: Hashable {
        /// The start of the event's UTC minute, in microseconds.
        var minute: Int64
        var shopID, ruleID, variant, status, reason: String
    }

    var counts: [Key: Int] = [:]

    /// +1 for each outcome's key ('' for no variant or reason, as in the table).
    init(adding outcomes: OutcomeRows) {
        // Field by field from the array: handing whole outcomes to a closure copies each.
        let all = outcomes.outcomes
        for i in outcomes.indices {
            let us = all[i].eventTime.microseconds
            let key = Key(minute: us - ((us % 60_000_000) + 60_000_000) % 60_000_000, shopID: all[i].shopID,
                          ruleID: all[i].ruleID, variant: all[i].variant ?? "", status: all[i].status.rawValue,
                          reason: all[i].reason ?? "")
            counts[key, default: 0] += 1
        }
    }
}

/// Some of a batch's outcomes, named by their index in the batch: splitting a batch into
/// writer lanes, keeping the latest outcome per id and ordering rows by time copy no outcome
/// into new arrays (each copy retains a dozen strings and arrays).
struct OutcomeRows {
    let outcomes: [Outcome]
    private(set) var indices: [Int]

    init(_ outcomes: [Outcome]) {
        self.outcomes = outcomes
        self.indices = Array(outcomes.indices)
    }

    init(_ outcomes: [Outcome], indices: [Int]) {
        self.outcomes = outcomes
        self.indices = indices
    }

    var count: Int { indices.count }
    var isEmpty: Bool { indices.isEmpty }

    /// The selected outcome at `position` (0 is the first selected).
    subscript(position: Int) -> Outcome { outcomes[indices[position]] }

    /// Calls `body` with each selected outcome in order. (Each call retains and releases the
    /// outcome's strings and arrays; hot loops that need a few fields read them in place.)
    func forEach(_ body: (Outcome) throws -> Void) rethrows {
        for i in indices { try body(outcomes[i]) }
    }

    /// The selected outcomes as an array (copies).
    func map<T>(_ transform: (Outcome) throws -> T) rethrows -> [T] {
        var out: [T] = []
        out.reserveCapacity(indices.count)
        try forEach { out.append(try transform($0)) }
        return out
    }

    /// The same rows in event-time order (stable): a backlog batch reads many Kafka
    /// partitions a chunk at a time, and rows in key order descend the time-first primary
    /// key to neighbouring pages instead of all over the hour.
    func sortedByEventTime() -> OutcomeRows {
        let all = outcomes
        let times = indices.map { all[$0].eventTime.microseconds }
        let order = indices.indices.sorted { times[$0] < times[$1] || (times[$0] == times[$1] && $0 < $1) }
        return OutcomeRows(outcomes, indices: order.map { indices[$0] })
    }
}

enum PostgresArray {
    /// A `text[]` input literal: every element double-quoted with `"` and `\` escaped.
    static func literal(_ values: [String]) -> String {
        var out: [UInt8] = [UInt8(ascii: "{")]
        for i in values.indices {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(UInt8(ascii: "\""))
            for b in values[i].utf8 {
                if b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") { out.append(UInt8(ascii: "\\")) }
                out.append(b)
            }
            out.append(UInt8(ascii: "\""))
        }
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
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
