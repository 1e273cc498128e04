/// A hashed timing wheel (Varghese & Lauck): one bucket per tick, entries hashed by
/// deadline modulo the wheel size. The shard drives it from one ring timeout; there
/// is never a kernel timer per connection.
///
/// Entries are not moved when a deadline is pushed back (keepalive traffic): the
/// owner keeps its current deadline and, when an old entry fires early, simply
/// schedules again. That keeps the per-packet cost at one integer store.
public struct TimingWheel {
    public struct Entry: Equatable {
        public var slot: UInt32
        public var generation: UInt32
        public var deadline: UInt64   // in ticks
    }

    private var buckets: [[Entry]]
    private let mask: Int
    public private(set) var now: UInt64   // current tick
    public private(set) var count = 0

    public init(buckets: Int = 1024, startTick: UInt64 = 0) {
        precondition(buckets.nonzeroBitCount == 1)
        self.buckets = Array(repeating: [], count: buckets)
        mask = buckets - 1
        now = startTick
    }

    /// Schedule at an absolute tick (clamped to the next tick if already past).
    public mutating func schedule(slot: UInt32, generation: UInt32, at deadline: UInt64) {
        let d = max(deadline, now + 1)
        buckets[Int(d & UInt64(mask))].append(Entry(slot: slot, generation: generation, deadline: d))
        count += 1
    }

    /// Advance to `tick`, appending every entry whose deadline has come to `expired`
    /// (handled by the caller afterwards, so handling may schedule again).
    /// Entries for later rounds stay in their bucket.
    public mutating func advance(to tick: UInt64, expired: inout [Entry]) {
        guard tick > now else { return }
        // Past a full revolution every bucket is visited once.
        let steps = min(tick - now, UInt64(mask + 1))
        var t = tick - steps + 1
        while t <= tick {
            let b = Int(t & UInt64(mask))
            if !buckets[b].isEmpty {
                let before = buckets[b].count
                buckets[b].removeAll { e in
                    if e.deadline <= tick { expired.append(e); return true }
                    return false
                }
                count -= before - buckets[b].count
            }
            t += 1
        }
        now = tick
    }
}
