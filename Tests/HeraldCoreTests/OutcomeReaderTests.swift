import Foundation
import Testing
@testable import HeraldCore

/// `Outcome(json:)` reads most messages with `OutcomeReader`, falling back to the generic
/// decoder for anything else: it must accept exactly what the generic decoder accepts, as the
/// same outcome, and reject the rest with the generic decoder's error.
@Suite struct OutcomeReaderTests {
    static let full = Outcome(
        notificationID: "0123456789abcdef0123456789abcdef", status: .deferred, reason: "quiet_hours", ruleID: "payment-failed",
        shopID: "s1", userID: "u-中文", priority: .urgent, channels: ["in_app", "sms"], variant: "B",
        title: "Payment \"failed\"", body: "Line one\nline\ttwo \\ 充值未到账 ✓ \u{1F600}", mergedInto: "m1",
        dueAt: Timestamp(rfc3339: "2026-11-26T00:00:00.123456Z"), escalated: true, tags: ["a,b", "{c}", ""],
        triggerEventIDs: ["e1", "e2"], eventTime: Timestamp(rfc3339: "2026-11-25T07:59:00Z")!,
        decidedAt: Timestamp(rfc3339: "2026-11-25T08:00:00.5Z")!, rulesVersion: "v1")
    static let bare = Outcome(
        notificationID: "n", status: .sent, reason: nil, ruleID: "r", shopID: "s", userID: "u", priority: .low,
        channels: [], variant: nil, title: nil, body: nil, mergedInto: nil, dueAt: nil, escalated: false, tags: [],
        triggerEventIDs: [], eventTime: Timestamp(seconds: 0), decidedAt: Timestamp(seconds: 1), rulesVersion: "")

    /// The decision and the value of `Outcome(json:)` and of the generic decoder.
    static func both(_ bytes: [UInt8]) -> (fast: Result<Outcome, MessageDecodingError>, generic: Result<Outcome, MessageDecodingError>) {
        (Result { () throws(MessageDecodingError) in try Outcome(json: bytes) },
         Result { () throws(MessageDecodingError) in try Outcome(genericJSON: bytes) })
    }

    @Test func heraldsOwnMessagesTakeTheDirectPath() throws {
        for o in [Self.full, Self.bare] {
            #expect(OutcomeReader.read(o.json) == o)
            #expect(try Outcome(json: o.json) == o)
        }
    }

    @Test func aCacheSharesRepeatedValuesAndOnlyExactlyRepeatedOnes() throws {
        var cache = OutcomeValueCache()
        var a = Self.full
        a.ruleID = "r1"; a.channels = ["in_app"]; a.tags = []
        var b = a
        b.ruleID = "r10"; b.channels = ["in_app", "sms"]; b.tags = ["x"]; b.rulesVersion = "v10"
        for o in [a, b, a, b, Self.bare, a] {
            #expect(try Outcome(json: o.json, cache: &cache) == o)
        }
        #expect(cache.strings.map(\.value) == ["r1", "v1", "r10", "v10", "r", ""])
        #expect(cache.lists.map(\.value) == [["in_app"], [], ["in_app", "sms"], ["x"]])
    }

    @Test func equivalentSpellingsAgree() {
        let inputs = [
            // Members in another order, whitespace, unknown members of every type, missing optionals.
            #" { "status" : "sent", "kind":"outcome","notification_id":"n","rule_id":"r","shop_id":"s","user_id":"u","priority":"high","channels":[ "a" , "b" ],"escalated":false,"tags":[],"trigger_event_ids":["e"],"event_time":"2026-11-25T08:00:00+08:00","decided_at":"2026-11-25t00:00:00.000001z","rules_version":"v","extra":{"x":[1,2.5e3,-0,null,true,{"y":"z"}]},"more":null } "#,
            // Escapes in values and in an unknown member's name; a timestamp spelled with escapes.
            #"{"kind":"outcome","notification_id":"n\u0031\"","status":"sent","rule_id":"r\/","shop_id":"\ud83d\ude00","user_id":"u","priority":"normal","channels":["\t"],"escalated":true,"tags":["\\"],"trigger_event_ids":[],"event_time":"2026-11-25T08:00:0\u0030Z","decided_at":"2026-11-25T08:00:00Z","due_at":null,"rules_version":"v","\u00e9":1}"#,
            // A known member spelled with an escape: the generic decoder reads it as that member.
            #"{"kind":"outcome","notification_id":"n","status":"sent","rule_id":"r","shop_id":"s","user_id":"u","priority":"normal","channels":[],"escalated":true,"tags":[],"trigger_event_ids":[],"event_time":"2026-11-25T08:00:00Z","decided_at":"2026-11-25T08:00:00Z","rules_versio\u006e":"v"}"#,
        ]
        for input in inputs {
            let (fast, generic) = Self.both(Array(input.utf8))
            #expect(fast == generic, "\(input)")
            #expect((try? generic.get()) != nil, "\(input)")
        }
    }

    @Test func rejectionsKeepTheGenericDecodersError() {
        let good = String(decoding: Self.bare.json, as: UTF8.self)
        func replacing(_ a: String, _ b: String) -> String { good.replacingOccurrences(of: a, with: b) }
        let inputs = [
            "", "null", "[]", "{}", good + "x", good + "{}", String(good.dropLast()),
            replacing(#""kind":"outcome""#, #""kind":"candidate""#),
            replacing(#""kind":"outcome","#, ""),
            replacing(#""status":"sent""#, #""status":"sent","status":"sent""#),
            replacing(#""status":"sent""#, #""status":"bogus""#),
            replacing(#""status":"sent""#, #""status":null"#),
            replacing(#""priority":"low""#, #""priority":"LOW""#),
            replacing(#""channels":[]"#, #""channels":[1]"#),
            replacing(#""channels":[]"#, #""channels":"a""#),
            replacing(#""channels":[]"#, #""channels":["a",]"#),
            replacing(#""reason":null"#, #""reason":5"#),
            replacing(#""reason":null"#, #""reason":nul"#),
            replacing(#""escalated":false"#, #""escalated":"false""#),
            replacing(#""escalated":false"#, #""escalated":falsey"#),
            replacing(#""due_at":null"#, #""due_at":"tomorrow""#),
            replacing(#""event_time":"1970-01-01T00:00:00Z""#, #""event_time":"1969-12-31T23:59:59Z""#),
            replacing(#""event_time":"1970-01-01T00:00:00Z""#, #""event_time":"2026-02-29T00:00:00Z""#),
            replacing(#""event_time":"1970-01-01T00:00:00Z""#, #""event_time":"2026-11-25T08:00:00\u0000Z""#),
            replacing(#""user_id":"u""#, #""user_id":"u\u0000""#),
            replacing(#""user_id":"u""#, #""user_id":"\ud800""#),
            replacing(#""user_id":"u""#, "\"user_id\":\"\u{1}\""),
            replacing(#""rules_version":"""#, #""rules_version":"","x":1e999"#),
            replacing(#""rules_version":"""#, #""rules_version":"","x":1,"x":2"#),
            replacing(#""rules_version":"""#, #""rules_version":"","r\u0065ason":"x""#),
            replacing(#""rules_version":"""#, #""rules_version":"","x":"# + String(repeating: "[", count: 70)),
            replacing(#""kind""#, #""kind" "#) + ",",
        ]
        for input in inputs {
            let (fast, generic) = Self.both(Array(input.utf8))
            #expect(fast == generic, "\(input)")
            #expect((try? generic.get()) == nil, "\(input)")
        }
        // Invalid UTF-8 inside a value and inside an unknown member's name.
        var bytes = Array(good.utf8)
        let at = bytes.firstIndex(of: UInt8(ascii: "u"))!
        for b: UInt8 in [0xC0, 0xED, 0xFF] {
            bytes[at] = b
            let (fast, generic) = Self.both(bytes)
            #expect(fast == generic)
        }
    }

    /// Mutated outcomes: the two decoders agree on every one, and the direct path is taken.
    @Test func mutatedOutcomesAgreeWithTheGenericDecoder() {
        let seeds = [Self.full.json, Self.bare.json, Array(#"{"kind":"outcome","x":{"a":[1,"\u00e9"]},"y":null}"#.utf8)]
        let dictionary = ["\"", "\\", "\\u0000", "\\ud800", "\\u0041", "{", "}", "[", "]", ":", ",", " ", "null", "true",
                          "false", "1e400", "-0", "\"kind\"", "\"outcome\"", "\"status\"", "\"sent\"", "\"deferred\"",
                          "\"priority\"", "\"urgent\"", "\"due_at\"", "\"tags\"", "\"escalated\"", "\"event_time\"",
                          "\"2026-11-25T08:00:00Z\"", "\"2026-02-29T00:00:00Z\"", "+14:00", ".", "\u{0}", "\u{FEFF}"]
        var mutator = Mutator(seed: FuzzTests.seed &+ 7, dictionary: dictionary.map { Array($0.utf8) })
        var accepted = 0, direct = 0
        // One cache across all inputs, as herald-sink keeps it: values remembered from one
        // message must never leak into another that differs from it.
        var cache = OutcomeValueCache()
        for i in 0..<FuzzTests.iterations * 2 {
            let input = mutator.mutate(seeds, iteration: i)
            let (fast, generic) = Self.both(input)
            #expect(fast == generic, "seed \(FuzzTests.seed) iteration \(i): \(String(decoding: input, as: UTF8.self))")
            let cached = Result { () throws(MessageDecodingError) in try Outcome(json: input, cache: &cache) }
            #expect(cached == generic, "seed \(FuzzTests.seed) iteration \(i) (cached): \(String(decoding: input, as: UTF8.self))")
            if (try? generic.get()) != nil { accepted += 1 }
            if OutcomeReader.read(input) != nil { direct += 1 }
        }
        #expect(accepted > 0 && direct > 0)
    }
}
