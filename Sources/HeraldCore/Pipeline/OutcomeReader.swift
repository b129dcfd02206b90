/// A direct reader of an outcome message (`Outcome.json`'s shape): the members go straight
/// into an `Outcome`, with no `JSONValue` tree in between. It is the fast path of
/// `Outcome(json:)` and deliberately narrower than the generic decoder: it gives up (nil) on
/// anything it does not expect — a member of the wrong type, a missing or repeated member, any
/// JSON error — and `Outcome(json:)` then runs the generic decoder, which accepts or rejects
/// the message exactly as it always has, with the same error. What it accepts, the generic
/// decoder accepts as the same outcome: it uses the same strict parser for every string and for
/// members it does not know.
struct OutcomeReader {
    /// Members in the order `Outcome.json` writes them (so the next key is usually a hit).
    static let keys: [[UInt8]] = [
        "kind", "notification_id", "status", "reason", "rule_id", "shop_id", "user_id", "priority", "channels",
        "variant", "title", "body", "merged_into", "due_at", "escalated", "tags", "trigger_event_ids", "event_time",
        "decided_at", "rules_version",
    ].map { Array($0.utf8) }
    /// Every member `Outcome(json:)` requires; the others may be missing (null).
    static let required: UInt32 = {
        let optional: Set<String> = ["reason", "variant", "title", "body", "merged_into", "due_at"]
        var mask: UInt32 = 0
        for (i, k) in keys.enumerated() where !optional.contains(String(decoding: k, as: UTF8.self)) { mask |= 1 << i }
        return mask
    }()

    /// Gives up (nil) rather than reporting why; see the type's comment.
    static func read(_ bytes: [UInt8]) -> Outcome? {
        var cache = OutcomeValueCache()
        return read(bytes, cache: &cache)
    }

    static func read(_ bytes: [UInt8], cache: inout OutcomeValueCache) -> Outcome? {
        bytes.withUnsafeBufferPointer { buffer in
            var p = JSONScanner(bytes: buffer, maxDepth: JSONParser.defaultMaxDepth)
            return try? read(&p, cache: &cache)
        }
    }

    private static func read(_ p: inout JSONScanner, cache: inout OutcomeValueCache) throws(JSONParseError) -> Outcome {
        var seen: UInt32 = 0
        var unknown: [String] = []
        var status: OutcomeStatus?, priority: Priority?
        var notificationID = "", ruleID = "", shopID = "", userID = "", rulesVersion = ""
        var reason: String?, variant: String?, title: String?, body: String?, mergedInto: String?
        var dueAt: Timestamp?, eventTime = Timestamp(microseconds: 0), decidedAt = Timestamp(microseconds: 0)
        var channels: [String] = [], tags: [String] = [], triggerEventIDs: [String] = []
        var escalated = false

        p.skipWhitespace()
        try p.expect(UInt8(ascii: "{"))
        p.skipWhitespace()
        var next = 0
        if p.peek != UInt8(ascii: "}") {
            while true {
                p.skipWhitespace()
                let key = try p.knownKey(Self.keys, guess: next)
                p.skipWhitespace()
                try p.expect(UInt8(ascii: ":"))
                p.skipWhitespace()
                if let key {
                    guard seen & (1 << key) == 0 else { throw p.error("repeated member") }
                    seen |= 1 << key
                    next = key + 1
                    switch key {
                    case 0: guard try p.parseStringValue() == "outcome" else { throw p.error("not an outcome") }
                    case 1: notificationID = try p.parseStringValue()
                    case 2:
                        guard let s = OutcomeStatus(rawValue: try p.parseStringValue()) else { throw p.error("status") }
                        status = s
                    case 3: reason = try p.parseOptionalString()
                    case 4: ruleID = try p.remembered(&cache.strings) { p throws(JSONParseError) in try p.parseStringValue() }
                    case 5: shopID = try p.parseStringValue()
                    case 6: userID = try p.parseStringValue()
                    case 7:
                        guard let v = Priority(rawValue: try p.parseStringValue()) else { throw p.error("priority") }
                        priority = v
                    case 8: channels = try p.remembered(&cache.lists) { p throws(JSONParseError) in try p.parseStrings() }
                    case 9: variant = try p.parseOptionalString()
                    case 10: title = try p.parseOptionalString()
                    case 11: body = try p.parseOptionalString()
                    case 12: mergedInto = try p.parseOptionalString()
                    case 13: dueAt = try p.parseNullable { p throws(JSONParseError) in try p.parseTimestamp() }
                    case 14: escalated = try p.parseBool()
                    case 15: tags = try p.remembered(&cache.lists) { p throws(JSONParseError) in try p.parseStrings() }
                    case 16: triggerEventIDs = try p.parseStrings()
                    case 17: eventTime = try p.parseTimestamp()
                    case 18: decidedAt = try p.parseTimestamp()
                    default:
                        rulesVersion = try p.remembered(&cache.strings) { p throws(JSONParseError) in try p.parseStringValue() }
                    }
                } else {
                    // A member Outcome does not read: parsed (and checked) as the generic parser would.
                    let name = try p.parseString()
                    // An escaped spelling of a known name is that member: left to the generic decoder.
                    guard !unknown.contains(name), !Self.keys.contains(Array(name.utf8)) else {
                        throw p.error("repeated or escaped member")
                    }
                    unknown.append(name)
                    p.skipWhitespace()
                    try p.expect(UInt8(ascii: ":"))
                    p.skipWhitespace()
                    _ = try p.parseValue(depth: 1)
                }
                p.skipWhitespace()
                if p.peek == UInt8(ascii: ",") { p.index += 1; continue }
                try p.expect(UInt8(ascii: "}"))
                break
            }
        } else {
            p.index += 1
        }
        p.skipWhitespace()
        guard p.index == p.bytes.count, seen & Self.required == Self.required, let status, let priority else {
            throw p.error("incomplete")
        }
        return Outcome(
            notificationID: notificationID, status: status, reason: reason, ruleID: ruleID, shopID: shopID,
            userID: userID, priority: priority, channels: channels, variant: variant, title: title, body: body,
            mergedInto: mergedInto, dueAt: dueAt, escalated: escalated, tags: tags, triggerEventIDs: triggerEventIDs,
            eventTime: eventTime, decidedAt: decidedAt, rulesVersion: rulesVersion)
    }
}

/// Values an outcome stream repeats — rule ids, the rules version, channel and tag lists —
/// remembered with their exact JSON bytes: a member spelled byte for byte like a remembered
/// one is that value (parsing the same bytes gives the same value and ends at the same
/// place), shared instead of parsed and allocated again. One per decoding thread, kept across
/// messages; it holds at most `limit` values of each kind (the first ones seen).
public struct OutcomeValueCache: Sendable {
    struct Entry<Value: Sendable>: Sendable {
        var bytes: [UInt8]
        var value: Value
    }

    var strings: [Entry<String>] = []
    var lists: [Entry<[String]>] = []
    static let limit = 32

    public init() {}
}

extension JSONScanner {
    var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    /// The value at the current position: a remembered one if the bytes here spell it,
    /// otherwise `parse`'s (remembered while there is room).
    mutating func remembered<Value>(_ entries: inout [OutcomeValueCache.Entry<Value>],
                                    _ parse: (inout JSONScanner) throws(JSONParseError) -> Value) throws(JSONParseError) -> Value {
        let rest = bytes.count - index
        for e in entries.indices where entries[e].bytes.count <= rest {
            let matched = entries[e].bytes.withUnsafeBufferPointer { known in
                for k in 0..<known.count where known[k] != bytes[index + k] { return false }
                return true
            }
            if matched {
                index += entries[e].bytes.count
                return entries[e].value
            }
        }
        let start = index
        let value = try parse(&self)
        if entries.count < OutcomeValueCache.limit {
            entries.append(.init(bytes: Array(bytes[start..<index]), value: value))
        }
        return value
    }

    mutating func expect(_ byte: UInt8) throws(JSONParseError) {
        guard peek == byte else { throw error("unexpected character") }
        index += 1
    }

    /// At a string's opening quote: the index of its closing quote if no escape comes before
    /// it (the bytes between are then the string's, once checked), else nil.
    func plainStringEnd() -> Int? {
        var end = index + 1
        while end < bytes.count, bytes[end] != UInt8(ascii: "\""), bytes[end] != UInt8(ascii: "\\") { end += 1 }
        return end < bytes.count && bytes[end] == UInt8(ascii: "\"") ? end : nil
    }

    /// At a member's opening quote: the index in `keys` of its plain (unescaped) name, its
    /// closing quote consumed; nil, with nothing consumed, for any other name.
    mutating func knownKey(_ keys: [[UInt8]], guess: Int) throws(JSONParseError) -> Int? {
        guard peek == UInt8(ascii: "\"") else { throw error("expected a string key") }
        guard let end = plainStringEnd() else { return nil }
        let name = UnsafeBufferPointer(rebasing: bytes[(index + 1)..<end])
        func matches(_ k: Int) -> Bool {
            keys[k].withUnsafeBufferPointer { key in
                guard key.count == name.count else { return false }
                for i in 0..<key.count where key[i] != name[i] { return false }
                return true
            }
        }
        var found: Int?
        if guess < keys.count, matches(guess) {
            found = guess
        } else {
            found = keys.indices.first(where: matches)
        }
        if found != nil { index = end + 1 }
        return found
    }

    /// A string member (not null).
    mutating func parseStringValue() throws(JSONParseError) -> String {
        guard peek == UInt8(ascii: "\"") else { throw error("expected a string") }
        return try parseString()
    }

    /// `null`, or what `read` reads.
    mutating func parseNullable<T>(_ read: (inout JSONScanner) throws(JSONParseError) -> T) throws(JSONParseError) -> T? {
        if peek == UInt8(ascii: "n") {
            try expectLiteral("null")
            return nil
        }
        return try read(&self)
    }

    mutating func parseOptionalString() throws(JSONParseError) -> String? {
        try parseNullable { p throws(JSONParseError) in try p.parseStringValue() }
    }

    mutating func parseBool() throws(JSONParseError) -> Bool {
        switch peek {
        case UInt8(ascii: "t"): try expectLiteral("true"); return true
        case UInt8(ascii: "f"): try expectLiteral("false"); return false
        default: throw error("expected true or false")
        }
    }

    /// A list of strings, nothing else.
    mutating func parseStrings() throws(JSONParseError) -> [String] {
        try expect(UInt8(ascii: "["))
        var out: [String] = []
        skipWhitespace()
        if peek == UInt8(ascii: "]") {
            index += 1
            return out
        }
        while true {
            skipWhitespace()
            out.append(try parseStringValue())
            skipWhitespace()
            if peek == UInt8(ascii: ",") { index += 1; continue }
            try expect(UInt8(ascii: "]"))
            return out
        }
    }

    /// An RFC 3339 timestamp string, read from its bytes when it has no escapes (a timestamp
    /// is ASCII, so the bytes are the string's).
    mutating func parseTimestamp() throws(JSONParseError) -> Timestamp {
        guard peek == UInt8(ascii: "\"") else { throw error("expected a string") }
        let t: Timestamp?
        if let end = plainStringEnd() {
            t = Timestamp(rfc3339Bytes: UnsafeBufferPointer(rebasing: bytes[(index + 1)..<end]))
            index = end + 1
        } else {
            t = Timestamp(rfc3339: try parseString())
        }
        guard let t else { throw error("not an RFC 3339 timestamp") }
        return t
    }
}
