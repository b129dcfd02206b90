import Testing
@testable import HeraldCore

/// The shaper's internal state structures (the decisions themselves: ShaperTests).
@Suite struct ShaperStateTests {
    static let candidate = Candidate(
        id: "n1", ruleID: "logistics", shopID: "s1", userID: "u1", priority: .high, channels: ["in_app", "sms"],
        template: "t", escalate: false, tags: [], triggerEventIDs: ["e1"], eventTime: Timestamp(seconds: 1),
        firedAt: Timestamp(seconds: 2), rulesVersion: "1",
        event: JSONObject([("order_id", .string("o1")), ("nested", .object(JSONObject([("a", .int(1))]))),
                           ("none", .null)]),
        user: JSONObject([("nickname", .string("Ann"))]))

    /// The scope templates saw before paths were resolved without building it.
    static func root(_ m: Message) -> JSONValue {
        let c = m.candidate
        var pairs: [(String, JSONValue)] = [
            ("event", .object(c.event)),
            ("user", .object(c.user)),
            ("rule", .object(JSONObject([("id", .string(c.ruleID))]))),
            ("notification", .object(JSONObject([
                ("id", .string(c.id)), ("priority", .string(c.priority.rawValue)),
                ("channels", .array(c.channels.map(JSONValue.string))),
            ]))),
        ]
        if let items = m.items { pairs.append(("items", .array(items))) }
        return .object(JSONObject(pairs))
    }

    @Test(arguments: [
        "event", "event.order_id", "event.nested", "event.nested.a", "event.nested.b", "event.none", "event.missing",
        "event.order_id.x", "user", "user.nickname", "rule", "rule.id", "rule.id.x", "notification", "notification.id",
        "notification.priority", "notification.channels", "notification.other", "items", "items.x", "other", "other.x",
    ])
    func pathsResolveAsInTheFullScope(path: String) {
        let components = path.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        let items: [JSONValue] = [.object(JSONObject([("event", .object(JSONObject([("status", .string("shipped"))])))]))]
        for m in [Message(Self.candidate), Message(Self.candidate, items: items)] {
            #expect(Shaper.lookup(components, m.candidate, m.items) == Self.root(m)[path: path])
        }
    }

    @Test func chainHashesTellListsApart() {
        let lists: [[String]] = [[], [""], ["", ""], ["a"], ["a", "b"], ["b", "a"], ["ab"], ["a\u{1F}b"], ["a", "b", ""]]
        let hashes = lists.map(Delivery.chainHash)
        #expect(Set(hashes).count == lists.count)
        #expect(Delivery.chainHash(["e1", "e2"]) == Delivery.chainHash(["e1", "e2"]))
    }

    @Test func templatesParsePathComponentsOnce() throws {
        let t = try Template(parsing: "{{ event.nested.a }} {{ user.nickname }}")
        let tags = t.parts.compactMap { if case .tag(let tag) = $0 { return tag } else { return nil } }
        #expect(tags.map(\.components) == [["event", "nested", "a"], ["user", "nickname"]])
    }
}

/// Slots of users the sweep removed are renumbered away once they are most of the table.
@Suite struct ShaperSlotTests {
    static func candidate(_ id: String, user: String, at t: Timestamp) -> Candidate {
        Candidate(id: id, ruleID: "payment-failed", shopID: "s1", userID: user, priority: .high, channels: ["in_app"],
                  template: "refund_notice", escalate: false, tags: [], triggerEventIDs: ["e-" + id], eventTime: t,
                  firedAt: t, rulesVersion: "v", event: JSONObject([("order_id", .string("o-" + id))]),
                  user: JSONObject())
    }

    /// Users `b0…b9` get messages deferred by quiet hours (23:00 in Asia/Shanghai, the rules'
    /// default zone); then the daily sweep removes 5,000 other users whose seen ids are older
    /// than 7 days and compacts the slots while b's wake-ups are pending; b's messages wake
    /// as in a shaper that never had the others (`restoring`: from a checkpoint taken right
    /// after the compaction).
    static func run(withOthers: Bool, restoring: Bool = false) throws -> (outcomes: [Outcome], slots: Int, removed: Int) {
        let rules = try loadRules(heraldYAML)
        var shaper = Shaper(rules: rules)
        var out: [Outcome] = []
        if withOthers {
            let t0 = Timestamp(rfc3339: "2026-10-31T20:00:00Z")!
            for i in 0..<5000 { shaper.process(candidate("a\(i)", user: "a\(i)", at: t0), into: &out) }
        }
        _ = shaper.takeDirtyStates()  // tracking on from here
        shaper.advance(to: Timestamp(rfc3339: "2026-11-06T22:00:00Z")!, into: &out)  // a sweep; the a users stay
        out = []
        let night = Timestamp(rfc3339: "2026-11-07T15:00:00Z")!
        for i in 0..<10 { shaper.process(candidate("b\(i)", user: "b\(i)", at: night + .minutes(Int64(i))), into: &out) }
        // The next sweep (a day after the last) removes the a users; b wakes at 00:00Z.
        shaper.advance(to: Timestamp(rfc3339: "2026-11-07T23:00:00Z")!, into: &out)
        let records = shaper.takeDirtyStates()
        let removed = records.filter { $0.state == nil }.count
        if restoring {
            shaper = try Shaper.restore(rules: rules, meta: shaper.encodeMeta(), users: records.filter { $0.state != nil })
        }
        let slots = shaper.states.count
        shaper.advance(to: Timestamp(rfc3339: "2026-11-08T01:00:00Z")!, into: &out)
        return (out, slots, removed)
    }

    @Test func compactingKeepsUsersAndTimers() throws {
        let alone = try Self.run(withOthers: false)
        let withOthers = try Self.run(withOthers: true)
        #expect(withOthers.slots == 10)
        #expect(withOthers.removed == 5000)
        #expect(withOthers.outcomes == alone.outcomes)
        #expect(alone.outcomes.map(\.status) == Array(repeating: .deferred, count: 10) + Array(repeating: .sent, count: 10))
        let restored = try Self.run(withOthers: true, restoring: true)
        #expect(restored.outcomes == alone.outcomes)
    }
}
