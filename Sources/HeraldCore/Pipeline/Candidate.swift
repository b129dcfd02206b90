/// A rule firing, produced by herald-trigger and decided on by herald-shaper.
/// Its id is the notification id that every later outcome carries.
public struct Candidate: Sendable, Equatable {
    public var id: String
    public var ruleID: String
    public var shopID: String
    public var userID: String
    public var priority: Priority
    public var channels: [String]
    public var template: String
    public var escalate: Bool
    public var tags: [String]
    public var triggerEventIDs: [String]
    /// `occurred_at` of the triggering event.
    public var eventTime: Timestamp
    /// The pipeline clock when the rule fired (the fire time of a delayed rule).
    public var firedAt: Timestamp
    public var rulesVersion: String
    /// 0 for a rule's first firing from its trigger; schedules and repeats count up.
    public var ordinal: Int
    /// Set when the firing itself failed (an `at` or `where` value that is not a
    /// timestamp): herald-shaper records it as `failed` with this reason.
    public var failure: String?
    /// What the templates may read.
    public var event: JSONObject
    public var user: JSONObject

    public init(id: String, ruleID: String, shopID: String, userID: String, priority: Priority, channels: [String],
                template: String, escalate: Bool, tags: [String], triggerEventIDs: [String], eventTime: Timestamp,
                firedAt: Timestamp, rulesVersion: String, ordinal: Int = 0, failure: String? = nil,
                event: JSONObject, user: JSONObject) {
        self.id = id
        self.ruleID = ruleID
        self.shopID = shopID
        self.userID = userID
        self.priority = priority
        self.channels = channels
        self.template = template
        self.escalate = escalate
        self.tags = tags
        self.triggerEventIDs = triggerEventIDs
        self.eventTime = eventTime
        self.firedAt = firedAt
        self.rulesVersion = rulesVersion
        self.ordinal = ordinal
        self.failure = failure
        self.event = event
        self.user = user
    }

    /// The notification id of a firing: rule, shop, user, triggering event and the
    /// firing's ordinal (0 for the first; later ones for schedules and repeats), prefixed by
    /// the triggering event's time (`StableID.notificationID`).
    public static func notificationID(ruleID: String, shopID: String, userID: String, triggerEventID: String,
                                      eventTime: Timestamp, ordinal: Int) -> String {
        StableID.notificationID(eventTime: eventTime, [ruleID, shopID, userID, triggerEventID, String(ordinal)])
    }

    /// The id of a digest whose first member is `first`: the first member's event time, as
    /// the digest's outcomes carry it.
    public static func digestID(of first: Candidate) -> String {
        StableID.notificationID(eventTime: first.eventTime, ["digest", first.id])
    }

    public var json: [UInt8] {
        var w = JSONWriter()
        w.beginObject()
        w.key("kind"); w.string("candidate")
        w.key("id"); w.string(id)
        w.key("rule_id"); w.string(ruleID)
        w.key("shop_id"); w.string(shopID)
        w.key("user_id"); w.string(userID)
        w.key("priority"); w.string(priority.rawValue)
        w.key("channels"); w.strings(channels)
        w.key("template"); w.string(template)
        w.key("escalate"); w.bool(escalate)
        w.key("tags"); w.strings(tags)
        w.key("trigger_event_ids"); w.strings(triggerEventIDs)
        w.key("event_time"); w.string(eventTime.rfc3339)
        w.key("fired_at"); w.string(firedAt.rfc3339)
        w.key("rules_version"); w.string(rulesVersion)
        w.key("ordinal"); w.int(Int64(ordinal))
        w.key("failure"); w.optionalString(failure)
        w.key("event"); w.value(.object(event))
        w.key("user"); w.value(.object(user))
        w.endObject()
        return w.bytes
    }

    public init(json bytes: [UInt8]) throws(MessageDecodingError) {
        let r = try ObjectReader(bytes, kind: "candidate")
        guard let priority = Priority(rawValue: try r.string("priority")) else {
            throw MessageDecodingError("priority is not one of urgent, high, normal, low")
        }
        self.init(
            id: try r.string("id"), ruleID: try r.string("rule_id"), shopID: try r.string("shop_id"),
            userID: try r.string("user_id"), priority: priority, channels: try r.strings("channels"),
            template: try r.string("template"), escalate: try r.bool("escalate"), tags: try r.strings("tags"),
            triggerEventIDs: try r.strings("trigger_event_ids"), eventTime: try r.timestamp("event_time"),
            firedAt: try r.timestamp("fired_at"), rulesVersion: try r.string("rules_version"),
            ordinal: Int(clamping: try r.value("ordinal").int64Value ?? 0), failure: try r.optionalString("failure"),
            event: try r.object("event"), user: try r.object("user"))
    }
}

/// Why a message between stages could not be read (it is dead-lettered with this).
public struct MessageDecodingError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Typed access to the members of a message between stages.
struct ObjectReader {
    let object: JSONObject

    init(_ bytes: [UInt8], kind: String) throws(MessageDecodingError) {
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes)
        } catch {
            throw MessageDecodingError("invalid JSON: \(error)")
        }
        guard case .object(let o) = value else { throw MessageDecodingError("not a JSON object") }
        guard o["kind"]?.stringValue == kind else {
            throw MessageDecodingError("kind is \(o["kind"]?.jsonString ?? "missing"), expected \"\(kind)\"")
        }
        object = o
    }

    func value(_ key: String) throws(MessageDecodingError) -> JSONValue {
        guard let v = object[key] else { throw MessageDecodingError("\(key) is missing") }
        return v
    }

    func string(_ key: String) throws(MessageDecodingError) -> String {
        guard let s = try value(key).stringValue else { throw MessageDecodingError("\(key) must be a string") }
        return s
    }

    func optionalString(_ key: String) throws(MessageDecodingError) -> String? {
        let v = object[key] ?? .null
        if v.isNull { return nil }
        guard let s = v.stringValue else { throw MessageDecodingError("\(key) must be a string or null") }
        return s
    }

    func bool(_ key: String) throws(MessageDecodingError) -> Bool {
        guard let b = try value(key).boolValue else { throw MessageDecodingError("\(key) must be true or false") }
        return b
    }

    func strings(_ key: String) throws(MessageDecodingError) -> [String] {
        guard let a = try value(key).arrayValue else { throw MessageDecodingError("\(key) must be a list") }
        var out: [String] = []
        out.reserveCapacity(a.count)
        for v in a {
            guard let s = v.stringValue else { throw MessageDecodingError("\(key) must be a list of strings") }
            out.append(s)
        }
        return out
    }

    func object(_ key: String) throws(MessageDecodingError) -> JSONObject {
        guard let o = try value(key).objectValue else { throw MessageDecodingError("\(key) must be an object") }
        return o
    }

    func timestamp(_ key: String) throws(MessageDecodingError) -> Timestamp {
        guard let t = Timestamp(rfc3339: try string(key)) else { throw MessageDecodingError("\(key) is not an RFC 3339 timestamp") }
        return t
    }

    func optionalTimestamp(_ key: String) throws(MessageDecodingError) -> Timestamp? {
        guard let s = try optionalString(key) else { return nil }
        guard let t = Timestamp(rfc3339: s) else { throw MessageDecodingError("\(key) is not an RFC 3339 timestamp") }
        return t
    }
}
