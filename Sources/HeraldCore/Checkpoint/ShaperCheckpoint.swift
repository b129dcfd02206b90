// Checkpoints of herald-shaper's per-partition state (issue 5). Format: docs/decisions.md,
// "Checkpoint encoding".

extension Shaper {
    /// Users whose state changed (created, modified, removed by the sweep) since the last
    /// call, encoded; clears the dirty set. The first call on a shaper not made by `restore`
    /// returns every user.
    public mutating func takeDirtyStates() -> [UserStateRecord] {
        guard tracksDirty else {
            tracksDirty = true
            return allStates()
        }
        var out: [UserStateRecord] = []
        out.reserveCapacity(dirtySlots.count + removedKeys.count)
        // A removed user that came back is listed as changed instead.
        var removed: Set<UserKey> = []
        for key in removedKeys where removed.insert(key).inserted {
            if let slot = users.find(shop: key.shop, user: key.user), states[Int(slot)].present { continue }
            out.append(UserStateRecord(shopID: key.shop, userID: key.user, state: nil))
        }
        for slot in dirtySlots where states[Int(slot)].present && states[Int(slot)].dirty {
            states[Int(slot)].dirty = false
            out.append(record(slot))
        }
        dirtySlots = []
        removedKeys = []
        return out
    }

    /// Every user's state, encoded (for tests/benchmarks and a first full checkpoint).
    public func allStates() -> [UserStateRecord] {
        states.indices.filter { states[$0].present }.map { record(UInt32($0)) }
    }

    private func record(_ slot: UInt32) -> UserStateRecord {
        UserStateRecord(shopID: users.shop(slot), userID: users.user(slot), state: Self.encode(states[Int(slot)]))
    }

    /// Partition-level state: clock, last sweep, timer sequence and the replay-drop counter.
    public func encodeMeta() -> [UInt8] {
        var w = ByteWriter(capacity: 32)
        w.byte(Checkpoint.version)
        w.optionalTimestamp(clock)
        w.optionalTimestamp(lastSweep)
        w.uvarint(timerSequence)
        w.count(replayedDropped)
        return w.bytes
    }

    /// Rebuilds a shaper, timer heap included, from a checkpoint; `users` in any order.
    /// Rules may differ from the checkpoint's: state refers to rules by id, and a merge window
    /// of a rule that no longer exists still closes (with its first member's template).
    public static func restore(rules: RuleSet, seenHorizon: TimeSpan = .days(7), meta: [UInt8],
                               users: [UserStateRecord]) throws(CheckpointDecodingError) -> Shaper {
        var shaper = Shaper(rules: rules, seenHorizon: seenHorizon)
        shaper.tracksDirty = true
        var r = ByteReader(meta)
        try Checkpoint.checkVersion(&r)
        shaper.clock = try r.optionalTimestamp()
        shaper.lastSweep = try r.optionalTimestamp()
        let sequence = try r.uvarint()
        shaper.replayedDropped = Int(truncatingIfNeeded: try r.uvarint())
        try r.finish()
        var entries: [TimerHeapOf<UInt32>.Entry] = []
        var maxTimer = sequence
        shaper.users.reserve(users.count)
        shaper.states.reserveCapacity(users.count)
        for record in users {
            guard let bytes = record.state else { continue }
            let user = try decode(bytes)
            let slot = shaper.slot(shop: record.shopID, user: record.userID)
            for w in user.windows { entries.append(.init(due: w.closesAt, sequence: w.timer, user: slot)) }
            for d in user.deferred { entries.append(.init(due: d.dueAt, sequence: d.timer, user: slot)) }
            maxTimer = max(maxTimer, user.windows.map(\.timer).max() ?? 0, user.deferred.map(\.timer).max() ?? 0)
            shaper.states[Int(slot)] = user
        }
        entries.sort(by: TimerHeapOf<UInt32>.less)
        // Deferred messages of a user due at one time share a timer.
        var last: (sequence: UInt64, slot: UInt32)?
        for e in entries where last.map({ $0 != (e.sequence, e.user) }) ?? true {
            shaper.timers.push(e)
            last = (e.sequence, e.user)
        }
        shaper.timerSequence = maxTimer
        return shaper
    }

    // MARK: Per-user encoding

    static func encode(_ u: ShaperUser) -> [UInt8] {
        var w = ByteWriter(capacity: 128)
        w.byte(Checkpoint.version)
        let base = u.seen.first?.time ?? Timestamp(microseconds: 0)
        w.timestamp(base)
        w.count(u.seen.count)
        for s in u.seen {
            w.fixed64(s.hash)
            w.timestamp(s.time, from: base)
        }
        w.count(u.history.count)
        for d in u.history {
            w.fixed64(d.id)
            w.fixed64(d.rule)
            // The chain is only compared for a message with a dedupe key.
            w.bool(d.dedupeKey != nil)
            if let key = d.dedupeKey {
                w.fixed64(key)
                w.fixed64(d.chain)
            }
            w.timestamp(d.time, from: base)
            w.bool(d.sent)
        }
        w.count(u.windows.count)
        for m in u.windows {
            w.string(m.ruleID)
            w.timestamp(m.closesAt, from: base)
            w.uvarint(m.timer)
            w.count(m.members.count)
            for c in m.members { w.write(c) }
        }
        w.count(u.deferred.count)
        for d in u.deferred {
            w.write(d.message.candidate)
            if let items = d.message.items {
                w.byte(1)
                w.json(.array(items))
            } else {
                w.byte(0)
            }
            w.timestamp(d.dueAt, from: base)
            w.uvarint(d.timer)
        }
        // A set: sorted so equal states encode equally.
        let optedOut = u.preferences.optedOut.sorted { ($0.rule ?? "", $0.channel ?? "") < ($1.rule ?? "", $1.channel ?? "") }
        w.count(optedOut.count)
        for s in optedOut { w.scope(s) }
        w.count(u.preferences.pending.count)
        for p in u.preferences.pending {
            w.timestamp(p.time, from: base)
            w.bool(p.subscribed)
            w.scope(p.scope)
        }
        return w.bytes
    }

    static func decode(_ bytes: [UInt8]) throws(CheckpointDecodingError) -> ShaperUser {
        var r = ByteReader(bytes)
        try Checkpoint.checkVersion(&r)
        let base = try r.timestamp()
        var u = ShaperUser()
        let nSeen = try r.count(minBytes: 9)
        u.seen.reserveCapacity(nSeen)
        for _ in 0..<nSeen {
            let hash = try r.fixed64()
            u.seen.append((hash, try r.timestamp(from: base)))
        }
        for _ in 0..<(try r.count(minBytes: 19)) {
            let id = try r.fixed64(), rule = try r.fixed64()
            var key: UInt64?
            var chain: UInt64 = 0
            if try r.bool() {
                key = try r.fixed64()
                chain = try r.fixed64()
            }
            let time = try r.timestamp(from: base), sent = try r.bool()
            u.history.append(Delivery(id: id, rule: rule, dedupeKey: key, chain: chain, time: time, sent: sent))
        }
        for _ in 0..<(try r.count(minBytes: 4)) {
            let rule = try r.string(), closesAt = try r.timestamp(from: base), timer = try r.uvarint()
            let n = try r.count(minBytes: 20)
            guard n > 0 else { throw r.fail("empty merge window") }
            var members: [Candidate] = []
            for _ in 0..<n { members.append(try r.candidate()) }
            u.windows.append(MergeWindow(ruleID: rule, closesAt: closesAt, members: members, timer: timer))
        }
        for _ in 0..<(try r.count(minBytes: 20)) {
            let c = try r.candidate()
            var items: [JSONValue]?
            if try r.bool() {
                guard case .array(let a) = try r.json() else { throw r.fail("digest items not an array") }
                items = a
            }
            let due = try r.timestamp(from: base), timer = try r.uvarint()
            u.deferred.append(DeferredMessage(message: Message(c, items: items), dueAt: due, timer: timer))
        }
        for _ in 0..<(try r.count(minBytes: 2)) { u.preferences.optedOut.insert(try r.scope()) }
        for _ in 0..<(try r.count(minBytes: 4)) {
            let time = try r.timestamp(from: base), subscribed = try r.bool(), scope = try r.scope()
            u.preferences.pending.append(PreferenceChange(time: time, subscribed: subscribed, scope: scope))
        }
        try r.finish()
        return u
    }
}

extension ByteWriter {
    mutating func scope(_ s: OptOutScope) {
        optionalString(s.rule)
        optionalString(s.channel)
    }
}

extension ByteReader {
    mutating func scope() throws(CheckpointDecodingError) -> OptOutScope {
        OptOutScope(rule: try optionalString(), channel: try optionalString())
    }
}
