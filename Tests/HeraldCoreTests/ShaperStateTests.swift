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
            #expect(Shaper.lookup(components, in: m) == Self.root(m)[path: path])
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
