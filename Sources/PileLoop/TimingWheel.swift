/// A hashed timing wheel (Varghese & Lauck): one bucket per tick, entries hashed by
/// deadline modulo the wheel size. The shard drives it from one ring timeout; there
/// is never a kernel timer per connection.
///
/// At most one entry per slot, linked through an array indexed by slot (intrusive):
/// 12 bytes a slot, no allocation per entry, and scheduling a slot again moves its
/// entry. Before, each bucket was an array of 16-byte entries, with its header and
/// growth slack about 46 bytes a connection (bench/README.md, "memory per pile").
///
/// Entries are still not moved when a deadline is pushed back (keepalive traffic):
/// the owner keeps its current deadline and, when the old entry fires early, simply
/// schedules again. That keeps the per-packet cost at one integer store.
public struct TimingWheel {
    public struct Entry: Equatable {
        public var slot: UInt32
        public var deadline: UInt64   // in ticks
    }

    /// `next`/`prev` are slot + 1 (0: none; `prev` 0: the bucket's head). `due` is the
    /// deadline's low 32 bits: deadlines lie within 2^31 ticks of `now` (100 ms ticks:
    /// 6.8 years).
    private struct Link {
        var next: UInt32
        var prev: UInt32
        var due: UInt32
    }
    private static let unlinked = UInt32.max
    private var heads: [UInt32]
    private var links: [Link] = []
    private let mask: Int
    public private(set) var now: UInt64   // current tick
    public private(set) var count = 0

    /// `slots`: how many slots there may be (reserved, not touched: pages of the link
    /// array cost memory only once slots that far up are scheduled).
    public init(buckets: Int = 1024, startTick: UInt64 = 0, slots: Int = 0) {
        precondition(buckets.nonzeroBitCount == 1)
        heads = Array(repeating: 0, count: buckets)
        mask = buckets - 1
        now = startTick
        links.reserveCapacity(slots)
    }

    /// Schedule `slot` at an absolute tick (clamped to the next tick if already
    /// past), replacing the entry it had.
    public mutating func schedule(slot: UInt32, at deadline: UInt64) {
        let d = max(deadline, now + 1)
        cancel(slot)
        let s = Int(slot)
        if links.count <= s {
            links.append(contentsOf: repeatElement(Link(next: 0, prev: Self.unlinked, due: 0), count: s + 1 - links.count))
        }
        let b = Int(d & UInt64(mask))
        let head = heads[b]
        links[s] = Link(next: head, prev: 0, due: UInt32(truncatingIfNeeded: d))
        if head != 0 { links[Int(head - 1)].prev = slot + 1 }
        heads[b] = slot + 1
        count += 1
    }

    /// When `slot`'s entry fires (nil: it has none). A linked entry is always ahead of `now`.
    public func deadline(of slot: UInt32) -> UInt64? {
        let s = Int(slot)
        guard s < links.count, links[s].prev != Self.unlinked else { return nil }
        return UInt64(Int64(now) + Int64(Int32(bitPattern: links[s].due &- UInt32(truncatingIfNeeded: now))))
    }

    /// Remove `slot`'s entry, if it has one.
    public mutating func cancel(_ slot: UInt32) {
        let s = Int(slot)
        guard s < links.count, links[s].prev != Self.unlinked else { return }
        let l = links[s]
        if l.prev == 0 { heads[Int(l.due) & mask] = l.next } else { links[Int(l.prev - 1)].next = l.next }
        if l.next != 0 { links[Int(l.next - 1)].prev = l.prev }
        links[s].prev = Self.unlinked
        count -= 1
    }

    /// Advance to `tick`, appending every entry whose deadline has come to `expired`
    /// (handled by the caller afterwards, so handling may schedule again).
    /// Entries for later rounds stay in their bucket.
    public mutating func advance(to tick: UInt64, expired: inout [Entry]) {
        guard tick > now else { return }
        // Past a full revolution every bucket is visited once.
        let steps = min(tick - now, UInt64(mask + 1))
        let low = UInt32(truncatingIfNeeded: tick)
        var t = tick - steps + 1
        while t <= tick {
            var at = heads[Int(t & UInt64(mask))]
            while at != 0 {
                let slot = at - 1
                let l = links[Int(slot)]
                at = l.next
                let ahead = Int32(bitPattern: l.due &- low)
                guard ahead <= 0 else { continue }
                expired.append(Entry(slot: slot, deadline: UInt64(Int64(tick) + Int64(ahead))))
                cancel(slot)
            }
            t += 1
        }
        now = tick
    }
}
