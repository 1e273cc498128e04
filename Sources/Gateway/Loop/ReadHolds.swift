import MQTTCodec
import PileLoop

/// Connections paused by Redis backpressure, to resume when the bridge has room
/// again (a list, so resuming does not walk the slab).
struct ReadHolds {
    private var paused: [(slot: UInt32, generation: UInt32)] = []

    var hasPaused: Bool { !paused.isEmpty }

    mutating func add(_ slot: UInt32, _ generation: UInt32) { paused.append((slot, generation)) }

    /// Every paused connection, emptying the list (keeping its capacity).
    mutating func takeAll(into list: inout [(slot: UInt32, generation: UInt32)]) {
        swap(&paused, &list)
        paused.removeAll(keepingCapacity: true)
    }
}

/// When a connection is not read: stopping the multishot receive is how pilegate
/// says "not now" to a pile, and TCP carries it back. Two kinds of stop:
/// - paused (`Connection.paused`): the Redis pipeline is full or Redis is away;
///   every paused connection resumes when the bridge has room again;
/// - held (`Connection.throttled`): by one connection's own reason (a throttle
///   rate rule, the in-flight bound, a CONNECT waiting for its connect-rate slot
///   or its credentials), ended by a wheel entry or by whoever set it.
/// Bytes already received meanwhile wait in `inbound`, and are parsed on resume.
extension Shard {
    // MARK: Backpressure

    /// Must this PUBLISH wait because the Redis pipeline is full or Redis is away?
    func mustWaitForRedis(_ p: Publish) -> Bool {
        guard let redis, !redis.canAccept else { return false }
        return !(p.qos == .atMostOnce && config.redis.qos0Overload == .drop)
    }

    /// Stop reading this connection: TCP pushes back to the pile, nothing is lost,
    /// QoS 1/2 stay unacknowledged.
    func pause(_ slot: UInt32) {
        guard !slab[Int(slot)].paused else { return }
        slab[Int(slot)].paused = true
        holds.add(slot, slab[Int(slot)].generation)
        counters.add(.backpressurePauses)
        stopReading(slot)
    }

    func resumePaused() {
        var list: [(slot: UInt32, generation: UInt32)] = []
        holds.takeAll(into: &list)
        for (slot, gen) in list where isCurrent(slot, gen) && slab[Int(slot)].paused && slab[Int(slot)].isOpen {
            slab[Int(slot)].paused = false
            resumeReading(slot)
        }
    }

    // MARK: Holds

    /// Stop reading until whoever set the hold ends it.
    func holdReading(_ slot: UInt32) {
        slab[Int(slot)].throttled = true
        stopReading(slot)
    }

    /// Stop reading for `nanos` (rounded up to the wheel's tick); `endHold` resumes.
    func hold(_ slot: UInt32, nanos: UInt64) {
        holdReading(slot)
        schedule(slot, at: tick(afterMillis: (nanos + 999_999) / 1_000_000))   // from the clock: never early
    }

    /// A hold ended (its wheel entry fired, or Redis stored enough of the pile's
    /// PUBLISHes): finish a delayed CONNECT, or read on, and re-arm the keepalive.
    func endHold(_ slot: UInt32) {
        slab[Int(slot)].throttled = false
        if let c = waits.rateSlot.removeValue(forKey: slot) {
            authorizeAndAttach(slot, c)
        } else if slab[Int(slot)].state == .connected && slab[Int(slot)].keepAlive > 0 {
            schedule(slot, at: keepaliveDue(Int(slot)))
        }
        if slab[Int(slot)].state == .connected { resumeReading(slot) }
    }

    // MARK: Reading off and on

    /// Cancel the connection's multishot recv (bytes already in flight are kept in
    /// `inbound`); reading starts again through `rearm` once nothing holds it.
    func stopReading(_ slot: UInt32) {
        if slab[Int(slot)].recvArmed {
            ring.cancel(tag: tag(Op.recv, slot), tag: tag(Op.cancel, slot))
            slab[Int(slot)].pendingOps += 1
        }
    }

    /// Open, and neither paused (Redis) nor held (rate rule, in-flight bound, CONNECT slot).
    func isReadable(_ slot: UInt32) -> Bool {
        slab[Int(slot)].isOpen && !slab[Int(slot)].paused && !slab[Int(slot)].throttled
    }

    /// Read again: parse what arrived meanwhile, then re-arm the recv.
    func resumeReading(_ slot: UInt32) {
        guard isReadable(slot) else { return }
        slab[Int(slot)].lastSeen = nowTick32   // we were not reading: not the pile's silence
        drainInbound(slot)
        if isReadable(slot) && !slab[Int(slot)].recvArmed { rearm.append(slot) }
    }
}
