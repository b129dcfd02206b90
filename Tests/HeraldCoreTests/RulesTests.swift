import Testing
@testable import HeraldCore

@Suite struct RulesLoaderTests {
    static let good = """
    version: 1
    defaults:
      timezone: Asia/Shanghai
      channels: [in_app, email]
    templates:
      refund_notice:
        title: "Payment failed"
        body: "Payment for order {{ event.order_id }} failed."
    rules:
      - id: payment-failed
        on: orders.payment_failed
        notify: { template: refund_notice, priority: high, tags: [billing] }
      - id: any-order
        on: [orders.*, behavior.login_failed]
        shops: [s1]
        notify: { template: refund_notice, channels: [sms], escalate: true }
    """

    @Test func loadsAValidFile() throws {
        let rules = try RulesLoader.load(yaml: Self.good).get()
        #expect(rules.defaults == Defaults(timezone: "Asia/Shanghai", channels: ["in_app", "email"]))
        #expect(rules.rules.map(\.id) == ["payment-failed", "any-order"])
        let first = rules.rules[0]
        #expect(first.on == [EventPattern(topic: .orders, type: "payment_failed")])
        #expect(first.notify == Notify(template: "refund_notice", channels: ["in_app", "email"], priority: .high, tags: ["billing"]))
        let second = rules.rules[1]
        #expect(second.on == [EventPattern(topic: .orders, type: nil), EventPattern(topic: .behavior, type: "login_failed")])
        #expect(second.shops == ["s1"])
        #expect(second.notify.channels == ["sms"])
        #expect(second.notify.escalate)
        #expect(rules.templates["refund_notice"]?.title?.source == "Payment failed")
        #expect(rules.version.count == 16)
    }

    @Test func versionHashIsStableAndFollowsContent() throws {
        let a = try RulesLoader.load(yaml: Self.good).get().version
        let b = try RulesLoader.load(yaml: Self.good).get().version
        let c = try RulesLoader.load(yaml: Self.good + "\n# changed").get().version
        #expect(a == b)
        #expect(a != c)
    }

    func diagnostics(_ yaml: String) -> [String] {
        switch RulesLoader.load(yaml: yaml, path: "r.yaml") {
        case .success: return []
        case .failure(let e): return e.diagnostics.map { "\($0.line):\($0.column): \($0.message)" }
        }
    }

    @Test func reportsEveryErrorWithLineAndColumn() {
        let yaml = """
        version: 1
        templates:
          t:
            body: "Hi {{ event.name | shout }}"
          u:
            title: "x"
        rules:
          - id: a
            on: orders.paid
            notify: { template: t, priority: asap }
          - id: a
            on: order.paid
            notify: { template: missing }
          - on: orders.paid
            wait: 1h
            colour: red
            notify: { template: t }
        """
        #expect(diagnostics(yaml) == [
            "4:31: template t.body: unknown filter 'shout' (known: default, mask, upper, lower, truncate, date, count, map, join)",
            "6:5: template 'u' has no body",
            "10:38: priority must be one of urgent, high, normal, low",
            "12:9: 'order.paid' is not an event name: use orders.<type>, behavior.<type>, orders.*, behavior.* or *",
            "11:9: duplicate rule id 'a' (first defined in r.yaml)",
            "15:5: 'wait' is not supported by this version of Herald yet",
            "16:5: unknown key 'colour' in a rule (expected id, on, where, shops, wait, at, cancel_on, threshold, idle, repeat, goal, notify, dedupe, merge)",
            "14:5: a rule needs an id",
        ])
    }

    @Test func reportsUnknownTemplatesAndVariables() {
        let yaml = """
        templates:
          t:
            body: "{{ order.id }}"
        rules:
          - id: a
            on: "*"
            notify: { template: nope }
        """
        #expect(diagnostics(yaml) == [
            "3:15: unknown variable 'order.id' in template t.body: variables start with event., user., rule., notification. or items",
            "7:25: rule 'a' uses unknown template 'nope'",
        ])
    }

    @Test func reportsInvalidYAMLAndBadDefaults() {
        #expect(diagnostics("rules: [\n  - id: a\n") == ["2:3: invalid YAML: did not find expected node content"])
        #expect(diagnostics("defaults:\n  timezone: Mars/Base\n") == [
            "2:13: unknown time zone 'Mars/Base' (use an IANA name such as Asia/Shanghai)",
        ])
        #expect(diagnostics("- a\n") == ["1:1: the rules file must be a mapping"])
    }

    @Test func mergesADirectoryOfFilesByID() throws {
        let a = RulesLoader.Source(path: "dir/a.yaml", contents: "templates:\n  t:\n    body: hi\n")
        let b = RulesLoader.Source(path: "dir/b.yaml", contents: "rules:\n  - id: r\n    on: '*'\n    notify: { template: t }\n")
        let rules = try RulesLoader.load([a, b]).get()
        #expect(rules.rules.map(\.id) == ["r"])
        let dup = RulesLoader.Source(path: "dir/c.yaml", contents: "rules:\n  - id: r\n    on: '*'\n    notify: { template: t }\n")
        guard case .failure(let e) = RulesLoader.load([a, b, dup]) else { Issue.record("accepted a duplicate id"); return }
        #expect(e.diagnostics.map(\.description).first?.hasPrefix("dir/c.yaml:2:9: error: duplicate rule id 'r' (first defined in dir/b.yaml)") == true)
    }
}
