/// One user's state as stored by a checkpoint: the row of a (shop, user) in the state table.
public struct UserStateRecord: Sendable, Equatable {
    public var shopID: String
    public var userID: String
    /// The encoded state; nil when the user's state was removed (delete its row).
    public var state: [UInt8]?

    public init(shopID: String, userID: String, state: [UInt8]?) {
        self.shopID = shopID
        self.userID = userID
        self.state = state
    }
}

/// Event-id hashes (8 bytes each, concatenated) that the trigger's repeated-event horizon
/// recorded, by generation.
public struct SeenEventsChunk: Sendable, Equatable {
    public var generationStart: Timestamp
    public var hashes: [UInt8]

    public init(generationStart: Timestamp, hashes: [UInt8]) {
        self.generationStart = generationStart
        self.hashes = hashes
    }
}

/// Checkpoint bytes that cannot be decoded: corrupt, truncated, or of an unknown version.
public struct CheckpointDecodingError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "checkpoint decoding error: \(message)" }
}

/// Appends the checkpoint encoding's primitives: LEB128 varints (zigzag for signed values),
/// length-prefixed UTF-8 strings, and a compact binary form of JSON values.
struct ByteWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    mutating func byte(_ b: UInt8) { bytes.append(b) }

    mutating func uvarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func varint(_ value: Int64) {
        uvarint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    mutating func int(_ value: Int) { varint(Int64(value)) }
    mutating func count(_ value: Int) { uvarint(UInt64(value)) }

    mutating func fixed64(_ value: UInt64) {
        var v = value.littleEndian
        withUnsafeBytes(of: &v) { bytes.append(contentsOf: $0) }
    }

    mutating func bool(_ value: Bool) { bytes.append(value ? 1 : 0) }

    mutating func timestamp(_ t: Timestamp) { varint(t.microseconds) }

    /// A timestamp as a difference from `base`: small for times near the user's first event.
    mutating func timestamp(_ t: Timestamp, from base: Timestamp) { varint(t.microseconds &- base.microseconds) }

    mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in
            uvarint(UInt64(utf8.count))
            bytes.append(contentsOf: utf8)
        }
    }

    mutating func strings(_ list: [String]) {
        count(list.count)
        for s in list { string(s) }
    }

    mutating func optionalString(_ s: String?) {
        if let s { byte(1); string(s) } else { byte(0) }
    }

    mutating func json(_ value: JSONValue) {
        switch value {
        case .null: byte(0)
        case .bool(let b): byte(b ? 2 : 1)
        case .int(let i): byte(3); varint(i)
        case .double(let d): byte(4); fixed64(d.bitPattern)
        case .string(let s): byte(5); string(s)
        case .array(let a):
            byte(6)
            count(a.count)
            for v in a { json(v) }
        case .object(let o): byte(7); object(o)
        }
    }

    mutating func object(_ o: PackedObject) {
        if o.isEmpty { count(0) } else { bytes += o.bytes }
    }

    mutating func object(_ o: JSONObject) {
        count(o.count)
        for (k, v) in o.members {
            string(k)
            json(v)
        }
    }
}

/// Reads what `ByteWriter` wrote; every read is bounds-checked and throws on bad bytes.
struct ByteReader {
    let bytes: [UInt8]
    var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { offset == bytes.count }
    var remaining: Int { bytes.count - offset }

    static let maxDepth = 64

    func fail(_ what: String) -> CheckpointDecodingError {
        CheckpointDecodingError("\(what) at byte \(offset) of \(bytes.count)")
    }

    mutating func byte() throws(CheckpointDecodingError) -> UInt8 {
        guard offset < bytes.count else { throw fail("truncated") }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func uvarint() throws(CheckpointDecodingError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard offset < bytes.count else { throw fail("truncated varint") }
            let b = bytes[offset]
            offset += 1
            if shift == 63 && b > 1 { throw fail("varint overflow") }
            result |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return result }
            shift += 7
            if shift > 63 { throw fail("varint overflow") }
        }
    }

    mutating func varint() throws(CheckpointDecodingError) -> Int64 {
        let u = try uvarint()
        return Int64(bitPattern: (u >> 1) ^ (0 &- (u & 1)))
    }

    mutating func int() throws(CheckpointDecodingError) -> Int {
        let v = try varint()
        guard let i = Int(exactly: v) else { throw fail("integer out of range") }
        return i
    }

    /// A count of elements that each take at least `minBytes` bytes: never more than what is left.
    mutating func count(minBytes: Int = 1) throws(CheckpointDecodingError) -> Int {
        let n = try uvarint()
        guard n <= UInt64(remaining / max(minBytes, 1)) else { throw fail("count \(n) beyond the data") }
        return Int(n)
    }

    /// An index below `limit`.
    mutating func index(below limit: Int) throws(CheckpointDecodingError) -> Int {
        let n = try uvarint()
        guard n < UInt64(limit) else { throw fail("index \(n) out of range (< \(limit))") }
        return Int(n)
    }

    mutating func fixed64() throws(CheckpointDecodingError) -> UInt64 {
        guard remaining >= 8 else { throw fail("truncated") }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
        offset += 8
        return v
    }

    mutating func bool() throws(CheckpointDecodingError) -> Bool {
        switch try byte() {
        case 0: return false
        case 1: return true
        default: throw fail("bad boolean")
        }
    }

    mutating func timestamp() throws(CheckpointDecodingError) -> Timestamp {
        Timestamp(microseconds: try varint())
    }

    mutating func timestamp(from base: Timestamp) throws(CheckpointDecodingError) -> Timestamp {
        Timestamp(microseconds: base.microseconds &+ (try varint()))
    }

    mutating func string() throws(CheckpointDecodingError) -> String {
        let n = try count()
        let start = offset
        offset += n
        guard let s = String(validating: bytes[start..<offset], as: UTF8.self) else { throw fail("invalid UTF-8") }
        return s
    }

    mutating func strings() throws(CheckpointDecodingError) -> [String] {
        let n = try count()
        var out: [String] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(try string()) }
        return out
    }

    mutating func optionalString() throws(CheckpointDecodingError) -> String? {
        try bool() ? try string() : nil
    }

    mutating func json(depth: Int = 0) throws(CheckpointDecodingError) -> JSONValue {
        guard depth < Self.maxDepth else { throw fail("JSON nested too deeply") }
        switch try byte() {
        case 0: return .null
        case 1: return .bool(false)
        case 2: return .bool(true)
        case 3: return .int(try varint())
        case 4: return .double(Double(bitPattern: try fixed64()))
        case 5: return .string(try string())
        case 6:
            let n = try count()
            var a: [JSONValue] = []
            a.reserveCapacity(n)
            for _ in 0..<n { a.append(try json(depth: depth + 1)) }
            return .array(a)
        case 7: return .object(try object(depth: depth + 1))
        default: throw fail("bad JSON tag")
        }
    }

    mutating func object(depth: Int = 0) throws(CheckpointDecodingError) -> JSONObject {
        guard depth < Self.maxDepth else { throw fail("JSON nested too deeply") }
        let n = try count(minBytes: 2)
        var o = JSONObject()
        for _ in 0..<n {
            let k = try string()
            let v = try json(depth: depth)
            guard o[k] == nil else { throw fail("duplicate JSON key") }
            o.appendUnchecked(k, v)
        }
        return o
    }

    /// Throws unless every byte was read.
    func finish() throws(CheckpointDecodingError) {
        guard isAtEnd else { throw fail("trailing bytes") }
    }
}

extension Candidate {
    /// The candidate in the checkpoint's binary form (exact: every field round-trips).
    public var checkpointBytes: [UInt8] {
        var w = ByteWriter(capacity: 256)
        w.byte(Checkpoint.version)
        w.write(self)
        return w.bytes
    }

    /// Decodes `checkpointBytes`.
    public init(checkpointBytes bytes: [UInt8]) throws(CheckpointDecodingError) {
        var r = ByteReader(bytes)
        try Checkpoint.checkVersion(&r)
        self = try r.candidate()
        try r.finish()
    }
}

/// Several encoded parts kept as one checkpoint blob (a worker's partition state holds the
/// engine's meta and its own), each prefixed with its length.
public enum CheckpointParts {
    public static func join(_ parts: [[UInt8]]) -> [UInt8] {
        var w = ByteWriter(capacity: 16 + parts.reduce(0) { $0 + $1.count + 5 })
        w.byte(Checkpoint.version)
        w.count(parts.count)
        for p in parts {
            w.count(p.count)
            w.bytes += p
        }
        return w.bytes
    }

    public static func split(_ bytes: [UInt8]) throws(CheckpointDecodingError) -> [[UInt8]] {
        var r = ByteReader(bytes)
        try Checkpoint.checkVersion(&r)
        let n = try r.count()
        var parts: [[UInt8]] = []
        for _ in 0..<n {
            let length = try r.count(minBytes: 1)
            parts.append(Array(r.bytes[r.offset..<r.offset + length]))
            r.offset += length
        }
        try r.finish()
        return parts
    }
}

extension Candidate {
    /// Candidates in order, as one checkpoint blob (herald-shaper's worker keeps those still
    /// waiting for the watermark in its partition's checkpoint).
    public static func checkpointBytes(_ list: [Candidate]) -> [UInt8] {
        var w = ByteWriter(capacity: 64 + 256 * list.count)
        w.byte(Checkpoint.version)
        w.count(list.count)
        for c in list { w.write(c) }
        return w.bytes
    }

    /// Decodes `checkpointBytes(_:)`.
    public static func list(checkpointBytes bytes: [UInt8]) throws(CheckpointDecodingError) -> [Candidate] {
        var r = ByteReader(bytes)
        try Checkpoint.checkVersion(&r)
        let n = try r.count()
        var list: [Candidate] = []
        list.reserveCapacity(n)
        for _ in 0..<n { list.append(try r.candidate()) }
        try r.finish()
        return list
    }
}

extension ByteWriter {
    mutating func write(_ c: Candidate) {
        string(c.id)
        string(c.ruleID)
        string(c.shopID)
        string(c.userID)
        byte(UInt8(Priority.allCases.firstIndex(of: c.priority)!))
        strings(c.channels)
        string(c.template)
        bool(c.escalate)
        strings(c.tags)
        strings(c.triggerEventIDs)
        timestamp(c.eventTime)
        timestamp(c.firedAt, from: c.eventTime)
        string(c.rulesVersion)
        int(c.ordinal)
        optionalString(c.failure)
        object(c.event)
        object(c.user)
    }
}

extension ByteReader {
    mutating func candidate() throws(CheckpointDecodingError) -> Candidate {
        let id = try string(), ruleID = try string(), shopID = try string(), userID = try string()
        let p = Int(try byte())
        guard p < Priority.allCases.count else { throw fail("bad priority") }
        let channels = try strings(), template = try string(), escalate = try bool()
        let tags = try strings(), triggers = try strings()
        let eventTime = try timestamp()
        let firedAt = try timestamp(from: eventTime)
        let version = try string(), ordinal = try int(), failure = try optionalString()
        let event = try object(), user = try object()
        return Candidate(id: id, ruleID: ruleID, shopID: shopID, userID: userID, priority: Priority.allCases[p],
                         channels: channels, template: template, escalate: escalate, tags: tags,
                         triggerEventIDs: triggers, eventTime: eventTime, firedAt: firedAt, rulesVersion: version,
                         ordinal: ordinal, failure: failure, event: event, user: user)
    }
}

enum Checkpoint {
    /// The first byte of every encoding; a new layout gets a new version.
    /// 2: the shaper's history as 64-bit hashes; 3: the trigger's event-id hashes 64-bit (were 128-bit).
    static let version: UInt8 = 3

    static func checkVersion(_ r: inout ByteReader) throws(CheckpointDecodingError) {
        let v = try r.byte()
        guard v == version else { throw CheckpointDecodingError("unknown checkpoint version \(v)") }
    }
}
