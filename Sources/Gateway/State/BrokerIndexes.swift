/// A hash index from string keys to 32-bit handles, for keys that already live in
/// the caller's table (a client id in `Broker.clients`, a topic in `Broker.topics`):
/// the index stores only the handle, 4 bytes a bucket. A `[String: UInt32]` spends
/// 20 bytes a bucket and, having just doubled, is 37% full: at 200k clients that is
/// 52 bytes a client against 10 here.
///
/// Open addressing with linear probing, at most 3/4 full; deletion shifts the
/// following run back (no tombstones, so lookups never slow down with churn).
/// `keyOf` maps a stored handle to its key; it must answer for every handle in the
/// index, including the one being removed.
struct HandleIndex {
    /// handle + 1; 0 is an empty bucket.
    private var buckets = [UInt32](repeating: 0, count: 16)
    private(set) var count = 0

    private var mask: Int { buckets.count - 1 }

    func find(_ key: String, keyOf: (UInt32) -> String) -> UInt32? {
        var i = key.hashValue & mask
        while buckets[i] != 0 {
            let h = buckets[i] - 1
            if keyOf(h) == key { return h }
            i = (i + 1) & mask
        }
        return nil
    }

    /// Add `handle` under `key` (which must not be in the index yet).
    mutating func insert(_ key: String, _ handle: UInt32, keyOf: (UInt32) -> String) {
        if (count + 1) * 4 > buckets.count * 3 { resize(to: buckets.count * 2, keyOf: keyOf) }
        place(handle, at: key.hashValue)
        count += 1
    }

    /// Remove `handle`, stored under `key`.
    mutating func remove(_ key: String, _ handle: UInt32, keyOf: (UInt32) -> String) {
        var hole = key.hashValue & mask
        while buckets[hole] != handle + 1 {
            precondition(buckets[hole] != 0, "HandleIndex: removing a handle that is not there")
            hole = (hole + 1) & mask
        }
        // Close the gap: move back every later entry of the run whose home bucket
        // is not between the hole and where it sits (cyclically).
        var j = hole
        while true {
            j = (j + 1) & mask
            if buckets[j] == 0 { break }
            let home = keyOf(buckets[j] - 1).hashValue & mask
            let stays = hole < j ? (hole < home && home <= j) : (hole < home || home <= j)
            if !stays {
                buckets[hole] = buckets[j]
                hole = j
            }
        }
        buckets[hole] = 0
        count -= 1
        if buckets.count > 16 && count * 8 < buckets.count { resize(to: buckets.count / 2, keyOf: keyOf) }
    }

    private mutating func place(_ handle: UInt32, at hash: Int) {
        var i = hash & mask
        while buckets[i] != 0 { i = (i + 1) & mask }
        buckets[i] = handle + 1
    }

    private mutating func resize(to n: Int, keyOf: (UInt32) -> String) {
        let old = buckets
        buckets = [UInt32](repeating: 0, count: n)
        for b in old where b != 0 { place(b - 1, at: keyOf(b - 1).hashValue) }
    }
}

/// Values addressed by a 32-bit handle, with freed handles reused first, so the
/// storage stays dense and a handle stays valid until it is removed.
struct SlotTable<Value> {
    private var values: [Value?] = []
    private var free: [UInt32] = []

    /// Reserve room for `n` values: never copied while growing, and since it fills
    /// from the front, capacity not yet used is never resident.
    mutating func reserve(_ n: Int) { values.reserveCapacity(n) }

    mutating func insert(_ v: Value) -> UInt32 {
        if let h = free.popLast() {
            values[Int(h)] = v
            return h
        }
        values.append(v)
        return UInt32(values.count - 1)
    }

    mutating func remove(_ h: UInt32) {
        values[Int(h)] = nil
        free.append(h)
    }

    subscript(h: UInt32) -> Value? {
        get { values[Int(h)] }
        set { values[Int(h)] = newValue }
    }
}
