import Testing
@testable import HeraldCore

@Suite struct JSONParserTests {
    @Test func parsesEveryKindOfValue() throws {
        let v = try JSONParser.parse(#"{"a":1,"b":-2.5e3,"c":"x\"y\u00e9\ud83d\ude00","d":[true,false,null],"e":{"f":"中文"}}"#)
        guard case .object(let o) = v else { Issue.record("not an object"); return }
        #expect(o.keys == ["a", "b", "c", "d", "e"])
        #expect(o["a"] == .int(1))
        #expect(o["b"] == .double(-2500))
        #expect(o["c"] == .string("x\"yé😀"))
        #expect(o["d"] == .array([.bool(true), .bool(false), .null]))
        #expect(v[path: "e.f"] == .string("中文"))
        #expect(v[path: "e.g"] == nil)
    }

    @Test(arguments: [
        ("", "unexpected end of input"),
        ("{", "unexpected end of input"),
        (#"{"a":1,"a":2}"#, "duplicate key \"a\""),
        (#"{"a":1} x"#, "unexpected data after the JSON value"),
        (#"{"a":"\u0000"}"#, "NUL character (\\u0000) in string"),
        (#"{"a":"\ud800"}"#, "lone surrogate in \\u escape"),
        (#"{"a":01}"#, "expected ',' or '}'"),
        (#"{"a":1e999}"#, "number out of range"),
        (#"{'a':1}"#, "expected a string key"),
        (#"{"a":tru}"#, "invalid literal"),
    ])
    func rejects(input: String, message: String) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(input) }
        do {
            _ = try JSONParser.parse(input)
        } catch {
            #expect(error.message == message)
        }
    }

    @Test func rejectsInvalidUTF8AndRawControlCharacters() {
        #expect(throws: JSONParseError(message: "invalid UTF-8 in string", offset: 2)) {
            try JSONParser.parse([0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D])
        }
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0x61, 0x00, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array("\"a\nb\"".utf8)) }
    }

    @Test func limitsNesting() throws {
        let ok = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        _ = try JSONParser.parse(ok)
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(deep) }
        let veryDeep = String(repeating: "[", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(veryDeep) }
    }

    @Test func writerRoundTripsThroughParser() throws {
        let original = JSONValue.object(JSONObject([
            ("s", .string("tab\there \"quoted\" back\\slash \u{1} 中文")), ("i", .int(-42)), ("d", .double(0.25)),
            ("n", .null), ("a", .array([.bool(true), .object(JSONObject([("k", .string("v"))]))])),
        ]))
        let text = original.jsonString
        #expect(text.contains("\\u0001"))
        #expect(try JSONParser.parse(text) == original)
    }
}

/// The parser reads strings eight bytes at a time and takes the required event fields' keys
/// as constants; these check both against what the byte-by-byte reading gives.
@Suite struct JSONParserShortcutTests {
    @Test func duplicateKeysAreFoundHoweverTheyAreWritten() {
        for input in [#"{"a":1,"\u0061":2}"#, #"{"\u0061":1,"a":2}"#, #"{"event_id":"x","event\u005fid":"y"}"#,
                      #"{"event\u005fid":"x","event_id":"y"}"#, #"{"type":"a","b":1,"type":"c"}"#] {
            #expect(throws: JSONParseError.self, "\(input)") { try JSONParser.parse(input) }
        }
        // Many keys (their one-bit hashes collide) and then a repeat of each of them.
        let names = (0..<80).map { "k\($0)" } + ["event_id", "type", "shop_id", "user_id", "occurred_at", "é", ""]
        let members = names.map { "\"\($0)\":1" }
        #expect((try? JSONParser.parse("{" + members.joined(separator: ",") + "}")) != nil)
        for repeated in names {
            let text = "{" + (members + ["\"\(repeated)\":2"]).joined(separator: ",") + "}"
            #expect(throws: JSONParseError(message: "duplicate key \"\(repeated)\"", offset: text.utf8.count - repeated.utf8.count - 5)) {
                try JSONParser.parse(text)
            }
        }
    }

    @Test func knownKeysAreTheKeysWritten() throws {
        let v = try JSONParser.parse(#"{"event_id":"e","type":"t","shop_id":"s","user_id":"u","occurred_at":"o","event_ids":1,"typ":2,"event\u005fidx":3,"user_i":4}"#)
        #expect(v.objectValue?.keys == ["event_id", "type", "shop_id", "user_id", "occurred_at", "event_ids", "typ", "event_idx", "user_i"])
        #expect(throws: JSONParseError.self) { try JSONParser.parse(#"{"event_id"#) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(#"{"event_id""#) }
    }

    /// Strings of 0–40 characters with quotes, backslashes, control characters and non-ASCII
    /// at every position round-trip through the writer; a raw control character or a lone
    /// invalid byte at any position is rejected.
    @Test func stringsReadInWordsAreTheStringsWritten() throws {
        var rng = SplitMix64(seed: 3)
        let specials: [Character] = ["\"", "\\", "\n", "\u{1}", "\u{1F}", "é", "中", "😀", "\u{7F}", " ", "/"]
        for length in 0...40 {
            for position in 0..<max(length, 1) {
                var chars = (0..<length).map { _ in Character(Unicode.Scalar(UInt8(0x61 + rng.next() % 26))) }
                if length > 0 { chars[position] = specials[Int(rng.next() % UInt64(specials.count))] }
                let s = String(chars)
                let value = JSONValue.object(JSONObject([("k", .string(s))]))
                #expect(try JSONParser.parse(value.jsonString) == value, "\(s.debugDescription)")
                guard length > 0 else { continue }
                for bad: UInt8 in [0x01, 0x1F, 0x00, 0xFF, 0xC3] {
                    var bytes = Array(#"{"k":""#.utf8) + Array(repeating: UInt8(ascii: "a"), count: length) + Array(#""}"#.utf8)
                    bytes[6 + position] = bad
                    #expect(throws: JSONParseError.self) { try JSONParser.parse(bytes) }
                }
            }
        }
    }
}

@Suite struct UTF8ValidationTests {
    /// Agrees with the standard library on every 1- and 2-byte sequence and on a sample of
    /// longer ones.
    @Test func agreesWithTheStandardLibrary() {
        func both(_ bytes: [UInt8]) -> Bool {
            let ours = bytes.withUnsafeBufferPointer { UTF8Validation.isValid($0) }
            let std = String(validating: bytes, as: UTF8.self) != nil
            return ours == std
        }
        for a in 0...255 {
            #expect(both([UInt8(a)]))
            for b in stride(from: 0, through: 255, by: 1) where !both([UInt8(a), UInt8(b)]) {
                Issue.record("disagree on \(a) \(b)")
            }
        }
        var rng = SplitMix64(seed: 9)
        let leads: [UInt8] = [0xE0, 0xE1, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xC0, 0xC2]
        for _ in 0..<200_000 {
            let len = 3 + Int(rng.next() % 2)
            var bytes = [leads[Int(rng.next() % UInt64(leads.count))]]
            for _ in 1..<len { bytes.append(UInt8(0x70 + rng.next() % 0x60)) }
            if !both(bytes) { Issue.record("disagree on \(bytes)"); break }
        }
        #expect(both(Array("中文 émoji 😀".utf8)))
    }
}
