import Glibc
import MQTTCodec
import PileLoop

/// A connection's bytes in and out: the multishot receive, the PROXY header and
/// TLS in front of MQTT, reassembly of a packet that straddles receive buffers,
/// and the send queue flushed once per loop turn (one send in flight, so bytes
/// stay in order).
extension Shard {
    // MARK: Receive

    func armRecv(_ slot: UInt32) {
        ring.recvMultishot(fixed: slab[Int(slot)].file, bufferGroup: Shard.recvGroup, tag: tag(Op.recv, slot))
        slab[Int(slot)].recvArmed = true
        slab[Int(slot)].pendingOps += 1
    }

    func onRecv(_ slot: UInt32, _ c: Completion) {
        if !c.more {
            slab[Int(slot)].recvArmed = false
            slab[Int(slot)].pendingOps -= 1
        }
        if c.res > 0, let id = c.bufferID {
            counters.add(.bytesIn, UInt64(c.res))
            if slab[Int(slot)].isOpen {
                if slab[Int(slot)].awaitingProxy {
                    proxyReceived(slot, buffers.bytes(id, Int(c.res)))
                } else {
                    ingest(slot, buffers.bytes(id, Int(c.res)))
                }
            }
            buffers.recycle(id)
            if !c.more && slab[Int(slot)].isOpen { rearm.append(slot) }
        } else if c.res == 0 {
            close(slot, .peerClosed)
        } else if c.res == -ENOBUFS {
            // Buffer ring ran dry; buffers come back this turn, so re-arm then.
            if slab[Int(slot)].isOpen { rearm.append(slot) }
        } else if c.res == -ECANCELED {
            // Cancelled to stop reading, and reading may have resumed since.
            if !c.more && isReadable(slot) { rearm.append(slot) }
        } else {
            socketError(slot, "recv", c.res)
        }
        opDone(slot)
    }

    /// Bytes from the socket after any PROXY header: through TLS, or straight to MQTT.
    private func ingest(_ slot: UInt32, _ bytes: UnsafeRawBufferPointer) {
        if slab[Int(slot)].tls != nil { tlsReceived(slot, bytes) } else { received(slot, bytes) }
    }

    /// The PROXY v2 header, which may arrive over several receives (kept in
    /// `inbound` meanwhile, a rare path, hence the copy).
    private func proxyReceived(_ slot: UInt32, _ bytes: UnsafeRawBufferPointer) {
        guard !buffered(slot).inbound.isEmpty else { return proxyParsed(slot, bytes) }
        let b = buffers(slot)
        io[b].inbound.append(bytes)
        let all = Array(io[b].inbound.bytes)
        io[b].inbound.clear()
        settleBuffers(slot)
        all.withUnsafeBytes { proxyParsed(slot, $0) }
    }

    private func proxyParsed(_ slot: UInt32, _ bytes: UnsafeRawBufferPointer) {
        switch ProxyHeader.parse(bytes) {
        case .incomplete:
            let b = buffers(slot)
            io[b].inbound.append(bytes)
        case .invalid(let why):
            counters.add(.proxyHeaderErrors)
            logger.warning("closing connection: bad PROXY protocol header: \(why)", metadata: who(slot))
            close(slot, .badProxyHeader)
        case .header(let length, let source):
            slab[Int(slot)].awaitingProxy = false
            if let source { slab[Int(slot)].peer = source }
            guard admitPeer(slot) else { return }
            if length < bytes.count { ingest(slot, UnsafeRawBufferPointer(rebasing: bytes[length...])) }
        }
    }

    /// Ciphertext from a TLS pile: advance the handshake, decode what decrypts.
    private func tlsReceived(_ slot: UInt32, _ bytes: UnsafeRawBufferPointer) {
        guard let tls = slab[Int(slot)].tls else { return }
        let wasDone = tls.handshakeDone
        let progress = tls.receive(bytes, scratch: tlsScratch) { plain in
            if slab[Int(slot)].isOpen { received(slot, plain) }
        }
        if !wasDone && tls.handshakeDone {
            counters.add(.tlsHandshakes)
            logger.debug("TLS handshake done (\(tls.version))", metadata: who(slot))
            // The handshake deadline becomes the CONNECT deadline (unless CONNECT came with it).
            if slab[Int(slot)].state == .awaitingConnect && !slab[Int(slot)].throttled {
                schedule(slot, at: tick(afterSeconds: config.mqtt.connectTimeout))
            }
        }
        switch progress {
        case .ok:
            break
        case .failed(let why):
            counters.add(.tlsFailures)
            logger.info("closing connection: TLS: \(why)", metadata: who(slot))
            close(slot, .tlsError, flush: true)   // the alert goes out first
        case .closed:
            close(slot, .peerClosed)
        }
        if tls.pendingOutput > 0 && !slab[Int(slot)].tornDown { markDirty(slot) }
    }

    /// Feed received bytes to the decoder. A packet that straddles buffers is the
    /// only thing copied, into the connection's reassembly buffer.
    private func received(_ slot: UInt32, _ bytes: UnsafeRawBufferPointer) {
        let waiting = slab[Int(slot)].state == .awaitingTakeover || !isReadable(slot)
        if waiting || !buffered(slot).inbound.isEmpty {
            let b = buffers(slot)
            io[b].inbound.append(bytes)
            if waiting {
                // Only what was in flight before the recv was cancelled (or before
                // CONNACK) lands here: a few buffers at most.
                if io[b].inbound.count > config.mqtt.maxPacketSize + 4 * config.server.recvBufferSize {
                    protocolViolation(slot, "too many bytes while not being read")
                }
                return
            }
            drainInbound(slot)
            return
        }
        let used = consume(slot, bytes)
        if used < bytes.count && slab[Int(slot)].isOpen {
            let b = buffers(slot)
            io[b].inbound.append(UnsafeRawBufferPointer(rebasing: bytes[used...]))
        }
    }

    /// Parse what the reassembly buffer holds (after more bytes or a resumed CONNECT).
    func drainInbound(_ slot: UInt32) {
        let b = slab[Int(slot)].buffers
        // Handlers may take pool entries meanwhile: the bytes are malloc's, they stay put.
        let used = consume(slot, io[b].inbound.bytes)
        if !slab[Int(slot)].isOpen {
            return
        }
        io[b].inbound.consume(used)
        if io[b].inbound.isEmpty { settleBuffers(slot) }
    }

    /// Decode and handle packets until the bytes run out or the connection stops
    /// taking packets; returns how many bytes were used.


    /// Encode a packet into the connection's send buffer; it goes out at the end
    /// of this loop turn with everything else queued for the connection.
    func send(_ slot: UInt32, _ packet: Packet) {
        let size = Encoder.size(of: packet)
        let b = buffers(slot)
        io[b].outbound.reserve(size)
        Encoder.encode(packet, into: &io[b].outbound)
        counters.packet(.out, packet.type, bytes: size)
        slab[Int(slot)].session?.countOut(size, overhead: overhead(slot), today: today)
        markDirty(slot)
    }

    func markDirty(_ slot: UInt32) {
        if !slab[Int(slot)].dirty {
            slab[Int(slot)].dirty = true
            dirty.append(slot)
        }
    }

    /// The slot's buffers to write into: its pool entry, taken on first use.
    func buffers(_ slot: UInt32) -> UInt32 {
        if slab[Int(slot)].buffers == 0 { slab[Int(slot)].buffers = io.take() }
        return slab[Int(slot)].buffers
    }

    /// The slot's buffers to read (the empty entry 0 while it has none).
    func buffered(_ slot: UInt32) -> ConnectionBuffers { io[slab[Int(slot)].buffers] }

    /// Give the slot's entry back once none of its buffers holds bytes.
    func settleBuffers(_ slot: UInt32) {
        let b = slab[Int(slot)].buffers
        if b != 0 && io[b].isDrained {
            io.give(b)
            slab[Int(slot)].buffers = 0
        }
    }

    /// Bytes queued for the pile: encoded packets, or on TLS ciphertext the
    /// handshake produced.
    func hasOutput(_ slot: UInt32) -> Bool {
        !buffered(slot).outbound.isEmpty || (slab[Int(slot)].tls?.pendingOutput ?? 0) > 0
    }

    func startSend(_ slot: UInt32) {
        if let tls = slab[Int(slot)].tls {
            // Encrypt what is queued; send the ciphertext from inFlight.
            let b = buffers(slot)
            io[b].inFlight.clear()
            guard tls.write(io[b].outbound.bytes) else {
                counters.add(.tlsFailures)
                logger.info("closing connection: TLS: SSL_write: \(TLSSession.lastError())", metadata: who(slot))
                close(slot, .tlsError)
                return tearDown(slot)   // also when it was already closing (flushing a refusal)
            }
            io[b].outbound.clear()
            if slab[Int(slot)].closeAfterFlush { tls.shutdown() }   // close_notify after the last record
            tls.takeOutput(into: &io[b].inFlight)
            if !io[b].inFlight.isEmpty {
                submitSend(slot)
            } else if slab[Int(slot)].closeAfterFlush {
                tearDown(slot)
            }
            return
        }
        io[slab[Int(slot)].buffers].flip()   // hasOutput: the entry is taken
        submitSend(slot)
    }

    private func submitSend(_ slot: UInt32) {
        let b = buffered(slot).inFlight
        ring.send(fixed: slab[Int(slot)].file, b.base!, b.count, tag: tag(Op.send, slot))
        slab[Int(slot)].sending = true
        slab[Int(slot)].sendSince = nowTick32
        slab[Int(slot)].pendingOps += 1
    }

    func onSend(_ slot: UInt32, _ c: Completion) {
        slab[Int(slot)].sending = false
        slab[Int(slot)].pendingOps -= 1
        if slab[Int(slot)].tornDown || c.res == -ECANCELED {
            return opDone(slot)
        }
        if c.res < 0 {
            socketError(slot, "send", c.res)
            return opDone(slot)
        }
        counters.add(.bytesOut, UInt64(c.res))
        let b = slab[Int(slot)].buffers
        if Int(c.res) < io[b].inFlight.count {
            io[b].inFlight.consume(Int(c.res))
            submitSend(slot)
            return
        }
        io[b].inFlight.clear()
        if hasOutput(slot) {
            startSend(slot)
        } else {
            // Drained: an idle connection keeps no send memory (its pool entry goes back).
            settleBuffers(slot)
            if slab[Int(slot)].closeAfterFlush { tearDown(slot) }
        }
    }
}
