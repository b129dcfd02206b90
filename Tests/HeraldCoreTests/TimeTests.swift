import Testing
@testable import HeraldCore

@Suite struct TimestampTests {
    @Test(arguments: [
        ("1970-01-01T00:00:00Z", Int64(0)),
        ("2026-11-25T08:00:00Z", Int64(1_795_593_600_000_000)),
        ("2026-11-25T16:00:00+08:00", Int64(1_795_593_600_000_000)),
        ("2026-11-25T03:00:00-05:00", Int64(1_795_593_600_000_000)),
        ("2026-11-25t08:00:00.5z", Int64(1_795_593_600_500_000)),
        ("2026-11-25T08:00:00.123456789Z", Int64(1_795_593_600_123_456)),
        ("2024-02-29T00:00:00Z", Int64(1_709_164_800_000_000)),
    ])
    func parses(text: String, micros: Int64) {
        #expect(Timestamp(rfc3339: text)?.microseconds == micros)
    }

    @Test(arguments: [
        "", "2026-11-25", "2026-11-25 08:00:00Z", "2026-11-25T08:00:00", "2026-13-01T00:00:00Z",
        "2025-02-29T00:00:00Z", "2026-11-25T24:00:00Z", "2026-11-25T08:00:60Z", "2026-11-25T08:00:00+0800",
        "1969-12-31T23:59:59Z", "2026-11-25T08:00:00.Z", "2026-11-25T08:00:00.1234567890Z", "yesterday",
        "+12026-11-25T08:00:00Z", "2026-11-25T08:00:00Z ",
    ])
    func rejects(text: String) {
        #expect(Timestamp(rfc3339: text) == nil)
    }

    @Test func formatsInUTCWithTheNeededPrecision() {
        #expect(Timestamp(microseconds: 1_795_593_600_000_000).rfc3339 == "2026-11-25T08:00:00Z")
        #expect(Timestamp(microseconds: 1_795_593_600_250_000).rfc3339 == "2026-11-25T08:00:00.250Z")
        #expect(Timestamp(microseconds: 1_795_593_600_000_001).rfc3339 == "2026-11-25T08:00:00.000001Z")
        #expect(Timestamp(rfc3339: "2026-03-01T01:30:00+08:00")!.rfc3339 == "2026-02-28T17:30:00Z")
    }

    @Test func roundTripsAcrossCenturies() {
        var t = Timestamp(rfc3339: "1970-01-01T00:00:00Z")!
        let end = Timestamp(rfc3339: "2400-03-01T00:00:00Z")!
        while t < end {
            #expect(Timestamp(rfc3339: t.rfc3339) == t)
            t = t + .days(3301) + .seconds(7)
        }
    }
}

@Suite struct TimeSpanTests {
    @Test(arguments: [
        ("30s", Int64(30)), ("5m", Int64(300)), ("1h", Int64(3600)), ("3d", Int64(259_200)),
        ("1h30m", Int64(5400)), ("90s", Int64(90)), ("0s", Int64(0)), ("1d2h3m4s", Int64(93_784)),
    ])
    func parses(text: String, seconds: Int64) {
        #expect(TimeSpan(parsing: text) == .seconds(seconds))
    }

    @Test(arguments: ["", "5", "m", "1x", "30m1h", "1h1h", "-5m", "1.5h", "99999999999999999999d"])
    func rejects(text: String) {
        #expect(TimeSpan(parsing: text) == nil)
    }

    @Test func describesItself() {
        #expect(TimeSpan(parsing: "1h30m")!.description == "1h30m")
        #expect(TimeSpan.zero.description == "0s")
    }
}
