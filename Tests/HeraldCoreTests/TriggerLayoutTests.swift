import Testing
@testable import HeraldCore

/// The trigger engine's state layout (docs/performance.md, "Trigger logic"): users interned
/// to slots, idle timers in per-rule columns.
@Suite struct TriggerLayoutTests {
    @Test func userSlotsInternEachKeyOnce() {
        var slots = UserSlots()
        var reference: [UserKey: UInt32] = [:]
        var rng = SplitMix64(seed: 5)
        for _ in 0..<60_000 {
            // Long and short ids, shops that are prefixes of each other, non-ASCII.
            let shop = ["s", "s1", "s11", "店"][Int(rng.next() % 4)]
            let n = rng.next() % 20_000
            let user = n % 7 == 0 ? "user-with-a-longer-identifier-\(n)" : "u\(n)"
            let (slot, inserted) = slots.insert(shop: shop, user: user)
            let key = UserKey(shop: shop, user: user)
            #expect(inserted == (reference[key] == nil))
            if let known = reference[key] { #expect(slot == known) } else { #expect(Int(slot) == reference.count) }
            reference[key] = slot
        }
        #expect(slots.count == reference.count)
        #expect(slots.shops.count == 4)
        for (key, slot) in reference {
            #expect(slots.find(shop: key.shop, user: key.user) == slot)
            #expect(slots.key(slot) == key)
        }
        #expect(slots.find(shop: "s2", user: "u1") == nil)
        #expect(slots.find(shop: "s1", user: "u1x") == nil)
    }

    /// A slot's shop index is one byte until a 257th shop arrives, then four.
    @Test func userSlotsKeepTheirShopsPast256Shops() {
        var slots = UserSlots()
        var keys: [UserKey] = []
        for i in 0..<600 {
            let key = UserKey(shop: "shop-\(i % 300)", user: "u\(i)")
            let r = slots.insert(shop: key.shop, user: key.user)
            #expect(r.slot == UInt32(i) && r.inserted)
            keys.append(key)
        }
        #expect(slots.shops.count == 300)
        for (i, key) in keys.enumerated() {
            #expect(slots.key(UInt32(i)) == key)
            #expect(slots.find(shop: key.shop, user: key.user) == UInt32(i))
        }
        #expect(slots.find(shop: "shop-299", user: "u0") == nil)
    }

    @Test func stableHashSeparatesItsParts() {
        #expect(StableHash64.of("ab", "c") != StableHash64.of("a", "bc"))
        #expect(StableHash64.of("u1", "e1") != StableHash64.of("u1e", "1"))
        #expect(StableHash64.of("12345678", "") != StableHash64.of("1234567", "8"))
        #expect(StableHash64.of("", "") != StableHash64.of("", "a"))
        // Checkpointed (event-id hashes): the same in every process and every build.
        #expect(StableHash64.of("s1", "u1") == 4_162_749_079_792_937_515)
    }

    /// Runs like the worker with a lagging clock, so idle firings meet late events.
    private func run(_ events: [Event], _ engine: inout TriggerEngine) -> [TriggerOutput] {
        var out: [TriggerOutput] = []
        var newest = events[0].occurredAt
        for e in events {
            newest = max(newest, e.occurredAt)
            engine.advance(to: newest - .minutes(5), into: &out)
            engine.process(e, into: &out)
        }
        engine.advance(to: newest + .days(60), into: &out)
        return out
    }

    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func idleColumnsChangeNoOutput(seed: UInt64) throws {
        let rules = try loadRules(heraldYAML)
        let events = workload(seed: seed, events: 3000)
        var columns = TriggerEngine(rules: rules, idleColumns: true)
        var lists = TriggerEngine(rules: rules, idleColumns: false)
        #expect(columns.idle.columns.count == 1 && lists.idle.columns.isEmpty)
        #expect(run(events, &columns) == run(events, &lists))
    }

    /// A second idle firing of the same rule (an event after the first one's due time while
    /// the clock lags) is kept in the list; a late event then moves the first, in the column.
    /// Events handed over together (`process(_:_:advancingUpTo:into:)`, which reads ahead)
    /// give what they give one at a time: the same outputs in the same order, the same
    /// states, seen events and meta — with events delivered again (also within a batch),
    /// users new within a batch, events past the bound (no timers fire before them), batches
    /// without a bound, and batches of 1 to 80 events.
    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func batchesGiveWhatSingleEventsGive(seed: UInt64) throws {
        let rules = try loadRules(heraldYAML)
        let events = workload(seed: seed, events: 3000)
        var single = TriggerEngine(rules: rules)
        var batched = TriggerEngine(rules: rules)
        var expected: [TriggerOutput] = []
        var got: [TriggerOutput] = []
        var rng = SplitMix64(seed: seed)
        var newest = events[0].occurredAt
        var start = 0
        while start < events.count {
            let end = min(events.count, start + 1 + Int(rng.next() % 80))
            // A watermark that lags: some events of the batch are past it.
            let bound: Timestamp? = rng.next() % 8 == 0 ? nil : newest - .minutes(Int64(rng.next() % 20))
            for e in events[start..<end] {
                if let bound, e.occurredAt <= bound { single.advance(to: e.occurredAt, into: &expected) }
                single.process(e, into: &expected)
            }
            batched.process(events, start..<end, advancingUpTo: bound, into: &got)
            for e in events[start..<end] { newest = max(newest, e.occurredAt) }
            if let bound {
                single.advance(to: bound, into: &expected)
                batched.advance(to: bound, into: &got)
            }
            start = end
        }
        #expect(got.count > 100)
        #expect(got == expected)
        single.advance(to: newest + .days(60), into: &expected)
        batched.advance(to: newest + .days(60), into: &got)
        #expect(got == expected)
        #expect(batched.allStates() == single.allStates())
        #expect(batched.takeNewSeenEvents() == single.takeNewSeenEvents())
        #expect(batched.encodeMeta() == single.encodeMeta())
    }

    @Test func aSecondIdleFiringOfARuleIsAListedOne() throws {
        let rules = try loadRules(heraldYAML)
        let t0 = Timestamp(rfc3339: "2026-11-01T08:00:00Z")!
        func view(_ id: String, _ t: Timestamp) -> Event {
            Event(topic: .behavior, eventID: id, type: "page_view", shopID: "s1", userID: "u1", occurredAt: t,
                  body: JSONObject([("event_id", .string(id))]))
        }
        var outputs: [[TriggerOutput]] = []
        for useColumns in [true, false] {
            var engine = TriggerEngine(rules: rules, idleColumns: useColumns)
            var out: [TriggerOutput] = []
            engine.process(view("a", t0), into: &out)
            engine.process(view("b", t0 + .days(31)), into: &out)   // after a's due time; the clock has not moved
            if useColumns {
                #expect(engine.idle.columns[0][0].triggerEventID == "a")
                #expect(engine.pool.list(from: engine.states[0].pendingHead).map(\.triggerEventID) == ["b"])
            }
            engine.process(view("c", t0 + .days(10)), into: &out)   // late: moves a's timer
            if useColumns { #expect(engine.idle.columns[0][0].triggerEventID == "c") }
            engine.advance(to: t0 + .days(100), into: &out)
            let winBack = out.compactMap(\.candidate).filter { $0.ruleID == "win-back" }
            #expect(winBack.map(\.triggerEventIDs) == [["c"], ["b"]])
            #expect(winBack.map(\.firedAt) == [t0 + .days(40), t0 + .days(61)])
            outputs.append(out)
        }
        #expect(outputs[0] == outputs[1])
    }

    /// Timer 0 marks an empty column entry; a corrupt checkpoint's firing with timer 0 is a
    /// listed one and fires from the list (it once matched the empty entry and crashed).
    @Test func aRestoredFiringWithTimerZeroIsNotAnEmptyColumnEntry() throws {
        let rules = try loadRules(heraldYAML)
        let winBack = rules.rules.firstIndex { $0.id == "win-back" }!
        let t0 = Timestamp(rfc3339: "2026-11-01T08:00:00Z")!
        let firing = UserState.Pending(timer: 0, rule: winBack, ordinal: 0, due: t0 + .days(30), triggerTime: t0,
                                       triggerEventID: "a", repeatsLeft: 0, event: PackedObject())
        let bytes = TriggerEngine.encode(UserState(at: t0), pending: [firing])
        var engine = try TriggerEngine.restore(rules: rules, meta: TriggerEngine(rules: rules).encodeMeta(),
                                               users: [UserStateRecord(shopID: "s1", userID: "u1", state: bytes)], seen: [])
        #expect(engine.idle.columns[0][0].timer == 0 && engine.pool.list(from: engine.states[0].pendingHead).count == 1)
        let fired = engine.advance(to: t0 + .days(31)).compactMap(\.candidate)
        #expect(fired.map(\.ruleID) == ["win-back"])
    }
}
