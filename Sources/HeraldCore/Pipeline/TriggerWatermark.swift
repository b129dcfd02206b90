/// herald-trigger's progress on one partition of `herald.candidates`: every candidate it
/// will still publish there, but for those of late events, has `fired_at` at or after
/// `time`. herald-shaper takes this, not the candidates' own times nor the wall clock, as
/// the candidates topic's progress: a timer's candidate is published only once the
/// trigger's clock passes its due time, after candidates of newer events that may already
/// be there, so "the newest `fired_at` seen" would run ahead of what is still to come.
public struct TriggerWatermark: Sendable, Equatable {
    public var time: Timestamp

    public init(time: Timestamp) {
        self.time = time
    }

    public static let kind = "watermark"

    public var json: [UInt8] {
        var w = JSONWriter()
        w.beginObject()
        w.key("kind"); w.string(Self.kind)
        w.key("time"); w.string(time.rfc3339)
        w.endObject()
        return w.bytes
    }

    public init(json bytes: [UInt8]) throws(MessageDecodingError) {
        let r = try ObjectReader(bytes, kind: Self.kind)
        self.init(time: try r.timestamp("time"))
    }
}
