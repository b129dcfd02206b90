import Foundation
import HeraldCore
import HeraldKafka
import HeraldPostgres
import Logging

/// `scripts/chaos` (issue 5, SPEC §8): the whole pipeline under shop traffic stamped with
/// the wall clock while a seeded schedule `kill -9`s random workers of each stage, starts
/// new ones and scales each stage between 1 and `maxWorkers` processes; at the end, every
/// row in PostgreSQL must equal what `herald replay` computes from the same events —
/// nothing missing, nothing extra, nothing changed.
public struct Chaos {
    public enum Stage: String, CaseIterable, Sendable, Comparable {
        case trigger = "herald-trigger", shaper = "herald-shaper", sink = "herald-sink"

        public static func < (a: Stage, b: Stage) -> Bool {
            allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
        }
    }

    public struct Options: Sendable {
        public var events = 50_000
        /// Events per second.
        public var rate = 400
        public var users = 2_000
        public var partitions = 8
        public var seed: UInt64 = 1
        /// Chaos actions over the run, spread evenly over the disturbed stages; per stage two
        /// of every three are a `kill -9`, the third a scale change.
        public var actions = 45
        /// The stages whose workers are killed and scaled; the others keep one worker.
        public var disturb: [Stage] = Stage.allCases
        public var maxWorkers = 3

        public init() {}
    }

    /// What the schedule did to one stage.
    public struct StageCounts: Sendable, Equatable {
        public var kills = 0
        /// Workers started after the first one (replacements and scale-ups).
        public var starts = 0
        public var scaleChanges = 0
        /// Workers stopped with SIGTERM when scaling down.
        public var gracefulStops = 0

        public init() {}
    }

    public struct Result: Sendable {
        public var events: Int
        /// From the first event sent to the last follow-up sent.
        public var seconds: Double
        /// When shop s42's quiet hours ended: what they deferred was sent then.
        public var quietEnd: Timestamp
        public var drainSeconds: Double
        public var counts: [Stage: StageCounts]
        /// Each action as it happened: "12.3s herald-sink kill -9 herald-sink-4, started herald-sink-9".
        public var log: [String]
        public var expected: PipelineRows
        public var diffs: [RowDiff]
        public var deadLetters: Int
        /// Exit status of every worker stopped with SIGTERM (scaled down, or at the end).
        public var stopCodes: [String: Int32]

        public var identical: Bool { diffs.allSatisfy(\.isEmpty) && deadLetters == 0 }
        public var kills: Int { counts.values.reduce(0) { $0 + $1.kills } }
    }

    /// The chaos rules: delayed (wait), absence (cancel_on, with and without match),
    /// counting (threshold), merge into digests, quiet hours (shop s42, ending at
    /// `quietEnd`), a frequency cap, dedupe, an A/B experiment, escalation and a goal.
    /// Timers are seconds long so that they fire while the traffic flows.
    public static func rules(quietEnd: Timestamp) -> String {
        func hhmm(_ t: Timestamp) -> String {
            let m = Int((t.microseconds / 60_000_000) % 1440)
            return String(format: "%02d:%02d", m / 60, m % 60)
        }
        return """
        version: 1
        defaults: { timezone: UTC, channels: [in_app] }
        templates:
          refund_notice: { body: "Payment for order {{ event.order_id }} failed." }
          cart_reminder: { body: "Hi {{ user.nickname | default: 'there' }}, {{ event.sku }} is still in your cart." }
          cart_reminder_coupon: { body: "{{ event.sku }} is still in your cart: 10% off with CART10." }
          delivery_apology: { body: "Sorry, the code for order {{ event.order_id }} is late." }
          account_locked: { body: "Three sign-ins failed within a minute; we locked your account." }
          ticket_ack: { body: "We got your message: {{ event.text | truncate: 20 }}" }
          logistics_update: { body: "Order {{ event.order_id }}: {{ event.status }}" }
          logistics_digest: { body: "{{ items | count }} updates: {{ items | map: 'event.status' | join: ', ' }}" }
        rules:
          - id: payment-failed
            on: orders.payment_failed
            notify: { template: refund_notice }
            dedupe: { window: 30s }
          - id: cart-abandoned
            on: behavior.cart_add
            where: "event.amount > 0"
            wait: \(Int(Self.cartWait.microseconds / 1_000_000))s
            cancel_on: [orders.order_created, behavior.checkout_start]
            goal: { event: orders.order_paid, within: 1h }
            notify: { template: cart_reminder, channels: [in_app, sms] }
          - id: code-not-delivered
            on: orders.order_paid
            wait: \(Int(Self.codeWait.microseconds / 1_000_000))s
            cancel_on: { events: [orders.card_delivered], match: [order_id] }
            notify: { template: delivery_apology, priority: high, escalate: true }
          - id: login-risk
            on: behavior.login_failed
            threshold: { count: 3, within: 1m, reset_on: [behavior.login_success] }
            notify: { template: account_locked, priority: urgent }
          - id: support-ack
            on: behavior.support_message
            notify: { template: ticket_ack, priority: high, escalate: true, tags: [support] }
          - id: logistics
            on: [orders.shipped, orders.out_for_delivery, orders.delivered]
            notify: { template: logistics_update }
            merge: { window: \(Int(Self.mergeWindow.microseconds / 1_000_000))s, template: logistics_digest }
        policies:
          frequency_cap: { max: 3, per: 10m, bypass: [urgent, high] }
          shops:
            s42: { quiet_hours: { start: "\(hhmm(quietEnd - .hours(1)))", end: "\(hhmm(quietEnd))" } }
        experiments:
          - rule: cart-abandoned
            variants:
              A: { template: cart_reminder, weight: 50 }
              B: { template: cart_reminder_coupon, weight: 50 }
        """
    }

    static let cartWait = TimeSpan.seconds(10)
    static let codeWait = TimeSpan.seconds(8)
    static let mergeWindow = TimeSpan.seconds(10)
    /// The longest timer of `rules`: after the last event plus this, nothing more is due
    /// (besides the end of the quiet hours).
    static let longestTimer = TimeSpan.seconds(15)

    public var options: Options
    public let logger: Logger

    public init(options: Options, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    // MARK: - The schedule

    /// One step of the schedule, `at` seconds after the traffic starts.
    public struct Action: Sendable, CustomStringConvertible {
        public enum Kind: Sendable {
            /// `kill -9` of the live worker `victim % count` (oldest first); a replacement
            /// starts when `restart` is set or none would be left.
            case kill(victim: UInt64, restart: Bool)
            /// A new worker count among 1…maxWorkers other than the current one, by `pick`.
            case scale(pick: UInt64)
        }
        public var at: Double
        public var stage: Stage
        public var kind: Kind

        public var description: String {
            switch kind {
            case .kill(let v, let r): String(format: "%.1fs %@ kill -9 (victim %llu%@)", at, stage.rawValue, v % 1000, r ? ", restart" : "")
            case .scale(let p): String(format: "%.1fs %@ scale (pick %llu)", at, stage.rawValue, p % 1000)
            }
        }
    }

    /// The schedule `options.seed` gives for traffic lasting `duration` seconds: actions at
    /// evenly spread, jittered times between 10 % and 90 % of it, stages in turn.
    public static func schedule(_ options: Options, duration: Double) -> [Action] {
        var rng = SplitMix64(seed: options.seed)
        let stages = options.disturb.sorted()
        guard !stages.isEmpty, options.actions > 0 else { return [] }
        var perStage: [Stage: Int] = [:]
        var actions: [Action] = []
        for i in 0..<options.actions {
            let jitter = Double(rng.next() % 1000) / 1000
            let at = duration * (0.1 + 0.8 * (Double(i) + jitter) / Double(options.actions))
            let stage = stages[i % stages.count]
            let n = perStage[stage, default: 0]
            perStage[stage] = n + 1
            let kind: Action.Kind = n % 3 == 2 ? .scale(pick: rng.next()) : .kill(victim: rng.next(), restart: rng.next() % 2 == 0)
            actions.append(Action(at: at, stage: stage, kind: kind))
        }
        return actions
    }

    // MARK: - Traffic

    /// A follow-up event due at a wall-clock time: the checkout that may cancel a cart,
    /// the card code that may cancel an apology, the next logistics steps, an open.
    struct FollowUp {
        var due: Date
        var topic: LogicalTopic
        var type: String
        var userID: String
        var shopID: String
        var extra: [(String, JSONValue)]
    }

    /// The shop's traffic plus the follow-ups that make the rules' cancellations,
    /// thresholds, merges and engagements happen, every event stamped with the wall clock
    /// when it is sent.
    struct Traffic {
        var shop: ShopTraffic
        var rng: SplitMix64
        let users: Int
        var followUps: [FollowUp] = []
        /// Opens and clicks of payment notices, sent once the notices are in PostgreSQL.
        var opens: [FollowUp] = []
        var sequence = 0

        init(users: Int, seed: UInt64) {
            shop = ShopTraffic(users: users, seed: seed)
            shop.wallClock = true
            rng = SplitMix64(seed: seed &+ 1)
            self.users = users
        }

        /// Seconds between `lo` and `hi` times `scale`.
        mutating func uniform(_ lo: TimeSpan, _ hi: TimeSpan, scale: Int64 = 1) -> Double {
            let span = UInt64(max(1, (hi.microseconds - lo.microseconds) * scale))
            return Double(lo.microseconds + Int64(rng.next() % span)) / 1_000_000
        }

        mutating func next() -> ShopTraffic.Message {
            // Failed sign-ins concentrated on a few users, so that thresholds are reached.
            if rng.next() % 100 < 6 {
                return shop.make(.behavior, rng.next() % 4 == 0 ? "login_success" : "login_failed",
                                 user: Int(rng.next() % UInt64(max(1, users / 50))))
            }
            return shop.next()
        }

        /// Schedules what follows `event`.
        mutating func follow(_ event: Event, now: Date) {
            func add(_ after: Double, _ topic: LogicalTopic, _ type: String, _ extra: [(String, JSONValue)]) {
                let f = FollowUp(due: now.addingTimeInterval(after), topic: topic, type: type, userID: event.userID,
                                 shopID: event.shopID, extra: extra)
                let i = followUps.firstIndex { $0.due > f.due } ?? followUps.endIndex
                followUps.insert(f, at: i)
            }
            let order = event.body["order_id"] ?? .string("-")
            switch event.type {
            case "cart_add" where rng.next() % 2 == 0:
                add(uniform(.zero, Chaos.cartWait, scale: 2), .behavior, "checkout_start", [("page", .string("/checkout"))])
            case "order_paid" where rng.next() % 10 < 6:
                add(uniform(.zero, Chaos.codeWait, scale: 2), .orders, "card_delivered",
                    [("order_id", order), ("card_code", .string("CARD\(rng.next() % 100_000_000)XYZW"))])
            case "shipped":
                for status in ["out_for_delivery", "delivered"] where rng.next() % 4 != 0 {
                    add(uniform(.zero, Chaos.mergeWindow, scale: 2), .orders, status, [("order_id", order), ("status", .string(status))])
                }
            case "payment_failed" where rng.next() % 5 < 2:
                let id = Candidate.notificationID(ruleID: "payment-failed", shopID: event.shopID, userID: event.userID,
                                                  triggerEventID: event.eventID, eventTime: event.occurredAt, ordinal: 0)
                opens.append(FollowUp(due: now, topic: .behavior, type: rng.next() % 3 == 0 ? "notification_clicked" : "notification_opened",
                                      userID: event.userID, shopID: event.shopID, extra: [("notification_id", .string(id))]))
            default: break
            }
        }

        /// The earliest follow-up due by `now`, as a message stamped with the wall clock. It
        /// draws nothing from `rng`: when it is sent depends on timing, the events must not.
        mutating func dueFollowUp(now: Date) -> ShopTraffic.Message? {
            guard let f = followUps.first, f.due <= now else { return nil }
            followUps.removeFirst()
            sequence += 1
            let fields: [(String, JSONValue)] = [
                ("event_id", .string("f\(sequence)")), ("type", .string(f.type)),
                ("shop_id", .string(f.shopID)), ("user_id", .string(f.userID)), ("occurred_at", .string(Timestamp.now.rfc3339)),
            ] + f.extra
            return ShopTraffic.Message(topic: f.topic, key: f.userID, value: Array(JSONValue.object(JSONObject(fields)).jsonString.utf8))
        }
    }

    // MARK: - The run

    public func run() throws -> Result {
        let duration = Double(options.events) / Double(options.rate)
        // The quiet hours of shop s42 end at a minute boundary about halfway through the
        // traffic: what they defer wakes while workers are being killed.
        let half = Timestamp.now + TimeSpan(microseconds: Int64(duration * 500_000))
        let quietEnd = Timestamp(microseconds: (half.microseconds / 60_000_000 + 1) * 60_000_000)
        let rulesText = Self.rules(quietEnd: quietEnd)
        _ = try RulesLoader.load(yaml: rulesText).get()

        let pipeline = try LocalPipeline(rules: rulesText, partitions: options.partitions, logger: logger)
        let keep = ProcessInfo.processInfo.environment["HERALD_KEEP"] != nil
        var stopped = false
        defer { if !stopped { pipeline.stop(keepFiles: keep) } }
        try pipeline.startInfrastructure()
        var result = try drive(pipeline, quietEnd: quietEnd)
        if !result.identical { Console.say("logs in \(pipeline.workDirectory)") }
        result.stopCodes = pipeline.stop(keepFiles: keep || !result.identical)
        stopped = true
        return result
    }

    /// Traffic, chaos, replay and the comparison; the caller stops the pipeline.
    private func drive(_ pipeline: LocalPipeline, quietEnd: Timestamp) throws -> Result {
        let duration = Double(options.events) / Double(options.rate)
        let topics = TopicNames()

        var live: [Stage: [ManagedProcess]] = [:]
        var counts: [Stage: StageCounts] = [:]
        func start(_ stage: Stage) throws -> ManagedProcess {
            let w = try pipeline.startWorker(stage.rawValue)
            live[stage, default: []].append(w)
            return w
        }
        for stage in Stage.allCases { _ = try start(stage) }
        let lag = try StageLag(pipeline: pipeline)
        let producer = try pipeline.producer()

        let schedule = Self.schedule(options, duration: duration)
        Console.say("chaos seed \(options.seed): \(options.events) events at \(options.rate)/s for \(options.users) users on "
            + "\(options.partitions) partitions; \(schedule.count) actions on \(options.disturb.sorted().map(\.rawValue).joined(separator: ", "))")
        var log: [String] = []
        var rng = SplitMix64(seed: options.seed &+ 2)
        func perform(_ action: Action, elapsed: Double) throws {
            var workers = live[action.stage, default: []]
            var text = String(format: "%6.1fs  %@  ", elapsed, action.stage.rawValue)
            switch action.kind {
            case .kill(let victim, let restart):
                guard !workers.isEmpty else { return }
                let w = workers.remove(at: Int(victim % UInt64(workers.count)))
                pipeline.kill9(w)
                live[action.stage] = workers
                counts[action.stage, default: StageCounts()].kills += 1
                text += "kill -9 \(w.name)"
                if restart || workers.isEmpty {
                    let n = try start(action.stage)
                    counts[action.stage, default: StageCounts()].starts += 1
                    text += ", started \(n.name)"
                }
            case .scale(let pick):
                let choices = (1...options.maxWorkers).filter { $0 != workers.count }
                let target = choices[Int(pick % UInt64(choices.count))]
                text += "scale \(workers.count) → \(target):"
                while workers.count < target {
                    let n = try start(action.stage)
                    workers.append(n)
                    counts[action.stage, default: StageCounts()].starts += 1
                    text += " started \(n.name)"
                }
                while workers.count > target {
                    let w = workers.remove(at: Int(rng.next() % UInt64(workers.count)))
                    pipeline.terminate(w)
                    counts[action.stage, default: StageCounts()].gracefulStops += 1
                    text += " SIGTERM \(w.name)"
                }
                live[action.stage] = workers
                counts[action.stage, default: StageCounts()].scaleChanges += 1
            }
            text += "  (\(Stage.allCases.map { "\($0.rawValue.dropFirst(7))=\(live[$0, default: []].count)" }.joined(separator: " ")))"
            log.append(text)
            Console.say(text)
        }

        // Traffic, with the schedule's actions as they fall due.
        var traffic = Traffic(users: options.users, seed: options.seed)
        var lines: [UInt8] = []
        var opens: [(id: String, kind: String, eventID: String)] = []
        var sent = 0
        var nextAction = 0
        var lastEvent = Timestamp.now
        var nextProgress = Date().addingTimeInterval(10)
        let trafficStart = Date()
        func send(_ m: ShopTraffic.Message) throws {
            try producer.send(topic: m.topic == .orders ? topics.orders : topics.behavior, key: Array(m.key.utf8), value: m.value)
            lines += Replay.line(topic: m.topic, value: m.value)
            sent += 1
            guard case .success(let e) = EventDecoder.decode(m.value, topic: m.topic) else { return }
            lastEvent = max(lastEvent, e.occurredAt)
            traffic.follow(e, now: Date())
            if let engagement = Engagement(event: e) {
                opens.append((engagement.notificationID, engagement.kind.rawValue, engagement.eventID))
            }
        }
        for i in 0..<options.events {
            let due = trafficStart.addingTimeInterval(Double(i) / Double(options.rate))
            if due.timeIntervalSinceNow > 0 { Thread.sleep(forTimeInterval: due.timeIntervalSinceNow) }
            while let f = traffic.dueFollowUp(now: Date()) { try send(f) }
            try send(traffic.next())
            let elapsed = Date().timeIntervalSince(trafficStart)
            while nextAction < schedule.count, schedule[nextAction].at <= elapsed {
                try perform(schedule[nextAction], elapsed: elapsed)
                nextAction += 1
            }
            if Date() >= nextProgress {
                producer.poll()
                let l = lag.lag().sorted { $0.key < $1.key }.map { "\($0.key.dropFirst(7))=\($0.value)" }.joined(separator: " ")
                Console.say(String(format: "%6.0fs  sent %d/%d  lag %@", elapsed, i + 1, options.events, l))
                nextProgress = nextProgress.addingTimeInterval(10)
            }
        }
        while let first = traffic.followUps.first {
            if first.due.timeIntervalSinceNow > 0 { Thread.sleep(forTimeInterval: first.due.timeIntervalSinceNow) }
            while let f = traffic.dueFollowUp(now: Date()) { try send(f) }
        }
        for action in schedule[nextAction...] { try perform(action, elapsed: Date().timeIntervalSince(trafficStart)) }
        // A customer opens what was delivered: the opens go out once their notifications are
        // in PostgreSQL (the sink records an open against a notification it has written; one
        // sent earlier, while a stage is down, would count for nothing live and in replay alike).
        let conn = try pipeline.connect()
        let s = SQLIdentifier.quoted(pipeline.schema)
        let openIDs = Set(traffic.opens.compactMap { $0.extra.first?.1.stringValue })
        let idArray = "{" + openIDs.sorted().joined(separator: ",") + "}"
        _ = try pipeline.await(timeout: 300, every: 1) {
            Int(try conn.execute("SELECT count(*) FROM \(s).notifications WHERE id = ANY($1::text[])", [idArray])[0, 0] ?? "") == openIDs.count
        }
        for var o in traffic.opens {
            o.due = Date()
            traffic.followUps.append(o)
        }
        while let f = traffic.dueFollowUp(now: Date()) { try send(f) }
        try producer.flush(timeout: .seconds(60))
        let seconds = Date().timeIntervalSince(trafficStart)

        // What replay computes from the same events, with the clock stopped once every
        // timer the traffic set is due; no timer falls between that and the far future.
        let cutoff = max(lastEvent + Self.longestTimer, quietEnd + .seconds(1))
        let eventsFile = (pipeline.workDirectory as NSString).appendingPathComponent("events.jsonl")
        try Data(lines).write(to: URL(fileURLWithPath: eventsFile))
        var expected = try PipelineRows.replay(rulesPath: pipeline.rulesPath, eventsFile: eventsFile, until: cutoff,
                                               directory: pipeline.workDirectory)
        // The sink records an open against a notification it has written.
        expected.engagements = Set(opens.filter { expected.notifications[$0.id] != nil }.map { "\($0.id) \($0.kind) \($0.eventID)" })

        // Drain: the live clocks (wall clock less the grace) past the cutoff, every stage
        // drained (`StageLag.drain`), and the rows as replay has them.
        let drainStart = Date()
        let grace = TimeSpan.seconds(5)
        var got = PipelineRows()
        let drained = lag.drain()
        let settled = try pipeline.await(timeout: 300, every: 1) {
            guard Timestamp.now - grace > cutoff else { return false }
            guard drained() else { return false }
            got = try PipelineRows.read(conn, schema: pipeline.schema)
            return got == expected
        }
        if !settled { got = try PipelineRows.read(conn, schema: pipeline.schema) }
        let drainSeconds = Date().timeIntervalSince(drainStart)
        let deadLetters = Int(try conn.execute("SELECT count(*) FROM \(s).dead_letters")[0, 0] ?? "0") ?? 0
        if !settled { Console.say("rows still differ after 300 s; lag \(lag.lag())\n\(pipeline.logs)") }
        return Result(events: sent, seconds: seconds, quietEnd: quietEnd, drainSeconds: drainSeconds, counts: counts, log: log, expected: expected,
                      diffs: RowDiff.compare(expected: expected, got: got), deadLetters: deadLetters, stopCodes: [:])
    }
}
