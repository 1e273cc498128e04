import Glibc
import PileLoop

/// Per-device accounting and monitoring (`[devices]`): each device's traffic is
/// added into one Redis hash per day, which is what the platform charts SIM use
/// from, and a pile that keeps its connection but stops publishing is reported.
///
/// Both run from the shard's timer over its own slab, never per packet: the hot
/// path only adds to `DailyUsage` and stamps `Session.lastPublish`.
extension Shard {
    // MARK: Traffic rollup

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
            if trafficCursor >= slab.count {   // a pass is complete: refresh the days' expiry
                trafficCursor = 0
                for day in trafficDays { redis.expire(trafficKey(day), seconds: config.devices.trafficRetentionDays * 86400) }
                trafficDays.removeAll(keepingCapacity: true)
            }
            let i = trafficCursor
            trafficCursor += 1
            if slab[i].state == .connected, let s = slab[i].session, flushTraffic(s, redis) { trafficDays.insert(s.usage.day) }
        }
    }

    /// HINCRBY one device's unflushed bytes into its day's hash; false if there was
    /// nothing to add or Redis has no room now (the bytes wait for the next flush).
    @discardableResult
    func flushTraffic(_ s: Session, _ redis: RedisBridge) -> Bool {
        let u = s.usage
        guard u.inbound.unflushed > 0 || u.outbound.unflushed > 0, !config.devices.trafficPrefix.isEmpty,
              redis.addTraffic(key: trafficKey(u.day), device: s.clientID,
                               in: u.inbound.unflushed, out: u.outbound.unflushed) else { return false }
        s.usage.inbound.unflushed = 0
        s.usage.outbound.unflushed = 0
        return true
    }

    /// `traffic_prefix` + the day's date (YYYY-MM-DD of the shifted quota day).
    func trafficKey(_ day: UInt32) -> String {
        if trafficKeyCache.day != day || trafficKeyCache.key.isEmpty {
            var t = time_t(Int(day) * 86400)
            var parts = tm()
            gmtime_r(&t, &parts)
            func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
            trafficKeyCache = (day, config.devices.trafficPrefix
                                   + "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))")
        }
        return trafficKeyCache.key
    }

    // MARK: Silent devices

    /// Report each connected pile whose last PUBLISH (or CONNACK) is `silent_seconds`
    /// old, once; refresh the silent-devices gauge.
    func reviewSilence() {
        let limit = UInt32(ticks(seconds: config.devices.silentSeconds))
        let now = nowTick32
        var silent: UInt64 = 0
        for i in slab.indices where slab[i].state == .connected {
            guard let s = slab[i].session, now &- s.lastPublish >= limit else { continue }
            silent += 1
            if s.silentReported { continue }
            s.silentReported = true
            counters.add(.silentReports)
            let seconds = silence(s, now)
            logger.info("silent: no PUBLISH for \(seconds) s", metadata: who(UInt32(i)))
            redis?.event("silent", device: s.clientID, [("seconds", seconds)])
        }
        counters.set(.silentDevices, silent)
    }

    /// A PUBLISH arrived: stamp it, and end a reported silence.
    func spoke(_ slot: UInt32, _ s: Session) {
        let now = nowTick32
        if s.silentReported {
            s.silentReported = false
            let seconds = silence(s, now)
            logger.info("silent_end: PUBLISH after \(seconds) s", metadata: who(slot))
            redis?.event("silent_end", device: s.clientID, [("seconds", seconds)])
        }
        s.lastPublish = now
    }

    /// Whole seconds since the session's last PUBLISH, for logs and events.
    private func silence(_ s: Session, _ now: UInt32) -> String {
        String(UInt64(now &- s.lastPublish) * Shard.tickMillis / 1000)
    }

    /// How often `reviewSilence` runs: a tenth of the threshold, 1 to 30 s.
    var silenceReviewTicks: UInt64 { ticks(seconds: min(30, max(1, config.devices.silentSeconds / 10))) }
}
