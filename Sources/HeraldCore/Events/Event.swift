/// The logical input a rule names (`orders.payment_failed`), whatever the physical topic is called.
public enum LogicalTopic: String, Sendable, CaseIterable {
    case orders
    case behavior
}

/// One validated input event (SPEC §2).
public struct Event: Sendable, Equatable {
    public var topic: LogicalTopic
    public var eventID: String
    public var type: String
    public var shopID: String
    public var userID: String
    public var occurredAt: Timestamp
    /// The whole JSON object as received, required fields included; rules and templates
    /// read `event.<path>` from it.
    public var body: JSONObject

    public init(topic: LogicalTopic, eventID: String, type: String, shopID: String, userID: String,
                occurredAt: Timestamp, body: JSONObject) {
        self.topic = topic
        self.eventID = eventID
        self.type = type
        self.shopID = shopID
        self.userID = userID
        self.occurredAt = occurredAt
        self.body = body
    }

    /// `orders.payment_failed`
    public var name: String { "\(topic.rawValue).\(type)" }
}

/// Why an input message was not accepted as an event. `reason` is what dashboards group
/// by; `detail` says exactly what was wrong.
public struct EventRejection: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: String
    public var detail: String

    public init(_ reason: String, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    /// `missing_field: user_id is required`
    public var description: String { "\(reason): \(detail)" }
}

public enum EventDecoder {
    /// SPEC §2: at most 1 MiB per message.
    public static let maxBytes = 1 << 20

    /// How far ahead of the worker's wall clock `occurred_at` may be (docs/decisions.md):
    /// a shop clock off by a time zone is accepted, an event stamped years ahead is not,
    /// because it would move its partition's event-time clock — and fire every timer of
    /// every user on it — at once.
    public static let maxFutureSkew = TimeSpan.days(1)

    /// `notAfter` is the latest acceptable `occurred_at` (the live trigger passes its wall
    /// clock plus `maxFutureSkew`); nil accepts any time in `Timestamp.acceptedYears`.
    public static func decode(_ bytes: [UInt8], topic: LogicalTopic, notAfter: Timestamp? = nil) -> Result<Event, EventRejection> {
        if bytes.isEmpty { return .failure(EventRejection("empty", "the message has no bytes")) }
        if bytes.count > maxBytes {
            return .failure(EventRejection("too_large", "\(bytes.count) bytes, the limit is \(maxBytes)"))
        }
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes)
        } catch {
            return .failure(EventRejection("invalid_json", error.description))
        }
        guard case .object(let object) = value else {
            return .failure(EventRejection("not_an_object", "the message is a JSON \(value.typeName), not an object"))
        }
        // One pass over the members finds the required fields (then checked in a fixed order).
        var found: (JSONValue?, JSONValue?, JSONValue?, JSONValue?, JSONValue?) = (nil, nil, nil, nil, nil)
        // (By index: iterating the members copies every value.)
        for (i, k) in object.keys.enumerated() {
            // By length first: a string compare per member and field costs more than the rest.
            switch k.utf8.count {
            case 8 where k == "event_id": found.0 = object.values[i]
            case 4 where k == "type": found.1 = object.values[i]
            case 7 where k == "shop_id": found.2 = object.values[i]
            case 7 where k == "user_id": found.3 = object.values[i]
            case 11 where k == "occurred_at": found.4 = object.values[i]
            default: break
            }
        }
        func required(_ field: String, _ v: JSONValue?) -> Result<String, EventRejection> {
            guard let v else { return .failure(EventRejection("missing_field", "\(field) is required")) }
            guard case .string(let s) = v else {
                return .failure(EventRejection("wrong_type", "\(field) must be a string, not \(v.typeName)"))
            }
            guard !s.isEmpty else { return .failure(EventRejection("wrong_type", "\(field) must not be empty")) }
            return .success(s)
        }
        let eventID: String, type: String, shopID: String, userID: String
        switch required("event_id", found.0) { case .success(let s): eventID = s; case .failure(let e): return .failure(e) }
        switch required("type", found.1) { case .success(let s): type = s; case .failure(let e): return .failure(e) }
        switch required("shop_id", found.2) { case .success(let s): shopID = s; case .failure(let e): return .failure(e) }
        switch required("user_id", found.3) { case .success(let s): userID = s; case .failure(let e): return .failure(e) }
        guard let rawTime = found.4 else {
            return .failure(EventRejection("missing_field", "occurred_at is required"))
        }
        guard case .string(let timeText) = rawTime else {
            return .failure(EventRejection("wrong_type", "occurred_at must be an RFC 3339 string, not \(rawTime.typeName)"))
        }
        guard let occurredAt = Timestamp(rfc3339: timeText) else {
            return .failure(EventRejection(
                "bad_timestamp",
                "occurred_at \"\(timeText.prefix(64))\" is not an RFC 3339 timestamp in years \(Timestamp.acceptedYears)"))
        }
        if let notAfter, occurredAt > notAfter {
            return .failure(EventRejection(
                "future_timestamp",
                "occurred_at \(occurredAt.rfc3339) is more than \(maxFutureSkew) ahead of the worker's clock (accepted up to \(notAfter.rfc3339))"))
        }
        return .success(Event(topic: topic, eventID: eventID, type: type, shopID: shopID,
                              userID: userID, occurredAt: occurredAt, body: object))
    }
}
