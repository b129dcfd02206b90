/// A point in time as microseconds since the Unix epoch (UTC).
///
/// Herald parses and prints RFC 3339 itself: `ISO8601DateFormatter` costs ~50 µs a call,
/// and every event carries a timestamp.
public struct Timestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var microseconds: Int64

    public init(microseconds: Int64) {
        self.microseconds = microseconds
    }

    public init(seconds: Int64) {
        self.microseconds = seconds * 1_000_000
    }

    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.microseconds < b.microseconds }

    public static func + (t: Timestamp, d: TimeSpan) -> Timestamp { Timestamp(microseconds: t.microseconds &+ d.microseconds) }
    public static func - (t: Timestamp, d: TimeSpan) -> Timestamp { Timestamp(microseconds: t.microseconds &- d.microseconds) }
    public static func - (a: Timestamp, b: Timestamp) -> TimeSpan { TimeSpan(microseconds: a.microseconds &- b.microseconds) }

    public var description: String { rfc3339 }

    /// Years Herald accepts in timestamps. Anything outside is far more likely a bug in a
    /// producer than a real event, and would throw event-time clocks decades off.
    public static let acceptedYears: ClosedRange<Int> = 1970...9999

    /// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; nil when it is not RFC 3339.
    public init?(rfc3339 text: some StringProtocol) {
        let utf8 = Array(text.utf8)
        guard let t = utf8.withUnsafeBufferPointer({ Timestamp.parse($0) }) else { return nil }
        self = t
    }

    /// The same for a `String`, whose UTF-8 is read in place (no copy: every event has one).
    public init?(rfc3339 text: String) {
        var s = text
        guard let t = s.withUTF8({ Timestamp.parse($0) }) else { return nil }
        self = t
    }

    /// The same, over UTF-8 bytes.
    init?(rfc3339Bytes bytes: UnsafeBufferPointer<UInt8>) {
        guard let t = Timestamp.parse(bytes) else { return nil }
        self = t
    }

    private static func parse(_ b: UnsafeBufferPointer<UInt8>) -> Timestamp? {
        // Minimum: 2006-01-02T15:04:05Z = 20 bytes.
        guard b.count >= 20, b.count <= 40 else { return nil }
        func digits(_ at: Int, _ n: Int) -> Int? {
            var v = 0
            for i in at..<(at + n) {
                let c = b[i]
                guard c >= 0x30, c <= 0x39 else { return nil }
                v = v * 10 + Int(c - 0x30)
            }
            return v
        }
        guard let year = digits(0, 4), b[4] == UInt8(ascii: "-"),
              let month = digits(5, 2), b[7] == UInt8(ascii: "-"),
              let day = digits(8, 2),
              b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t"),
              let hour = digits(11, 2), b[13] == UInt8(ascii: ":"),
              let minute = digits(14, 2), b[16] == UInt8(ascii: ":"),
              let second = digits(17, 2)
        else { return nil }
        guard acceptedYears.contains(year), (1...12).contains(month),
              day >= 1, day <= daysInMonth(year: year, month: month),
              hour <= 23, minute <= 59, second <= 59
        else { return nil }
        var i = 19
        var micros = 0
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            let start = i
            var scale = 100_000
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
                micros += Int(b[i] - 0x30) * scale
                scale /= 10
                i += 1
            }
            // More than nanosecond precision is not a timestamp anyone means.
            guard i > start, i - start <= 9 else { return nil }
        }
        guard i < b.count else { return nil }
        var offsetSeconds = 0
        switch b[i] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            i += 1
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            let sign = b[i] == UInt8(ascii: "-") ? -1 : 1
            guard i + 6 == b.count, let oh = digits(i + 1, 2), b[i + 3] == UInt8(ascii: ":"),
                  let om = digits(i + 4, 2), oh <= 23, om <= 59
            else { return nil }
            offsetSeconds = sign * (oh * 3600 + om * 60)
            i += 6
        default:
            return nil
        }
        guard i == b.count else { return nil }
        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = Int64(days) * 86_400 + Int64(hour * 3600 + minute * 60 + second) - Int64(offsetSeconds)
        return Timestamp(microseconds: seconds * 1_000_000 + Int64(micros))
    }

    /// RFC 3339 in UTC: whole seconds print without a fraction, otherwise milliseconds or
    /// microseconds, whichever is exact.
    public var rfc3339: String {
        var out = [UInt8]()
        out.reserveCapacity(27)
        appendRFC3339(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends `rfc3339`'s bytes (ASCII) to `out`, without building a string.
    public func appendRFC3339(to out: inout [UInt8]) {
        let (secs, micros) = microseconds.floorDivided(by: 1_000_000)
        let (days, secOfDay) = secs.floorDivided(by: 86_400)
        let (y, m, d) = Timestamp.civilFromDays(Int(days))
        func put(_ v: Int, _ width: Int) {
            var divisor = 1
            for _ in 1..<width { divisor *= 10 }
            var v = v
            while divisor > 0 {
                out.append(UInt8(0x30 + (v / divisor) % 10))
                v %= divisor
                divisor /= 10
            }
        }
        put(y, 4); out.append(UInt8(ascii: "-")); put(m, 2); out.append(UInt8(ascii: "-")); put(d, 2)
        out.append(UInt8(ascii: "T"))
        let s = Int(secOfDay)
        put(s / 3600, 2); out.append(UInt8(ascii: ":")); put(s / 60 % 60, 2); out.append(UInt8(ascii: ":")); put(s % 60, 2)
        if micros != 0 {
            out.append(UInt8(ascii: "."))
            if micros % 1000 == 0 { put(Int(micros / 1000), 3) } else { put(Int(micros), 6) }
        }
        out.append(UInt8(ascii: "Z"))
    }

    static func daysInMonth(year: Int, month: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    // Howard Hinnant's days_from_civil / civil_from_days.
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civilFromDays(_ z: Int) -> (Int, Int, Int) {
        let z = z + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, m, d)
    }
}

extension Int64 {
    /// Quotient and remainder rounding towards negative infinity.
    func floorDivided(by d: Int64) -> (Int64, Int64) {
        let q = self / d
        let r = self % d
        return r < 0 ? (q - 1, r + d) : (q, r)
    }
}

/// A length of time in microseconds, written in rules as `30s`, `5m`, `1h30m`, `3d`.
public struct TimeSpan: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var microseconds: Int64

    public init(microseconds: Int64) { self.microseconds = microseconds }
    public static func seconds(_ s: Int64) -> TimeSpan { TimeSpan(microseconds: s * 1_000_000) }
    public static func minutes(_ m: Int64) -> TimeSpan { .seconds(m * 60) }
    public static func hours(_ h: Int64) -> TimeSpan { .seconds(h * 3600) }
    public static func days(_ d: Int64) -> TimeSpan { .seconds(d * 86_400) }
    public static let zero = TimeSpan(microseconds: 0)

    public static func < (a: TimeSpan, b: TimeSpan) -> Bool { a.microseconds < b.microseconds }

    private static let units: [(UInt8, Int64)] = [
        (UInt8(ascii: "d"), 86_400_000_000), (UInt8(ascii: "h"), 3_600_000_000),
        (UInt8(ascii: "m"), 60_000_000), (UInt8(ascii: "s"), 1_000_000),
    ]

    /// Parses `90s`, `1h30m`, `3d`, `0s`: one or more number+unit pairs, units in
    /// descending order, each at most once. nil when malformed.
    public init?(parsing text: some StringProtocol) {
        let b = Array(text.utf8)
        guard !b.isEmpty else { return nil }
        var i = 0
        var total: Int64 = 0
        var lastUnit = -1
        while i < b.count {
            var n: Int64 = 0
            let start = i
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
                let (m, o1) = n.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(Int64(b[i] - 0x30))
                guard !o1, !o2 else { return nil }
                n = a
                i += 1
            }
            guard i > start, i < b.count,
                  let unit = TimeSpan.units.firstIndex(where: { $0.0 == b[i] }), unit > lastUnit
            else { return nil }
            lastUnit = unit
            i += 1
            let (part, o1) = n.multipliedReportingOverflow(by: TimeSpan.units[unit].1)
            let (sum, o2) = total.addingReportingOverflow(part)
            guard !o1, !o2 else { return nil }
            total = sum
        }
        microseconds = total
    }

    public var description: String {
        if microseconds == 0 { return "0s" }
        var rest = microseconds
        var out = rest < 0 ? "-" : ""
        rest = abs(rest)
        for (unit, size) in TimeSpan.units where rest >= size {
            out += "\(rest / size)\(Character(Unicode.Scalar(unit)))"
            rest %= size
        }
        if rest > 0 { out += "\(rest)us" }
        return out
    }
}
