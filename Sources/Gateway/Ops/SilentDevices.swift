/// Silent devices (`devices.silent_seconds`): a pile that keeps its connection
/// but stops publishing is reported once, and again when it speaks. Reviewed from
/// the shard's tick; the hot path only stamps `Session.lastPublish`.
extension Shard {
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
