import Foundation

/// An input a stage could not accept, as published on `herald.deadletter` (SPEC §2).
public struct DeadLetter: Sendable, Equatable {
    /// SPEC §2: the original bytes are kept up to 64 KiB.
    public static let maxPayloadBytes = 64 * 1024

    public var stage: String
    /// Groupable reason (`invalid_json`, `missing_field`, …).
    public var reason: String
    /// Exactly what was wrong.
    public var detail: String
    public var sourceTopic: String
    public var sourcePartition: Int32
    public var sourceOffset: Int64
    /// The original bytes, truncated to `maxPayloadBytes`.
    public var payload: [UInt8]
    /// Size of the original message.
    public var payloadSize: Int
    public var receivedAt: Timestamp

    public init(stage: String, reason: String, detail: String, sourceTopic: String, sourcePartition: Int32,
                sourceOffset: Int64, payload: [UInt8], receivedAt: Timestamp) {
        self.stage = stage
        self.reason = reason
        self.detail = detail
        self.sourceTopic = sourceTopic
        self.sourcePartition = sourcePartition
        self.sourceOffset = sourceOffset
        self.payloadSize = payload.count
        self.payload = payload.count > DeadLetter.maxPayloadBytes ? Array(payload.prefix(DeadLetter.maxPayloadBytes)) : payload
        self.receivedAt = receivedAt
    }

    public var json: [UInt8] {
        var w = JSONWriter(reservingCapacity: 256 + payload.count * 4 / 3)
        w.beginObject()
        w.key("kind"); w.string("dead_letter")
        w.key("stage"); w.string(stage)
        w.key("reason"); w.string(reason)
        w.key("detail"); w.string(detail)
        w.key("source_topic"); w.string(sourceTopic)
        w.key("source_partition"); w.int(Int64(sourcePartition))
        w.key("source_offset"); w.int(sourceOffset)
        w.key("payload_base64"); w.string(Data(payload).base64EncodedString())
        w.key("payload_size"); w.int(Int64(payloadSize))
        w.key("received_at"); w.string(receivedAt.rfc3339)
        w.endObject()
        return w.bytes
    }

    public init(json bytes: [UInt8]) throws(MessageDecodingError) {
        let r = try ObjectReader(bytes, kind: "dead_letter")
        guard let payload = Data(base64Encoded: try r.string("payload_base64")) else {
            throw MessageDecodingError("payload_base64 is not base64")
        }
        guard let partition = try r.value("source_partition").int64Value, let offset = try r.value("source_offset").int64Value,
              let size = try r.value("payload_size").int64Value
        else { throw MessageDecodingError("source_partition, source_offset and payload_size must be integers") }
        self.init(stage: try r.string("stage"), reason: try r.string("reason"), detail: try r.string("detail"),
                  sourceTopic: try r.string("source_topic"), sourcePartition: Int32(clamping: partition),
                  sourceOffset: offset, payload: [UInt8](payload), receivedAt: try r.timestamp("received_at"))
        self.payloadSize = Int(size)
    }
}
