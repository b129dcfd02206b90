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
        (1, "notifications partitioned by day, dead letters", """
        CREATE TABLE $S.notifications (
            id                text NOT NULL,
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
            rules_version     text NOT NULL,
            -- Every outcome of a notification carries its trigger's event_time, so
            -- (id, event_time) names one row and lets the key include the partition key.
            PRIMARY KEY (id, event_time)
        ) PARTITION BY RANGE (event_time);
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

        -- One partition per UTC day, named notifications_pYYYYMMDD. Idempotent; serialised
        -- by an advisory lock so that sinks and `herald migrate` can call it concurrently.
        CREATE FUNCTION $S.ensure_notification_partitions(first_day date, last_day date) RETURNS integer
        LANGUAGE plpgsql AS $$
        DECLARE
            parent regclass := '$S.notifications'::regclass;
            nsp text;
            d date;
            created integer := 0;
        BEGIN
            SELECT n.nspname INTO nsp FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent;
            PERFORM pg_advisory_xact_lock(7262462);
            d := first_day;
            WHILE d <= last_day LOOP
                IF to_regclass(format('%I.%I', nsp, 'notifications_p' || to_char(d, 'YYYYMMDD'))) IS NULL THEN
                    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.notifications FOR VALUES FROM (%L) TO (%L)',
                                   nsp, 'notifications_p' || to_char(d, 'YYYYMMDD'), nsp,
                                   d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
                    created := created + 1;
                END IF;
                d := d + 1;
            END LOOP;
            RETURN created;
        END $$;

        -- Retention: drops every daily partition that ends at or before `cutoff`, whole.
        CREATE FUNCTION $S.drop_notification_partitions(cutoff timestamptz) RETURNS SETOF text
        LANGUAGE plpgsql AS $$
        DECLARE
            parent regclass := '$S.notifications'::regclass;
            nsp text;
            part record;
        BEGIN
            SELECT n.nspname INTO nsp FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent;
            PERFORM pg_advisory_xact_lock(7262462);
            FOR part IN
                SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = parent AND c.relname ~ '^notifications_p[0-9]{8}$'
                  AND (to_date(substr(c.relname, 16), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= cutoff
                ORDER BY c.relname
            LOOP
                EXECUTE format('DROP TABLE %I.%I', nsp, part.relname);
                RETURN NEXT part.relname;
            END LOOP;
        END $$;
        """),
        (2, "escalations, conversions, engagements, rule_stats_minute", """
        CREATE TABLE $S.escalations (
            notification_id text PRIMARY KEY,
            shop_id         text NOT NULL,
            user_id         text NOT NULL,
            rule_id         text NOT NULL,
            priority        text NOT NULL,
            tags            text[] NOT NULL DEFAULT '{}',
            status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'claimed', 'resolved')),
            event_time      timestamptz NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            claimed_by      text,
            claimed_at      timestamptz,
            resolved_at     timestamptz
        );
        CREATE INDEX escalations_open ON $S.escalations (shop_id, created_at) WHERE status <> 'resolved';

        -- One conversion per notification (its first goal event). notification_time is the
        -- notification's event_time: the funnel groups by it (cohorts).
        CREATE TABLE $S.conversions (
            notification_id   text PRIMARY KEY,
            notification_time timestamptz NOT NULL,
            shop_id           text NOT NULL,
            user_id           text NOT NULL,
            rule_id           text NOT NULL,
            variant           text,
            goal_event_id     text NOT NULL,
            converted_at      timestamptz NOT NULL,
            written_at        timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX conversions_time ON $S.conversions (notification_time);
        CREATE INDEX conversions_rule_time ON $S.conversions (rule_id, converted_at);

        CREATE TABLE $S.engagements (
            notification_id   text NOT NULL,
            notification_time timestamptz NOT NULL,
            shop_id           text NOT NULL,
            rule_id           text NOT NULL,
            variant           text,
            kind              text NOT NULL CHECK (kind IN ('opened', 'clicked')),
            event_id          text NOT NULL,
            occurred_at       timestamptz NOT NULL,
            written_at        timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (notification_id, kind, event_id)
        );
        CREATE INDEX engagements_time ON $S.engagements (notification_time);

        -- Notifications by their current status, per minute of event_time. The sink keeps it
        -- in the transaction that writes the rows: a status change moves one count from the
        -- old key to the new, a replay changes nothing. '' stands for "no variant/reason".
        CREATE TABLE $S.rule_stats_minute (
            minute  timestamptz NOT NULL,
            shop_id text NOT NULL,
            rule_id text NOT NULL,
            variant text NOT NULL,
            status  text NOT NULL,
            reason  text NOT NULL,
            count   bigint NOT NULL,
            PRIMARY KEY (minute, shop_id, rule_id, variant, status, reason)
        );
        """),
        (3, "dashboard views", """
        -- Each aggregate view is a set-returning SQL function over a time range that the
        -- planner inlines, so a dashboard's range reaches the indexes (rule_stats_minute's
        -- key starts with minute); the view is the same function over all time.
        CREATE FUNCTION $S.outcomes_per_hour_between(p_from timestamptz, p_to timestamptz)
        RETURNS TABLE (hour timestamptz, shop_id text, rule_id text, status text, notifications bigint)
        LANGUAGE sql STABLE AS $$
            SELECT date_trunc('hour', minute), shop_id, rule_id, status, sum(count)::bigint
            FROM $S.rule_stats_minute
            WHERE minute >= p_from AND minute < p_to
            GROUP BY 1, 2, 3, 4
        $$;
        CREATE VIEW $S.outcomes_per_hour AS SELECT * FROM $S.outcomes_per_hour_between('-infinity', 'infinity');

        CREATE FUNCTION $S.suppression_reasons_between(p_from timestamptz, p_to timestamptz)
        RETURNS TABLE (hour timestamptz, shop_id text, rule_id text, status text, reason text, notifications bigint)
        LANGUAGE sql STABLE AS $$
            SELECT date_trunc('hour', minute), shop_id, rule_id, status, reason, sum(count)::bigint
            FROM $S.rule_stats_minute
            WHERE minute >= p_from AND minute < p_to AND status IN ('suppressed', 'failed')
            GROUP BY 1, 2, 3, 4, 5
        $$;
        CREATE VIEW $S.suppression_reasons AS SELECT * FROM $S.suppression_reasons_between('-infinity', 'infinity');

        -- sent → opened → clicked → converted per rule and variant, by day of the
        -- notifications' event time (a cohort: a later open counts for the day it was sent).
        CREATE FUNCTION $S.funnel_between(p_from timestamptz, p_to timestamptz)
        RETURNS TABLE (day timestamptz, shop_id text, rule_id text, variant text,
                       sent bigint, opened bigint, clicked bigint, converted bigint)
        LANGUAGE sql STABLE AS $$
            WITH sent AS (
                SELECT date_trunc('day', minute) AS day, shop_id, rule_id, variant, sum(count)::bigint AS n
                FROM $S.rule_stats_minute
                WHERE minute >= p_from AND minute < p_to AND status = 'sent'
                GROUP BY 1, 2, 3, 4
            ), engaged AS (
                SELECT date_trunc('day', notification_time) AS day, shop_id, rule_id, coalesce(variant, '') AS variant,
                       count(DISTINCT notification_id) FILTER (WHERE kind = 'opened') AS opened,
                       count(DISTINCT notification_id) FILTER (WHERE kind = 'clicked') AS clicked
                FROM $S.engagements
                WHERE notification_time >= p_from AND notification_time < p_to
                GROUP BY 1, 2, 3, 4
            ), converted AS (
                SELECT date_trunc('day', notification_time) AS day, shop_id, rule_id, coalesce(variant, '') AS variant,
                       count(DISTINCT notification_id) AS converted
                FROM $S.conversions
                WHERE notification_time >= p_from AND notification_time < p_to
                GROUP BY 1, 2, 3, 4
            )
            SELECT day, shop_id, rule_id, nullif(variant, ''),
                   coalesce(s.n, 0), coalesce(e.opened, 0), coalesce(e.clicked, 0), coalesce(c.converted, 0)
            FROM sent s FULL JOIN engaged e USING (day, shop_id, rule_id, variant)
                        FULL JOIN converted c USING (day, shop_id, rule_id, variant)
        $$;
        CREATE VIEW $S.funnel AS SELECT * FROM $S.funnel_between('-infinity', 'infinity');

        -- One row per notification, so that a time filter on event_time prunes partitions
        -- and uses notifications_time; group by latency_bucket_ms for a histogram. Latency is
        -- event time → first written, so delayed rules include their wait.
        CREATE VIEW $S.notification_latency AS
        SELECT event_time, shop_id, rule_id, status,
               extract(epoch FROM created_at - event_time) * 1000 AS latency_ms,
               (SELECT min(b) FROM unnest(ARRAY[10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
                                               300000, 3600000, 86400000]) AS b
                 WHERE extract(epoch FROM created_at - event_time) * 1000 <= b) AS latency_bucket_ms
        FROM $S.notifications;

        CREATE VIEW $S.escalation_queue AS
        SELECT notification_id, shop_id, user_id, rule_id, priority, tags, status, created_at, claimed_by,
               now() - created_at AS age
        FROM $S.escalations
        WHERE status <> 'resolved'
        ORDER BY CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END, created_at;
        """),
        (4, "checkpoints of herald-trigger and herald-shaper", """
        -- One row per (consumer group, partition number): the partition-level state and the
        -- fencing epoch, bumped by every worker that takes the partition over.
        CREATE TABLE $S.checkpoints (
            group_id   text NOT NULL,
            partition  integer NOT NULL,
            epoch      bigint NOT NULL,
            meta       bytea,
            owner      text,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (group_id, partition)
        );
        -- The next offset to read of each input topic's partition, committed with the state.
        CREATE TABLE $S.checkpoint_offsets (
            group_id    text NOT NULL,
            topic       text NOT NULL,
            partition   integer NOT NULL,
            next_offset bigint NOT NULL,
            PRIMARY KEY (group_id, partition, topic)
        );
        CREATE TABLE $S.checkpoint_users (
            group_id  text NOT NULL,
            partition integer NOT NULL,
            shop_id   text NOT NULL,
            user_id   text NOT NULL,
            state     bytea NOT NULL,
            PRIMARY KEY (group_id, partition, shop_id, user_id)
        );
        -- The trigger's repeated-event horizon: 16-byte hashes, appended in chunks.
        CREATE TABLE $S.checkpoint_seen (
            group_id         text NOT NULL,
            partition        integer NOT NULL,
            generation_start bigint NOT NULL,
            chunk            bigserial,
            hashes           bytea NOT NULL,
            PRIMARY KEY (group_id, partition, generation_start, chunk)
        );
        """),
        (5, "one (event_time, shop_id, rule_id) index on notifications instead of two", """
        -- Cheaper writes for the sink (docs/decisions.md, "One time-first index on
        -- notifications"): event times arrive nearly in order, so inserts land on the right
        -- edge of a time-first btree; a shop/rule filter becomes an index condition within the
        -- time range. Dropping and creating on the partitioned table covers every partition.
        DROP INDEX IF EXISTS $S.notifications_shop_rule_time;
        DROP INDEX IF EXISTS $S.notifications_time;
        CREATE INDEX IF NOT EXISTS notifications_time_shop_rule ON $S.notifications (event_time, shop_id, rule_id);
        """),
        (6, "one time-first primary key on notifications", """
        -- The sink's COPY pays for every index on notifications (docs/performance.md, "Where
        -- PostgreSQL's work goes"): one key (event_time, shop_id, rule_id, id) both names a
        -- row (every outcome of a notification carries the same trigger time, shop and rule)
        -- and serves the dashboards' time/shop/rule filters, instead of a primary key on
        -- (id, event_time) plus the (event_time, shop_id, rule_id) index. A notification is
        -- found by id through the time its id carries (StableID.notificationTime).
        ALTER TABLE $S.notifications DROP CONSTRAINT IF EXISTS notifications_pkey;
        DROP INDEX IF EXISTS $S.notifications_time_shop_rule;
        ALTER TABLE $S.notifications ADD CONSTRAINT notifications_pkey PRIMARY KEY (event_time, shop_id, rule_id, id);
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
