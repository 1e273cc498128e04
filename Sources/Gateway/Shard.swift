import Atomics
import CURing
import Glibc
import Logging
import MQTTCodec
import PileLoop

/// Messages between shards (and from the main thread), through each shard's inbox.
enum ShardMessage: Sendable {
    case deliver(Delivery)
    /// Close this connection (its client id was taken over, or a newer CONNECT won).
    case kick(slot: UInt32, generation: UInt32, reason: CloseReason)
    /// The previous holder of this connection's client id is gone: finish CONNECT.
    case resumeConnect(slot: UInt32, generation: UInt32)
    /// Admin API: describe one connection; list this shard's top clients by bytes today.
    case inspect(slot: UInt32, generation: UInt32, reply: Inbox<ClientInfo>)
    case top(Int, reply: Inbox<[ClientInfo]>)
    /// Close connected piles, `perTick` each 100 ms tick, so they reconnect elsewhere.
    case drain(perTick: Int)
    case shutdown
}

/// Operation codes in the user_data tag.
enum Op {
    static let accept: UInt8 = 1
    static let recv: UInt8 = 2
    static let send: UInt8 = 3
    static let cancel: UInt8 = 4
    static let close: UInt8 = 5
    static let timer: UInt8 = 6
    static let inbox: UInt8 = 7
    // Redis connections: the tag's slot is the connection id, its generation the
    // connection attempt, so completions for an abandoned socket are ignored.
    static let redisConnect: UInt8 = 8
    static let redisSend: UInt8 = 9
    static let redisRecv: UInt8 = 10
}

/// What every shard shares, handed to each shard thread.
struct ShardContext: Sendable {
    let config: Config
    let broker: Broker
    let inboxes: [Inbox<ShardMessage>]
    let counters: [Counters]
    let listenFD: Int32
    /// The TLS listener and its context (nil: no TLS listener).
    let tlsListenFD: Int32?
    let tls: TLSContext?
    /// Redis for the bridge (nil: bridge off).
    let redisAddress: SocketAddress?
    let authenticator: Authenticator
    let acl: ACL
    let connectGuard: ConnectGuard
    let rates: RateRules
    let fileTableSize: Int
    /// Live connections over all shards, for the max_connections limit.
    let live: LiveCount
    /// Open connections per shard, for the spill rule in `Shard.wantsConnections`.
    let occupancy: [LiveCount]
    /// Shards that always accept: one per core. The rest exist only for fixed-file
    /// capacity and take connections once the shards before them are full.
    let primaryShards: Int
    let startedAt: UInt64
}

/// One event loop: one thread, one io_uring, its own slab of connections. Shares
/// nothing with other shards except the Broker and the inboxes.
///
/// A loop turn: wait for completions, handle each (which queues replies into
/// connection send buffers), then `endTurn` re-arms receives, flushes every send
/// buffer touched this turn, returns receive buffers and posts cross-shard
/// deliveries. Packet handlers live in Handle*.swift, one file per packet type.
final class Shard {
    let index: Int
    let ctx: ShardContext
    let config: Config
    let broker: Broker
    let counters: Counters
    var logger: Logger
    let ring: Ring
    let buffers: BufferRing
    var wheel: TimingWheel
    /// The Redis bridge (nil when `[redis] enabled = false`), and on shard 0 the
    /// downlink command reader.
    var redis: RedisBridge?
    var downlink: Downlink?
    /// Connections paused by backpressure, resumed when the bridge has room again.
    private var paused: [(slot: UInt32, generation: UInt32)] = []
    var slab: [Connection] = []
    /// CONNECTs waiting for the previous holder of their client id to leave.
    var waitingConnects: [UInt32: (connect: Connect, role: UInt16)] = [:]
    /// The will (3.1.2.5) of each live connection that has one, by slot: few piles
    /// set one, so it is kept here rather than in every Session.
    var wills: [UInt32: Will] = [:]
    /// CONNECTs holding a connect-rate slot in the future (limits.over_rate = "wait").
    var delayedConnects: [UInt32: Connect] = [:]
    /// CONNECTs waiting for their user's credentials from Redis.
    var awaitingCredentials: [UInt32: Connect] = [:]
    /// Quota day (RateRules.day), refreshed every tick.
    var today: UInt32 = 0
    /// The traffic hash of the day last asked for (Accounting.swift).
    var trafficKeyCache: (day: UInt32, key: String) = (0, "")
    /// Where the traffic rollup's pass over the slab is, and the days it has written.
    var trafficCursor = 0
    var trafficDays: Set<UInt32> = []
    private var nextSilenceReview: UInt64 = 0
    private var freeSlots: [UInt32] = []
    private var dirty: [UInt32] = []
    private var rearm: [UInt32] = []
    /// Deliveries gathered this turn for other shards, posted at the end of the turn.
    var remote: [[Delivery]]
    /// This shard's own deliveries, swapped out of `remote` while they are made.
    var local: [Delivery] = []
    /// Fixed-file slots with no socket in them; an accept is only ever armed for one.
    private var freeFiles: [UInt32]
    /// Listening sockets: plain MQTT, then TLS when configured. Each keeps
    /// `acceptDepth` accepts armed.
    private let listeners: [Int32]
    /// Per listener: connections start with a PROXY protocol v2 header.
    private let proxied: [Bool]
    private var acceptsArmed: [Int]
    /// One peer-address buffer per armed accept; the buffer's index rides in the tag
    /// (listener l owns indexes l * acceptDepth ..< (l + 1) * acceptDepth).
    private let acceptAddrs = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 2 * Shard.acceptDepth)
    private let acceptLens = UnsafeMutablePointer<socklen_t>.allocate(capacity: 2 * Shard.acceptDepth)
    private var freeAddrs: [[UInt32]]
    /// Decrypted bytes of one TLS read, handed straight to the decoder.
    private let tlsScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16384, alignment: 16)
    /// Cancelling accepts (spill shard no longer needed, or shutdown): don't re-arm.
    private var acceptsEnabled = true
    /// Accepts kept waiting on the listening socket per shard.
    static let acceptDepth = 32
    private var stopping = false
    private var openSlots = 0
    private var inboxValue: UInt64 = 0
    private var inboxScratch: [ShardMessage] = []
    private var expired: [TimingWheel.Entry] = []
    private var timeout = __kernel_timespec(tv_sec: 0, tv_nsec: Int64(Shard.tickMillis) * 1_000_000)
    private var nextSys: UInt64 = 0
    private var nextSweep: UInt64 = 0
    /// Draining: connections to close per tick (0: not draining).
    var drainPerTick = 0
    var drainCursor = 0
    private var stopDeadline: UInt64 = 0
    static let tickMillis: UInt64 = 100
    static let recvGroup: UInt16 = 1

    init(index: Int, context: ShardContext, logger: Logger) throws {
        self.index = index
        ctx = context
        config = context.config
        broker = context.broker
        counters = context.counters[index]
        self.logger = logger
        self.logger[metadataKey: "shard"] = "\(index)"
        ring = try Ring(entries: UInt32(config.server.ringEntries))
        try ring.registerSparseFiles(UInt32(context.fileTableSize))
        buffers = try BufferRing(ring: ring, group: Shard.recvGroup, count: UInt32(config.server.recvBuffers),
                                 size: config.server.recvBufferSize)
        wheel = TimingWheel(buckets: 4096, startTick: (monotonicMillis() - context.startedAt) / Shard.tickMillis)
        remote = Array(repeating: [], count: context.inboxes.count)
        if let address = context.redisAddress {
            let bridge = RedisBridge(config: config, address: address, shard: index, ring: ring, counters: counters, logger: self.logger)
            redis = bridge
            if index == 0 { downlink = Downlink(config: config, address: address, ring: ring, logger: self.logger) }
        }
        // Never regrown (a copy of every connection) and untouched pages cost no RSS.
        slab.reserveCapacity(context.fileTableSize)
        freeFiles = (0..<UInt32(context.fileTableSize)).reversed()
        listeners = [context.listenFD] + (context.tlsListenFD.map { [$0] } ?? [])
        proxied = [context.config.listener.proxyProtocol, context.config.tls.proxyProtocol]
        acceptsArmed = listeners.map { _ in 0 }
        freeAddrs = listeners.indices.map { l in
            Array((UInt32(l * Shard.acceptDepth)..<UInt32((l + 1) * Shard.acceptDepth)).reversed())
        }
        today = context.rates.day(wallSeconds: Int64(wallMillis() / 1000))
    }

    var currentTick: UInt64 { (monotonicMillis() - ctx.startedAt) / Shard.tickMillis }
    var nowTick32: UInt32 { UInt32(truncatingIfNeeded: wheel.now) }
    func ticks(seconds: Int) -> UInt64 { UInt64(seconds) * 1000 / Shard.tickMillis }

    // MARK: The loop

    func run() {
        acceptsEnabled = wantsConnections
        redis?.connection.onReply = { [unowned self] e, r, t in self.redisReplied(e, r, waited: t) }
        downlink?.connection.onReply = { [unowned self] e, r, t in self.redisReplied(e, r, waited: t) }
        downlink?.connection.onState = { [unowned self] s in if s == .up { self.downlink?.start() } }
        redis?.connection.onState = { [unowned self] s in self.counters.set(.redisUp, s == .up ? 1 : 0) }
        redis?.connection.tick(nowMs: monotonicMillis())
        downlink?.connection.tick(nowMs: monotonicMillis())
        armAccepts()
        armInbox()
        ring.timeout(&timeout, tag: Tag(op: Op.timer, slot: 0, generation: 0).raw)
        var submitted = ring.submitted
        while !(stopping && openSlots == 0 && redisSettled) {
            ring.submitAndWait(1)
            // Since the last turn's wait: SQEs submitted early because the SQ filled count too.
            counters.sqesPerTurn.record(ring.submitted &- submitted)
            submitted = ring.submitted
            let now = monotonicNanos()
            redis?.connection.clock = now
            downlink?.connection.clock = now
            counters.cqesPerTurn.record(UInt64(ring.drainCompletions { c in self.complete(c) }))
            endTurn()
        }
        logger.debug("shard stopped")
    }

    /// At shutdown: what this shard sent Redis (last XADDs, disconnect events) has
    /// been answered, or Redis is away, or we have waited long enough.
    private var redisSettled: Bool {
        guard let r = redis?.connection, r.state == .up, r.unanswered > 0 else { return true }
        return monotonicMillis() > stopDeadline
    }

    private func complete(_ c: Completion) {
        let tag = Tag(c.userData)
        switch tag.op {
        case Op.accept: onAccept(c)
        case Op.recv: if valid(tag) { onRecv(tag.slot, c) }
        case Op.send: if valid(tag) { onSend(tag.slot, c) }
        case Op.cancel, Op.close:
            if valid(tag) {
                slab[Int(tag.slot)].pendingOps -= 1
                opDone(tag.slot)
            }
        case Op.timer: onTimer()
        case Op.inbox: onInbox(c)
        case Op.redisConnect, Op.redisSend, Op.redisRecv:
            let conn = tag.slot == 0 ? redis?.connection : downlink?.connection
            conn?.complete(op: tag.op, generation: tag.generation, res: c.res, nowMs: monotonicMillis())
        default: logger.error("completion with unknown op \(tag.op)")
        }
    }

    private func valid(_ tag: Tag) -> Bool {
        Int(tag.slot) < slab.count && slab[Int(tag.slot)].generation & 0xFF_FFFF == tag.generation
    }

    func tag(_ op: UInt8, _ slot: UInt32) -> UInt64 {
        Tag(op: op, slot: slot, generation: slab[Int(slot)].generation).raw
    }

    private func endTurn() {
        if !paused.isEmpty && redis?.canResume == true { resumePaused() }
        for slot in rearm where isReadable(slot) && !slab[Int(slot)].recvArmed {
            armRecv(slot)
        }
        rearm.removeAll(keepingCapacity: true)
        for slot in dirty {
            slab[Int(slot)].dirty = false
            if !slab[Int(slot)].sending && hasOutput(slot) && !slab[Int(slot)].tornDown {
                startSend(slot)
            }
        }
        dirty.removeAll(keepingCapacity: true)
        redis?.connection.flush()
        downlink?.connection.flush()
        buffers.publish()
        for s in remote.indices where !remote[s].isEmpty {
            ctx.inboxes[s].post(contentsOf: remote[s].lazy.map { ShardMessage.deliver($0) })
            remote[s].removeAll(keepingCapacity: true)
        }
    }

    // MARK: Accept

    /// Keep `acceptDepth` single-shot accepts waiting, each naming a free slot of this
    /// ring's fixed-file table. A multishot accept into an auto-allocated slot would
    /// drain the whole listen queue in one pass and, once the table is full, could
    /// only close what it had accepted; this way a full shard simply stops asking
    /// and the other shards take the connections.
    private func armAccepts() {
        for l in listeners.indices {
            while acceptsEnabled && acceptsArmed[l] < Shard.acceptDepth && !stopping, let file = freeFiles.popLast() {
                let a = freeAddrs[l].removeLast()
                acceptLens[Int(a)] = socklen_t(MemoryLayout<sockaddr_storage>.size)
                (acceptAddrs + Int(a)).withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    ring.acceptDirect(listenFD: listeners[l], file: file, addr: $0, addrLen: acceptLens + Int(a),
                                      tag: Tag(op: Op.accept, slot: file, generation: a).raw)
                }
                acceptsArmed[l] += 1
            }
        }
    }

    private func cancelAccepts() {
        for fd in listeners { ring.cancelAll(fd: fd, tag: Tag(op: Op.cancel, slot: UInt32.max, generation: 0).raw) }
    }

    private func onAccept(_ c: Completion) {
        let file = Tag(c.userData).slot
        let a = Tag(c.userData).generation
        let l = Int(a) / Shard.acceptDepth
        acceptsArmed[l] -= 1
        freeAddrs[l].append(a)
        if c.res >= 0 {
            let slot = allocate(file: Int32(file))
            slab[Int(slot)].peer = Peer(acceptAddrs + Int(a))
            if l == 1, let tls = ctx.tls { slab[Int(slot)].tls = TLSSession(tls) }
            slab[Int(slot)].awaitingProxy = proxied[l]
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
                schedule(slot, at: wheel.now + ticks(seconds: deadline))
            }
        } else {
            freeFiles.append(file)
            if c.res == -EINVAL {
                acceptsEnabled = false   // the listener was shut down: the server is stopping
            } else if c.res != -ECANCELED && !stopping {
                logger.warning("accept failed: \(String(cString: strerror(-c.res)))")
            }
        }
        if freeFiles.isEmpty && acceptsArmed.allSatisfy({ $0 == 0 }) {
            counters.add(.acceptPauses)
            logger.debug("fixed-file table full (\(ctx.fileTableSize)): this shard stops accepting")
        }
        armAccepts()
    }

    /// The per-IP limits, for the peer the socket (or its PROXY header) names;
    /// false: refused and closed.
    private func admitPeer(_ slot: UInt32) -> Bool {
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
    private var wantsConnections: Bool {
        if index < ctx.primaryShards { return true }
        let nearlyFull = ctx.fileTableSize - 2 * Shard.acceptDepth
        return (0..<index).allSatisfy { ctx.occupancy[$0].current >= nearlyFull }
    }

    /// Re-evaluated every tick by spill shards.
    private func reviewAccepting() {
        let want = wantsConnections
        if want && !acceptsEnabled {
            acceptsEnabled = true
            logger.debug("spill shard starts accepting")
            armAccepts()
        } else if !want {
            if acceptsEnabled && acceptsArmed.contains(where: { $0 > 0 }) { cancelAccepts() }
            acceptsEnabled = false
        }
    }

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

    // MARK: Receive

    private func armRecv(_ slot: UInt32) {
        ring.recvMultishot(fixed: slab[Int(slot)].file, bufferGroup: Shard.recvGroup, tag: tag(Op.recv, slot))
        slab[Int(slot)].recvArmed = true
        slab[Int(slot)].pendingOps += 1
    }

    private func onRecv(_ slot: UInt32, _ c: Completion) {
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
        guard !slab[Int(slot)].inbound.isEmpty else { return proxyParsed(slot, bytes) }
        slab[Int(slot)].inbound.append(bytes)
        let all = Array(slab[Int(slot)].inbound.bytes)
        slab[Int(slot)].inbound.release()
        all.withUnsafeBytes { proxyParsed(slot, $0) }
    }

    private func proxyParsed(_ slot: UInt32, _ bytes: UnsafeRawBufferPointer) {
        switch ProxyHeader.parse(bytes) {
        case .incomplete:
            slab[Int(slot)].inbound.append(bytes)
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
                schedule(slot, at: wheel.now + ticks(seconds: config.mqtt.connectTimeout))
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
        if waiting || !slab[Int(slot)].inbound.isEmpty {
            slab[Int(slot)].inbound.append(bytes)
            if waiting {
                // Only what was in flight before the recv was cancelled (or before
                // CONNACK) lands here: a few buffers at most.
                if slab[Int(slot)].inbound.count > config.mqtt.maxPacketSize + 4 * config.server.recvBufferSize {
                    protocolViolation(slot, "too many bytes while not being read")
                }
                return
            }
            drainInbound(slot)
            return
        }
        let used = consume(slot, bytes)
        if used < bytes.count && slab[Int(slot)].isOpen {
            slab[Int(slot)].inbound.append(UnsafeRawBufferPointer(rebasing: bytes[used...]))
        }
    }

    /// Parse what the reassembly buffer holds (after more bytes or a resumed CONNECT).
    func drainInbound(_ slot: UInt32) {
        let pending = slab[Int(slot)].inbound.bytes
        let used = consume(slot, pending)
        if !slab[Int(slot)].isOpen {
            return
        }
        slab[Int(slot)].inbound.consume(used)
        if slab[Int(slot)].inbound.isEmpty { slab[Int(slot)].inbound.release() }
    }

    /// Decode and handle packets until the bytes run out or the connection stops
    /// taking packets; returns how many bytes were used.
    private func consume(_ slot: UInt32, _ bytes: UnsafeRawBufferPointer) -> Int {
        var offset = 0
        while offset < bytes.count {
            let state = slab[Int(slot)].state
            guard state == .awaitingConnect || state == .connected, !slab[Int(slot)].throttled else { break }
            switch Decoder.decode(UnsafeRawBufferPointer(rebasing: bytes[offset...]),
                                  maxPacketSize: config.mqtt.maxPacketSize) {
            case .packet(let packet, let n):
                var handleIt = true
                if case .publish(let p) = packet, state == .connected {
                    if mustWaitForRedis(p) {
                        pause(slot)
                        return offset   // this PUBLISH is read again on resume
                    }
                    switch gatePublish(slot, p, size: n) {
                    case .pass: break
                    case .hold: return offset   // read again when the hold ends
                    case .dropped: handleIt = false
                    case .closed: return bytes.count
                    }
                }
                offset += n
                counters.packet(.in, packet.type, bytes: n)
                slab[Int(slot)].lastSeen = nowTick32
                if let s = slab[Int(slot)].session { s.countIn(n, overhead: overhead(slot), today: today) }
                if handleIt { handle(slot, packet) }
            case .incomplete:
                return offset
            case .failure(let error):
                if case .unacceptableProtocolLevel = error, state == .awaitingConnect {
                    refuseConnect(slot, .unacceptableProtocolVersion, why: error.description)
                } else {
                    malformed(slot, error)
                }
                return bytes.count
            }
        }
        return offset
    }

    /// One switch over packet types; each handler is in its own file.
    private func handle(_ slot: UInt32, _ packet: Packet) {
        if slab[Int(slot)].state == .awaitingConnect {
            guard case .connect(let c) = packet else {
                return protocolViolation(slot, "first packet is \(packet.type), not CONNECT")   // 3.1.0-1
            }
            return handleConnect(slot, c)
        }
        switch packet {
        case .connect: protocolViolation(slot, "second CONNECT")                 // 3.1.0-2
        case .publish(let p): handlePublish(slot, p)
        case .puback(let id): handlePuback(slot, id)
        case .pubrec(let id): handlePubrec(slot, id)
        case .pubrel(let id): handlePubrel(slot, id)
        case .pubcomp(let id): handlePubcomp(slot, id)
        case .subscribe(let s): handleSubscribe(slot, s)
        case .unsubscribe(let u): handleUnsubscribe(slot, u)
        case .pingreq: handlePingreq(slot)
        case .disconnect: handleDisconnect(slot)
        case .connack, .suback, .unsuback, .pingresp:
            protocolViolation(slot, "client sent \(packet.type), a server-to-client packet")
        }
    }

    // MARK: Send

    /// Encode a packet into the connection's send buffer; it goes out at the end
    /// of this loop turn with everything else queued for the connection.
    func send(_ slot: UInt32, _ packet: Packet) {
        let size = Encoder.size(of: packet)
        slab[Int(slot)].outbound.reserve(size)
        Encoder.encode(packet, into: &slab[Int(slot)].outbound)
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

    /// Bytes queued for the pile: encoded packets, or on TLS ciphertext the
    /// handshake produced.
    private func hasOutput(_ slot: UInt32) -> Bool {
        !slab[Int(slot)].outbound.isEmpty || (slab[Int(slot)].tls?.pendingOutput ?? 0) > 0
    }

    private func startSend(_ slot: UInt32) {
        if let tls = slab[Int(slot)].tls {
            // Encrypt what is queued; send the ciphertext from inFlight.
            slab[Int(slot)].inFlight.clear()
            guard tls.write(slab[Int(slot)].outbound.bytes) else {
                counters.add(.tlsFailures)
                logger.info("closing connection: TLS: SSL_write: \(TLSSession.lastError())", metadata: who(slot))
                close(slot, .tlsError)
                return tearDown(slot)   // also when it was already closing (flushing a refusal)
            }
            slab[Int(slot)].outbound.clear()
            if slab[Int(slot)].closeAfterFlush { tls.shutdown() }   // close_notify after the last record
            tls.takeOutput(into: &slab[Int(slot)].inFlight)
            if !slab[Int(slot)].inFlight.isEmpty {
                submitSend(slot)
            } else if slab[Int(slot)].closeAfterFlush {
                tearDown(slot)
            }
            return
        }
        let queued = slab[Int(slot)].outbound
        slab[Int(slot)].outbound = slab[Int(slot)].inFlight
        slab[Int(slot)].inFlight = queued
        submitSend(slot)
    }

    private func submitSend(_ slot: UInt32) {
        let b = slab[Int(slot)].inFlight
        ring.send(fixed: slab[Int(slot)].file, b.base!, b.count, tag: tag(Op.send, slot))
        slab[Int(slot)].sending = true
        slab[Int(slot)].pendingOps += 1
    }

    private func onSend(_ slot: UInt32, _ c: Completion) {
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
        if Int(c.res) < slab[Int(slot)].inFlight.count {
            slab[Int(slot)].inFlight.consume(Int(c.res))
            submitSend(slot)
            return
        }
        slab[Int(slot)].inFlight.clear()
        if hasOutput(slot) {
            startSend(slot)
        } else {
            // Drained: an idle connection keeps no send memory.
            slab[Int(slot)].inFlight.release()
            slab[Int(slot)].outbound.release()
            if slab[Int(slot)].closeAfterFlush { tearDown(slot) }
        }
    }

    // MARK: Close

    /// End a connection: will, session hand-back, counters and one log line happen
    /// now; the socket is torn down now, or after the send queue drains when
    /// `flush` is set (CONNACK refusals).
    func close(_ slot: UInt32, _ reason: CloseReason, flush: Bool = false) {
        guard slab[Int(slot)].isOpen else { return }
        let was = slab[Int(slot)].state
        slab[Int(slot)].state = .closing
        ctx.live.remove()
        counters.add(.connectionsClosed)
        counters.closed(reason)
        if slab[Int(slot)].ipCounted {
            slab[Int(slot)].ipCounted = false
            ctx.connectGuard.closed(slab[Int(slot)].peer)
        }
        delayedConnects[slot] = nil
        awaitingCredentials[slot] = nil
        let owner = Owner(shard: index, slot: slot, generation: slab[Int(slot)].generation)
        let will = wills.removeValue(forKey: slot)
        if was == .connected, let session = slab[Int(slot)].session {
            counters.subtract(.clientsConnected)
            if reason.publishesWill, let will {
                counters.add(.willsPublished)
                let m = Message(topic: will.topic, payload: will.payload, qos: will.qos, retain: will.retain)
                dispatch(m)
                if let redis {
                    redis.xadd(m, device: session.clientID, expect: .bookkeeping)
                    redis.event("will", device: session.clientID, [("topic", will.topic)])
                }
            }
            if let redis {
                flushTraffic(session, redis)
                redis.absent(session.clientID, since: session.connectedAtMs)
                if !redis.event("disconnect", device: session.clientID, [("reason", reason.eventReason)]) {
                    counters.add(.bookkeepingDropped)
                }
            }
            broker.detach(session, owner: owner)
            logger.info("disconnected: \(reason.rawValue)", metadata: who(slot))
        } else if was == .awaitingTakeover, let w = waitingConnects.removeValue(forKey: slot) {
            broker.abandonConnect(clientID: w.connect.clientID, owner: owner)
        }
        slab[Int(slot)].session = nil
        if flush && (slab[Int(slot)].sending || hasOutput(slot)) {
            slab[Int(slot)].closeAfterFlush = true
            markDirty(slot)
        } else {
            tearDown(slot)
        }
    }

    /// Cancel what the kernel still has for this socket (its multishot recv, a send
    /// in flight) by user_data, then close the direct descriptor. Hard-linked: the
    /// close runs even when there was nothing to cancel. (Cancelling by file instead
    /// makes the kernel scan every request armed on the ring: with 19k piles per
    /// ring, closing them all cost 27 s of CPU for 200k.)
    private func tearDown(_ slot: UInt32) {
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
    private func opDone(_ slot: UInt32) {
        let c = slab[Int(slot)]

        guard c.state == .closing, c.tornDown, c.pendingOps == 0 else { return }
        slab[Int(slot)].inbound.release()
        slab[Int(slot)].outbound.release()
        slab[Int(slot)].inFlight.release()
        slab[Int(slot)].tls = nil
        slab[Int(slot)].state = .free
        slab[Int(slot)].generation = (c.generation + 1) & 0xFF_FFFF
        freeSlots.append(slot)
        freeFiles.append(UInt32(c.file))
        openSlots -= 1
        ctx.occupancy[index].remove()
        armAccepts()
    }

    private func socketError(_ slot: UInt32, _ op: String, _ res: Int32) {
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
        slab[Int(slot)].session?.clientID ?? waitingConnects[slot]?.connect.clientID ?? "-"
    }

    /// Log metadata naming a connection: client id and peer address.
    func who(_ slot: UInt32) -> Logger.Metadata {
        ["client": "\(clientID(slot))", "peer": "\(slab[Int(slot)].peer)"]
    }

    // MARK: Timers

    /// (Re)schedule the connection's one wheel entry.
    func schedule(_ slot: UInt32, at tick: UInt64) {
        let d = max(tick, wheel.now + 1)
        slab[Int(slot)].timerDeadline = UInt32(truncatingIfNeeded: d)
        wheel.schedule(slot: slot, generation: slab[Int(slot)].generation, at: d)
    }

    private func onTimer() {
        let now = currentTick
        wheel.advance(to: now, expired: &expired)
        for e in expired { deadline(e) }
        expired.removeAll(keepingCapacity: true)
        ring.timeout(&timeout, tag: Tag(op: Op.timer, slot: 0, generation: 0).raw)
        if !stopping && index >= ctx.primaryShards { reviewAccepting() }
        if drainPerTick > 0 { drainSome() }
        let ms = monotonicMillis()
        let day = ctx.rates.day(wallSeconds: Int64(wallMillis() / 1000))
        flushTraffic(all: day != today)   // at a day change all, before any device rolls its usage over
        if index == 0 && day != today { broker.forgetUsage(before: day) }
        today = day
        if config.devices.silentSeconds > 0 && now >= nextSilenceReview {
            nextSilenceReview = now + silenceReviewTicks
            reviewSilence()
        }
        if index == 0 && now >= nextSweep {
            nextSweep = now + ticks(seconds: 5)
            ctx.connectGuard.sweep(now: monotonicNanos())
        }
        redis?.connection.tick(nowMs: ms)
        downlink?.connection.tick(nowMs: ms)
        if let r = redis?.connection { counters.set(.redisInflight, UInt64(r.unanswered)) }
        if index == 0 && config.server.sysInterval > 0 && now >= nextSys {
            nextSys = now + ticks(seconds: config.server.sysInterval)
            publishSysStats()
        }
    }

    private func deadline(_ e: TimingWheel.Entry) {
        let s = Int(e.slot)
        guard s < slab.count, slab[s].generation == e.generation,
              slab[s].timerDeadline == UInt32(truncatingIfNeeded: e.deadline) else {
            return   // stale: the connection is gone or has a newer entry
        }
        if slab[s].throttled && slab[s].isOpen && awaitingCredentials[e.slot] == nil { return endHold(e.slot) }
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
            let ka = slab[s].keepAlive
            guard ka > 0 else { return }
            // 1.5 x keepalive without any packet (3.1.2.10)
            let due = keepaliveDue(s)
            if slab[s].paused {
                schedule(e.slot, at: wheel.now + UInt64(ka) * 1000 / Shard.tickMillis)   // not the pile's fault
            } else if wheel.now >= due {
                counters.add(.keepaliveExpiries)
                close(e.slot, .keepalive)
            } else {
                schedule(e.slot, at: due)
            }
        case .free, .closing:
            return
        }
    }

    // MARK: Inbox

    private func armInbox() {
        ring.read(fd: ctx.inboxes[index].eventFD, &inboxValue, 8, tag: Tag(op: Op.inbox, slot: 0, generation: 0).raw)
    }

    private func onInbox(_ c: Completion) {
        ctx.inboxes[index].drain(into: &inboxScratch)
        for m in inboxScratch { receive(m) }
        inboxScratch.removeAll(keepingCapacity: true)
        armInbox()
    }

    private func receive(_ m: ShardMessage) {
        switch m {
        case .deliver(let d):
            if isCurrent(d.slot, d.generation) { deliver(d.slot, d.message, qos: d.qos, retain: d.retain) }
        case .kick(let slot, let gen, let reason):
            if isCurrent(slot, gen) {
                if reason == .takeover { counters.add(.takeovers) }
                close(slot, reason)
            }
        case .resumeConnect(let slot, let gen):
            if isCurrent(slot, gen) && slab[Int(slot)].state == .awaitingTakeover,
               let w = waitingConnects.removeValue(forKey: slot) {
                attachSession(slot, w.connect, role: w.role)
                if slab[Int(slot)].state == .connected && !slab[Int(slot)].inbound.isEmpty {
                    drainInbound(slot)
                }
            }
        case .inspect(let slot, let gen, let reply):
            reply.post(isCurrent(slot, gen) ? info(slot) : ClientInfo(clientID: "", shard: index))
        case .top(let n, let reply):
            reply.post(top(n))
        case .drain(let perTick):
            drainPerTick = max(1, perTick)
        case .shutdown:
            stopping = true
            stopDeadline = monotonicMillis() + 5000
            cancelAccepts()
            for i in slab.indices where slab[i].isOpen { close(UInt32(i), .shutdown) }
        }
    }

    /// Tick at which 1.5 x keepalive without a packet has passed (3.1.2.10).
    func keepaliveDue(_ s: Int) -> UInt64 {
        // lastSeen is the low 32 bits of a tick at most 1.5 x 65535 s old: rebuild it.
        let last = wheel.now - UInt64(nowTick32 &- slab[s].lastSeen)
        return last + UInt64(slab[s].keepAlive) * 1500 / Shard.tickMillis
    }

    // MARK: Backpressure

    /// Must this PUBLISH wait because the Redis pipeline is full or Redis is away?
    private func mustWaitForRedis(_ p: Publish) -> Bool {
        guard let redis, !redis.canAccept else { return false }
        return !(p.qos == .atMostOnce && config.redis.qos0Overload == .drop)
    }

    /// Stop reading this connection: TCP pushes back to the pile, nothing is lost,
    /// QoS 1/2 stay unacknowledged.
    private func pause(_ slot: UInt32) {
        guard !slab[Int(slot)].paused else { return }
        slab[Int(slot)].paused = true
        paused.append((slot, slab[Int(slot)].generation))
        counters.add(.backpressurePauses)
        stopReading(slot)
    }

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

    private func resumePaused() {
        let list = paused
        paused.removeAll(keepingCapacity: true)
        for (slot, gen) in list where isCurrent(slot, gen) && slab[Int(slot)].paused && slab[Int(slot)].isOpen {
            slab[Int(slot)].paused = false
            resumeReading(slot)
        }
    }

    func isCurrent(_ slot: UInt32, _ generation: UInt32) -> Bool {
        Int(slot) < slab.count && slab[Int(slot)].generation == generation
    }
}

/// Live connections over all shards.
final class LiveCount: Sendable {
    private let value = ManagedAtomic<Int>(0)
    /// Count one more; returns the new total.
    func add() -> Int { value.wrappingIncrementThenLoad(ordering: .relaxed) }
    func remove() { value.wrappingDecrement(ordering: .relaxed) }
    var current: Int { value.load(ordering: .relaxed) }
}
