import Glibc
import PileLoop

/// Where the traffic rollup's pass over the slab is, the days it has written in
/// this pass (their hashes' expiry is refreshed when it completes), and the hash
/// name of the day last asked for.
struct TrafficRollup {
    var cursor = 0
    var days: Set<UInt32> = []
    var keyCache: (day: UInt32, key: String) = (0, "")
}

/// The per-device traffic rollup (`[devices]`): each device's traffic is added
/// into one Redis hash per day, which is what the platform charts SIM use from.
/// It runs from the shard's tick over its own slab, never per packet: the hot
/// path only adds to `DailyUsage`.
extension Shard {
    /// Each tick: add the bytes of the next slice of the slab, so one pass over every
    /// connection takes `traffic_flush_seconds` and Redis gets an even trickle of
    /// HINCRBYs. (Flushing everyone at once put a burst of two commands per device in
    /// front of the uplink XADDs: PUBACK p99 went from 3 to 12 ms in
    /// bench/observability.sh.) `all`: the whole slab now, at a day change.
    func flushTraffic(all: Bool) {
        guard let redis, !config.devices.trafficPrefix.isEmpty, !slab.isEmpty else { return }
        let passTicks = UInt64(config.devices.trafficFlushSeconds) * 1000 / Shard.tickMillis
        let count = all ? slab.count : Int((UInt64(slab.count) + passTicks - 1) / passTicks)
        for _ in 0..<count {
            if traffic.cursor >= slab.count {   // a pass is complete: refresh the days' expiry
                traffic.cursor = 0
                for day in traffic.days { redis.expire(trafficKey(day), seconds: config.devices.trafficRetentionDays * 86400) }
                traffic.days.removeAll(keepingCapacity: true)
            }
            let i = traffic.cursor
            traffic.cursor += 1
            if slab[i].state == .connected, let s = slab[i].session { flushTraffic(s, redis) }
        }
    }

    /// HINCRBY one device's unflushed bytes into its day's hash; false if there was
    /// nothing to add or Redis has no room now (the bytes wait for the next flush).
    /// The day is noted for the expiry at the end of the pass, also when the flush
    /// comes from a disconnect (a day written only then would otherwise never expire).
    @discardableResult
    func flushTraffic(_ s: Session, _ redis: RedisBridge) -> Bool {
        let u = s.usage
        guard u.inbound.unflushed > 0 || u.outbound.unflushed > 0, !config.devices.trafficPrefix.isEmpty,
              redis.addTraffic(key: trafficKey(u.day), device: s.clientID,
                               in: u.inbound.unflushed, out: u.outbound.unflushed) else { return false }
        s.usage.inbound.unflushed = 0
        s.usage.outbound.unflushed = 0
        traffic.days.insert(u.day)
        return true
    }

    /// `traffic_prefix` + the day's date (YYYY-MM-DD of the shifted quota day).
    func trafficKey(_ day: UInt32) -> String {
        if traffic.keyCache.day != day || traffic.keyCache.key.isEmpty {
            var t = time_t(Int(day) * 86400)
            var parts = tm()
            gmtime_r(&t, &parts)
            func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
            traffic.keyCache = (day, config.devices.trafficPrefix
                                   + "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))")
        }
        return traffic.keyCache.key
    }
}
