import HeraldCore

/// Messages built to break an event consumer, each with the dead-letter reason herald-trigger
/// must give it (SPEC §2, docs/decisions.md). For the hostile-input tests; `now` is the
/// worker's wall clock, for the future-timestamp cases.
public enum HostileEvents {
    public struct Case: Sendable {
        public var name: String
        public var bytes: [UInt8]
        public var reason: String
    }

    static let required = ["event_id", "type", "shop_id", "user_id", "occurred_at"]

    /// A valid event's fields in order, as raw JSON texts, with `changes` applied (nil removes a field).
    static func event(_ changes: [String: String?] = [:], extra: String = "") -> String {
        var fields: [(String, String)] = [("event_id", #""h-1""#), ("type", #""payment_failed""#), ("shop_id", #""s1""#),
                                          ("user_id", #""hostile-user""#), ("occurred_at", #""2026-11-25T08:00:00Z""#)]
        for (k, v) in changes {
            if let i = fields.firstIndex(where: { $0.0 == k }) {
                if let v { fields[i].1 = v } else { fields.remove(at: i) }
            } else if let v {
                fields.append((k, v))
            }
        }
        return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + extra + "}"
    }

    public static func all(now: Timestamp) -> [Case] {
        var cases: [Case] = []
        func add(_ name: String, _ text: String, _ reason: String) { cases.append(Case(name: name, bytes: Array(text.utf8), reason: reason)) }
        func addBytes(_ name: String, _ bytes: [UInt8], _ reason: String) { cases.append(Case(name: name, bytes: bytes, reason: reason)) }

        addBytes("empty", [], "empty")
        add("over 1 MiB: one string", event(["pad": "\"" + String(repeating: "x", count: (1 << 20) + 10) + "\""]), "too_large")
        add("over 1 MiB: one array", event(["items": "[" + Array(repeating: "0", count: 600_000).joined(separator: ",") + "]"]), "too_large")
        add("over 1 MiB: not even JSON", String(repeating: "{", count: (1 << 20) + 1), "too_large")

        add("not JSON", "not json at all", "invalid_json")
        let valid = event()
        for cut in [1, valid.utf8.count / 2, valid.utf8.count - 1] {
            addBytes("truncated at byte \(cut)", Array(Array(valid.utf8).prefix(cut)), "invalid_json")
        }
        add("trailing data", valid + "{}", "invalid_json")
        addBytes("invalid UTF-8", Array(event(["user_id": "\"u\u{1}\""]).utf8).map { $0 == 1 ? 0xFF : $0 }, "invalid_json")
        addBytes("overlong UTF-8", Array(event(["note": "\"a\u{1}\""]).utf8).flatMap { $0 == 1 ? [0xC0, 0xAF] : [$0] }, "invalid_json")
        add("lone surrogate", event(["note": #""\ud800""#]), "invalid_json")
        add("nested 65 deep", event(["attrs": String(repeating: "[", count: 65) + String(repeating: "]", count: 65)]), "invalid_json")
        add("nested 100000 deep", event(["attrs": String(repeating: "[", count: 100_000)]), "invalid_json")
        add("number out of range", event(["amount": "1e400"]), "invalid_json")
        add("negative number out of range", event(["amount": "-1e400"]), "invalid_json")
        add("duplicate key", event(extra: #","event_id":"h-2""#), "invalid_json")
        addBytes("raw NUL", Array(event(["note": "\"a\u{1}b\""]).utf8).map { $0 == 1 ? 0 : $0 }, "invalid_json")
        add("escaped NUL", event(["user_id": #""u\u0000""#]), "invalid_json")
        add("byte order mark", "\u{FEFF}" + valid, "invalid_json")

        for (name, text) in [("array", "[1, 2, 3]"), ("string", #""event""#), ("number", "42"), ("null", "null"), ("true", "true")] {
            add("not an object: \(name)", text, "not_an_object")
        }
        for field in required {
            let removed: [String: String?] = [field: nil]
            add("missing \(field)", event(removed), "missing_field")
        }
        for field in required.dropLast() {
            for (name, v) in [("number", "7"), ("null", "null"), ("bool", "true"), ("object", "{}"), ("array", "[]"), ("empty", #""""#)] {
                add("\(field) \(name)", event([field: v]), "wrong_type")
            }
        }
        for (name, v) in [("number", "1732521600"), ("null", "null"), ("object", #"{"t":1}"#)] {
            add("occurred_at \(name)", event(["occurred_at": v]), "wrong_type")
        }
        for t in ["yesterday", "", "2026-11-25 08:00:00Z", "2026-11-25T08:00:00", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
                  "2026-11-25T08:00:60Z", "2026-11-25T24:00:00Z", "1969-12-31T23:59:59Z", "0000-01-01T00:00:00Z",
                  "2026-11-25T08:00:00.1234567890Z", "20261125T080000Z", "2026-11-25T08:00:00+25:00", "+02026-11-25T08:00:00Z"] {
            add("occurred_at \"\(t)\"", event(["occurred_at": "\"\(t)\""]), "bad_timestamp")
        }
        for t in ["9999-12-31T23:59:59Z", (now + .days(2)).rfc3339] {
            add("occurred_at far ahead \(t)", event(["occurred_at": "\"\(t)\""]), "future_timestamp")
        }
        return cases
    }
}
