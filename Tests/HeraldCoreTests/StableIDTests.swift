import HeraldCore
import Testing

@Suite struct StableIDTests {
    let time = Timestamp(rfc3339: "2026-11-25T08:00:00.123456Z")!

    /// Checkpoints keep these hashes (seen ids, rules, dedupe keys, chains): they must never
    /// change. Values from the FNV-1a + SplitMix64 definition, computed independently.
    @Test func hash64ValuesArePinned() {
        let pinned: [(String, UInt64)] = [
            ("", 0xc381_7c01_6ba4_ff30), ("a", 0xc0fc_99fe_a7ab_959c), ("c123456", 0x8f46_9116_f43c_c234),
            ("cart-abandoned", 0x0ee6_af9c_c2e8_16a0), ("0196f3a2c4e17a9b3c5d7e9f01234567", 0x20ba_6eba_184d_2106),
            ("充值未到账", 0x6c64_65e1_b620_ef5d),
        ]
        for (s, h) in pinned { #expect(StableID.hash64(s) == h, "\(s)") }
        #expect(StableID.hash64(["s1", "u42", "experiment", "cart-abandoned"]) == 0x31e5_2b16_df98_607a)
    }

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
