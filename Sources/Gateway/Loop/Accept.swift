import Glibc
import PileLoop

/// The listening side of one shard: the free slots of its ring's fixed-file
/// table, the accepts armed on each listener, and the peer-address buffer each
/// armed accept writes into (its index rides in the accept's tag; listener l
/// owns indexes l * depth ..< (l + 1) * depth).
struct Acceptor {
    /// Accepts kept waiting on each listening socket.
    static let depth = 32
    /// Plain MQTT, then TLS when configured.
    let listeners: [Int32]
    /// Per listener: connections start with a PROXY protocol v2 header.
    let proxied: [Bool]
    /// Off while a spill shard is not needed, or once the server stops.
    var enabled = true
    /// Not re-armed while the connect-rate queue is full (`ConnectGuard.queueIsFull`).
    var heldByRate = false
    private var armed: [Int]
    private var freeFiles: [UInt32]
    private var freeAddrs: [[UInt32]]
    private let addrs: UnsafeMutablePointer<sockaddr_storage>
    private let lens: UnsafeMutablePointer<socklen_t>

    init(listeners: [Int32], proxied: [Bool], tableSize: Int) {
        self.listeners = listeners
        self.proxied = proxied
        armed = listeners.map { _ in 0 }
        freeFiles = (0..<UInt32(tableSize)).reversed()
        freeAddrs = listeners.indices.map { l in
            Array((UInt32(l * Acceptor.depth)..<UInt32((l + 1) * Acceptor.depth)).reversed())
        }
        addrs = .allocate(capacity: listeners.count * Acceptor.depth)
        lens = .allocate(capacity: listeners.count * Acceptor.depth)
    }

    /// Keep `depth` single-shot accepts waiting, each naming a free slot of the
    /// ring's fixed-file table. A multishot accept into an auto-allocated slot would
    /// drain the whole listen queue in one pass and, once the table is full, could
    /// only close what it had accepted; this way a full shard simply stops asking
    /// and the other shards take the connections.
    mutating func arm(_ ring: Ring) {
        for l in listeners.indices {
            while enabled && armed[l] < Acceptor.depth, let file = freeFiles.popLast() {
                let a = freeAddrs[l].removeLast()
                lens[Int(a)] = socklen_t(MemoryLayout<sockaddr_storage>.size)
                (addrs + Int(a)).withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    ring.acceptDirect(listenFD: listeners[l], file: file, addr: $0, addrLen: lens + Int(a),
                                      tag: Tag(op: Op.accept, slot: file, generation: a).raw)
                }
                armed[l] += 1
            }
        }
    }

    func cancel(_ ring: Ring) {
        for fd in listeners { ring.cancelAll(fd: fd, tag: Tag(op: Op.cancel, slot: UInt32.max, generation: 0).raw) }
    }

    /// An accept completed: its listener, fixed-file slot and peer. Its address
    /// buffer is free again; so is the slot when the accept failed.
    mutating func completed(_ c: Completion) -> (listener: Int, file: UInt32, peer: Peer) {
        let tag = Tag(c.userData)
        let l = Int(tag.generation) / Acceptor.depth
        armed[l] -= 1
        freeAddrs[l].append(tag.generation)
        if c.res < 0 { freeFiles.append(tag.slot) }
        return (l, tag.slot, c.res < 0 ? Peer() : Peer(addrs + Int(tag.generation)))
    }

    /// A closed connection's fixed-file slot.
    mutating func release(file: UInt32) { freeFiles.append(file) }

    var isArmed: Bool { armed.contains { $0 > 0 } }
    /// Every slot of the table holds a connection.
    var isFull: Bool { freeFiles.isEmpty && !isArmed }
}

extension Shard {
    /// Accepts are not re-armed while the node's connect queue is full
    /// (limits.over_rate = "wait"): the piles over the rate wait in the listen queue.
    /// The tick tries again.
    func armAccepts() {
        guard !stopping else { return }
        if ctx.connectGuard.queueIsFull() {
            if !acceptor.heldByRate {
                acceptor.heldByRate = true
                counters.add(.acceptRatePauses)
                logger.debug("connect queue full (limits.over_rate = \"wait\"): this shard stops accepting for now")
            }
            return
        }
        acceptor.heldByRate = false
        acceptor.arm(ring)
    }

    func cancelAccepts() { acceptor.cancel(ring) }

    func onAccept(_ c: Completion) {
        let (l, file, peer) = acceptor.completed(c)
        if c.res >= 0 {
            let slot = allocate(file: Int32(file))
            slab[Int(slot)].peer = peer
            if l == 1, let tls = policy.tls { slab[Int(slot)].tls = TLSSession(tls) }
            slab[Int(slot)].awaitingProxy = acceptor.proxied[l]
            counters.add(.connectionsAccepted)
            if stopping || ctx.live.add() > config.server.maxConnections {
                counters.add(.connectionsOverLimit)
                logger.warning("closing connection: over max_connections (\(config.server.maxConnections))")
                close(slot, .overLimit)
            } else if l == 1 && slab[Int(slot)].tls == nil {
                counters.add(.tlsFailures)
                logger.error("closing connection: SSL_new failed: \(TLSSession.lastError())")
                close(slot, .tlsError)
            } else if slab[Int(slot)].awaitingProxy || admitPeer(slot) {   // behind a balancer: once the header names the peer
                armRecv(slot)
                let deadline = l == 1 ? min(config.tls.handshakeTimeout, config.mqtt.connectTimeout) : config.mqtt.connectTimeout
                schedule(slot, at: tick(afterSeconds: deadline))
            }
        } else if c.res == -EINVAL {
            acceptor.enabled = false   // the listener was shut down: the server is stopping
        } else if c.res != -ECANCELED && !stopping {
            logger.warning("accept failed: \(String(cString: strerror(-c.res)))")
        }
        if acceptor.isFull {
            counters.add(.acceptPauses)
            logger.debug("fixed-file table full (\(ctx.fileTableSize)): this shard stops accepting")
        }
        armAccepts()
    }

    /// The per-IP limits, for the peer the socket (or its PROXY header) names;
    /// false: refused and closed.
    func admitPeer(_ slot: UInt32) -> Bool {
        if let d = ctx.connectGuard.accepted(slab[Int(slot)].peer, now: monotonicNanos()) {
            denied(slot, d, d == .ipBanned ? "IP banned for repeated authentication failures"
                                          : "over max_connections_per_ip (\(config.limits.maxConnectionsPerIP))")
            close(slot, .overLimit)
            return false
        }
        slab[Int(slot)].ipCounted = ctx.connectGuard.tracks(slab[Int(slot)].peer)
        return true
    }

    /// Should this shard take new connections? A primary shard always does. A spill
    /// shard does once every shard before it is within two accept batches of full:
    /// more threads than cores would only add lock convoys and cross-shard hops, so
    /// extra rings are filled in order, as fixed-file capacity demands.
    var wantsConnections: Bool {
        if index < ctx.primaryShards { return true }
        let nearlyFull = ctx.fileTableSize - 2 * Acceptor.depth
        return (0..<index).allSatisfy { ctx.occupancy[$0].current >= nearlyFull }
    }

    /// Re-evaluated every tick by spill shards.
    func reviewAccepting() {
        let want = wantsConnections
        if want && !acceptor.enabled {
            acceptor.enabled = true
            logger.debug("spill shard starts accepting")
            armAccepts()
        } else if !want {
            if acceptor.enabled && acceptor.isArmed { cancelAccepts() }
            acceptor.enabled = false
        }
    }

    /// A slab entry for a new connection in fixed-file slot `file`.
    private func allocate(file: Int32) -> UInt32 {
        let slot: UInt32
        if let s = freeSlots.popLast() { slot = s } else {
            slot = UInt32(slab.count)
            slab.append(Connection())
        }
        let gen = slab[Int(slot)].generation
        slab[Int(slot)] = Connection()
        slab[Int(slot)].generation = gen
        slab[Int(slot)].state = .awaitingConnect
        slab[Int(slot)].file = file
        slab[Int(slot)].lastSeen = nowTick32
        openSlots += 1
        _ = ctx.occupancy[index].add()
        return slot
    }
}
