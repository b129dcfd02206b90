/// The users of one trigger engine, interned to dense 32-bit slots: one hash of the
/// (shop, user) key finds the slot, and everything kept per user lives in arrays indexed by
/// it. Shops are interned too (a handful per partition), so a slot's key costs a user-id
/// string and a 1-byte shop index (4 bytes once a partition has seen more than 256 shops).
/// Users are never removed.
struct UserSlots: Sendable {
    private(set) var shops: [String] = []
    private var shopIndex: [String: UInt32] = [:]
    /// Per slot: the user id, and its shop's index.
    private var users: [String] = []
    private var narrowShops: [UInt8] = []
    /// Instead of `narrowShops` from the 257th shop on.
    private var wideShops: [UInt32] = []
    private var wide = false
    /// Open addressing, linear probing: (tag << 32) | (slot + 1), 0 empty, where the tag is
    /// the upper 32 bits of the key's hash and also says where probing starts — so growing
    /// the table moves entries without hashing any key again.
    private var table: [UInt64] = []

    var count: Int { users.count }

    func key(_ slot: UInt32) -> UserKey { UserKey(shop: shop(slot), user: user(slot)) }
    func shop(_ slot: UInt32) -> String { shops[shopIndex(of: slot)] }
    func user(_ slot: UInt32) -> String { users[Int(slot)] }

    func shopIndex(of slot: UInt32) -> Int {
        wide ? Int(wideShops[Int(slot)]) : Int(narrowShops[Int(slot)])
    }

    /// Where the key is, or the empty place where it would go.
    private func probe(shop: String, user: String, tag: UInt64) -> (index: Int, slot: UInt32?) {
        let mask = table.count - 1
        var i = Int(truncatingIfNeeded: tag) & mask
        while true {
            let e = table[i]
            if e == 0 { return (i, nil) }
            if e >> 32 == tag {
                let slot = UInt32(truncatingIfNeeded: e) - 1
                if users[Int(slot)] == user, shops[shopIndex(of: slot)] == shop { return (i, slot) }
            }
            i = (i + 1) & mask
        }
    }

    /// For a batch's first pass, which only reads so that its cache misses overlap: the
    /// slot in the table entry where probing for `hash` (`StableHash64.of(shop, user)`)
    /// starts, when that entry's tag is the hash's. A guess: only `insert` and `find`
    /// compare the key.
    func slotGuess(hash: UInt64) -> UInt32? {
        guard !table.isEmpty else { return nil }
        // The first entries probing would read (a key is often a step or two past where
        // its probing starts): mostly the same cache line.
        let mask = table.count - 1
        var i = Int(truncatingIfNeeded: hash >> 32) & mask
        for _ in 0..<4 {
            let e = table[i]
            if e == 0 { return nil }
            if e >> 32 == hash >> 32 { return UInt32(truncatingIfNeeded: e) - 1 }
            i = (i + 1) & mask
        }
        return nil
    }

    /// Reads the slot's key (for a batch's first pass); the value means nothing.
    func touch(_ slot: UInt32) -> Int {
        users.span[Int(slot)].utf8.count &+ shopIndex(of: slot)
    }

    func find(shop: String, user: String) -> UInt32? {
        guard !table.isEmpty else { return nil }
        return probe(shop: shop, user: user, tag: StableHash64.of(shop, user) >> 32).slot
    }

    /// The user's slot, made when new. `hash`: `StableHash64.of(shop, user)`, when known.
    mutating func insert(shop: String, user: String, hash: UInt64? = nil) -> (slot: UInt32, inserted: Bool) {
        if (count + 1) * 10 > table.count * 7 { grow(to: max(64, table.count * 2)) }
        let tag = (hash ?? StableHash64.of(shop, user)) >> 32
        let (i, found) = probe(shop: shop, user: user, tag: tag)
        if let found { return (found, false) }
        let slot = UInt32(count)
        table[i] = tag << 32 | UInt64(slot + 1)
        let s: UInt32
        if let known = shopIndex[shop] {
            s = known
        } else {
            s = UInt32(shops.count)
            shops.append(shop)
            shopIndex[shop] = s
            if !wide, s > UInt8.max {
                wide = true
                wideShops = narrowShops.map(UInt32.init)
                narrowShops = []
            }
        }
        users.append(user)
        if wide { wideShops.append(s) } else { narrowShops.append(UInt8(s)) }
        return (slot, true)
    }

    /// Makes room for `n` users at once.
    mutating func reserve(_ n: Int) {
        var size = max(64, table.count)
        while n * 10 > size * 7 { size *= 2 }
        if size > table.count { grow(to: size) }
        users.reserveCapacity(n)
        if wide { wideShops.reserveCapacity(n) } else { narrowShops.reserveCapacity(n) }
    }

    private mutating func grow(to size: Int) {
        let old = table
        table = [UInt64](repeating: 0, count: size)
        let mask = size - 1
        for e in old where e != 0 {
            var i = Int(truncatingIfNeeded: e >> 32) & mask
            while table[i] != 0 { i = (i + 1) & mask }
            table[i] = e
        }
    }
}

/// A 64-bit hash of strings, the same in every process (it is checkpointed): 8 bytes at a
/// time, each string's length mixed in so that ("ab", "c") and ("a", "bc") differ.
struct StableHash64 {
    private var h: UInt64 = 0x243F_6A88_85A3_08D3

    static func of(_ a: String, _ b: String) -> UInt64 {
        var h = StableHash64()
        h.add(a)
        h.add(b)
        return h.finish()
    }


    private mutating func word(_ w: UInt64) {
        h = (h ^ w) &* 0xBF58_476D_1CE4_E5B9
        h ^= h >> 29
    }

    mutating func add(_ s: String) {
        var s = s
        s.withUTF8 { b in
            let n = b.count
            var i = 0
            // Each 8 bytes as one little-endian word (what OR-ing them in byte by byte gives).
            let raw = UnsafeRawBufferPointer(b)
            while i + 8 <= n {
                word(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
                i += 8
            }
            var w: UInt64 = 0
            var k: UInt64 = 0
            while i < n {
                w |= UInt64(b[i]) << (8 * k)
                i += 1
                k += 1
            }
            word(w)
            word(UInt64(n) | 0x8000_0000_0000_0000)
        }
    }

    func finish() -> UInt64 { Hasher128.mix(h) }
}
