/// An open or click of a notification (`behavior.notification_opened` / `notification_clicked`
/// with `notification_id`), passed by herald-shaper to herald-sink on `herald.outcomes`.
public struct Engagement: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case opened, clicked
    }

    public var notificationID: String
    public var kind: Kind
    public var eventID: String
    public var shopID: String
    public var userID: String
    public var occurredAt: Timestamp

    public init(notificationID: String, kind: Kind, eventID: String, shopID: String, userID: String, occurredAt: Timestamp) {
        self.notificationID = notificationID
        self.kind = kind
        self.eventID = eventID
        self.shopID = shopID
        self.userID = userID
        self.occurredAt = occurredAt
    }

    /// The engagement an event records, if it is one.
    public init?(event: Event) {
        guard event.topic == .behavior, let id = event.body["notification_id"]?.stringValue, !id.isEmpty else { return nil }
        let kind: Kind
        switch event.type {
        case "notification_opened": kind = .opened
        case "notification_clicked": kind = .clicked
        default: return nil
        }
        self.init(notificationID: id, kind: kind, eventID: event.eventID, shopID: event.shopID, userID: event.userID,
                  occurredAt: event.occurredAt)
    }

    public var json: [UInt8] {
        var w = JSONWriter()
        w.beginObject()
        w.key("kind"); w.string("engagement")
        w.key("notification_id"); w.string(notificationID)
        w.key("engagement"); w.string(kind.rawValue)
        w.key("event_id"); w.string(eventID)
        w.key("shop_id"); w.string(shopID)
        w.key("user_id"); w.string(userID)
        w.key("occurred_at"); w.string(occurredAt.rfc3339)
        w.endObject()
        return w.bytes
    }

    public init(json bytes: [UInt8]) throws(MessageDecodingError) {
        let r = try ObjectReader(bytes, kind: "engagement")
        guard let kind = Kind(rawValue: try r.string("engagement")) else {
            throw MessageDecodingError("engagement is not one of opened, clicked")
        }
        self.init(notificationID: try r.string("notification_id"), kind: kind, eventID: try r.string("event_id"),
                  shopID: try r.string("shop_id"), userID: try r.string("user_id"), occurredAt: try r.timestamp("occurred_at"))
    }
}
