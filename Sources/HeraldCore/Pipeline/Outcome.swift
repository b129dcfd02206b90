/// Every status a notification can have (SPEC §6).
public enum OutcomeStatus: String, Sendable, CaseIterable {
    case sent, suppressed, merged, deferred, failed

    /// A final status never moves back; `deferred` is the only one that is not final.
    public var isFinal: Bool { self != .deferred }
}

/// A status change of one notification, as published on `herald.outcomes`.
public struct Outcome: Sendable, Equatable {
    public var notificationID: String
    public var status: OutcomeStatus
    public var reason: String?
    public var ruleID: String
    public var shopID: String
    public var userID: String
    public var priority: Priority
    public var channels: [String]
    public var variant: String?
    public var title: String?
    public var body: String?
    public var mergedInto: String?
    public var dueAt: Timestamp?
    public var escalated: Bool
    public var tags: [String]
    public var triggerEventIDs: [String]
    public var eventTime: Timestamp
    public var decidedAt: Timestamp
    public var rulesVersion: String

    public init(notificationID: String, status: OutcomeStatus, reason: String?, ruleID: String, shopID: String,
                userID: String, priority: Priority, channels: [String], variant: String?, title: String?, body: String?,
                mergedInto: String?, dueAt: Timestamp?, escalated: Bool, tags: [String], triggerEventIDs: [String],
                eventTime: Timestamp, decidedAt: Timestamp, rulesVersion: String) {
        self.notificationID = notificationID
        self.status = status
        self.reason = reason
        self.ruleID = ruleID
        self.shopID = shopID
        self.userID = userID
        self.priority = priority
        self.channels = channels
        self.variant = variant
        self.title = title
        self.body = body
        self.mergedInto = mergedInto
        self.dueAt = dueAt
        self.escalated = escalated
        self.tags = tags
        self.triggerEventIDs = triggerEventIDs
        self.eventTime = eventTime
        self.decidedAt = decidedAt
        self.rulesVersion = rulesVersion
    }

    /// An outcome for `candidate` with nothing rendered yet.
    public init(candidate c: Candidate, status: OutcomeStatus, reason: String?, decidedAt: Timestamp) {
        self.init(notificationID: c.id, status: status, reason: reason, ruleID: c.ruleID, shopID: c.shopID,
                  userID: c.userID, priority: c.priority, channels: c.channels, variant: nil, title: nil, body: nil,
                  mergedInto: nil, dueAt: nil, escalated: false, tags: c.tags, triggerEventIDs: c.triggerEventIDs,
                  eventTime: c.eventTime, decidedAt: decidedAt, rulesVersion: c.rulesVersion)
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
