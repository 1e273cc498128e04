import Logging
import PileLoop

/// Stored means readable: with `redis.consumer_groups` named, shard 0 reviews the
/// uplink streams every `review_interval_ms` on its pipelined connection, instead of
/// every XADD trimming by MAXLEN (which drops entries no worker has read):
///
/// 1. `INFO memory`, and per stream `XLEN` and `XINFO GROUPS`;
/// 2. per named group present: `XPENDING` (its oldest unacknowledged entry) and
///    `XRANGE (last-delivered-id + COUNT 1` (its oldest undelivered entry);
/// 3. `XTRIM stream MINID` the oldest entry any named group still needs.
///
/// A stream at `stream_maxlen`, or Redis memory at `memory_budget` of `maxmemory`,
/// holds publishing piles until the workers catch up (below 90% of the cap): each
/// review leaves `StreamWatch.limit` (how many uplink XADDs may have been sent
/// before the next one), every shard checks it per PUBLISH and, at it, stops reading
/// piles as during a Redis outage.
/// A named group missing from a stream cannot read anything, so it holds nothing:
/// the stream is trimmed by the groups present, or, with none present, by MAXLEN as
/// without `consumer_groups`; each missing group is logged once (and its return).
final class StreamReview {
    enum Step {
        case memory
        case length(Int), groups(Int)
        case pending(Int, Int), nextUnread(Int, Int)
        case trimmed(Int)
    }

    struct Group {
        var present = false
        var lastDelivered: StreamID?
        var oldestPending: StreamID?
        var nextUnread: StreamID?
    }

    let watch: StreamWatch
    private let interval: UInt64
    private let memoryBudget: Double
    private var nextAt: UInt64 = 0
    private(set) var running = false
    private var groups: [[Group]]
    private var lengths: [Int]
    /// `StreamWatch.answered` before the lengths were asked for: every XADD answered
    /// by then is in the lengths; any other still counts as in flight.
    private var answeredAtStart = 0
    private var left: [Int]
    private var streamsLeft = 0
    private var usedMemory = 0, maxMemory = 0
    /// Review errors already logged (once each, not every interval).
    var warned: Set<String> = []

    init(watch: StreamWatch, config: Config.Redis) {
        self.watch = watch
        interval = UInt64(config.reviewIntervalMs)
        memoryBudget = config.memoryBudget
        groups = watch.streams.map { _ in Array(repeating: Group(), count: watch.groups.count) }
        lengths = Array(repeating: 0, count: watch.streams.count)
        left = lengths
    }

    /// Due (and not already under way)?
    func due(nowMs: UInt64) -> Bool {
        guard !running, nowMs >= nextAt else { return false }
        nextAt = nowMs + interval
        return true
    }

    func begin() {
        running = true
        streamsLeft = watch.streams.count
        answeredAtStart = watch.answered.load(ordering: .relaxed)
    }

    // MARK: Reading the replies

    /// `XINFO GROUPS`: which named groups exist, and how far each has read.
    /// Returns the indexes of those present.
    func readGroups(_ s: Int, _ r: RedisReply) -> [Int] {
        var seen: [String: (last: StreamID?, lag: Int?, pending: Int)] = [:]
        for g in r.elements {
            let kv = g.elements
            var name = "", last: StreamID?, lag: Int?, pending = 0
            var i = 0
            while i + 1 < kv.count {
                switch kv[i].text {
                case "name": name = kv[i + 1].text
                case "last-delivered-id": last = StreamID(kv[i + 1].text)
                case "lag": lag = kv[i + 1].integer.map(Int.init)
                case "pending": pending = Int(kv[i + 1].integer ?? 0)
                default: break
                }
                i += 2
            }
            seen[name] = (last, lag, pending)
        }
        var present: [Int] = []
        for (g, name) in watch.groups.enumerated() {
            let k = s * watch.groups.count + g
            guard let info = seen[name] else {
                groups[s][g] = Group()
                continue
            }
            present.append(g)
            groups[s][g] = Group(present: true, lastDelivered: info.last)
            watch.pending[k].store(info.pending, ordering: .relaxed)
            if let lag = info.lag { watch.lag[k].store(lag, ordering: .relaxed) }
        }
        left[s] = 2 * present.count
        return present
    }

    func readPending(_ s: Int, _ g: Int, _ r: RedisReply) {
        let parts = r.elements
        if parts.count >= 2, let count = parts[0].integer, count > 0 { groups[s][g].oldestPending = StreamID(parts[1].text) }
        left[s] -= 1
    }

    func readNextUnread(_ s: Int, _ g: Int, _ r: RedisReply) {
        groups[s][g].nextUnread = r.elements.first.flatMap { $0.elements.first }.flatMap { StreamID($0.text) }
        left[s] -= 1
    }

    func readLength(_ s: Int, _ r: RedisReply) {
        lengths[s] = Int(r.integer ?? 0)
        watch.lengths[s].store(lengths[s], ordering: .relaxed)
    }

    func readMemory(_ r: RedisReply) {
        for line in r.text.split(separator: "\r\n") {
            if line.hasPrefix("used_memory:") { usedMemory = Int(line.dropFirst(12)) ?? 0 }
            if line.hasPrefix("maxmemory:") { maxMemory = Int(line.dropFirst(10)) ?? 0 }
        }
    }

    /// All of stream `s`'s group replies are in: the oldest entry any present
    /// group still needs (nil: nothing to trim up to), and the unread ages.
    func trimBound(_ s: Int, nowMs: UInt64) -> StreamID? {
        var bound: StreamID?
        for (g, state) in groups[s].enumerated() where state.present {
            let needed = [state.oldestPending, state.nextUnread ?? state.lastDelivered?.successor].compactMap { $0 }.min()
            let oldestUnread = [state.oldestPending, state.nextUnread].compactMap { $0 }.min()
            let age = oldestUnread.map { nowMs > $0.ms ? Int(nowMs - $0.ms) : 0 } ?? 0
            watch.oldestUnreadAgeMs[s * watch.groups.count + g].store(age, ordering: .relaxed)
            if let needed { bound = min(bound ?? needed, needed) }
        }
        return bound
    }

    func isComplete(_ s: Int) -> Bool { left[s] == 0 }

    /// Where group `g` has read up to on stream `s` (XRANGE starts after it).
    func lastDelivered(_ s: Int, _ g: Int) -> String { groups[s][g].lastDelivered?.description ?? "0-0" }

    func presentCount(_ s: Int) -> Int { groups[s].filter(\.present).count }

    /// The XTRIM of stream `s` was answered with how many entries went.
    func trimmed(_ s: Int, removed: Int) {
        lengths[s] = max(0, lengths[s] - removed)
        watch.lengths[s].store(lengths[s], ordering: .relaxed)
    }

    /// One stream is done; after the last, decide whether piles are held. Returns
    /// the new state when it changed.
    func streamDone() -> Bool? {
        streamsLeft -= 1
        guard streamsLeft == 0 else { return nil }
        running = false
        let wasHeld = watch.isHeld
        var by = -1, limit = Int.max
        for s in lengths.indices where presentCount(s) > 0 {
            limit = min(limit, watch.cap - lengths[s] + answeredAtStart)
            if by < 0 && lengths[s] > (wasHeld ? watch.cap * 9 / 10 : watch.cap - 1) { by = s }
        }
        if by < 0 && memoryBudget > 0 && maxMemory > 0 {
            let budget = Double(maxMemory) * memoryBudget * (wasHeld ? 0.95 : 1)
            if Double(usedMemory) >= budget { by = watch.streams.count }
        }
        let held = by >= 0
        watch.limit.store(held ? Int.min : limit, ordering: .relaxed)
        watch.heldBy.store(by, ordering: .relaxed)
        return held != wasHeld ? held : nil
    }
}
