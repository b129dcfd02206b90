/// Why bytes are not acceptable JSON, with the byte offset where the parser stopped.
public struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var offset: Int
    public var description: String { "\(message) at byte \(offset)" }
}

/// A strict RFC 8259 parser over UTF-8 bytes.
///
/// Stricter than Foundation in the ways that matter for data that ends in PostgreSQL and
/// in customers' messages: invalid UTF-8, duplicate object keys, lone surrogates, the NUL
/// character (PostgreSQL text cannot hold it), non-finite numbers and nesting deeper than
/// `maxDepth` are errors rather than silently accepted.
public struct JSONParser {
    public static let defaultMaxDepth = 64

    public static func parse(_ bytes: [UInt8], maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSONValue {
        var result: Result<JSONValue, JSONParseError> = .success(.null)
        bytes.withUnsafeBufferPointer { buffer in
            var parser = JSONScanner(bytes: buffer, maxDepth: maxDepth)
            do throws(JSONParseError) {
                parser.skipWhitespace()
                let value = try parser.parseValue(depth: 0)
                parser.skipWhitespace()
                if parser.index != buffer.count {
                    throw parser.error("unexpected data after the JSON value")
                }
                result = .success(value)
            } catch {
                result = .failure(error)
            }
        }
        return try result.get()
    }

    public static func parse(_ string: String, maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSONValue {
        try parse(Array(string.utf8), maxDepth: maxDepth)
    }
}

/// The parser's state over one buffer (internal so that readers of a known message shape,
/// such as `Outcome`'s, can parse its members without building a `JSONValue` tree).
struct JSONScanner {
    let bytes: UnsafeBufferPointer<UInt8>
    let maxDepth: Int
    var index = 0
    var scratch: [UInt8] = []

    init(bytes: UnsafeBufferPointer<UInt8>, maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    func error(_ message: String) -> JSONParseError {
        JSONParseError(message: message, offset: index)
    }

    mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x0A, 0x0D, 0x09: index += 1
            default: return
            }
        }
    }

    mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
        guard index < bytes.count else { throw error("unexpected end of input") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        case 0: throw error("NUL byte")
        default: throw error("unexpected character")
        }
    }

    mutating func expectLiteral(_ literal: StaticString) throws(JSONParseError) {
        let count = literal.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw error("unexpected end of input") }
        let start = literal.utf8Start
        for i in 0..<count where bytes[index + i] != start[i] {
            throw error("invalid literal")
        }
        index += count
    }

    mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONValue {
        guard depth <= maxDepth else { throw error("nesting deeper than \(maxDepth)") }
        index += 1
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return .object(JSONObject())
        }
        // Room for a typical event's members up front (growing two arrays one doubling at a
        // time cost several reallocations per message); only for the outermost object, so
        // that a message of many small objects does not multiply its memory.
        var keys: [String] = [], values: [JSONValue] = []
        if depth == 1 {
            keys.reserveCapacity(16)
            values.reserveCapacity(16)
        }
        // One bit per key seen, chosen by a hash of its bytes: a key whose bit is clear is
        // new, so the keys so far are compared only when bits collide.
        var keyBits: UInt64 = 0
        while true {
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input") }
            guard bytes[index] == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let keyOffset = index
            let key = try parseKey()
            // (Escapes make the bytes longer than the key: then its own bytes are hashed.)
            let raw = UnsafeBufferPointer(rebasing: bytes[keyOffset + 1..<index - 1])
            let hash: Int
            if raw.count == key.utf8.count {
                hash = Self.keyHash(raw)
            } else {
                var k = key
                hash = k.withUTF8 { Self.keyHash($0) }
            }
            let bit = UInt64(1) << hash
            if keyBits & bit != 0, keys.contains(where: { $0.utf8.count == key.utf8.count && $0 == key }) {
                throw JSONParseError(message: "duplicate key \"\(key.prefix(64))\"", offset: keyOffset)
            }
            keyBits |= bit
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw error("expected ':'") }
            index += 1
            skipWhitespace()
            let value = try parseValue(depth: depth)
            keys.append(key)
            values.append(value)
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            if bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(JSONObject(uncheckedKeys: keys, values: values))
            }
            throw error("expected ',' or '}'")
        }
    }

    mutating func parseArray(depth: Int) throws(JSONParseError) -> JSONValue {
        guard depth <= maxDepth else { throw error("nesting deeper than \(maxDepth)") }
        index += 1
        var array: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return .array(array)
        }
        while true {
            skipWhitespace()
            array.append(try parseValue(depth: depth))
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            if bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(array)
            }
            throw error("expected ',' or ']'")
        }
    }

    /// 0–63 from a key's UTF-8 bytes (its length, first, middle and last byte): equal keys
    /// give equal numbers, which is all the duplicate check needs.
    static func keyHash(_ b: UnsafeBufferPointer<UInt8>) -> Int {
        let n = b.count
        guard n > 0 else { return 0 }
        let h = UInt64(n) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(b[0]) &* 0xBF58_476D_1CE4_E5B9
            ^ UInt64(b[n - 1]) &* 0x94D0_49BB_1331_11EB ^ UInt64(b[n / 2]) &* 0x2545_F491_4F6C_DD1D
        return Int(truncatingIfNeeded: h >> 58)
    }

    /// An object's key: the fields every event has come back as the same string constants
    /// (no decoding, no copy), anything else as `parseString` makes it.
    mutating func parseKey() throws(JSONParseError) -> String {
        let start = index + 1
        let n = bytes.count
        // The five required event fields (SPEC §2), by length then bytes.
        func matches(_ literal: StaticString) -> Bool {
            let count = literal.utf8CodeUnitCount
            guard start + count < n, bytes[start + count] == UInt8(ascii: "\"") else { return false }
            let p = literal.utf8Start
            for i in 0..<count where bytes[start + i] != p[i] { return false }
            return true
        }
        if start < n {
            let known: String?
            switch bytes[start] {
            case UInt8(ascii: "e"): known = matches("event_id") ? "event_id" : nil
            case UInt8(ascii: "t"): known = matches("type") ? "type" : nil
            case UInt8(ascii: "s"): known = matches("shop_id") ? "shop_id" : nil
            case UInt8(ascii: "u"): known = matches("user_id") ? "user_id" : nil
            case UInt8(ascii: "o"): known = matches("occurred_at") ? "occurred_at" : nil
            default: known = nil
            }
            if let known {
                index = start + known.utf8.count + 1
                return known
            }
        }
        return try parseString()
    }

    mutating func parseString() throws(JSONParseError) -> String {
        index += 1  // opening quote
        let start = index
        // Fast path: no escapes, all ASCII (nothing to validate) or valid UTF-8.
        var hasEscape = false
        var ascii = true
        // Eight bytes at a time while none is a quote, a backslash, a control character or
        // non-ASCII (a word with one goes byte by byte below, from its start).
        if let base = bytes.baseAddress {
            let raw = UnsafeRawPointer(base)
            while index + 8 <= bytes.count {
                let w = raw.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                if Self.hasSpecialByte(w) { break }
                index += 8
            }
        }
        while index < bytes.count {
            let b = bytes[index]
            if b == UInt8(ascii: "\"") { break }
            if b == UInt8(ascii: "\\") { hasEscape = true; break }
            if b < 0x20 { throw error(b == 0 ? "NUL byte in string" : "control character in string") }
            if b >= 0x80 { ascii = false }
            index += 1
        }
        guard index < bytes.count else { throw error("unterminated string") }
        if !hasEscape {
            let slice = UnsafeBufferPointer(rebasing: bytes[start..<index])
            index += 1
            return ascii ? String(decoding: slice, as: UTF8.self) : try decodeUTF8(slice, at: start)
        }
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let b = bytes[index]
            if b == UInt8(ascii: "\"") {
                index += 1
                let copy = scratch
                return try copy.withUnsafeBufferPointer { (p) throws(JSONParseError) -> String in
                    try decodeUTF8(p, at: start)
                }
            }
            if b < 0x20 { throw error(b == 0 ? "NUL byte in string" : "control character in string") }
            if b != UInt8(ascii: "\\") {
                scratch.append(b)
                index += 1
                continue
            }
            index += 1
            guard index < bytes.count else { throw error("unterminated escape") }
            let e = bytes[index]
            index += 1
            switch e {
            case UInt8(ascii: "\""): scratch.append(0x22)
            case UInt8(ascii: "\\"): scratch.append(0x5C)
            case UInt8(ascii: "/"): scratch.append(0x2F)
            case UInt8(ascii: "b"): scratch.append(0x08)
            case UInt8(ascii: "f"): scratch.append(0x0C)
            case UInt8(ascii: "n"): scratch.append(0x0A)
            case UInt8(ascii: "r"): scratch.append(0x0D)
            case UInt8(ascii: "t"): scratch.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try parseHex4()
                if (0xD800...0xDBFF).contains(scalar) {
                    guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                        throw error("lone surrogate in \\u escape")
                    }
                    index += 2
                    let low = try parseHex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw error("lone surrogate in \\u escape") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    throw error("lone surrogate in \\u escape")
                }
                if scalar == 0 { throw error("NUL character (\\u0000) in string") }
                appendUTF8(Unicode.Scalar(scalar)!)
            default:
                throw error("invalid escape")
            }
        }
        throw error("unterminated string")
    }

    /// Whether any byte of `w` is `"`, `\\`, below 0x20 or 0x80 and above; may say yes
    /// when none is (borrows between bytes), never no when one is.
    @inline(__always)
    static func hasSpecialByte(_ w: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        func zeroByte(_ x: UInt64) -> UInt64 { (x &- ones) & ~x & highs }
        let quote = zeroByte(w ^ (ones &* 0x22))
        let backslash = zeroByte(w ^ (ones &* 0x5C))
        let control = (w &- ones &* 0x20) & ~w & highs
        return (quote | backslash | control | (w & highs)) != 0
    }

    mutating func parseHex4() throws(JSONParseError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[index]
            let digit: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw error("invalid \\u escape")
            }
            value = value << 4 | digit
            index += 1
        }
        return value
    }

    mutating func appendUTF8(_ scalar: Unicode.Scalar) {
        UTF8.encode(scalar) { scratch.append($0) }
    }

    func decodeUTF8(_ slice: UnsafeBufferPointer<UInt8>, at offset: Int) throws(JSONParseError) -> String {
        // Validating here and then decoding is several times faster than String(validating:).
        guard UTF8Validation.isValid(slice) else {
            throw JSONParseError(message: "invalid UTF-8 in string", offset: offset)
        }
        return String(decoding: slice, as: UTF8.self)
    }

    mutating func parseNumber() throws(JSONParseError) -> JSONValue {
        let start = index
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count else { throw error("truncated number") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else if (UInt8(ascii: "1")...UInt8(ascii: "9")).contains(bytes[index]) {
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
        } else {
            throw error("invalid number")
        }
        var isInteger = true
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            let digits = index
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
            guard index > digits else { throw error("invalid number") }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            let digits = index
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
            guard index > digits else { throw error("invalid number") }
        }
        if isInteger, index - start <= 18 {
            // At most 18 digits: cannot overflow.
            var v: Int64 = 0
            for k in (bytes[start] == UInt8(ascii: "-") ? start + 1 : start)..<index { v = v &* 10 &+ Int64(bytes[k] &- 0x30) }
            return .int(bytes[start] == UInt8(ascii: "-") ? -v : v)
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        if isInteger, let i = Int64(text) { return .int(i) }
        guard let d = Double(text), d.isFinite else {
            throw JSONParseError(message: "number out of range", offset: start)
        }
        return .double(d)
    }
}

/// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
enum UTF8Validation {
    static func isValid(_ b: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        let n = b.count
        while i < n {
            let c = b[i]
            if c < 0x80 {
                i += 1
                continue
            }
            func cont(_ k: Int) -> Bool { i + k < n && b[i + k] & 0xC0 == 0x80 }
            switch c {
            case 0xC2...0xDF:
                guard cont(1) else { return false }
                i += 2
            case 0xE0:
                guard cont(1), cont(2), b[i + 1] >= 0xA0 else { return false }
                i += 3
            case 0xE1...0xEC, 0xEE...0xEF:
                guard cont(1), cont(2) else { return false }
                i += 3
            case 0xED:
                guard cont(1), cont(2), b[i + 1] < 0xA0 else { return false }
                i += 3
            case 0xF0:
                guard cont(1), cont(2), cont(3), b[i + 1] >= 0x90 else { return false }
                i += 4
            case 0xF1...0xF3:
                guard cont(1), cont(2), cont(3) else { return false }
                i += 4
            case 0xF4:
                guard cont(1), cont(2), cont(3), b[i + 1] < 0x90 else { return false }
                i += 4
            default:
                return false
            }
        }
        return true
    }
}
