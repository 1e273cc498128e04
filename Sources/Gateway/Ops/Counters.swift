import Atomics
import MQTTCodec

/// Every count the gateway keeps, in one place. One `Counters` per shard (plus one
/// for the Broker), so the hot path bumps a counter nobody else writes; readers
/// (the $SYS publisher and /metrics) sum them.
public enum Counter: Int, CaseIterable, Sendable {
    case connectionsAccepted
    case clientsConnected        // a gauge: up on CONNACK 0, down when that connection ends
    case connectionsClosed
    case connectsAccepted        // CONNACK 0 sent
    case connectsRefused         // CONNACK != 0 sent
    case acceptPauses            // a shard stopped accepting: its fixed-file table is full
    case acceptRatePauses        // a shard stopped accepting for a while: the connect queue (over_rate = "wait") is full
    case connectionsOverLimit    // closed at accept: max_connections reached
    case malformedPackets        // decoder rejected the bytes
    case protocolViolations      // well-formed packet that breaks a MUST
    case keepaliveExpiries
    case connectTimeouts
    case takeovers
    case willsPublished
    case bytesIn
    case bytesOut
    case queueDropsMessages      // message dropped: client queue at its role's max_queued_messages
    case queueDropsBytes         // message dropped: client queue at its role's max_queued_bytes
    case queueDropsBudget        // message dropped: all queues at mqtt.queue_memory_budget
    case queueDropsSendBuffer    // QoS 0 dropped: client send buffer at its role's max_send_buffer
    case deliveriesDenied        // message not delivered through a wider filter: deny_subscribe covers its topic
    case uplinkStored            // XADD confirmed by Redis
    case uplinkDropped           // QoS 0 dropped under backpressure (qos0_overload = "drop")
    case redisErrors             // Redis answered a command with an error
    case redisRelayed            // uplink commands handed to a writer shard
    case backpressurePauses      // a connection stopped being read: Redis busy or away
    case workerLagHolds          // the uplink was held: a stream at its cap, or Redis memory at its budget
    case bookkeepingDropped      // event/presence update dropped while Redis was away
    case uplinkResends           // DUP=1 PUBLISH acknowledged, not stored again: same packet id and payload already stored
    case uplinkRepeatedRecords   // PUBLISH acknowledged, not stored again: its route's dedup_json_key value already stored
    case downlinkAcked           // command outcomes (CommandOutcome), one case each
    case downlinkSent
    case downlinkQueued
    case downlinkOffline
    case downlinkNotSubscribed
    case downlinkExpired
    case downlinkRejected
    case mailboxBadEntries       // a mailbox field that does not parse (removed, outcome rejected)
    case authFailures            // CONNECT refused for credentials (CONNACK 4 or 5)
    case clientIDRefused         // CONNACK 5: client id is not the user name in a role that binds them
    case publishDenied           // authorization refused a PUBLISH
    case subscribeDenied         // authorization refused a filter (SUBACK 0x80)
    case bannedRefused           // CONNECT or accept refused: client id or IP banned
    case flappingBans            // client id banned for reconnecting too often
    case authFailureBans         // IP banned for too many refused credentials
    case connectRateRefused      // CONNACK 3: over a connect rate
    case connectRateWaits        // CONNECT held back for its turn (over_rate = "wait")
    case ipConnectionsRefused    // closed at accept: max_connections_per_ip
    case rateThrottles           // a rate rule stopped reading a connection for a while
    case rateDrops               // a rate rule dropped a PUBLISH
    case rateDisconnects         // a rate rule closed a connection
    case rateBans                // a rate rule (or the quota) banned a client id
    case quotaBreaches           // a device went over its daily byte quota (once a day)
    case inflightInPauses        // a pile hit max_inflight_in and stopped being read
    case redisInflight           // a gauge: commands sent to Redis and not yet answered (set each tick)
    case redisUp                 // a gauge: 1 while this shard's Redis connection is up (set each tick)
    case redisStalled            // a gauge: 1 while a Redis command has waited longer than redis.connect_timeout_ms (set each tick)
    case redisWaitShort          // a WAIT confirmed fewer replicas than redis.wait_replicas (its batch waits on)
    case redisMoved              // cluster: MOVED redirects followed (set each tick from the links)
    case redisAsk                // cluster: ASK redirects followed
    case redisClusterRetries     // cluster: TRYAGAIN / CLUSTERDOWN replies, commands parked and sent again
    case redisFailovers          // cluster: masters that left the slot map holding slots
    case redisClusterMasters     // a gauge (shard 0): masters in the slot map
    case redisUnservedSlots      // a gauge (shard 0): hash slots no master serves
    case redisSlotMapAge       // a gauge (shard 0): seconds since the slot map was read
    case tlsHandshakes           // TLS handshakes completed
    case tlsFailures             // TLS connections closed for a TLS error (bad handshake, bad certificate)
    case tlsHandshakeTimeouts    // TLS handshake not finished within tls.handshake_timeout
    case proxyHeaderErrors       // connection closed: malformed or missing PROXY protocol header
    case reloads                 // config reloads applied (SIGHUP, POST /admin/reload)
    case reloadsRefused          // config reloads refused (bad file): the running config stays
    case silentReports           // a connected pile reported silent (devices.silent_seconds)
    case retainedRefused         // a retained PUBLISH not retained: the store at its bounds
    case silentDevices           // a gauge: connected piles silent at the last review (set by the review)
    case memoryTrims             // free heap returned to the kernel after connection churn (Ops/MemoryTrim.swift)
    case memoryTrimmedBytes      // resident bytes those trims gave back
}

public final class Counters: Sendable {
    private let values: [ManagedAtomic<UInt64>]
    /// Connections closed, by `CloseReason` (in `allCases` order).
    private let closes: [ManagedAtomic<UInt64>]
    /// MQTT packets, and their bytes, by direction and type: `direction * 16 + type`.
    private let packets: [ManagedAtomic<UInt64>]
    private let packetBytes: [ManagedAtomic<UInt64>]
    /// Uplink PUBLISHes by the stream they were routed to (`Router.streams` order).
    private let routed: [ManagedAtomic<UInt64>]
    /// Send-rate actions by rule (`RateRules.rules` order, then the quota).
    private let ruleActions: [ManagedAtomic<UInt64>]
    /// Enqueue to reply of uplink XADDs, in nanoseconds.
    let xaddLatency = Histogram(bounds: [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000,
                                         250_000, 1_000_000].map { $0 * 1000 })
    /// SQEs submitted and CQEs handled per loop turn.
    let sqesPerTurn = Histogram(bounds: Histogram.powersOfTwo)
    let cqesPerTurn = Histogram(bounds: Histogram.powersOfTwo)

    /// `streams` and `rules` size the configured label families.
    public init(streams: Int = 1, rules: Int = 1) {
        values = Counter.allCases.map { _ in ManagedAtomic(0) }
        closes = CloseReason.allCases.map { _ in ManagedAtomic(0) }
        packets = (0..<32).map { _ in ManagedAtomic(0) }
        packetBytes = (0..<32).map { _ in ManagedAtomic(0) }
        routed = (0..<streams).map { _ in ManagedAtomic(0) }
        ruleActions = (0...rules).map { _ in ManagedAtomic(0) }
    }

    enum Direction: Int { case `in` = 0, out = 1 }

    func packet(_ d: Direction, _ t: PacketType, bytes: Int) {
        packets[d.rawValue << 4 | Int(t.rawValue)].wrappingIncrement(ordering: .relaxed)
        packetBytes[d.rawValue << 4 | Int(t.rawValue)].wrappingIncrement(by: UInt64(bytes), ordering: .relaxed)
    }
    func routed(toStream i: Int) { routed[i].wrappingIncrement(ordering: .relaxed) }
    /// `rule` as in `RateVerdict`: an index into the rules, or -1 for the quota.
    func rateAction(rule: Int) { ruleActions[rule < 0 ? ruleActions.count - 1 : rule].wrappingIncrement(ordering: .relaxed) }

    static func totalPackets(_ d: Direction, _ t: PacketType, _ sets: [Counters]) -> (packets: UInt64, bytes: UInt64) {
        let i = d.rawValue << 4 | Int(t.rawValue)
        return sets.reduce((0, 0)) { ($0.0 + $1.packets[i].load(ordering: .relaxed), $0.1 + $1.packetBytes[i].load(ordering: .relaxed)) }
    }
    static func totalRouted(_ i: Int, _ sets: [Counters]) -> UInt64 {
        sets.reduce(0) { $0 + $1.routed[i].load(ordering: .relaxed) }
    }
    static func totalRateActions(rule i: Int, _ sets: [Counters]) -> UInt64 {
        sets.reduce(0) { $0 + $1.ruleActions[i].load(ordering: .relaxed) }
    }

    func closed(_ r: CloseReason) { closes[r.index].wrappingIncrement(ordering: .relaxed) }

    static func totalClosed(_ r: CloseReason, _ sets: [Counters]) -> UInt64 {
        sets.reduce(0) { $0 + $1.closes[r.index].load(ordering: .relaxed) }
    }

    /// For gauges a shard owns.
    func set(_ c: Counter, _ v: UInt64) { slot(c).store(v, ordering: .relaxed) }

    @inlinable public func add(_ c: Counter, _ n: UInt64 = 1) {
        slot(c).wrappingIncrement(by: n, ordering: .relaxed)
    }

    @inlinable public func subtract(_ c: Counter, _ n: UInt64 = 1) {
        slot(c).wrappingDecrement(by: n, ordering: .relaxed)
    }

    public func value(_ c: Counter) -> UInt64 { slot(c).load(ordering: .relaxed) }

    @usableFromInline func slot(_ c: Counter) -> ManagedAtomic<UInt64> { values[c.rawValue] }

    /// Shards counted in `sets`: one set each, then the Broker's and the reloader's
    /// (Server.swift).
    static func shards(in sets: [Counters]) -> Int { sets.count - 1 }

    /// Sum of one counter over several sets.
    public static func total(_ c: Counter, _ sets: [Counters]) -> UInt64 {
        sets.reduce(0) { $0 + $1.value(c) }
    }
}

/// A fixed-bucket histogram written by one shard and summed by a scrape.
///
/// Not swift-prometheus's `Histogram`: that one takes a lock and walks every bucket
/// per observation, and one instance would be shared by all shards. Here a record
/// is a short scan and two relaxed increments on memory only this shard writes;
/// `Metrics` renders the cumulative Prometheus buckets at scrape time.
final class Histogram: Sendable {
    /// Upper bounds, ascending, in the recorded unit; one more bucket for +Inf.
    let bounds: [UInt64]
    private let counts: [ManagedAtomic<UInt64>]
    private let total: ManagedAtomic<UInt64> = ManagedAtomic(0)

    static let powersOfTwo: [UInt64] = (0...12).map { 1 << $0 }

    init(bounds: [UInt64]) {
        self.bounds = bounds
        counts = (0...bounds.count).map { _ in ManagedAtomic(0) }
    }

    func record(_ v: UInt64) {
        var i = 0
        while i < bounds.count && v > bounds[i] { i += 1 }
        counts[i].wrappingIncrement(ordering: .relaxed)
        total.wrappingIncrement(by: v, ordering: .relaxed)
    }

    /// Per-bucket counts (not cumulative, +Inf last) and the sum, over several shards.
    static func merged(_ hs: [Histogram]) -> (counts: [UInt64], sum: UInt64) {
        var c = [UInt64](repeating: 0, count: hs[0].counts.count)
        var sum: UInt64 = 0
        for h in hs {
            for i in c.indices { c[i] &+= h.counts[i].load(ordering: .relaxed) }
            sum &+= h.total.load(ordering: .relaxed)
        }
        return (c, sum)
    }
}

extension CloseReason {
    /// Position in `allCases`: the per-reason counter.
    var index: Int { CloseReason.allCases.firstIndex(of: self)! }
}
