/// A rule firing, produced by herald-trigger and decided on by herald-shaper.
/// Its id is the notification id that every later outcome carries.
///
/// Its fields live in one shared, immutable box: a copy of a candidate (into a merge
/// window, a deferred message, an outcome) is one reference, not a dozen strings and lists
/// retained one by one. Changing a field makes a new box (copy-on-write, always: changes
/// are rare — a digest, a filtered channel list — and reads need no exclusivity checks).
public struct Candidate: Sendable, Equatable {
    /// The members the shaper reads for every candidate come first, in the box's first
    /// cache line or two.
    struct Fields: Sendable, Equatable {
        var firedAt: Timestamp
        var shopID: String
        var userID: String
        var priority: Priority
        var escalate: Bool
        var id: String
        var ruleID: String
        var failure: String?
        var channels: [String]
        var triggerEventIDs: [String]
        var tags: [String]
        var eventTime: Timestamp
        var template: String
        var rulesVersion: String
        var ordinal: Int
        var event: JSONObject
        var user: JSONObject
    }

    final class Box: Sendable {
        let fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    private var box: Box

    init(_ fields: Fields) { box = Box(fields) }

    /// The fields as a value, to change several at once (one new box).
    var fields: Fields {
        get { box.fields }
        set { box = Box(newValue) }
    }

    public var id: String {
        get { box.fields.id }
        set { fields.id = newValue }
    }
    public var ruleID: String {
        get { box.fields.ruleID }
        set { fields.ruleID = newValue }
    }
    public var shopID: String {
        get { box.fields.shopID }
        set { fields.shopID = newValue }
    }
    public var userID: String {
        get { box.fields.userID }
        set { fields.userID = newValue }
    }
    public var priority: Priority {
        get { box.fields.priority }
        set { fields.priority = newValue }
    }
    public var channels: [String] {
        get { box.fields.channels }
        set { fields.channels = newValue }
    }
    public var template: String {
        get { box.fields.template }
        set { fields.template = newValue }
    }
    public var escalate: Bool {
        get { box.fields.escalate }
        set { fields.escalate = newValue }
    }
    public var tags: [String] {
        get { box.fields.tags }
        set { fields.tags = newValue }
    }
    public var triggerEventIDs: [String] {
        get { box.fields.triggerEventIDs }
        set { fields.triggerEventIDs = newValue }
    }
    /// `occurred_at` of the triggering event.
    public var eventTime: Timestamp {
        get { box.fields.eventTime }
        set { fields.eventTime = newValue }
    }
    /// The pipeline clock when the rule fired (the fire time of a delayed rule).
    public var firedAt: Timestamp {
        get { box.fields.firedAt }
        set { fields.firedAt = newValue }
    }
    public var rulesVersion: String {
        get { box.fields.rulesVersion }
        set { fields.rulesVersion = newValue }
    }
    /// 0 for a rule's first firing from its trigger; schedules and repeats count up.
    public var ordinal: Int {
        get { box.fields.ordinal }
        set { fields.ordinal = newValue }
    }
    /// Set when the firing itself failed (an `at` or `where` value that is not a
    /// timestamp): herald-shaper records it as `failed` with this reason.
    public var failure: String? {
        get { box.fields.failure }
        set { fields.failure = newValue }
    }
    /// What the templates may read.
    public var event: JSONObject {
        get { box.fields.event }
        set { fields.event = newValue }
    }
    public var user: JSONObject {
        get { box.fields.user }
        set { fields.user = newValue }
    }

    public init(id: String, ruleID: String, shopID: String, userID: String, priority: Priority, channels: [String],
                template: String, escalate: Bool, tags: [String], triggerEventIDs: [String], eventTime: Timestamp,
                firedAt: Timestamp, rulesVersion: String, ordinal: Int = 0, failure: String? = nil,
                event: JSONObject, user: JSONObject) {
        self.init(Fields(firedAt: firedAt, shopID: shopID, userID: userID, priority: priority, escalate: escalate, id: id,
                         ruleID: ruleID, failure: failure, channels: channels, triggerEventIDs: triggerEventIDs, tags: tags,
                         eventTime: eventTime, template: template, rulesVersion: rulesVersion, ordinal: ordinal,
                         event: event, user: user))
    }

    /// Reads the box's first members; the value means nothing.
    var touchBox: Int { Int(truncatingIfNeeded: box.fields.firedAt.microseconds) }

    /// Reads the box and the lists deciding reads first — trigger ids, the user's and the
    /// event's member names and values (for a batch's first pass, which only reads so that
    /// cache misses overlap); the value means nothing.
    var touch: Int {
        let f = box
        return Int(truncatingIfNeeded: f.fields.firedAt.microseconds) &+ f.fields.triggerEventIDs.count
            &+ f.fields.user.keys.count &+ f.fields.user.values.count &+ f.fields.event.keys.count
            &+ f.fields.event.values.count
    }

    public static func == (a: Candidate, b: Candidate) -> Bool {
        a.box === b.box || a.box.fields == b.box.fields
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
