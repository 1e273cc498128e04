import PileLoop

/// Per-connection deadlines on the shard's timing wheel: one entry per connection,
/// moved by scheduling again (CONNECT deadline, TLS handshake, keepalive, or the end
/// of a read hold), driven by the loop's single tick (`tickMillis`).
extension Shard {
    var currentTick: UInt64 { (monotonicMillis() - ctx.startedAt) / Shard.tickMillis }
    var nowTick32: UInt32 { UInt32(truncatingIfNeeded: wheel.now) }
    func ticks(seconds: Int) -> UInt64 { UInt64(seconds) * 1000 / Shard.tickMillis }

    /// The first tick at or after `seconds` from now, counted from the clock rather
    /// than from the wheel's last tick (which lags it by up to a tick): a deadline
    /// set with it never fires early and at most one tick late.
    func tick(afterSeconds seconds: Int) -> UInt64 { tick(afterMillis: UInt64(seconds) * 1000) }

    func tick(afterMillis delay: UInt64) -> UInt64 {
        let ms = monotonicMillis() - ctx.startedAt + delay
        return (ms + Shard.tickMillis - 1) / Shard.tickMillis
    }

    /// (Re)schedule the connection's one wheel entry.
    func schedule(_ slot: UInt32, at tick: UInt64) {
        wheel.schedule(slot: slot, at: tick)
    }

    /// A wheel entry fired: the deadline it stood for has passed.
    func deadline(_ e: TimingWheel.Entry) {
        let s = Int(e.slot)
        // The slot's one entry: moved by each schedule, cancelled when the slot is freed.
        guard s < slab.count else { return }
        if slab[s].throttled && slab[s].isOpen && waits.credentials[e.slot] == nil { return endHold(e.slot) }
        switch slab[s].state {
        case .awaitingConnect where slab[s].tls?.handshakeDone == false:
            counters.add(.tlsHandshakeTimeouts)
            logger.info("closing connection: TLS handshake not done within \(config.tls.handshakeTimeout) s", metadata: who(e.slot))
            close(e.slot, .tlsHandshakeTimeout)
        case .awaitingConnect, .awaitingTakeover:
            counters.add(.connectTimeouts)
            logger.info("closing connection: no CONNECT within \(config.mqtt.connectTimeout) s")
            close(e.slot, .connectTimeout)
        case .connected:
            let stall = sendStallDue(s)
            if let stall, wheel.now >= stall {
                let waiting = buffered(e.slot).unsent
                logger.notice("closing connection: it has read nothing for \(config.mqtt.sendStallTimeout) s (mqtt.send_stall_timeout) with \(waiting) bytes waiting", metadata: who(e.slot))
                return close(e.slot, .sendStalled)
            }
            var next = stall
            let ka = slab[s].keepAlive
            if ka > 0 {
                // 1.5 x keepalive without any packet (3.1.2.10)
                let due = keepaliveDue(s)
                if slab[s].paused {
                    next = wheel.now + UInt64(ka) * 1000 / Shard.tickMillis   // not the pile's fault
                } else if wheel.now >= due {
                    counters.add(.keepaliveExpiries)
                    return close(e.slot, .keepalive)
                } else {
                    next = min(due, stall ?? due)
                }
            }
            if let next { schedule(e.slot, at: next) }
        case .closing:
            tearDown(e.slot)   // a flush that did not finish in time (Close.swift)
        case .free:
            return
        }
    }

    /// Tick at which the send in flight has made no progress for `mqtt.send_stall_timeout`
    /// (nil: nothing in flight, or the policy is off).
    func sendStallDue(_ s: Int) -> UInt64? {
        let timeout = config.mqtt.sendStallTimeout
        guard timeout > 0, slab[s].sending else { return nil }
        return wheel.now - UInt64(nowTick32 &- slab[s].sendSince) + ticks(seconds: timeout)
    }

    /// More output while a send is still out: make sure the connection's wheel entry
    /// comes no later than its stall deadline. One entry per connection, so this only
    /// moves it earlier (at most once per stall period); not while a hold owns the entry.
    func watchSendStall(_ slot: UInt32) {
        let s = Int(slot)
        guard slab[s].state == .connected, !slab[s].throttled, let due = sendStallDue(s) else { return }
        if let entry = wheel.deadline(of: slot), entry <= due { return }
        schedule(slot, at: due)
    }

    /// Tick at which 1.5 x keepalive without a packet has passed (3.1.2.10).
    func keepaliveDue(_ s: Int) -> UInt64 {
        // lastSeen is the low 32 bits of a tick at most 1.5 x 65535 s old: rebuild it.
        let last = wheel.now - UInt64(nowTick32 &- slab[s].lastSeen)
        return last + UInt64(slab[s].keepAlive) * 1500 / Shard.tickMillis
    }
}
