// Per-device traffic accounting, kept in the Session: what quotas are checked
// against (Policy/RateGate.swift) and what the rollup (Ops/TrafficRollup.swift)
// adds to Redis.

/// One device's traffic today, what its SIM carried: MQTT bytes plus the
/// per-packet overhead estimate. Kept in the Session, and carried across clean
/// reconnects by the Broker, so a quota cannot be reset by reconnecting.
struct DailyUsage: Sendable {
    /// One direction's traffic today.
    struct Flow: Sendable {
        var bytes: UInt64 = 0
        var packets: UInt32 = 0
        /// Bytes not yet added to the day's traffic hash in Redis (Ops/TrafficRollup.swift);
        /// flushed at least every `traffic_flush_seconds`, so 32 bits are plenty.
        var unflushed: UInt32 = 0

        mutating func add(_ n: UInt64) {
            bytes &+= n
            unflushed &+= UInt32(truncatingIfNeeded: n)
            packets &+= 1
        }
    }

    var inbound = Flow()
    var outbound = Flow()
    /// The day (policy.rates.day), and in the top bit whether the quota breach was
    /// reported that day (one event per day): 36 bytes, not 40, which keeps the
    /// Session in a 160-byte malloc chunk.
    private var dayBits: UInt32

    init(day: UInt32 = 0) { dayBits = day & 0x7FFF_FFFF }

    var day: UInt32 { dayBits & 0x7FFF_FFFF }
    var breachReported: Bool {
        get { dayBits >> 31 == 1 }
        set { dayBits = day | (newValue ? 1 << 31 : 0) }
    }

    var total: UInt64 { inbound.bytes + outbound.bytes }

    mutating func roll(to today: UInt32) {
        if day != today { self = DailyUsage(day: today) }
    }
}


extension Session {
    func countIn(_ bytes: Int, overhead: UInt64, today: UInt32) {
        usage.roll(to: today)
        usage.inbound.add(UInt64(bytes) &+ overhead)
    }

    func countOut(_ bytes: Int, overhead: UInt64, today: UInt32) {
        usage.roll(to: today)
        usage.outbound.add(UInt64(bytes) &+ overhead)
    }
}
