import HeraldCore
import Testing

@Suite struct StableIDTests {
    let time = Timestamp(rfc3339: "2026-11-25T08:00:00.123456Z")!

    @Test func notificationIDsCarryTheirEventTimeToTheMillisecond() throws {
        let id = StableID.notificationID(eventTime: time, ["r", "s1", "u1", "e1", "0"])
        #expect(id.count == 32)
        #expect(id.allSatisfy { $0.isHexDigit && !$0.isUppercase })
        // 1,795,593,600,123 ms = 0x1a211b7fc7b.
        #expect(id.hasPrefix("01a211b7fc7b"))
        let range = try #require(StableID.eventTimeRange(ofNotificationID: id))
        #expect(range.from == Timestamp(rfc3339: "2026-11-25T08:00:00.123Z"))
        #expect(range.to == Timestamp(rfc3339: "2026-11-25T08:00:00.124Z"))
    }

    @Test func notificationIDsAreDeterministicAndDependOnEveryPart() {
        let a = StableID.notificationID(eventTime: time, ["r", "s1", "u1", "e1", "0"])
        #expect(a == StableID.notificationID(eventTime: time, ["r", "s1", "u1", "e1", "0"]))
        let others = [
            StableID.notificationID(eventTime: time, ["r", "s1", "u1", "e1", "1"]),
            StableID.notificationID(eventTime: time, ["r", "s1", "u1e1", "", "0"]),
            StableID.notificationID(eventTime: time, ["r", "s1", "u2", "e1", "0"]),
        ]
        for other in others {
            #expect(other != a)
            #expect(other.prefix(12) == a.prefix(12))
        }
        // The same parts a millisecond later: another prefix, the same 80 hash bits.
        let later = StableID.notificationID(eventTime: time + TimeSpan(microseconds: 1000), ["r", "s1", "u1", "e1", "0"])
        #expect(later.prefix(12) != a.prefix(12))
        #expect(later.dropFirst(12) == a.dropFirst(12))
    }

    @Test func timesOutsideThePrefixRangeAreClampedAndLeaveThatEndOpen() throws {
        let early = StableID.notificationID(eventTime: Timestamp(microseconds: -1_000_000), ["x"])
        #expect(early.hasPrefix("000000000000"))
        let range = try #require(StableID.eventTimeRange(ofNotificationID: early))
        #expect(range.from == nil)
        #expect(range.to == Timestamp(microseconds: 1000))
        let late = StableID.notificationID(eventTime: Timestamp(microseconds: .max), ["x"])
        #expect(late.hasPrefix("ffffffffffff"))
        #expect(try #require(StableID.eventTimeRange(ofNotificationID: late)).to == nil)
    }

    @Test func idsHeraldDidNotMakeHaveNoTimeRange() {
        for id in ["", "n1", "019abb3fa07b", String(repeating: "0", count: 33), "019ABB3FA07B" + String(repeating: "0", count: 20),
                   "019abb3fa07b-" + String(repeating: "0", count: 19)] {
            #expect(StableID.eventTimeRange(ofNotificationID: id) == nil, "\(id)")
        }
    }
}
