// Checkpoints of herald-trigger's per-partition state (issue 5): which users changed, their
// state as bytes, the partition-level meta, and an engine rebuilt from them. Format:
// docs/decisions.md, "Checkpoint encoding".

extension TriggerEngine {
    /// Users whose state changed (created, modified, removed) since the last call, encoded;
    /// clears the dirty set. The first call on an engine not made by `restore` returns every
    /// user (tracking starts there, so engines never checkpointed pay nothing for it).
    public mutating func takeDirtyStates() -> [UserStateRecord] {
        guard dirty.tracking else {
            dirty.start(slots: users.count)
            return allStates()
        }
        return dirty.take().map(record)
    }

    /// Every user's state, encoded (for tests/benchmarks and a first full checkpoint).
    public func allStates() -> [UserStateRecord] {
        (0..<UInt32(users.count)).map(record)
    }

    private func record(_ slot: UInt32) -> UserStateRecord {
        UserStateRecord(shopID: users.shop(slot), userID: users.user(slot),
                        state: Self.encode(states[Int(slot)], counts: counts.counts(of: slot),
                                           pending: idle.merged(pool.list(from: states[Int(slot)].pendingHead), slot: slot),
                                           windows: windows.windows(from: states[Int(slot)].windowHead)))
    }

    /// Event-id hashes recorded since the last call, grouped by generation; clears them. The
    /// first call on an engine not made by `restore` returns the whole set.
    public mutating func takeNewSeenEvents() -> [SeenEventsChunk] {
        if !seenEvents.tracksNew {
            seenEvents.tracksNew = true
            seenEvents.previousNew = seenEvents.previous.all
            seenEvents.currentNew = seenEvents.current.all
        }
        var out: [SeenEventsChunk] = []
        if let start = seenEvents.previousStart, !seenEvents.previousNew.isEmpty {
            out.append(SeenEventsChunk(generationStart: start, hashes: Self.bytes(seenEvents.previousNew)))
        }
        if let start = seenEvents.currentStart, !seenEvents.currentNew.isEmpty {
            out.append(SeenEventsChunk(generationStart: start, hashes: Self.bytes(seenEvents.currentNew)))
        }
        seenEvents.previousNew = []
        seenEvents.currentNew = []
        return out
    }

    /// Generation starts of the seen set still in use; chunks of other generations can be deleted.
    public var seenGenerations: [Timestamp] {
        [seenEvents.previousStart, seenEvents.currentStart].compactMap { $0 }
    }

    /// Partition-level state: clock, timer sequence counter, seen-set generation starts, and
    /// the rules layout (rule ids, counted-pattern keys) that per-user encodings refer to by index.
    public func encodeMeta() -> [UInt8] {
        var w = ByteWriter(capacity: 256)
        w.byte(Checkpoint.version)
        w.optionalTimestamp(clock)
        w.uvarint(timers.sequence)
        w.optionalTimestamp(seenEvents.currentStart)
        w.optionalTimestamp(seenEvents.previousStart)
        w.strings(rules.rules.map(\.id))
        w.count(plan.countedPatterns.count)
        for p in plan.countedPatterns { w.pattern(p) }
        return w.bytes
    }

    /// Rebuilds an engine, timer heap included, from a checkpoint. `users` in any order;
    /// `seen` chunks of any generations (those not in the meta's generations are ignored).
    /// The rules may differ from the checkpoint's: per-user rule/pattern indices are remapped
    /// by rule id / pattern key; pending firings, windows and goals of rules that no longer
    /// exist are dropped; counts of patterns no longer referenced are dropped.
    public static func restore(rules: RuleSet, eventHorizon: TimeSpan = .days(7), meta: [UInt8],
                               users: [UserStateRecord], seen: [SeenEventsChunk]) throws(CheckpointDecodingError) -> TriggerEngine {
        var engine = TriggerEngine(rules: rules, eventHorizon: eventHorizon)
        var r = ByteReader(meta)
        try Checkpoint.checkVersion(&r)
        let clock = try r.optionalTimestamp()
        let sequence = try r.uvarint()
        let currentStart = try r.optionalTimestamp()
        let previousStart = try r.optionalTimestamp()
        let ruleIDs = try r.strings()
        var patterns: [EventPattern] = []
        for _ in 0..<(try r.count()) { patterns.append(try r.pattern()) }
        try r.finish()

        var newIndex: [String: Int] = [:]
        for (i, rule) in rules.rules.enumerated() { newIndex[rule.id] = i }
        let layout = Layout(ruleMap: ruleIDs.map { newIndex[$0] }, patternMap: patterns.map { engine.plan.countIndex($0) },
                            patternCount: engine.plan.countedPatterns.count)

        engine.clock = clock
        engine.dirty.start(slots: 0)
        engine.seenEvents.tracksNew = true
        engine.users.reserve(users.count)
        engine.states.reserveCapacity(users.count)
        engine.idle.reserve(users.count)
        engine.counts.reserve(users.count)
        var entries: [TimerHeapOf<UInt32>.Entry] = []
        var maxTimer = sequence
        for record in users {
            guard let bytes = record.state else { continue }
            let decoded = try decode(bytes, layout)
            var state = decoded.state
            let counts = decoded.counts
            var pending = decoded.pending
            engine.windows.set(&state.windowHead, decoded.windows)
            let (slot, inserted) = engine.users.insert(shop: record.shopID, user: record.userID)
            if inserted {
                engine.idle.addSlot()
                engine.counts.addSlot()
                engine.dirty.addSlot()
                engine.states.append(state)
            } else {
                engine.idle.clear(slot: slot)
                engine.pool.removeAll(from: &engine.states[Int(slot)].pendingHead) { _ in true }
                engine.windows.set(&engine.states[Int(slot)].windowHead, [])
            }
            for p in pending { maxTimer = max(maxTimer, p.timer) }
            // Idle firings that fit their rule's column go there, their timers in its
            // buckets (docs: `IdleColumns`); the rest have heap entries.
            pending.removeAll { engine.idle.store($0, slot: slot) }
            for p in pending {
                entries.append(.init(due: p.due, sequence: p.timer, user: slot))
                engine.pool.append(p, to: &state.pendingHead)
            }
            engine.states[Int(slot)] = state
            engine.counts.set(slot, counts)
        }
        // Timers of a user listed twice (the later record wins) are left to be skipped.
        entries.sort(by: TimerHeapOf<UInt32>.less)
        engine.timers.heap.reserveCapacity(entries.count)
        for e in entries { engine.timers.heap.push(e) }
        engine.timers.sequence = maxTimer

        engine.seenEvents.currentStart = currentStart
        engine.seenEvents.previousStart = previousStart
        var sizes = (current: 0, previous: 0)
        for chunk in seen {
            if chunk.generationStart == currentStart { sizes.current += chunk.hashes.count / 8 }
            if chunk.generationStart == previousStart { sizes.previous += chunk.hashes.count / 8 }
        }
        engine.seenEvents.current.reserve(sizes.current)
        engine.seenEvents.previous.reserve(sizes.previous)
        for chunk in seen {
            guard chunk.hashes.count % 8 == 0 else {
                throw CheckpointDecodingError("seen-events chunk of \(chunk.hashes.count) bytes, not a multiple of 8")
            }
            let toCurrent = chunk.generationStart == currentStart
            let toPrevious = chunk.generationStart == previousStart
            guard toCurrent || toPrevious else { continue }
            var r = ByteReader(chunk.hashes)
            while !r.isAtEnd {
                let h = try r.fixed64()
                if toCurrent { _ = engine.seenEvents.current.insert(h) }
                if toPrevious { _ = engine.seenEvents.previous.insert(h) }
            }
        }
        return engine
    }

    /// How a checkpoint's rule and pattern indices map onto the current rules.
    struct Layout {
        var ruleMap: [Int?]
        var patternMap: [Int?]
        var patternCount: Int
    }

    private static func bytes(_ hashes: [UInt64]) -> [UInt8] {
        var w = ByteWriter(capacity: hashes.count * 8)
        for v in hashes { w.fixed64(v) }
        return w.bytes
    }

    // MARK: Per-user encoding

    /// `pending`: every pending firing of the user, in timer order (its list and its idle columns').
    /// `counts`: the user's counts (written as none while all are 0, as before the first counted event).
    /// `windows`: the user's threshold windows.
    static func encode(_ u: UserState, counts: ArraySlice<Int32> = [], pending: [UserState.Pending],
                       windows: [UserState.Window] = []) -> [UInt8] {
        var w = ByteWriter(capacity: 48)
        w.byte(Checkpoint.version)
        let base = u.firstSeen
        w.timestamp(base)
        w.timestamp(u.lastSeen, from: base)
        let anyCount = counts.contains { $0 != 0 }
        w.count(anyCount ? counts.count : 0)
        if anyCount { for c in counts { w.varint(Int64(c)) } }
        w.count(pending.count)
        for p in pending {
            w.uvarint(p.timer)
            w.count(p.rule)
            w.int(p.ordinal)
            w.timestamp(p.due, from: base)
            w.timestamp(p.triggerTime, from: base)
            w.string(p.triggerEventID)
            w.int(p.repeatsLeft)
            w.object(p.event)  // PackedObject: its bytes are this encoding
        }
        let profile = u.profile, goals = u.goals, late = u.lateGoalEvents, ahead = u.ahead
        var flags: UInt8 = 0
        if profile != nil { flags |= 1 }
        if !windows.isEmpty { flags |= 2 }
        if !goals.isEmpty { flags |= 4 }
        if !late.isEmpty { flags |= 8 }
        if !ahead.isEmpty { flags |= 16 }
        w.byte(flags)
        if let profile { w.object(profile) }
        if !windows.isEmpty {
            w.count(windows.count)
            for win in windows {
                w.count(win.rule)
                w.count(win.times.count)
                for t in win.times { w.timestamp(t, from: base) }
            }
        }
        if !goals.isEmpty {
            w.count(goals.count)
            for g in goals {
                w.count(g.rule)
                w.string(g.notificationID)
                w.timestamp(g.from, from: base)
                w.timestamp(g.until, from: base)
            }
        }
        for list in [late, ahead] where !list.isEmpty {
            w.count(list.count)
            for s in list {
                w.string(s.eventID)
                w.timestamp(s.time, from: base)
                w.byte(UInt8(LogicalTopic.allCases.firstIndex(of: s.topic)!))
                w.string(s.type)
                w.object(s.fields)
            }
        }
        return w.bytes
    }

    /// The state, its counts (empty: all 0) and its pending firings.
    static func decode(_ bytes: [UInt8], _ layout: Layout) throws(CheckpointDecodingError)
        -> (state: UserState, counts: [Int32], pending: [UserState.Pending], windows: [UserState.Window]) {
        var r = ByteReader(bytes)
        try Checkpoint.checkVersion(&r)
        let base = try r.timestamp()
        var u = UserState(at: base)
        var userCounts: [Int32] = []
        u.lastSeen = try r.timestamp(from: base)
        let nCounts = try r.count()
        if nCounts > 0 {
            guard nCounts == layout.patternMap.count else { throw r.fail("\(nCounts) counts for \(layout.patternMap.count) patterns") }
            var counts = [Int32](repeating: 0, count: layout.patternCount)
            for i in 0..<nCounts {
                let c = Int32(truncatingIfNeeded: try r.varint())
                if let j = layout.patternMap[i] { counts[j] = c }
            }
            userCounts = counts
        }
        let nPending = try r.count(minBytes: 8)
        var pending: [UserState.Pending] = []
        pending.reserveCapacity(nPending)
        for _ in 0..<nPending {
            let timer = try r.uvarint()
            let rule = try r.index(below: layout.ruleMap.count)
            let ordinal = try r.int(), due = try r.timestamp(from: base), triggerTime = try r.timestamp(from: base)
            let id = try r.string(), repeatsLeft = try r.int(), event = try r.object()
            guard let newRule = layout.ruleMap[rule] else { continue }
            pending.append(.init(timer: timer, rule: newRule, ordinal: ordinal, due: due, triggerTime: triggerTime,
                                   triggerEventID: id, repeatsLeft: repeatsLeft, event: PackedObject(event)))
        }
        let flags = try r.byte()
        guard flags < 32 else { throw r.fail("bad flags") }
        if flags & 1 != 0 { u.profile = try r.object() }
        var windows: [UserState.Window] = []
        if flags & 2 != 0 {
            for _ in 0..<(try r.count(minBytes: 2)) {
                let rule = try r.index(below: layout.ruleMap.count)
                var times: [Timestamp] = []
                for _ in 0..<(try r.count()) { times.append(try r.timestamp(from: base)) }
                if let newRule = layout.ruleMap[rule] { windows.append(.init(rule: newRule, times: times)) }
            }
        }
        if flags & 4 != 0 {
            var goals: [UserState.GoalWindow] = []
            for _ in 0..<(try r.count(minBytes: 4)) {
                let rule = try r.index(below: layout.ruleMap.count)
                let id = try r.string(), from = try r.timestamp(from: base), until = try r.timestamp(from: base)
                if let newRule = layout.ruleMap[rule] { goals.append(.init(rule: newRule, notificationID: id, from: from, until: until)) }
            }
            if !goals.isEmpty { u.goals = goals }
        }
        for bit: UInt8 in [8, 16] where flags & bit != 0 {
            var list: [SeenRef] = []
            for _ in 0..<(try r.count(minBytes: 5)) {
                let id = try r.string(), time = try r.timestamp(from: base)
                let topic = Int(try r.byte())
                guard topic < LogicalTopic.allCases.count else { throw r.fail("bad topic") }
                let type = try r.string(), fields = try r.object()
                list.append(SeenRef(eventID: id, time: time, topic: LogicalTopic.allCases[topic], type: type, fields: fields))
            }
            if bit == 8 { u.lateGoalEvents = list } else { u.ahead = list }
        }
        try r.finish()
        return (u, userCounts, pending, windows)
    }
}

extension ByteWriter {
    mutating func optionalTimestamp(_ t: Timestamp?) {
        if let t { byte(1); timestamp(t) } else { byte(0) }
    }

    mutating func pattern(_ p: EventPattern) {
        byte(p.topic.map { UInt8(LogicalTopic.allCases.firstIndex(of: $0)! + 1) } ?? 0)
        optionalString(p.type)
    }
}

extension ByteReader {
    mutating func optionalTimestamp() throws(CheckpointDecodingError) -> Timestamp? {
        try bool() ? try timestamp() : nil
    }

    mutating func pattern() throws(CheckpointDecodingError) -> EventPattern {
        let t = Int(try byte())
        guard t <= LogicalTopic.allCases.count else { throw fail("bad topic") }
        return EventPattern(topic: t == 0 ? nil : LogicalTopic.allCases[t - 1], type: try optionalString())
    }
}
