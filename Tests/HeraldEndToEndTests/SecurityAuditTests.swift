import Foundation
import HeraldCore
import HeraldRuntime
import Testing

/// docs/security.md, checked: SQL text never carries data, and dead letters never hold
/// more than the configured payload size.
@Suite struct SecurityAuditTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// What may be interpolated into SQL text: the validated, quoted schema name (`s` is
    /// always `SQLIdentifier.quoted(schema)`), constant column lists and savepoint names.
    static let allowed: Set<String> = ["s", "SQLIdentifier.quoted(schema)", "SQLIdentifier.quoted(pipeline.schema)",
                                       "Self.columns", "SinkWriter.columns", "savepoint"]

    @Test func noSQLIsBuiltFromData() throws {
        let sqlWord = try Regex(#"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|COPY|FROM|INTO|WHERE|VALUES|JOIN|SAVEPOINT|TABLE)\b"#)
        let interpolation = try Regex(#"\\\(([^()]*(\([^()]*\))?[^()]*)\)"#)
        var offenders: [String] = []
        var checked = 0
        let enumerator = FileManager.default.enumerator(atPath: Self.root.appendingPathComponent("Sources").path)!
        while let path = enumerator.nextObject() as? String {
            guard path.hasSuffix(".swift") else { continue }
            let text = try String(contentsOf: Self.root.appendingPathComponent("Sources/\(path)"), encoding: .utf8)
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let l = String(line)
                guard l.contains(sqlWord), l.contains("\\("), !l.contains("message:"), !l.contains("Console.say"),
                      !l.contains("throw "), !l.trimmingCharacters(in: .whitespaces).hasPrefix("//") else { continue }
                checked += 1
                // Parameters (`execute("…", [values])`) may hold anything; only the SQL text counts.
                let sql = l.components(separatedBy: "\", [")[0]
                for m in sql.matches(of: interpolation) {
                    let inner = String(sql[m.range].dropFirst(2).dropLast())
                    if !Self.allowed.contains(inner) { offenders.append("Sources/\(path):\(n + 1): \\(\(inner))") }
                }
            }
        }
        #expect(checked > 20)
        #expect(offenders.isEmpty, "\(offenders.joined(separator: "\n"))")
    }

    @Test func deadLettersNeverHoldMoreThanTheConfiguredPayloadSize() throws {
        let big = [UInt8](repeating: 0x41, count: 3 << 20)
        let d = DeadLetter(stage: "t", reason: "too_large", detail: "d", sourceTopic: "orders", sourcePartition: 0, sourceOffset: 1,
                           payload: big, receivedAt: Timestamp(seconds: 0))
        #expect(d.payload.count == DeadLetter.maxPayloadBytes && d.payloadSize == big.count)
        // A forged dead letter on the topic (the sink's input) is cut on decoding too.
        var forged = d
        forged.payload = big
        let decoded = try DeadLetter(json: forged.json)
        #expect(decoded.payload.count == DeadLetter.maxPayloadBytes)
    }

    @Test func maskedFieldsNeverReachAnOutcomeInFull() throws {
        let rules = try RulesLoader.load(yaml: """
            version: 1
            templates:
              card_code:
                title: "Your code {{ event.card_code | mask: 2 }}"
                body: "Your code: {{ event.card_code | mask }}"
            rules:
              - id: card
                on: orders.card_delivered
                notify: { template: card_code }
            """).get()
        var engine = TriggerEngine(rules: rules)
        var shaper = Shaper(rules: rules)
        let code = "ABCD-1234-5678-WXYZ"
        let event = try EventDecoder.decode(Array(#"""
            {"event_id":"e1","type":"card_delivered","shop_id":"s1","user_id":"u1","occurred_at":"2026-11-25T08:00:00Z","card_code":"\#(code)"}
            """#.utf8), topic: .orders).get()
        let outcomes = engine.process(event).compactMap(\.candidate).flatMap { shaper.process($0) }
        #expect(outcomes.count == 1)
        #expect(outcomes.first?.body == "Your code: ABCD***********WXYZ")
        #expect(outcomes.first?.title == "Your code AB***************YZ")
        // Nor anywhere in the outcome message the sink stores.
        let json = String(decoding: outcomes.first?.json ?? [], as: UTF8.self)
        #expect(!json.contains(code), "\(json)")
    }
}
