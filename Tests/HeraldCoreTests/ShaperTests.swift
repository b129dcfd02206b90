import Foundation
import Testing
@testable import HeraldCore

/// Drives a `Shaper` directly with candidates and preference events on event time.
struct ShaperHarness {
    var shaper: Shaper
    var outcomes: [Outcome] = []

    init(_ yaml: String) throws {
        shaper = Shaper(rules: try RulesLoader.load(yaml: yaml).get())
    }

    static func candidate(_ id: String, rule: String = "r", user: String = "u1", shop: String = "s1", at: String,
                          priority: Priority = .normal, channels: [String] = ["in_app"], template: String = "t",
                          triggers: [String]? = nil, escalate: Bool = false,
                          event: [(String, JSONValue)] = [], facts: [(String, JSONValue)] = []) -> Candidate {
        let time = Timestamp(rfc3339: at)!
        return Candidate(id: id, ruleID: rule, shopID: shop, userID: user, priority: priority, channels: channels,
                         template: template, escalate: escalate, tags: [], triggerEventIDs: triggers ?? ["ev-\(id)"],
                         eventTime: time, firedAt: time, rulesVersion: "v",
                         event: JSONObject([("type", .string("x"))] + event), user: JSONObject(facts))
    }

    mutating func add(_ c: Candidate) { outcomes += shaper.process(c) }

    mutating func preference(user: String = "u1", shop: String = "s1", at: String, subscribed: Bool,
                             channel: String? = nil, rule: String? = nil) {
        var body = JSONObject([("subscribed", .bool(subscribed))])
        if let channel { body["channel"] = .string(channel) }
        if let rule { body["rule"] = .string(rule) }
        shaper.apply(preference: Event(topic: .behavior, eventID: "p-\(at)", type: "preference_updated", shopID: shop,
                                       userID: user, occurredAt: Timestamp(rfc3339: at)!, body: body))
    }

    mutating func advance(to t: String) { outcomes += shaper.advance(to: Timestamp(rfc3339: t)!) }

    /// "id status decided_at [reason] [due=…] [into=…] [variant=…] [channels] [body]" per outcome, then cleared.
    mutating func take(bodies: Bool = false) -> [String] {
        defer { outcomes = [] }
        return outcomes.map { o in
            var s = "\(o.notificationID) \(o.status.rawValue) \(o.decidedAt.rfc3339)"
            if let r = o.reason { s += " \(r)" }
            if let d = o.dueAt { s += " due=\(d.rfc3339)" }
            if let m = o.mergedInto { s += " into=\(m)" }
            if let v = o.variant { s += " variant=\(v)" }
            if bodies, let b = o.body { s += " [\(o.channels.joined(separator: ","))] \(b)" }
            return s
        }
    }
}

private let base = """
version: 1
defaults: { timezone: UTC, channels: [in_app] }
templates:
  t: { body: "hi" }
  code: { body: "order {{ event.order_id }}" }
  digest: { body: "{{ items | count }} updates: {{ items | map: 'event.status' | join: ', ' }}" }
  coupon: { body: "coupon" }
rules:
  - { id: r, on: orders.payment_failed, notify: { template: t } }
  - { id: r2, on: orders.order_paid, notify: { template: t } }

"""

private let quiet = base + """
policies:
  quiet_hours: { start: "22:00", end: "08:00", bypass: [urgent] }
  shops:
    s42: { quiet_hours: { start: "23:00", end: "07:00" } }
"""

@Suite struct ShaperTests {
    typealias H = ShaperHarness

    @Test func quietHoursAcrossMidnightDeferToTheirEndAndThenSend() throws {
        var h = try H(quiet)
        h.add(H.candidate("before", at: "2026-11-25T21:59:59Z"))
        h.add(H.candidate("night", at: "2026-11-25T23:30:00Z"))
        h.add(H.candidate("urgent", at: "2026-11-26T03:00:00Z", priority: .urgent))
        h.add(H.candidate("early", at: "2026-11-26T07:59:00Z"))
        #expect(h.take() == [
            "before sent 2026-11-25T21:59:59Z",
            "night deferred 2026-11-25T23:30:00Z quiet_hours due=2026-11-26T08:00:00Z",
            "urgent sent 2026-11-26T03:00:00Z",
            "early deferred 2026-11-26T07:59:00Z quiet_hours due=2026-11-26T08:00:00Z",
        ])
        h.advance(to: "2026-11-26T07:59:59Z")
        #expect(h.take() == [])
        h.advance(to: "2026-11-26T08:00:00Z")
        // The same notification ids, decided at the end of quiet hours.
        #expect(h.take() == ["night sent 2026-11-26T08:00:00Z", "early sent 2026-11-26T08:00:00Z"])
    }

    @Test func quietHoursEndAcrossDSTChangesInEuropeLondon() throws {
        var h = try H(quiet)
        let london: [(String, JSONValue)] = [("timezone", .string("Europe/London"))]
        // Clocks go forward on 29 March 2026 at 01:00 UTC: 08:00 local is then 07:00 UTC.
        h.add(H.candidate("spring", at: "2026-03-28T23:00:00Z", facts: london))
        // 21:30 UTC in summer is 22:30 BST: quiet for a Londoner.
        h.add(H.candidate("summer", at: "2026-07-01T21:30:00Z", facts: london))
        // Clocks go back on 25 October 2026 at 01:00 UTC: 23:00 BST is 22:00 UTC; 08:00 GMT is 08:00 UTC.
        h.add(H.candidate("autumn", at: "2026-10-24T22:00:00Z", facts: london))
        h.advance(to: "2026-10-25T12:00:00Z")
        #expect(h.take() == [
            "spring deferred 2026-03-28T23:00:00Z quiet_hours due=2026-03-29T07:00:00Z",
            "spring sent 2026-03-29T07:00:00Z",
            "summer deferred 2026-07-01T21:30:00Z quiet_hours due=2026-07-02T07:00:00Z",
            "summer sent 2026-07-02T07:00:00Z",
            "autumn deferred 2026-10-24T22:00:00Z quiet_hours due=2026-10-25T08:00:00Z",
            "autumn sent 2026-10-25T08:00:00Z",
        ])
    }

    @Test func anEndInsideTheSpringForwardGapIsJustAfterIt() throws {
        // 01:30 does not exist in London on 29 March 2026: quiet hours ending then end at
        // 02:30 BST (01:30Z).
        let q = Policies.QuietHours(start: 22 * 60, end: 90, bypass: [])
        let london = TimeZone(identifier: "Europe/London")!
        #expect(Shaper.quietHoursEnd(q, at: Timestamp(rfc3339: "2026-03-28T23:00:00Z")!, zone: london)
            == Timestamp(rfc3339: "2026-03-29T01:30:00Z"))
        // 01:30 happens twice on 25 October 2026: the first one (00:30Z) ends them.
        #expect(Shaper.quietHoursEnd(q, at: Timestamp(rfc3339: "2026-10-24T22:00:00Z")!, zone: london)
            == Timestamp(rfc3339: "2026-10-25T00:30:00Z"))
    }

    /// One `ZoneOffsets` asked about instants in any order answers as Foundation does for
    /// each, across DST changes (a half-hour one in Lord Howe) and zones without them.
    @Test(arguments: ["Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Shanghai", "UTC"])
    func cachedZoneOffsetsAreFoundations(zone name: String) throws {
        let zone = try #require(TimeZone(identifier: name))
        var cached = ZoneOffsets(zone)
        var rng = SplitMix64(seed: 5)
        let start = Timestamp(rfc3339: "2025-01-01T00:00:00Z")!.microseconds / 1_000_000
        var t = start
        for i in 0..<30_000 {
            // Mostly forward in steps of up to an hour, sometimes back by up to a year, and
            // around transitions to the second.
            t += Int64(rng.next() % 3600)
            if i % 50 == 0 { t -= Int64(rng.next() % (366 * 86_400)) }
            let at = i % 7 == 0
                ? (zone.nextDaylightSavingTimeTransition(after: Date(timeIntervalSince1970: TimeInterval(t)))
                    .map { Int64($0.timeIntervalSince1970) + Int64(rng.next() % 3) - 1 } ?? t)
                : t
            let expected = Int64(zone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(at))))
            #expect(cached.secondsFromGMT(at: at) == expected, "\(name) at \(at)")
        }
    }

    @Test func theUsersOwnTimeZoneWinsOverTheDefault() throws {
        var h = try H(quiet.replacingOccurrences(of: "timezone: UTC", with: "timezone: Asia/Shanghai"))
        // 14:00 UTC is 22:00 in Shanghai and 09:00 in New York.
        h.add(H.candidate("default-tz", at: "2026-11-25T14:00:00Z"))
        h.add(H.candidate("new-york", user: "u2", at: "2026-11-25T14:00:00Z",
                          facts: [("timezone", .string("America/New_York"))]))
        #expect(h.take() == [
            "default-tz deferred 2026-11-25T14:00:00Z quiet_hours due=2026-11-26T00:00:00Z",
            "new-york sent 2026-11-25T14:00:00Z",
        ])
    }

    @Test func aShopOverridesQuietHours() throws {
        var h = try H(quiet)
        h.add(H.candidate("s1-late", at: "2026-11-25T22:30:00Z"))
        h.add(H.candidate("s42-late", shop: "s42", at: "2026-11-25T22:30:00Z"))
        h.add(H.candidate("s42-night", user: "u2", shop: "s42", at: "2026-11-26T06:30:00Z"))
        #expect(h.take() == [
            "s1-late deferred 2026-11-25T22:30:00Z quiet_hours due=2026-11-26T08:00:00Z",
            "s42-late sent 2026-11-25T22:30:00Z",
            "s42-night deferred 2026-11-26T06:30:00Z quiet_hours due=2026-11-26T07:00:00Z",
        ])
        h.advance(to: "2026-11-26T08:00:00Z")
        #expect(h.take() == ["s42-night sent 2026-11-26T07:00:00Z", "s1-late sent 2026-11-26T08:00:00Z"])
    }

    static let capped = base + """
    policies:
      frequency_cap: { max: 3, per: 24h, bypass: [urgent, high] }
      shops:
        s42: { frequency_cap: { max: 5, per: 24h } }
    """

    @Test func aCapIsHitThenReleasedAsTheWindowRolls() throws {
        var h = try H(Self.capped)
        h.add(H.candidate("a", at: "2026-11-25T00:00:00Z"))
        h.add(H.candidate("b", at: "2026-11-25T01:00:00Z"))
        h.add(H.candidate("c", at: "2026-11-25T02:00:00Z"))
        h.add(H.candidate("d", at: "2026-11-25T03:00:00Z"))
        h.add(H.candidate("high", at: "2026-11-25T04:00:00Z", priority: .high))
        h.add(H.candidate("urgent", at: "2026-11-25T05:00:00Z", priority: .urgent))
        // a left the window at exactly 24h; b, c, high and urgent are still in it.
        h.add(H.candidate("e", at: "2026-11-26T00:00:00Z"))
        h.add(H.candidate("f", at: "2026-11-26T03:00:00Z"))
        #expect(h.take() == [
            "a sent 2026-11-25T00:00:00Z",
            "b sent 2026-11-25T01:00:00Z",
            "c sent 2026-11-25T02:00:00Z",
            "d suppressed 2026-11-25T03:00:00Z frequency_cap",
            "high sent 2026-11-25T04:00:00Z",
            "urgent sent 2026-11-25T05:00:00Z",
            "e suppressed 2026-11-26T00:00:00Z frequency_cap",
            "f sent 2026-11-26T03:00:00Z",
        ])
    }

    @Test func aShopOverridesTheCap() throws {
        var h = try H(Self.capped)
        for i in 0..<6 { h.add(H.candidate("m\(i)", shop: "s42", at: "2026-11-25T0\(i):00:00Z")) }
        #expect(h.take().map { $0.split(separator: " ")[1] } == ["sent", "sent", "sent", "sent", "sent", "suppressed"])
    }

    @Test func urgentBypassesCapsAndQuietHours() throws {
        var h = try H(base + """
        policies:
          quiet_hours: { start: "22:00", end: "08:00", bypass: [urgent] }
          frequency_cap: { max: 1, per: 24h, bypass: [urgent] }
        """)
        h.add(H.candidate("day", at: "2026-11-25T12:00:00Z"))
        h.add(H.candidate("capped", at: "2026-11-25T13:00:00Z"))
        h.add(H.candidate("alarm", at: "2026-11-25T23:00:00Z", priority: .urgent))
        h.add(H.candidate("night", at: "2026-11-25T23:30:00Z"))
        h.advance(to: "2026-11-26T08:00:00Z")
        #expect(h.take() == [
            "day sent 2026-11-25T12:00:00Z",
            "capped suppressed 2026-11-25T13:00:00Z frequency_cap",
            "alarm sent 2026-11-25T23:00:00Z",
            "night deferred 2026-11-25T23:30:00Z quiet_hours due=2026-11-26T08:00:00Z",
            // At 08:00 the cap still counts day (12:00) and alarm: step 6 suppresses it.
            "night suppressed 2026-11-26T08:00:00Z frequency_cap",
        ])
    }

    @Test func threeLogisticsUpdatesBecomeOneDigest() throws {
        var h = try H(base + """
          - id: logistics
            on: [orders.shipped, orders.out_for_delivery, orders.delivered]
            notify: { template: t }
            merge: { window: 10m, template: digest }
        """)
        for (id, status, at) in [("l1", "shipped", "10:00"), ("l2", "out_for_delivery", "10:03"), ("l3", "delivered", "10:09")] {
            h.add(H.candidate(id, rule: "logistics", at: "2026-11-25T\(at):00Z", event: [("status", .string(status))]))
        }
        h.add(H.candidate("other-user", rule: "logistics", user: "u2", at: "2026-11-25T10:05:00Z",
                          event: [("status", .string("shipped"))]))
        #expect(h.take() == [])
        h.advance(to: "2026-11-25T10:15:00Z")
        // The digest carries its first member's event time, in its id too.
        let digest = StableID.notificationID(eventTime: Timestamp(rfc3339: "2026-11-25T10:00:00Z")!, ["digest", "l1"])
        #expect(h.take(bodies: true) == [
            "l1 merged 2026-11-25T10:10:00Z into=\(digest)",
            "l2 merged 2026-11-25T10:10:00Z into=\(digest)",
            "l3 merged 2026-11-25T10:10:00Z into=\(digest)",
            "\(digest) sent 2026-11-25T10:10:00Z [in_app] 3 updates: shipped, out_for_delivery, delivered",
            // A window of one is sent as itself when it closes.
            "other-user sent 2026-11-25T10:15:00Z [in_app] hi",
        ])
    }

    @Test func optingOutOfOneChannelLeavesTheOthers() throws {
        var h = try H(base)
        h.preference(at: "2026-11-25T09:00:00Z", subscribed: false, channel: "sms")
        h.add(H.candidate("both", at: "2026-11-25T10:00:00Z", channels: ["in_app", "sms"]))
        h.add(H.candidate("sms-only", at: "2026-11-25T10:01:00Z", channels: ["sms"]))
        h.add(H.candidate("other-user", user: "u2", at: "2026-11-25T10:02:00Z", channels: ["sms"]))
        #expect(h.take(bodies: true) == [
            "both sent 2026-11-25T10:00:00Z [in_app] hi",
            "sms-only suppressed 2026-11-25T10:01:00Z opted_out",
            "other-user sent 2026-11-25T10:02:00Z [sms] hi",
        ])
    }

    @Test func optOutOfARuleOfEverythingButUrgentAndBackIn() throws {
        var h = try H(base)
        h.preference(at: "2026-11-25T09:00:00Z", subscribed: false, rule: "r2")
        h.add(H.candidate("r", at: "2026-11-25T09:10:00Z"))
        h.add(H.candidate("r2", rule: "r2", at: "2026-11-25T09:20:00Z"))
        h.preference(at: "2026-11-25T10:00:00Z", subscribed: false)
        // Arrives before the candidates below but happened after them: they do not see it.
        h.preference(at: "2026-11-25T12:00:00Z", subscribed: true)
        h.add(H.candidate("normal", at: "2026-11-25T10:30:00Z"))
        h.add(H.candidate("urgent", at: "2026-11-25T10:40:00Z", priority: .urgent))
        h.add(H.candidate("back", at: "2026-11-25T12:00:00Z"))
        #expect(h.take() == [
            "r sent 2026-11-25T09:10:00Z",
            "r2 suppressed 2026-11-25T09:20:00Z opted_out",
            "normal suppressed 2026-11-25T10:30:00Z opted_out",
            "urgent sent 2026-11-25T10:40:00Z",
            "back sent 2026-11-25T12:00:00Z",
        ])
    }

    @Test func aMissingTemplateVariableFails() throws {
        var h = try H(base)
        h.add(H.candidate("x", at: "2026-11-25T10:00:00Z", template: "code"))
        h.add(H.candidate("y", at: "2026-11-25T10:00:00Z", template: "code", event: [("order_id", .string("o7"))]))
        #expect(h.take(bodies: true) == [
            "x failed 2026-11-25T10:00:00Z missing_variable:event.order_id",
            "y sent 2026-11-25T10:00:00Z [in_app] order o7",
        ])
    }

    @Test func dedupeByKeyAndWindowExemptsRepeatChains() throws {
        var h = try H(base + """
          - id: per-order
            on: orders.shipped
            notify: { template: code }
            dedupe: { window: 24h, key: "{{ event.order_id }}" }
          - id: chain
            on: orders.margin_low
            notify: { template: t }
            repeat: { every: 5m, times: 2 }
          - id: off
            on: orders.refunded
            notify: { template: t }
            dedupe: { window: 0s }
        policies:
          dedupe: { window: 1h }
        """)
        let o1: [(String, JSONValue)] = [("order_id", .string("o1"))]
        let o2: [(String, JSONValue)] = [("order_id", .string("o2"))]
        h.add(H.candidate("o1", rule: "per-order", at: "2026-11-25T10:00:00Z", template: "code", event: o1))
        // A repeat chain shares its trigger event; another trigger within the policy's 1h is a duplicate.
        h.add(H.candidate("c0", rule: "chain", at: "2026-11-25T11:00:00Z", triggers: ["m1"]))
        h.add(H.candidate("c1", rule: "chain", at: "2026-11-25T11:05:00Z", triggers: ["m1"]))
        h.add(H.candidate("other", rule: "chain", at: "2026-11-25T11:06:00Z", triggers: ["m2"]))
        h.add(H.candidate("later", rule: "chain", at: "2026-11-25T12:05:00Z", triggers: ["m3"]))
        h.add(H.candidate("off1", rule: "off", at: "2026-11-25T13:00:00Z"))
        h.add(H.candidate("off2", rule: "off", at: "2026-11-25T13:00:01Z"))
        h.add(H.candidate("o1-again", rule: "per-order", at: "2026-11-25T20:00:00Z", template: "code", event: o1))
        h.add(H.candidate("o2", rule: "per-order", at: "2026-11-25T20:00:00Z", template: "code", event: o2))
        h.add(H.candidate("o1-next-day", rule: "per-order", at: "2026-11-26T10:00:01Z", template: "code", event: o1))
        #expect(h.take() == [
            "o1 sent 2026-11-25T10:00:00Z",
            "c0 sent 2026-11-25T11:00:00Z",
            "c1 sent 2026-11-25T11:05:00Z",
            "other suppressed 2026-11-25T11:06:00Z duplicate",
            "later sent 2026-11-25T12:05:00Z",
            "off1 sent 2026-11-25T13:00:00Z",
            "off2 sent 2026-11-25T13:00:01Z",
            "o1-again suppressed 2026-11-25T20:00:00Z duplicate",
            "o2 sent 2026-11-25T20:00:00Z",
            "o1-next-day sent 2026-11-26T10:00:01Z",
        ])
    }

    @Test func aReplayedCandidateIsDroppedSilently() throws {
        var h = try H(base)
        let c = H.candidate("x", at: "2026-11-25T10:00:00Z")
        h.add(c)
        h.add(c)
        #expect(h.take() == ["x sent 2026-11-25T10:00:00Z"])
        #expect(h.shaper.replayedDropped == 1)
    }

    static let experiment = base + """
      - { id: cart, on: behavior.cart_add, notify: { template: t } }
    experiments:
      - rule: cart
        variants:
          A: { template: t, weight: 70 }
          B: { template: coupon, weight: 30 }
    """

    @Test func variantsSplitByWeightAndStayStable() throws {
        var first = try H(Self.experiment)
        var second = try H(Self.experiment)
        for i in 0..<10_000 {
            first.add(H.candidate("c\(i)", rule: "cart", user: "user-\(i)", at: "2026-11-25T10:00:00Z"))
            second.add(H.candidate("c\(i)", rule: "cart", user: "user-\(i)", at: "2026-11-25T11:00:00Z"))
        }
        let a = first.outcomes.filter { $0.variant == "A" }
        #expect(abs(Double(a.count) / 10_000 - 0.70) <= 0.03)
        #expect(first.outcomes.allSatisfy { $0.status == .sent && $0.body == ($0.variant == "A" ? "hi" : "coupon") })
        #expect(first.outcomes.map(\.variant) == second.outcomes.map(\.variant))
        // Other rules have no variant.
        var h = try H(Self.experiment)
        h.add(H.candidate("plain", at: "2026-11-25T10:00:00Z"))
        #expect(h.take() == ["plain sent 2026-11-25T10:00:00Z"])
    }

    @Test func stateIsDroppedOnceOlderThanTheLongestWindow() throws {
        var h = try H(Self.capped)
        for i in 0..<100 { h.add(H.candidate("c\(i)", user: "u\(i)", at: "2026-11-25T10:00:00Z")) }
        #expect(h.shaper.userCount == 100)
        h.advance(to: "2026-11-27T10:00:00Z")
        // Sent history is gone after 24h, but seen ids are kept for replays for 7 days.
        h.advance(to: "2026-12-03T10:00:01Z")
        #expect(h.shaper.userCount == 0)
    }

    @Test func replayShapesWithTheSameClock() throws {
        var s = Script()
        s.add("orders.payment_failed", at: "15h")  // 23:00Z
        s.add("behavior.preference_updated", at: "15h30m", ["subscribed": false, "channel": "in_app"])
        s.add("orders.payment_failed", at: "16h")
        #expect(try replay(templates + """
        defaults: { timezone: UTC }
        rules:
          - { id: pf, on: orders.payment_failed, notify: { template: t }, dedupe: { window: 0s } }
        policies:
          quiet_hours: { start: "22:00", end: "08:00" }
        """, s) == [
            "pf u1 deferred \(Script.at("15h")) quiet_hours",
            "pf u1 suppressed \(Script.at("16h")) opted_out",
            "pf u1 sent \(Script.at("24h"))",
        ])
    }
}
