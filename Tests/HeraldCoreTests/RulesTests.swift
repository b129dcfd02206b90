import Foundation
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
            wait: 1x
            colour: red
            notify: { template: t }
        """
        #expect(diagnostics(yaml) == [
            "4:31: template t.body: unknown filter 'shout' (known: default, mask, upper, lower, truncate, date, count, map, join)",
            "6:5: template 'u' has no body",
            "10:38: priority must be one of urgent, high, normal, low",
            "11:9: duplicate rule id 'a' (first defined in r.yaml)",
            "12:9: 'order.paid' is not an event name: use orders.<type>, behavior.<type>, orders.*, behavior.* or *",
            "16:5: unknown key 'colour' in a rule (expected id, on, where, shops, wait, at, cancel_on, threshold, idle, repeat, goal, notify, dedupe, merge)",
            "14:5: a rule needs an id",
            "15:11: wait must be a duration such as 90s, 5m, 1h30m or 3d",
            "13:25: rule 'a' uses unknown template 'missing'",
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

@Suite struct FullRulesLanguageTests {
    static let specFile = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../deploy/rules/herald.yaml").standardized.path

    @Test func theSpecExampleLoads() throws {
        let text = try String(contentsOfFile: Self.specFile, encoding: .utf8)
        let rules = try RulesLoader.load(yaml: text, path: "herald.yaml").get()
        #expect(rules.rules.count == 10)
        let byID = Dictionary(uniqueKeysWithValues: rules.rules.map { ($0.id, $0) })
        #expect(byID["cart-abandoned"]?.timing == .wait(.hours(1)))
        #expect(byID["cart-abandoned"]?.cancel?.events.map(\.description) == ["orders.order_created", "behavior.checkout_start"])
        #expect(byID["cart-abandoned"]?.goal == Rule.Goal(event: EventPattern(parsing: "orders.order_paid")!, within: .hours(24)))
        #expect(byID["cart-abandoned"]?.dedupe == Rule.Dedupe(window: .hours(24), key: nil))
        #expect(byID["code-not-delivered"]?.cancel?.match == ["order_id"])
        #expect(byID["login-risk"]?.timing == .threshold(count: 3, within: .minutes(10), resetOn: [EventPattern(parsing: "behavior.login_success")!]))
        #expect(byID["win-back"]?.timing == .idle(.days(30)))
        #expect(byID["win-back"]?.on == [EventPattern(topic: nil, type: nil)])
        if case .at(let list)? = byID["repayment"]?.timing { #expect(list.count == 3) } else { Issue.record("repayment is not `at`") }
        #expect(byID["margin-call"]?.repeatEvery == Rule.Repeat(every: .minutes(5), times: 2))
        #expect(byID["logistics"]?.merge == Rule.Merge(window: .minutes(10), template: "logistics_digest"))
        #expect(rules.policies.quietHours == Policies.QuietHours(start: 22 * 60, end: 8 * 60, bypass: [.urgent]))
        #expect(rules.policies.frequencyCap == Policies.FrequencyCap(max: 3, per: .hours(24), bypass: [.urgent, .high]))
        #expect(rules.policies.dedupeWindow == .hours(1))
        // The shop override keeps the global bypass lists.
        #expect(rules.policies.shops["s42"]?.quietHours == Policies.QuietHours(start: 23 * 60, end: 7 * 60, bypass: [.urgent]))
        #expect(rules.policies.shops["s42"]?.frequencyCap == Policies.FrequencyCap(max: 5, per: .hours(24), bypass: [.urgent, .high]))
        #expect(rules.experiments == [Experiment(rule: "cart-abandoned", variants: [
            .init(name: "A", template: "cart_reminder", weight: 50), .init(name: "B", template: "cart_reminder_coupon", weight: 50),
        ])])
    }

    func diagnostics(_ yaml: String) -> [String] {
        switch RulesLoader.load(yaml: "templates:\n  t: { body: hi }\n" + yaml, path: "r.yaml") {
        case .success: return []
        case .failure(let e): return e.diagnostics.map { "\($0.line):\($0.column): \($0.message)" }
        }
    }

    @Test func validatesEveryRuleKey() {
        #expect(diagnostics("""
        rules:
          - id: a
            on: orders.x
            where: "event.amount > 'x' + 1"
            notify: { template: t }
        """) == ["6:32: where: cannot apply '+' to a string and a number"])
        #expect(diagnostics("""
        rules:
          - id: a
            on: orders.x
            wait: 1h
            idle: 2d
            notify: { template: t }
        """) == ["7:5: rule 'a' has both 'wait' and 'idle': use one of wait, at, threshold, idle"])
        #expect(diagnostics("""
        rules:
          - id: a
            on: orders.x
            cancel_on: [orders.y]
            notify: { template: t }
        """) == ["6:5: cancel_on needs something to cancel: use it with wait, at or repeat"])
        #expect(diagnostics("""
        rules:
          - id: a
            on: orders.x
            at: ["event.due_at - 3d", "5"]
            threshold: { count: 0, within: 10m }
            repeat: { every: 5m }
            goal: { event: orders.y, within: soon }
            dedupe: { window: 1h, key: "{{ event.order_id | nope }}" }
            merge: { window: 10m, template: digest }
            notify: { template: t }
        """) == [
            "7:5: rule 'a' has both 'at' and 'threshold': use one of wait, at, threshold, idle",
            "6:32: at: expected a timestamp expression, but this is a number",
            "7:25: threshold.count must be a whole number from 1 to 1000000",
            "8:13: repeat needs every and times",
            "9:38: goal.within must be a duration such as 90s, 5m, 1h30m or 3d",
            "10:53: template dedupe.key: unknown filter 'nope' (known: default, mask, upper, lower, truncate, date, count, map, join)",
            "11:37: rule 'a' uses unknown template 'digest'",
        ])
        #expect(diagnostics("""
        rules:
          - id: a
            on: orders.x
            merge: { window: 10m, template: digest }
            notify: { template: t }
        """) == ["6:37: rule 'a' uses unknown template 'digest'"])
    }

    @Test func validatesPoliciesAndExperiments() {
        #expect(diagnostics("""
        rules:
          - { id: a, on: orders.x, notify: { template: t } }
        policies:
          quiet_hours: { start: "22:00", end: "8am", bypass: [urgent, vip] }
          frequency_cap: { max: 3 }
          shops:
            s1: { quiet: true }
        experiments:
          - rule: b
            variants:
              A: { template: t, weight: 50 }
              B: { template: missing }
        """) == [
            "6:39: policies.quiet_hours.end must be a local time HH:MM such as 22:00",
            "7:18: policies.frequency_cap needs 'per'",
            "9:11: unknown key 'quiet' in policies.shops.s1 (expected quiet_hours, frequency_cap)",
            "11:11: experiment for unknown rule 'b'",
            "11:11: experiment variant 'B' uses unknown template 'missing'",
        ])
    }

    @Test func aBadExpressionShowsACaretUnderTheColumn() {
        guard case .failure(let e) = RulesLoader.load(yaml: """
        templates: { t: { body: hi } }
        rules:
          - { id: a, on: orders.x, where: "event.amount >> 1", notify: { template: t } }
        """, path: "r.yaml") else { Issue.record("accepted"); return }
        let lines = e.description.split(separator: "\n").map(String.init)
        #expect(lines == [
            "r.yaml:3:50: error: where: unexpected '>'",
            #"      - { id: a, on: orders.x, where: "event.amount >> 1", notify: { template: t } }"#,
            String(repeating: " ", count: 4 + 49) + "^",
        ])
    }
}

@Suite struct PriorityTests {
    /// A digest takes its most urgent member's priority (`min`); escalations sort the same way.
    @Test func urgentSortsFirst() {
        #expect(Priority.allCases.sorted() == [.urgent, .high, .normal, .low])
        #expect([Priority.low, .high, .normal].min() == .high)
        #expect(Priority.urgent < .low && !(Priority.normal < .high) && !(Priority.high < .high))
    }
}
