import Foundation
import HeraldCore

/// The shaper's logic alone, without Kafka: the seven steps of SPEC §6 with the SPEC §3
/// policies (quiet hours, caps, dedupe, a merge rule, an experiment) on one core.
public struct ShapeLogicBenchmark {
    public struct Result: Sendable {
        public var candidates: Int
        public var users: Int
        public var outcomes: Int
        public var shapeCPS: Double
        /// Candidates per second of this thread's CPU time: what one core does, whatever
        /// else the machine runs (wall time on a shared machine counts the waits too).
        public var shapeCPUCPS: Double
        public var byStatus: [String: Int]
    }

    public let rules: RuleSet
    public let candidates: Int
    public let users: Int

    public init(rules: RuleSet, candidates: Int, users: Int) {
        self.rules = rules
        self.candidates = candidates
        self.users = users
    }

    /// Candidates of the SPEC §3 rules for `users` users over one day from `start`,
    /// time-ordered (≈ 86 ms apart for a million, so quiet hours, caps and windows all come
    /// into play).
    func generate() -> [Candidate] {
        let mix: [(String, String, Priority, [String], Int)] = [
            ("cart-abandoned", "cart_reminder", .normal, ["in_app", "sms"], 30),
            ("payment-failed", "refund_notice", .high, ["in_app"], 10),
            ("code-not-delivered", "delivery_apology", .high, ["in_app"], 8),
            ("login-risk", "security_alert", .urgent, ["in_app"], 6),
            ("first-purchase-guide", "usage_guide", .normal, ["in_app"], 10),
            ("win-back", "win_back", .low, ["in_app"], 6),
            ("logistics", "logistics_update", .normal, ["in_app"], 20),
            ("not-received", "ticket_ack", .high, ["in_app"], 2),
            ("margin-call", "margin_call", .urgent, ["in_app"], 8),
        ]
        let total = mix.reduce(0) { $0 + $1.4 }
        var rng = SplitMix64(seed: 3)
        let step = TimeSpan.days(1).microseconds / Int64(max(candidates, 1))
        var out: [Candidate] = []
        out.reserveCapacity(candidates)
        for i in 0..<candidates {
            var pick = Int(rng.next() % UInt64(total))
            var m = mix[0]
            for x in mix {
                if pick < x.4 { m = x; break }
                pick -= x.4
            }
            let u = Int(rng.next() % UInt64(users))
            let t = Self.start + TimeSpan(microseconds: Int64(i) * step)
            let shop = u % 7 == 0 ? "s42" : "s\(u % 3)"
            let event = JSONObject([
                ("type", .string("x")), ("order_id", .string("o\(i)")), ("sku", .string("sku-\(u % 50)")),
                ("status", .string(["shipped", "out_for_delivery", "delivered"][i % 3])),
                ("text", .string("充值未到账")),
            ])
            var user = JSONObject()
            if u % 2 == 0 { user["nickname"] = .string("u\(u)") }
            if u % 5 == 0 { user["timezone"] = .string("Europe/London") }
            out.append(Candidate(id: "c\(i)", ruleID: m.0, shopID: shop, userID: "u\(u)", priority: m.2, channels: m.3,
                                 template: m.1, escalate: m.0 == "not-received", tags: [], triggerEventIDs: ["e\(i)"],
                                 eventTime: t, firedAt: t, rulesVersion: rules.version, event: event, user: user))
        }
        return out
    }

    /// Candidates handed to the shaper at once.
    static let batch = 256

    /// The day the candidates span starts at a fixed instant, so that every run decides the
    /// same (from the wall clock, how much of the last night fell in the drain depended on
    /// the hour the benchmark ran). It holds the whole Asia/Shanghai night of the default
    /// quiet hours (22:00–08:00 local, 14:00–24:00 UTC).
    static let start = Timestamp(seconds: 1_767_225_600)  // 2026-01-01T00:00:00Z

    public func run() -> Result {
        let input = generate()
        var shaper = Shaper(rules: rules)
        // As the worker does: each candidate's outcomes go out and the buffer is reused.
        var out: [Outcome] = []
        var counts = [Int](repeating: 0, count: OutcomeStatus.allCases.count)
        var reasons: [String: Int] = [:]
        func tally() {
            // By index: the two fields are read in place, the outcome is not copied.
            for i in out.indices {
                counts[OutcomeStatus.allCases.firstIndex(of: out[i].status)!] += 1
                if let r = out[i].reason { reasons[r, default: 0] += 1 }
            }
            out.removeAll(keepingCapacity: true)
        }
        let faultsBefore = ThreadCPUClock.minorFaults()
        let (seconds, cpu) = ThreadCPUClock.measure {
            // As the worker does: the candidates ready at once go in as one batch, here 256
            // of them, borrowed from the array through a span (`input[i]` would copy the
            // candidate out).
            let span = input.span
            var start = 0
            while start < span.count {
                let end = min(start + ShapeLogicBenchmark.batch, span.count)
                shaper.process(contentsOf: span.extracting(start..<end), into: &out)
                tally()
                start = end
            }
            // Then a day more, a minute at a time as watermarks would move it, each minute's
            // outcomes going out before the next (the timers left fire).
            if let last = input.last?.firedAt {
                for minute in 1...(24 * 60) {
                    shaper.advance(to: last + .minutes(Int64(minute)), into: &out)
                    tally()
                }
            }
        }
        print("page faults during the timed loop: \(ThreadCPUClock.minorFaults() - faultsBefore)")
        var byStatus: [String: Int] = [:]
        for (i, status) in OutcomeStatus.allCases.enumerated() where counts[i] > 0 { byStatus[status.rawValue] = counts[i] }
        for (r, n) in reasons { byStatus["reason " + r] = n }
        return Result(candidates: input.count, users: users, outcomes: counts.reduce(0, +),
                      shapeCPS: Double(input.count) / seconds, shapeCPUCPS: Double(input.count) / cpu, byStatus: byStatus)
    }
}

/// CPU time of the calling thread: the benchmarks' one-core rates, which the shared
/// machine's load moves much less than wall time.
enum ThreadCPUClock {
    static func seconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    /// Minor page faults of the process so far (its other threads are idle while this runs).
    static func minorFaults() -> Int {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return u.ru_minflt
    }

    /// Wall and thread CPU seconds of `body`.
    static func measure(_ body: () throws -> Void) rethrows -> (wall: Double, cpu: Double) {
        let start = ContinuousClock.now
        let cpuStart = seconds()
        try body()
        let cpu = seconds() - cpuStart
        let d = ContinuousClock.now - start
        return (Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18, cpu)
    }
}
