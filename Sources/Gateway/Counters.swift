import Atomics

/// Every count the gateway keeps, in one place. One `Counters` per shard (plus one
/// for the Broker), so the hot path bumps a counter nobody else writes; readers
/// (the $SYS publisher, later /metrics) sum them.
public enum Counter: Int, CaseIterable, Sendable {
    case connectionsAccepted
    case clientsConnected        // a gauge: up on CONNACK 0, down when that connection ends
    case connectionsClosed
    case connectsAccepted        // CONNACK 0 sent
    case connectsRefused         // CONNACK != 0 sent
    case acceptPauses            // a shard stopped accepting: its fixed-file table is full
    case connectionsOverLimit    // closed at accept: max_connections reached
    case malformedPackets        // decoder rejected the bytes
    case protocolViolations      // well-formed packet that breaks a MUST
    case keepaliveExpiries
    case connectTimeouts
    case takeovers
    case willsPublished
    case packetsIn
    case packetsOut
    case bytesIn
    case bytesOut
    case publishesIn
    case publishesOut
    case queueDrops              // message dropped: client queue at its bound
    case uplinkStored            // XADD confirmed by Redis
    case uplinkDropped           // QoS 0 dropped under backpressure (qos0_overload = "drop")
    case redisErrors             // Redis answered a command with an error
    case backpressurePauses      // a connection stopped being read: Redis busy or away
    case bookkeepingDropped      // event/presence update dropped while Redis was away
    case downlinkDelivered
    case downlinkQueued
    case downlinkOffline
    case downlinkNotSubscribed
    case authFailures            // CONNECT refused for credentials (CONNACK 4 or 5)
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
    case tlsHandshakes           // TLS handshakes completed
    case tlsFailures             // TLS connections closed for a TLS error (bad handshake, bad certificate)
    case tlsHandshakeTimeouts    // TLS handshake not finished within tls.handshake_timeout
}

public final class Counters: Sendable {
    private let values: [ManagedAtomic<UInt64>]
    /// Connections closed, by `CloseReason` (in `allCases` order).
    private let closes: [ManagedAtomic<UInt64>]

    public init() {
        values = Counter.allCases.map { _ in ManagedAtomic(0) }
        closes = CloseReason.allCases.map { _ in ManagedAtomic(0) }
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

    /// Sum of one counter over several sets.
    public static func total(_ c: Counter, _ sets: [Counters]) -> UInt64 {
        sets.reduce(0) { $0 + $1.value(c) }
    }
}

extension CloseReason {
    /// Position in `allCases`: the per-reason counter.
    var index: Int { CloseReason.allCases.firstIndex(of: self)! }
}
