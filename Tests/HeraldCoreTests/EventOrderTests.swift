import Testing
@testable import HeraldCore

@Suite struct EventOrderTests {
    func events(_ specs: [(String, String)]) -> [Event] {
        var s = Script()
        for (name, at) in specs { s.add(name, at: at) }
        return s.events
    }

    @Test func eventsLeaveInTimeOrderOnceTheWatermarkPassesThem() {
        let e = events([("behavior.page_view", "10m"), ("behavior.cart_add", "20m"), ("orders.order_paid", "5m")])
        var order = EventOrder()
        order.add(e[0], input: 1, offset: 7)
        order.add(e[1], input: 1, offset: 8)
        // orders has not delivered anything: nothing may go.
        #expect(order.next(upTo: nil) == nil)
        order.add(e[2], input: 0, offset: 3)
        // orders at 5m, behavior at 20m: the watermark is 5m.
        let w = Script.base + .minutes(5)
        #expect(order.next(upTo: w)?.event.eventID == e[2].eventID)   // orders at exactly the watermark goes
        #expect(order.next(upTo: w) == nil)
        #expect(order.oldestOffsets() == [1: 7])
        #expect(order.next(upTo: Script.base + .minutes(15))?.event.eventID == e[0].eventID)
        #expect(order.next(upTo: Script.base + .minutes(15)) == nil)
        #expect(order.oldestOffsets() == [1: 8])
        #expect(order.late == 0 && order.forced == 0)
    }

    @Test func atEqualTimesOrdersGoFirstAndOtherInputsWaitForTheWatermarkToPass() {
        let e = events([("behavior.cart_add", "10m"), ("orders.order_paid", "10m"), ("behavior.page_view", "10m")])
        var order = EventOrder()
        order.add(e[0], input: 1, offset: 0)
        order.add(e[2], input: 1, offset: 1)
        let w = Script.base + .minutes(10)
        // A behavior event at exactly the watermark: an order at that time may still come.
        #expect(order.next(upTo: w) == nil)
        order.add(e[1], input: 0, offset: 0)
        #expect(order.next(upTo: w)?.event.eventID == e[1].eventID)
        #expect(order.next(upTo: w) == nil)
        let later = w + .seconds(1)
        #expect([order.next(upTo: later), order.next(upTo: later)].map { $0?.event.eventID } == [e[0].eventID, e[2].eventID])
        #expect(order.isEmpty)
    }

    @Test func theLimitLetsTheOldestOutAndLateArrivalsAreCounted() {
        let e = events([("behavior.page_view", "10m"), ("behavior.page_view", "20m"), ("orders.order_paid", "15m"),
                        ("orders.order_paid", "25m")])
        var order = EventOrder(limit: 1)
        order.add(e[0], input: 1)
        #expect(order.next(upTo: nil) == nil)
        order.add(e[1], input: 1)
        #expect(order.next(upTo: nil)?.event.eventID == e[0].eventID)
        #expect(order.forced == 1)
        order.add(e[2], input: 0)   // 15m, after 10m went: in order
        #expect(order.late == 0)
        #expect(order.next(upTo: nil)?.event.eventID == e[2].eventID)
        #expect(order.next(upTo: nil) == nil)
        order.add(e[3], input: 0)
        #expect(order.next(upTo: nil)?.event.eventID == e[1].eventID)   // 20m forced out
        order.add(e[2], input: 0)   // 15m again, after 20m went: late
        #expect(order.late == 1)
        #expect(order.drain().map(\.event.eventID) == [e[2].eventID, e[3].eventID])
    }

    /// The property issue 3 asks for: the same events of each topic, read in any
    /// interleaving of the two topics, give the same outcomes — bodies included, with
    /// profile updates, counts, first-seen facts and cross-topic resets in play.
    @Test(arguments: [1, 2, 3])
    func everyInterleavingOfTheTopicsGivesTheSameOutcomes(seed: UInt64) throws {
        let yaml = """
        templates:
          hello: { body: "Hi {{ user.nickname | default: 'there' }}, {{ event.type }} ({{ user.tier | default: '-' }})" }
        rules:
          - { id: welcome, on: orders.order_paid, where: "user.count('orders.order_paid') == 1", notify: { template: hello } }
          - { id: gold, on: behavior.checkout_start, where: "user.tier == 'gold'", notify: { template: hello } }
          - id: cart
            on: behavior.cart_add
            wait: 20m
            cancel_on: [orders.order_paid]
            notify: { template: hello }
          - id: locked
            on: behavior.login_failed
            threshold: { count: 3, within: 30m, reset_on: [orders.order_paid] }
            notify: { template: hello }
        """
        let rules = try RulesLoader.load(yaml: yaml).get()
        var rng = SplitMix64(seed: seed)
        var s = Script()
        var minute = 0
        let kinds = ["orders.order_paid", "behavior.checkout_start", "behavior.cart_add", "behavior.login_failed",
                     "behavior.profile_updated", "behavior.page_view"]
        for _ in 0..<1500 {
            minute += Int(rng.next() % 2)   // many events share a minute, across topics too
            let user = "u\(rng.next() % 12)"
            let kind = kinds[Int(rng.next() % UInt64(kinds.count))]
            var fields: KeyValuePairs<String, JSONValue> = [:]
            if kind == "behavior.profile_updated" {
                fields = ["profile": .object(JSONObject([("nickname", .string("n\(rng.next() % 100)")),
                                                         ("tier", .string(rng.next() % 2 == 0 ? "gold" : "silver"))]))]
            }
            s.add(kind, user: user, at: "\(minute)m", fields)
        }
        let ordersEvents = s.events.filter { $0.topic == .orders }
        let behaviorEvents = s.events.filter { $0.topic == .behavior }

        func interleave(_ r: inout SplitMix64, ordersFirst bias: UInt64) -> [Event] {
            var out: [Event] = []
            var i = 0, j = 0
            while i < ordersEvents.count || j < behaviorEvents.count {
                // Runs of one topic, as a consumer's fetches deliver them.
                let takeOrders = j == behaviorEvents.count || (i < ordersEvents.count && r.next() % 10 < bias)
                let run = 1 + Int(r.next() % 40)
                for _ in 0..<run {
                    if takeOrders, i < ordersEvents.count { out.append(ordersEvents[i]); i += 1 }
                    if !takeOrders, j < behaviorEvents.count { out.append(behaviorEvents[j]); j += 1 }
                }
            }
            return out
        }
        func outcomes(_ events: [Event], holding: Bool = true) -> [String] {
            var r = Replay(rules: rules)
            if !holding { r.order = EventOrder(limit: 0) }
            var records: [Replay.Record] = []
            for e in events { records += r.process(e) }
            records += r.finish()
            return records.map { String(decoding: $0.json, as: UTF8.self) }
        }

        let inTimeOrder = outcomes(s.events)
        #expect(inTimeOrder.count > 100)
        #expect(inTimeOrder.contains { $0.contains(#"Hi n"#) && $0.contains("gold") })
        var r = SplitMix64(seed: seed &+ 100)
        var readOrderDiffers = false
        for bias in [1, 5, 9] as [UInt64] {
            let events = interleave(&r, ordersFirst: bias)
            #expect(outcomes(events) == inTimeOrder, "orders-first bias \(bias)")
            if outcomes(events, holding: false) != inTimeOrder { readOrderDiffers = true }
        }
        // Without holding events back, the read order shows through: the test can fail.
        #expect(readOrderDiffers)
    }
}

extension EventOrder.Entry: Equatable {
    public static func == (a: Self, b: Self) -> Bool {
        a.event.eventID == b.event.eventID && a.input == b.input && a.offset == b.offset
    }
}
