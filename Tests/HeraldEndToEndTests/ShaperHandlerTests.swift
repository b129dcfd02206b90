import HeraldCore
import HeraldKafka
@testable import HeraldRuntime
import Logging
import Testing

/// herald-shaper's per-partition clock: candidates wait for `behavior` to pass their time,
/// so a preference change queued behind a backlog still applies in event-time order.
@Suite struct ShaperHandlerTests {
    let topics = TopicNames()
    let wallClock = Timestamp(rfc3339: "2026-11-25T12:00:00Z")!

    func handler() throws -> ShaperHandler {
        let rules = try RulesLoader.load(yaml: """
            templates:
              t: { body: "hi" }
            rules:
              - { id: r, on: orders.payment_failed, notify: { template: t } }
            """).get()
        return ShaperHandler(rules: rules, topics: topics, grace: .seconds(5), logger: Logger(label: "shaper-handler-tests"))
    }

    func candidate(_ id: String, user: String, at: String) -> [UInt8] {
        let t = Timestamp(rfc3339: at)!
        return Candidate(id: id, ruleID: "r", shopID: "s1", userID: user, priority: .normal, channels: ["in_app"],
                         template: "t", escalate: false, tags: [], triggerEventIDs: ["e-\(id)"], eventTime: t, firedAt: t,
                         rulesVersion: "v", event: JSONObject(), user: JSONObject()).json
    }

    func behavior(_ type: String, user: String, at: String, id: String, _ extra: String = "") -> [UInt8] {
        Array(#"{"event_id":"\#(id)","type":"\#(type)","shop_id":"s1","user_id":"\#(user)","occurred_at":"\#(at)"\#(extra)}"#.utf8)
    }

    /// herald-trigger's clock on the candidates partition.
    func triggerAt(_ at: String) -> [UInt8] {
        TriggerWatermark(time: Timestamp(rfc3339: at)!).json
    }

    /// Feeds one message (nothing caught up: both topics have a backlog) and describes what came out.
    func feed(_ h: ShaperHandler, _ topic: String, _ value: [UInt8], offset: Int64) -> [String] {
        var out: [OutputRecord] = []
        h.handle(KafkaMessage(topic: topic, partition: 0, offset: offset, key: nil, value: value, timestampMs: nil),
                 caughtUp: { _ in false }, wallClock: wallClock, into: &out)
        return out.map { r in
            if Conversion.kind(of: r.value) == "engagement", let e = try? Engagement(json: r.value) {
                return "engagement \(e.notificationID) \(e.kind.rawValue)"
            }
            guard let o = try? Outcome(json: r.value) else { return "?" }
            return "\(o.notificationID) \(o.status.rawValue) \(o.decidedAt.rfc3339)" + (o.reason.map { " \($0)" } ?? "")
        }
    }

    @Test func candidatesWaitForALaggingBehaviorPartition() throws {
        let h = try handler()
        #expect(feed(h, topics.candidates, candidate("c1", user: "u1", at: "2026-11-25T10:00:00Z"), offset: 0) == [])
        #expect(feed(h, topics.candidates, candidate("c2", user: "u2", at: "2026-11-25T10:01:00Z"), offset: 1) == [])
        #expect(feed(h, topics.candidates, triggerAt("2026-11-25T10:01:00Z"), offset: 2) == [])
        // The opt-out happened before c1 but is read after it.
        #expect(feed(h, topics.behavior, behavior("preference_updated", user: "u1", at: "2026-11-25T09:30:00Z", id: "p1",
                                                  #","subscribed":false"#), offset: 0) == [])
        // behavior passes 10:00: c1 is decided, with the opt-out; c2 still waits.
        #expect(feed(h, topics.behavior, behavior("page_view", user: "u3", at: "2026-11-25T10:00:30Z", id: "v1"), offset: 1)
            == ["c1 suppressed 2026-11-25T10:00:00Z opted_out"])
        #expect(feed(h, topics.behavior, behavior("notification_opened", user: "u2", at: "2026-11-25T10:02:00Z", id: "o1",
                                                  #","notification_id":"n9""#), offset: 2)
            == ["engagement n9 opened", "c2 sent 2026-11-25T10:01:00Z"])
    }

    @Test func caughtUpPartitionsReleaseByTheWallClockLessGrace() throws {
        let h = try handler()
        #expect(feed(h, topics.candidates, candidate("c1", user: "u1", at: "2026-11-25T11:59:50Z"), offset: 0) == [])
        #expect(feed(h, topics.candidates, triggerAt("2026-11-25T11:59:54Z"), offset: 1) == [])
        var out: [OutputRecord] = []
        h.tick(assignment: [TopicPartition(topics.candidates, 0), TopicPartition(topics.behavior, 0)],
               caughtUp: { _ in true }, wallClock: wallClock, into: &out)
        #expect(out.compactMap { try? Outcome(json: $0.value) }.map { "\($0.notificationID) \($0.status.rawValue)" } == ["c1 sent"])
    }

    @Test func candidatesWaitForTheTriggersClockNotTheNewestFiredAt() throws {
        let h = try handler()
        // behavior is far ahead; the trigger publishes a candidate of a 10:05 event before the
        // candidate of a timer due at 10:02 (its clock has not reached 10:02 yet).
        #expect(feed(h, topics.behavior, behavior("page_view", user: "u9", at: "2026-11-25T11:00:00Z", id: "v1"), offset: 0) == [])
        #expect(feed(h, topics.candidates, candidate("newer", user: "u1", at: "2026-11-25T10:05:00Z"), offset: 0) == [])
        #expect(feed(h, topics.candidates, triggerAt("2026-11-25T10:00:00Z"), offset: 1) == [])
        #expect(feed(h, topics.candidates, candidate("timer", user: "u1", at: "2026-11-25T10:02:00Z"), offset: 2) == [])
        // Its clock passes both: shaped in fired_at order, the timer's first (by the newest
        // fired_at seen, the 10:05 one would have gone as soon as it came).
        #expect(feed(h, topics.candidates, triggerAt("2026-11-25T10:06:00Z"), offset: 3)
            == ["timer sent 2026-11-25T10:02:00Z", "newer sent 2026-11-25T10:05:00Z"])
        // Caught up with the candidates topic says nothing: only the trigger's clock moves it.
        var out: [OutputRecord] = []
        #expect(feed(h, topics.candidates, candidate("c3", user: "u2", at: "2026-11-25T10:30:00Z"), offset: 4) == [])
        h.tick(assignment: [TopicPartition(topics.candidates, 0), TopicPartition(topics.behavior, 0)],
               caughtUp: { _ in true }, wallClock: wallClock, into: &out)
        #expect(out.isEmpty)
    }
}
