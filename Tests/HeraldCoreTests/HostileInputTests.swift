import Foundation
import Testing
@testable import HeraldCore

/// Inputs built to exhaust a parser — depth, length, repetition, self-reference — are
/// refused with a precise message, quickly, never with a crash (a stack overflow is one).
@Suite struct HostileInputTests {
    static func timed<T>(_ body: () throws -> T) rethrows -> T {
        let clock = ContinuousClock()
        let start = clock.now
        let r = try body()
        #expect(clock.now - start < .seconds(5))
        return r
    }

    static func rejection(_ text: String) -> EventRejection? {
        if case .failure(let r) = EventDecoder.decode(Array(text.utf8), topic: .orders) { return r }
        return nil
    }

    @Test func deepJSONIsRefusedAtDepth64() {
        let deep = #"{"event_id":"e","type":"t","shop_id":"s","user_id":"u","occurred_at":"2026-11-25T08:00:00Z","a":"#
            + String(repeating: "[", count: 500_000)
        let r = Self.timed { Self.rejection(deep) }
        #expect(r?.reason == "invalid_json")
        #expect(r?.detail.contains("64") == true, "\(String(describing: r))")
    }

    @Test func farFutureTimestampsAreRefusedBeforeTheyMoveTheClock() {
        let now = Timestamp(rfc3339: "2026-11-25T12:00:00Z")!
        func decode(_ t: String) -> Result<Event, EventRejection> {
            EventDecoder.decode(Array(#"{"event_id":"e","type":"t","shop_id":"s","user_id":"u","occurred_at":"\#(t)"}"#.utf8),
                                topic: .orders, notAfter: now + EventDecoder.maxFutureSkew)
        }
        #expect((try? decode("2026-11-26T11:59:59Z").get()) != nil)  // a shop clock a time zone off
        guard case .failure(let r) = decode("9999-12-31T23:59:59Z") else { Issue.record("accepted"); return }
        #expect(r.reason == "future_timestamp")
        #expect(r.detail == "occurred_at 9999-12-31T23:59:59Z is more than 1d ahead of the worker's clock (accepted up to 2026-11-26T12:00:00Z)")
        #expect((try? decode("1970-01-01T00:00:00Z").get()) != nil)  // old events are backfills, not attacks
        #expect((try? decode("2026-11-27T00:00:00+14:00").get()) != nil)  // 10:00Z on the 26th
    }

    static let hostileExpressions: [String] = {
        var out: [String] = []
        out.append(String(repeating: "(", count: 200_000) + "1" + String(repeating: ")", count: 200_000))
        out.append(String(repeating: "not ", count: 200_000) + "true")
        out.append(String(repeating: "-", count: 200_000) + "1")
        out.append("[" + String(repeating: "[", count: 200_000))
        let terms = [String](repeating: "event.a", count: 100_000)
        out.append(terms.joined(separator: " + ") + " > 0")
        out.append(terms.joined(separator: " * ") + " == 1")
        out.append([String](repeating: "event.a == 1", count: 100_000).joined(separator: " and "))
        out.append("event.a in [" + [String](repeating: "'x'", count: 100_000).joined(separator: ", ") + "]")
        return out
    }()

    @Test(arguments: 0..<8)
    func hostileExpressionsAreRefusedOrBounded(index: Int) {
        let source = Self.hostileExpressions[index]
        let result = Self.timed { Result { () throws(ExpressionError) in try ExpressionParser.parse(source) } }
        switch result {
        case .failure(let e): #expect(e.message.contains("64"), "\(e.message)")
        case .success(let e):
            // Accepted: long but flat (a list); evaluation must not recurse per element either.
            _ = Self.timed { try? e.evaluate(in: FuzzContext()) }
        }
    }

    @Test func hugeTemplatesParseAndRenderWithoutRecursion() throws {
        let source = String(repeating: "{{ event.a | default: 'x' | upper }} ", count: 50_000)
        let t = try Self.timed { try Template(parsing: source) }
        let out = try Self.timed { try t.render(.object(JSONObject([("event", .object(JSONObject()))])), timeZone: "UTC") }
        #expect(out.count == 100_000)
        #expect(throws: TemplateSyntaxError.self) { try Template(parsing: String(repeating: "{{", count: 200_000)) }
    }

    static func diagnostics(_ yaml: String) -> [String] {
        switch Self.timed({ RulesLoader.load(yaml: yaml) }) {
        case .success: return []
        case .failure(let e): return e.diagnostics.map(\.description)
        }
    }

    @Test func deeplyNestedYAMLIsRefused() {
        let flow = "version: 1\nrules: " + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "\n"
        let d = Self.diagnostics(flow)
        #expect(d.count == 1 && d[0].contains("nested deeper than"), "\(d.prefix(3))")
        var block = "version: 1\nrules:\n"
        for i in 0..<1200 { block += String(repeating: " ", count: i + 1) + "a\(i):\n" }
        let b = Self.diagnostics(block)
        #expect(b.count == 1 && b[0].contains("nested deeper than"), "\(b.prefix(3))")
    }

    @Test func aliasesAreRefusedSoNoFileCanExpandExponentially() {
        // "Billion laughs": each level doubles; expanding it would take 2^40 nodes.
        var yaml = "version: 1\nx0: &x0 [a, a]\n"
        for i in 1...40 { yaml += "x\(i): &x\(i) [*x\(i - 1), *x\(i - 1)]\n" }
        let d = Self.diagnostics(yaml)
        #expect(d.first?.hasPrefix("rules.yaml:2:5: error: YAML anchors and aliases are not supported") == true, "\(d.prefix(3))")
        let merge = "version: 1\ntemplates:\n  t: &t { body: hi }\n  u: *t\n"
        #expect(Self.diagnostics(merge).first?.contains("anchors and aliases are not supported") == true)
    }

    @Test func aHugeFileIsRefusedBeforeParsing() {
        let rule = "  - id: r\n    on: orders.x\n    notify: { template: t }\n"
        let yaml = "version: 1\ntemplates:\n  t: { body: hi }\nrules:\n" + String(repeating: rule, count: 200_000)
        let d = Self.diagnostics(yaml)
        #expect(d.count == 1 && d[0].hasPrefix("rules.yaml:1:1: error: the file is \(yaml.utf8.count) bytes; a rules file may have at most \(RulesLoader.maxBytes)"), "\(d.prefix(2))")
    }

    @Test func manyRulesWithinTheLimitLoadQuickly() {
        var yaml = "version: 1\ntemplates:\n  t: { body: hi }\nrules:\n"
        for i in 0..<5000 { yaml += "  - id: r\(i)\n    on: orders.x\n    where: \"event.a > \(i)\"\n    notify: { template: t }\n" }
        #expect(Self.diagnostics(yaml) == [])
    }

    @Test(arguments: [
        ("version: 1\nrules:\n  - id: a\n    on: orders.x\n    notify: { template: t }\n    where: " + String(repeating: "(", count: 100) + "1" + String(repeating: ")", count: 100) + "\n",
         "nested deeper than 64"),
        ("version: 1\ntemplates:\n  t: { body: hi }\nrules:\n  - id: a\n    on: orders.x\n    notify: { template: t }\n    prority: high\n",
         "unknown key 'prority'"),
        ("version: 1\ntemplates:\n  t: { body: hi }\nrules:\n  - id: a\n    on: orders.x\n    notify: { template: t }\n    wait: [1h]\n",
         "wait"),
        ("version: 1\ntemplates:\n  t: { body: hi }\nrules: { id: a }\n", "rules must be a list"),
        ("version: 1\ntemplates: [a, b]\nrules: []\n", "templates"),
        ("version: 1\ntemplates:\n  t: { body: hi }\nrules:\n  - id: a\n    on: 42\n    notify: { template: t }\n", "on"),
        ("version: 1\ntemplates:\n  t: { body: hi }\nrules:\n  - id: a\n    on: orders.x\n    notify: { template: t }\n  - id: a\n    on: orders.x\n    notify: { template: t }\n",
         "'a'"),
        ("version: 1\ntemplates:\n  t: { body: \"{{ event.a \" }\nrules:\n  - id: a\n    on: orders.x\n    notify: { template: t }\n", "t"),
        ("version: 1\ntemplates:\n  t: { body: hi }\nrules:\n  - id: a\n    on: orders.x\n    notify: { template: t }\n    threshold: { count: -1, within: 1h }\n",
         "count"),
    ])
    func wrongRulesAreRefusedPrecisely(yaml: String, expected: String) {
        let d = Self.diagnostics(yaml)
        #expect(!d.isEmpty && d.allSatisfy { $0.hasPrefix("rules.yaml:") }, "\(d)")
        #expect(d.contains { $0.contains(expected) }, "\(d)")
    }
}
