import Atomics

/// What the stream review (StreamReview.swift, on shard 0) last saw of the uplink
/// streams and the worker groups named in `redis.consumer_groups`, shared with
/// every shard (is the uplink held?) and with the admin thread (metrics, /readyz).
final class StreamWatch: Sendable {
    /// Uplink streams (`Router.streams`: the default stream first) and the groups
    /// that must read every entry of each.
    let streams: [String]
    let groups: [String]
    /// `redis.stream_maxlen`: a hard cap when groups are named.
    let cap: Int
    /// The cap between reviews, checked per PUBLISH: uplink XADDs sent (`taken`)
    /// and answered (`answered`) so far, and the number `taken` may reach before the
    /// next review (`limit`). The review sets `limit` to cap - length + the answers
    /// counted before it asked for the length: XADDs in flight then, and every one
    /// since, count against the room. One limit for all uplink streams (the fullest one
    /// decides), so it errs on the early side; 0 until the first review.
    let taken = ManagedAtomic<Int>(0)
    let answered = ManagedAtomic<Int>(0)
    let limit = ManagedAtomic<Int>(0)
    /// Publishing piles are held because workers are behind, as the last review
    /// decided: the index of the stream at its cap, `streams.count` for Redis memory at
    /// its budget, -1 when not held.
    let heldBy = ManagedAtomic<Int>(-1)
    let lengths: [ManagedAtomic<Int>]
    /// Per (stream, group), at `s * groups.count + g`.
    let lag: [ManagedAtomic<Int>]
    let pending: [ManagedAtomic<Int>]
    let oldestUnreadAgeMs: [ManagedAtomic<Int>]
    let missing: [ManagedAtomic<Bool>]

    init(streams: [String], groups: [String], cap: Int) {
        self.streams = streams
        self.groups = groups
        self.cap = cap
        active = !groups.isEmpty
        lengths = streams.map { _ in ManagedAtomic(0) }
        let pairs = streams.count * groups.count
        lag = (0..<pairs).map { _ in ManagedAtomic(0) }
        pending = (0..<pairs).map { _ in ManagedAtomic(0) }
        oldestUnreadAgeMs = (0..<pairs).map { _ in ManagedAtomic(0) }
        missing = (0..<pairs).map { _ in ManagedAtomic(false) }
    }

    /// Lag-aware trimming is on (groups named); otherwise XADD trims by MAXLEN.
    let active: Bool

    /// Another uplink XADD fits under the cap (always, without named groups).
    var hasRoom: Bool { !active || taken.load(ordering: .relaxed) < limit.load(ordering: .relaxed) }

    /// One uplink XADD was sent; one was answered (stored or refused).
    func took() { if active { taken.wrappingIncrement(ordering: .relaxed) } }
    func answer() { if active { answered.wrappingIncrement(ordering: .relaxed) } }

    var isHeld: Bool { heldBy.load(ordering: .relaxed) >= 0 }

    /// For /readyz and the log: why piles are held, or nil.
    var heldReason: String? {
        let s = heldBy.load(ordering: .relaxed)
        guard s >= 0 else { return nil }
        if s < streams.count { return "workers behind: stream \(streams[s]) at its cap of \(cap) entries" }
        return "workers behind: Redis memory at redis.memory_budget"
    }
}

/// A stream entry id, `MS-SEQ`, ordered as Redis orders them.
struct StreamID: Comparable, CustomStringConvertible {
    var ms: UInt64
    var seq: UInt64

    init(ms: UInt64, seq: UInt64) { self.ms = ms; self.seq = seq }

    init?(_ text: String) {
        let parts = text.split(separator: "-")
        guard parts.count == 2, let m = UInt64(parts[0]), let s = UInt64(parts[1]) else { return nil }
        ms = m; seq = s
    }

    /// The smallest id after this one; the largest id Redis accepts (a worker may XADD
    /// it explicitly) is its own successor.
    var successor: StreamID {
        if seq < .max { return StreamID(ms: ms, seq: seq + 1) }
        return ms < .max ? StreamID(ms: ms + 1, seq: 0) : self
    }

    var description: String { "\(ms)-\(seq)" }

    static func < (a: StreamID, b: StreamID) -> Bool { (a.ms, a.seq) < (b.ms, b.seq) }
}

extension UInt64 {
    /// A time plus a duration, pinned at the end of time rather than trapping: an entry id
    /// is the writer's to choose, up to 18446744073709551615-… (found by bench/fuzz.sh).
    func saturatingAdd(_ other: UInt64) -> UInt64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }
}
