import Glibc
import Logging
import MQTTCodec
import PileLoop

/// The end of a connection: will, session hand-back, one log line and counters,
/// then the socket torn down and the slot freed once the kernel owes it nothing.
extension Shard {

    /// End a connection: will, session hand-back, counters and one log line happen
    /// now; the socket is torn down now, or after the send queue drains (within a
    /// second) when `flush` is set (CONNACK refusals, a TLS close_notify).
    func close(_ slot: UInt32, _ reason: CloseReason, flush: Bool = false) {
        guard slab[Int(slot)].isOpen else { return }
        // A TLS peer gets close_notify before the socket goes (OpenSSL 3 peers report a
        // bare EOF as an error). A flushing close sends it after what is queued
        // (`startSend`); with nothing queued it is the one thing left to send.
        var flush = flush
        if let tls = slab[Int(slot)].tls, tls.handshakeDone, reason.sendsCloseNotify {
            if !hasOutput(slot) { tls.shutdown() }
            flush = true
        }
        let was = slab[Int(slot)].state
        slab[Int(slot)].state = .closing
        ctx.live.remove()
        counters.add(.connectionsClosed)
        counters.closed(reason)
        if slab[Int(slot)].ipCounted {
            slab[Int(slot)].ipCounted = false
            ctx.connectGuard.closed(slab[Int(slot)].peer)
        }
        let waitingID = waits.forget(slot)
        let owner = Owner(shard: index, slot: slot, generation: slab[Int(slot)].generation)
        let will = wills.removeValue(forKey: slot)
        if was == .connected, let session = slab[Int(slot)].session {
            counters.subtract(.clientsConnected)
            if reason.publishesWill, let will {
                counters.add(.willsPublished)
                let m = Message(topic: will.topic, payload: will.payload, qos: will.qos, retain: will.retain)
                fanOut(m)
                if let redis {
                    redis.xadd(m, device: session.clientID, expect: .will)
                    redis.event("will", device: session.clientID, [("topic", will.topic)])
                }
            }
            if let redis {
                flushTraffic(session, redis)
                redis.absent(session.clientID, since: session.connectedAtMs, sessionKept: session.persistent)
                if !redis.event("disconnect", device: session.clientID, [("reason", reason.eventReason)]) {
                    counters.add(.bookkeepingDropped)
                }
            }
            reportDrops(slot, session, away: false)
            connectionLeft(session)
            broker.detach(session, owner: owner)
            logger.info("disconnected: \(reason.rawValue)", metadata: who(slot))
        } else if was == .awaitingTakeover, let waitingID {
            broker.abandonConnect(clientID: waitingID, owner: owner)
        }
        slab[Int(slot)].session = nil
        if flush && (slab[Int(slot)].sending || hasOutput(slot)) {
            slab[Int(slot)].closeAfterFlush = true
            markDirty(slot)
            // A peer that does not read could hold the last send (and the slot) for as
            // long as TCP retransmits: it gets a second, then the socket goes anyway.
            schedule(slot, at: tick(afterSeconds: 1))
        } else {
            tearDown(slot)
        }
    }

    /// Cancel what the kernel still has for this socket (its multishot recv, a send
    /// in flight) by user_data, then close the direct descriptor. Hard-linked: the
    /// close runs even when there was nothing to cancel. (Cancelling by file instead
    /// makes the kernel scan every request armed on the ring: with 19k piles per
    /// ring, closing them all cost 27 s of CPU for 200k.)
    func tearDown(_ slot: UInt32) {
        guard !slab[Int(slot)].tornDown else { return }
        slab[Int(slot)].tornDown = true
        ring.reserve(3)   // one submission: a link must not be split
        var ops: UInt16 = 1
        if slab[Int(slot)].recvArmed {
            ring.cancel(tag: tag(Op.recv, slot), tag: tag(Op.cancel, slot), hardLink: true)
            ops += 1
        }
        if slab[Int(slot)].sending {
            ring.cancel(tag: tag(Op.send, slot), tag: tag(Op.cancel, slot), hardLink: true)
            ops += 1
        }
        ring.closeDirect(UInt32(slab[Int(slot)].file), tag: tag(Op.close, slot))
        slab[Int(slot)].pendingOps += ops
    }

    /// One of the slot's operations finished; free the slot when nothing is owed.
    func opDone(_ slot: UInt32) {
        let c = slab[Int(slot)]
        guard c.state == .closing, c.tornDown, c.pendingOps == 0 else { return }
        if c.buffers != 0 {
            io[c.buffers].clear()
            settleBuffers(slot)
        }
        slab[Int(slot)].tls = nil
        slab[Int(slot)].state = .free
        slab[Int(slot)].generation = (c.generation + 1) & 0xFF_FFFF
        wheel.cancel(slot)
        freeSlots.append(slot)
        acceptor.release(file: UInt32(c.file))
        openSlots -= 1
        ctx.occupancy[index].remove()
        armAccepts()
    }

    func socketError(_ slot: UInt32, _ op: String, _ res: Int32) {
        // Flushing a refusal to a pile that already left: nothing more to send.
        if slab[Int(slot)].state == .closing { return tearDown(slot) }
        logger.info("closing connection: \(op) failed: \(String(cString: strerror(-res)))",
                    metadata: who(slot))
        close(slot, .ioError)
    }

    func malformed(_ slot: UInt32, _ error: DecodeError) {
        counters.add(.malformedPackets)
        logger.warning("closing connection: malformed packet: \(error.description)",
                       metadata: who(slot))
        close(slot, .malformed)
    }

    func protocolViolation(_ slot: UInt32, _ why: String) {
        counters.add(.protocolViolations)
        logger.warning("closing connection: protocol violation: \(why)",
                       metadata: who(slot))
        close(slot, .protocolError)
    }

    /// For log lines: the client id once known.
    func clientID(_ slot: UInt32) -> String {
        slab[Int(slot)].session?.clientID ?? waits.clientID(slot) ?? "-"
    }

    /// Log metadata naming a connection: client id and peer address.
    func who(_ slot: UInt32) -> Logger.Metadata {
        ["client": "\(clientID(slot))", "peer": "\(slab[Int(slot)].peer)"]
    }
}
