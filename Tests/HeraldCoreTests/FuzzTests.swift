import Foundation
import Testing
@testable import HeraldCore

/// Seeded mutational fuzzing of every parser that reads outside input: events (shops),
/// expressions, templates and rules files (operators). Each input is built from a seed in
/// `Corpus/<target>/` by a few random mutations; the parser must answer (accept or reject)
/// without crashing and within a time limit.
///
/// `scripts/test` runs a short pass. A long run by hand:
///     HERALD_FUZZ_ITERATIONS=200000 HERALD_FUZZ_SEED=$RANDOM scripts/test --filter FuzzTests
/// A failure names the seed and iteration, which reproduce the input exactly.
@Suite struct FuzzTests {
    static let iterations = ProcessInfo.processInfo.environment["HERALD_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 1500
    static let seed = ProcessInfo.processInfo.environment["HERALD_FUZZ_SEED"].flatMap(UInt64.init) ?? 0x5EED
    /// Far above any real input's parse time; a slower answer is a hang.
    static let slowLimit: Duration = .seconds(2)

    static func corpus(_ target: String, lines: Bool = false) -> [[UInt8]] {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus/\(target)")
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).sorted()
        var seeds: [[UInt8]] = []
        for f in files {
            guard let data = FileManager.default.contents(atPath: dir.appendingPathComponent(f).path) else { continue }
            if lines {
                seeds += data.split(separator: UInt8(ascii: "\n")).map { Array($0) }
            } else {
                seeds.append(Array(data))
            }
        }
        return seeds
    }

    /// Runs `body` on `iterations` mutated inputs; returns how many were accepted.
    @discardableResult
    static func fuzz(_ target: String, lines: Bool = false, dictionary: [String], seed offset: UInt64,
                     _ body: ([UInt8]) -> Bool) -> Int {
        let seeds = corpus(target, lines: lines)
        #expect(!seeds.isEmpty, "no corpus for \(target)")
        guard !seeds.isEmpty else { return 0 }
        var mutator = Mutator(seed: seed &+ offset, dictionary: dictionary.map { Array($0.utf8) })
        var accepted = 0
        let clock = ContinuousClock()
        for i in 0..<iterations {
            let input = mutator.mutate(seeds, iteration: i)
            let start = clock.now
            if body(input) { accepted += 1 }
            let took = clock.now - start
            #expect(took < slowLimit, "\(target): seed \(seed) iteration \(i) took \(took): \(input.prefix(200))")
        }
        // Both sides must be reached: a fuzzer that only produces rejections tests nothing.
        #expect(accepted > 0, "\(target): no mutated input was accepted")
        #expect(accepted < iterations, "\(target): every mutated input was accepted")
        return accepted
    }

    @Test func eventDecoder() {
        let dictionary = ["{", "}", "[", "]", "\"", "\\", ":", ",", "\\u0000", "\\ud800", "\\u00e9", "1e400", "-0",
                          "null", "true", "\"occurred_at\"", "\"event_id\"", "\"user_id\"", "2026-02-29T00:00:00Z",
                          "9999-12-31T23:59:59Z", "1969-12-31T23:59:59Z", "\u{0}", "\u{FEFF}", "T", "Z", "+14:00", ".",
                          String(repeating: "[", count: 70), String(repeating: "{\"a\":", count: 70)]
        let now = Timestamp(rfc3339: "2026-11-25T12:00:00Z")!
        Self.fuzz("events", dictionary: dictionary, seed: 1) { bytes in
            switch EventDecoder.decode(bytes, topic: .orders, notAfter: now + EventDecoder.maxFutureSkew) {
            case .success(let e):
                #expect(!e.userID.isEmpty && !e.eventID.isEmpty && e.occurredAt <= now + EventDecoder.maxFutureSkew)
                return true
            case .failure(let r):
                #expect(!r.reason.isEmpty && !r.detail.isEmpty)
                return false
            }
        }
    }

    @Test func expressionParser() {
        let dictionary = ["(", ")", "[", "]", "'", "\"", " and ", " or ", "not ", " == ", " != ", " < ", " >= ", " + ", " - ",
                          " * ", " / ", " in ", " contains ", " contains_any ", " starts_with ", "event.", "user.",
                          "user.count('", "3d", "1h30m", "null", "1e308", "-", ".", "\\", "'未到账'",
                          String(repeating: "(", count: 70), String(repeating: "not ", count: 70)]
        let ctx = FuzzContext()
        Self.fuzz("expressions", lines: true, dictionary: dictionary, seed: 2) { bytes in
            guard let e = try? ExpressionParser.parse(String(decoding: bytes, as: UTF8.self)) else { return false }
            _ = try? e.evaluate(in: ctx)
            return true
        }
    }

    @Test func templateParser() {
        let dictionary = ["{{", "}}", "{", "}", "|", ":", "'", "\"", " default: ", " mask", " mask: 0", " truncate: -1",
                          " truncate: 99999999999999999999", " date: '", " map: '", " join: ", " count", "event.", "items",
                          "user.", "..", "\\"]
        let event = JSONObject([("sku", .string("sku-9")), ("card_code", .string("ABCD1234WXYZ")),
                                ("due_at", .string("2026-12-01T00:00:00Z")), ("text", .string("充值未到账"))])
        let item = JSONValue.object(JSONObject([("event", .object(JSONObject([("status", .string("shipped"))])))]))
        let root = JSONValue.object(JSONObject([("event", .object(event)), ("items", .array([item]))]))
        Self.fuzz("templates", lines: true, dictionary: dictionary, seed: 3) { bytes in
            guard let t = try? Template(parsing: String(decoding: bytes, as: UTF8.self)) else { return false }
            _ = try? t.render(root, timeZone: "Asia/Shanghai")
            return true
        }
    }

    /// Messages between stages (herald.candidates, herald.outcomes, herald.deadletter): a
    /// principal that can write those topics must not be able to crash the shaper or the sink.
    @Test func stageMessages() throws {
        let rules = try RulesLoader.load(yaml: """
            version: 1
            templates:
              t: { title: "T", body: "Order {{ event.order_id }} {{ event.card_code | mask }}" }
            rules:
              - id: r
                on: orders.payment_failed
                notify: { template: t, priority: high, tags: [x], escalate: true }
                goal: { event: orders.order_paid, within: 1h }
            """).get()
        var engine = TriggerEngine(rules: rules)
        var shaper = Shaper(rules: rules)
        var seeds: [[UInt8]] = []
        for (i, type) in ["payment_failed", "order_paid"].enumerated() {
            let event = try EventDecoder.decode(Array(#"""
                {"event_id":"e\#(i)","type":"\#(type)","shop_id":"s1","user_id":"u1","occurred_at":"2026-11-25T08:0\#(i):00Z","order_id":"o-1","card_code":"ABCD12345678"}
                """#.utf8), topic: .orders).get()
            for o in engine.process(event) {
                switch o {
                case .candidate(let c):
                    seeds.append(c.json)
                    seeds += shaper.process(c).map(\.json)
                case .conversion(let c):
                    seeds.append(c.json)
                }
            }
        }
        seeds.append(DeadLetter(stage: "herald-trigger", reason: "invalid_json", detail: "d", sourceTopic: "orders", sourcePartition: 1,
                                sourceOffset: 7, payload: Array("{bad".utf8), receivedAt: Timestamp(seconds: 0)).json)
        #expect(seeds.count >= 4)
        var mutator = Mutator(seed: Self.seed &+ 5, dictionary: ["\"", "{", "}", "[", "]", ":", ",", "null", "-1", "1e400",
                                                                "\"kind\"", "\"candidate\"", "\"outcome\"", "\"conversion\"",
                                                                "\"dead_letter\"", "\"urgent\"", "\"sent\"", "=="].map { Array($0.utf8) })
        var accepted = 0
        for i in 0..<Self.iterations {
            let b = mutator.mutate(seeds, iteration: i)
            var ok = false
            if (try? Candidate(json: b)) != nil { ok = true }
            if (try? Outcome(json: b)) != nil { ok = true }
            if (try? Conversion(json: b)) != nil { ok = true }
            if let d = try? DeadLetter(json: b) {
                ok = true
                #expect(d.payload.count <= DeadLetter.maxPayloadBytes)
            }
            if let c = try? Candidate(json: b) { _ = shaper.process(c) }
            if ok { accepted += 1 }
        }
        #expect(accepted > 0 && accepted < Self.iterations)
    }

    @Test func rulesLoader() {
        let dictionary = ["\n", "  ", "- ", ": ", "{", "}", "[", "]", "&a ", "*a", "!!str ", "!!map ", "'", "\"", "#", "---",
                          "? ", "|", ">", "wait: ", "at: ", "idle: 1d", "threshold: ", "cancel_on: ", "repeat: ",
                          "notify: { template: t }", "where: \"", "on: ", "id: a", "<<: *a", "\t", "\u{0}", "\\"]
        Self.fuzz("rules", dictionary: dictionary, seed: 4) { bytes in
            guard let text = String(validating: bytes, as: UTF8.self) else { return false }
            switch RulesLoader.load(yaml: text) {
            case .success: return true
            case .failure(let e):
                #expect(!e.diagnostics.isEmpty)
                return false
            }
        }
    }
}

struct FuzzContext: EvaluationContext {
    func value(at path: String) -> Value {
        switch path {
        case "event.amount": .number(12.5)
        case "event.text": .string("充值未到账")
        case "event.due_at": .string("2026-12-01T00:00:00Z")
        case "event.tags": .list([.string("vip")])
        default: .null
        }
    }
    func count(_ pattern: EventPattern) -> Int { 1 }
}

/// Deterministic mutations (SplitMix64): bit flips, interesting bytes, dictionary tokens,
/// deleted, duplicated and spliced ranges, truncation.
struct Mutator {
    var state: UInt64
    let dictionary: [[UInt8]]
    static let interesting: [UInt8] = [0x00, 0x22, 0x5C, 0x7B, 0x7D, 0x5B, 0x5D, 0x3A, 0x2C, 0x0A, 0x20, 0x7F, 0x80, 0xBF,
                                       0xC0, 0xC3, 0xE4, 0xED, 0xF0, 0xF4, 0xF5, 0xFF, 0x30, 0x39, 0x2D, 0x2E, 0x65]

    init(seed: UInt64, dictionary: [[UInt8]]) {
        state = seed
        self.dictionary = dictionary
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(next() % UInt64(n)) }

    mutating func mutate(_ seeds: [[UInt8]], iteration: Int) -> [UInt8] {
        var b = seeds[below(seeds.count)]
        // Every 16th input is a seed unchanged, so acceptance is always reachable.
        if iteration % 16 == 0 { return b }
        for _ in 0...below(6) {
            let at = below(b.count + 1)
            switch below(9) {
            case 0 where !b.isEmpty: b[min(at, b.count - 1)] ^= UInt8(1 << below(8))
            case 1 where !b.isEmpty: b[min(at, b.count - 1)] = Self.interesting[below(Self.interesting.count)]
            case 2, 3 where !dictionary.isEmpty: b.insert(contentsOf: dictionary[below(dictionary.count)], at: at)
            case 4: b.removeSubrange(at..<min(b.count, at + 1 + below(16)))
            case 5:
                let end = min(b.count, at + 1 + below(32))
                b.insert(contentsOf: Array(b[at..<end]), at: below(b.count + 1))
            case 6:
                let other = seeds[below(seeds.count)]
                let from = below(other.count + 1)
                b.insert(contentsOf: other[from..<min(other.count, from + below(64))], at: at)
            case 7: b.removeSubrange(at..<b.count)
            default: b.insert(UInt8(truncatingIfNeeded: next()), at: at)
            }
        }
        return b
    }
}
