/// Every status a notification can have (SPEC §6).
public enum OutcomeStatus: String, Sendable, CaseIterable {
    case sent, suppressed, merged, deferred, failed

    /// A final status never moves back; `deferred` is the only one that is not final.
    public var isFinal: Bool { self != .deferred }
}

/// A status change of one notification, as published on `herald.outcomes`.
///
/// The fields it carries over from its candidate (id, rule, shop, user, priority, channels,
/// tags, trigger events, event time, rules version) are read from the candidate itself,
/// shared, not copied: making an outcome retains one reference. Changing one of them gives
/// the outcome a candidate of its own (copy-on-write).
public struct Outcome: Sendable, Equatable {
    /// The candidate the carried-over fields are read from (for an outcome decoded from a
    /// message: one holding just those fields).
    var source: Candidate
    public var status: OutcomeStatus
    public var reason: String?
    public var variant: String? = nil
    public var title: String? = nil
    public var body: String? = nil
    public var mergedInto: String? = nil
    public var dueAt: Timestamp? = nil
    public var escalated = false
    public var decidedAt: Timestamp

    public var notificationID: String {
        get { source.id }
        set { source.id = newValue }
    }
    public var ruleID: String {
        get { source.ruleID }
        set { source.ruleID = newValue }
    }
    public var shopID: String {
        get { source.shopID }
        set { source.shopID = newValue }
    }
    public var userID: String {
        get { source.userID }
        set { source.userID = newValue }
    }
    public var priority: Priority {
        get { source.priority }
        set { source.priority = newValue }
    }
    public var channels: [String] {
        get { source.channels }
        set { source.channels = newValue }
    }
    public var tags: [String] {
        get { source.tags }
        set { source.tags = newValue }
    }
    public var triggerEventIDs: [String] {
        get { source.triggerEventIDs }
        set { source.triggerEventIDs = newValue }
    }
    public var eventTime: Timestamp {
        get { source.eventTime }
        set { source.eventTime = newValue }
    }
    public var rulesVersion: String {
        get { source.rulesVersion }
        set { source.rulesVersion = newValue }
    }

    /// Equal when every field an outcome has is equal (not the rest of the candidates they
    /// were made from).
    public static func == (a: Outcome, b: Outcome) -> Bool {
        a.status == b.status && a.reason == b.reason && a.variant == b.variant && a.title == b.title
            && a.body == b.body && a.mergedInto == b.mergedInto && a.dueAt == b.dueAt && a.escalated == b.escalated
            && a.decidedAt == b.decidedAt && a.notificationID == b.notificationID && a.ruleID == b.ruleID
            && a.shopID == b.shopID && a.userID == b.userID && a.priority == b.priority && a.channels == b.channels
            && a.tags == b.tags && a.triggerEventIDs == b.triggerEventIDs && a.eventTime == b.eventTime
            && a.rulesVersion == b.rulesVersion
    }
}

// The inits are in an extension so that the struct keeps its memberwise init, which the
// shaper uses: `out.append(Outcome(source:…))` stores the outcome straight into the array,
// where an explicit init assigning each member made and destroyed a copy of it (Swift 6.3).
extension Outcome {
    public init(notificationID: String, status: OutcomeStatus, reason: String?, ruleID: String, shopID: String,
                userID: String, priority: Priority, channels: [String], variant: String?, title: String?, body: String?,
                mergedInto: String?, dueAt: Timestamp?, escalated: Bool, tags: [String], triggerEventIDs: [String],
                eventTime: Timestamp, decidedAt: Timestamp, rulesVersion: String) {
        let source = Candidate(id: notificationID, ruleID: ruleID, shopID: shopID, userID: userID, priority: priority,
                               channels: channels, template: "", escalate: false, tags: tags,
                               triggerEventIDs: triggerEventIDs, eventTime: eventTime, firedAt: eventTime,
                               rulesVersion: rulesVersion, event: JSONObject(), user: JSONObject())
        self.init(source: source, status: status, reason: reason, variant: variant, title: title, body: body,
                  mergedInto: mergedInto, dueAt: dueAt, escalated: escalated, decidedAt: decidedAt)
    }

    /// An outcome for `candidate` with nothing rendered yet.
    public init(candidate c: Candidate, status: OutcomeStatus, reason: String?, decidedAt: Timestamp) {
        self.init(source: c, status: status, reason: reason, decidedAt: decidedAt)
    }

    public var json: [UInt8] {
        var w = JSONWriter()
        w.beginObject()
        w.key("kind"); w.string("outcome")
        w.key("notification_id"); w.string(notificationID)
        w.key("status"); w.string(status.rawValue)
        w.key("reason"); w.optionalString(reason)
        w.key("rule_id"); w.string(ruleID)
        w.key("shop_id"); w.string(shopID)
        w.key("user_id"); w.string(userID)
        w.key("priority"); w.string(priority.rawValue)
        w.key("channels"); w.strings(channels)
        w.key("variant"); w.optionalString(variant)
        w.key("title"); w.optionalString(title)
        w.key("body"); w.optionalString(body)
        w.key("merged_into"); w.optionalString(mergedInto)
        w.key("due_at"); w.optionalString(dueAt?.rfc3339)
        w.key("escalated"); w.bool(escalated)
        w.key("tags"); w.strings(tags)
        w.key("trigger_event_ids"); w.strings(triggerEventIDs)
        w.key("event_time"); w.string(eventTime.rfc3339)
        w.key("decided_at"); w.string(decidedAt.rfc3339)
        w.key("rules_version"); w.string(rulesVersion)
        w.endObject()
        return w.bytes
    }

    /// Reads an outcome message. Most take `OutcomeReader`'s direct path; anything it does not
    /// expect — including every invalid message — is decoded by `init(genericJSON:)`, so
    /// what is accepted and every error are exactly the generic decoder's.
    public init(json bytes: [UInt8]) throws(MessageDecodingError) {
        var cache = OutcomeValueCache()
        try self.init(json: bytes, cache: &cache)
    }

    /// `init(json:)` sharing the values `cache` remembers from earlier messages (rule ids,
    /// the rules version, channel and tag lists) instead of allocating them again.
    public init(json bytes: [UInt8], cache: inout OutcomeValueCache) throws(MessageDecodingError) {
        if let o = OutcomeReader.read(bytes, cache: &cache) {
            self = o
        } else {
            try self.init(genericJSON: bytes)
        }
    }

    /// The generic decoder: the message as a `JSONValue` tree, then its members.
    init(genericJSON bytes: [UInt8]) throws(MessageDecodingError) {
        let r = try ObjectReader(bytes, kind: "outcome")
        guard let status = OutcomeStatus(rawValue: try r.string("status")) else {
            throw MessageDecodingError("status is not one of sent, suppressed, merged, deferred, failed")
        }
        guard let priority = Priority(rawValue: try r.string("priority")) else {
            throw MessageDecodingError("priority is not one of urgent, high, normal, low")
        }
        self.init(
            notificationID: try r.string("notification_id"), status: status, reason: try r.optionalString("reason"),
            ruleID: try r.string("rule_id"), shopID: try r.string("shop_id"), userID: try r.string("user_id"),
            priority: priority, channels: try r.strings("channels"), variant: try r.optionalString("variant"),
            title: try r.optionalString("title"), body: try r.optionalString("body"),
            mergedInto: try r.optionalString("merged_into"), dueAt: try r.optionalTimestamp("due_at"),
            escalated: try r.bool("escalated"), tags: try r.strings("tags"),
            triggerEventIDs: try r.strings("trigger_event_ids"), eventTime: try r.timestamp("event_time"),
            decidedAt: try r.timestamp("decided_at"), rulesVersion: try r.string("rules_version"))
    }
}
