/// Deterministic identifiers. The same inputs give the same id in every process, on every
/// run and at any worker count, which is what makes replays and crash recovery idempotent.
public enum StableID {
    /// A 128-bit hash of the parts, as 32 lowercase hex digits. Parts are separated by a
    /// unit separator so that ("ab", "c") and ("a", "bc") differ.
    public static func make(_ parts: [String]) -> String {
        (hasher(parts) as Hasher128).hex
    }

    /// The parts, separated by a unit separator, fed to a fresh hasher.
    private static func hasher<H: StableHasher>(_ parts: [String]) -> H {
        var h = H()
        for (i, part) in parts.enumerated() {
            if i > 0 { h.add(0x1F) }
            h.add(part)
        }
        return h
    }

    /// A notification id: 12 lowercase hex digits of `eventTime` (its trigger's event time) in
    /// milliseconds since 1970-01-01 UTC, then the first 80 bits of `make(parts)`'s hash as 20
    /// hex digits. Still 32 hex digits and as deterministic as `make`; the time prefix lets
    /// PostgreSQL find a notification by id alone within its millisecond of its time-first key
    /// (docs/decisions.md, "Notification ids carry their event time"). Times outside
    /// 1970…10889 are clamped to the prefix's range.
    public static func notificationID(eventTime: Timestamp, _ parts: [String]) -> String {
        let (x, y) = (hasher(parts) as Hasher128).finish()
        let ms = UInt64(clamping: max(eventTime.microseconds, 0) / 1000)
        let prefix = min(ms, maxTimePrefix)
        return Hasher128.hex16(prefix << 16 | x >> 48) + Hasher128.hex16(x << 16 | y >> 48)
    }

    /// The largest time prefix of a notification id (12 hex digits of milliseconds).
    static let maxTimePrefix: UInt64 = 0xFFFF_FFFF_FFFF

    /// The event times a notification id made by `notificationID` can carry: `from` ≤ time <
    /// `to`, nil for an end that is open (a clamped prefix). Nil for an id that is not 32
    /// lowercase hex digits.
    public static func eventTimeRange(ofNotificationID id: String) -> (from: Timestamp?, to: Timestamp?)? {
        var ms: UInt64 = 0
        var count = 0
        for b in id.utf8 {
            let digit: UInt8
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = b - UInt8(ascii: "a") + 10
            default: return nil
            }
            if count < 12 { ms = ms << 4 | UInt64(digit) }
            count += 1
        }
        guard count == 32 else { return nil }
        let from = ms == 0 ? nil : Timestamp(microseconds: Int64(ms) * 1000)
        let to = ms == maxTimePrefix ? nil : Timestamp(microseconds: Int64(ms + 1) * 1000)
        return (from, to)
    }

    /// A uniformly distributed 64-bit value for one string.
    public static func hash64(_ s: String) -> UInt64 {
        var h = Hasher64()
        h.add(s)
        return h.finish()
    }

    /// A uniformly distributed 64-bit value for the parts (A/B assignment and the like).
    public static func hash64(_ parts: [String]) -> UInt64 {
        (hasher(parts) as Hasher64).finish()
    }
}

/// What `StableID` feeds its parts to.
protocol StableHasher {
    init()
    mutating func add(_ byte: UInt8)
    mutating func add(_ s: String)
}

/// The first lane of `Hasher128` alone: `finish()` is `Hasher128.finish().0` for the same
/// bytes (the values `StableID.hash64` gives are pinned in `StableIDTests`), at half the
/// work per byte.
struct Hasher64: StableHasher {
    private var a: UInt64 = 0xcbf2_9ce4_8422_2325
    private var length: UInt64 = 0

    mutating func add(_ byte: UInt8) {
        a = (a ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        length &+= 1
    }

    mutating func add(_ s: String) {
        var s = s
        s.withUTF8 { bytes in
            var a = self.a
            for byte in bytes { a = (a ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
            self.a = a
            length &+= UInt64(bytes.count)
        }
    }

    func finish() -> UInt64 { Hasher128.mix(a ^ length) }
}

/// Two FNV-1a lanes with different seeds, each finished with a SplitMix64 avalanche.
/// Not cryptographic; it only has to be stable and well spread.
struct Hasher128: StableHasher {
    private var a: UInt64 = 0xcbf2_9ce4_8422_2325
    private var b: UInt64 = 0x6c62_272e_07bb_0142
    private var length: UInt64 = 0

    mutating func add(_ byte: UInt8) {
        a = (a ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        b = (b ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 ^ (b >> 29)
        length &+= 1
    }

    /// The string's UTF-8 bytes, as `add(_:)` one at a time would, read from its contiguous
    /// storage (iterating `utf8` decodes each byte of a small string anew).
    mutating func add(_ s: String) {
        var s = s
        s.withUTF8 { bytes in
            var a = self.a, b = self.b
            for byte in bytes {
                a = (a ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
                b = (b ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 ^ (b >> 29)
            }
            self.a = a
            self.b = b
            length &+= UInt64(bytes.count)
        }
    }

    func finish() -> (UInt64, UInt64) {
        (Hasher128.mix(a ^ length), Hasher128.mix(b &+ Hasher128.mix(a) &+ length))
    }

    var hex: String {
        let (x, y) = finish()
        return Hasher128.hex16(x) + Hasher128.hex16(y)
    }

    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    static func hex16(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}

/// A small, fast, seedable generator, so generated traffic is the same on every run.
public struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
