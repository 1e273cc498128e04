import Logging
import MQTTCodec
import PileLoop

/// One event loop: one thread, one io_uring, its own slab of connections. Shares
/// nothing with other shards except the Broker and the inboxes.
///
/// A loop turn: wait for completions, hand each to its owner by the op in its
/// tag (accept, connection I/O, close, timer, inbox, Redis), then `endTurn`
/// re-arms receives, flushes every send buffer touched this turn, returns
/// receive buffers and posts cross-shard deliveries. This file is the loop and
/// nothing else; what the events do lives beside it (Accept, ConnectionIO,
/// Close, Timers, ReadHolds) and in the packet handlers (Handlers/).
final class Shard {
    let index: Int
    let ctx: ShardContext
    /// The config and policy in force here; a reload replaces both between turns.
    var policy: PolicySet
    var config: Config
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
    /// Shard 0: the other nodes' uplink for this node's wildcard subscribers.
    var fleet: FleetFeed?
    /// On shard 0 with `redis.consumer_groups`: the uplink streams' review.
    var review: StreamReview?
    var slab: [Connection] = []
    /// The bytes in and out of the slab's connections that have any.
    var io = BufferPool()
    var freeSlots: [UInt32] = []
    /// Slots opened and not yet freed (the loop ends at shutdown when it is 0).
    var openSlots = 0
    /// Slots with bytes to send this turn, and slots whose receive must be re-armed.
    var dirty: [UInt32] = []
    var rearm: [UInt32] = []
    /// Deliveries gathered this turn for other shards, posted at the end of the turn.
    var remote: [[Delivery]]
    /// This shard's own deliveries, swapped out of `remote` while they are made.
    var local: [Delivery] = []

    // Per-feature state, each owned by a small struct in the feature's file.
    var acceptor: Acceptor
    var holds = ReadHolds()
    var waits = ConnectWaits()
    var traffic = TrafficRollup()
    var drain = Drain()
    /// The will (3.1.2.5) of each live connection that has one, by slot: few piles
    /// set one, so it is kept here rather than in every Session.
    var wills: [UInt32: Will] = [:]
    /// Quota day (RateRules.day), refreshed every tick.
    var today: UInt32 = 0
    /// Decrypted bytes of one TLS read, handed straight to the decoder.
    let tlsScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16384, alignment: 16)
    var stopping = false

    /// Uplink writers: the timer that flushes a lingering Redis pipeline.
    private var linger: Ring.Interval?
    private var lingerArmed = false
    private var inboxValue: UInt64 = 0
    private var inboxScratch: [ShardMessage] = []
    private var expired: [TimingWheel.Entry] = []
    private let tickInterval = Ring.Interval(nanoseconds: Shard.tickMillis * 1_000_000)
    private var nextSys: UInt64 = 0
    private var nextSweep: UInt64 = 0
    /// Shard 0: when connection churn is next looked at (Ops/MemoryTrim.swift).
    private var nextTrim: UInt64 = 0
    var memoryTrim = MemoryTrim()
    private var nextSilenceReview: UInt64 = 0
    private var stopDeadline: UInt64 = 0
    static let tickMillis: UInt64 = 100
    static let recvGroup: UInt16 = 1
    /// Shard 0: when the operator bans are next read from Redis (Ops/BanSync.swift).
    var nextBansRefresh: UInt64 = 0
    /// Shard 0: when this node next writes its state for the fleet view (Ops/Console.swift).
    var nextHeartbeat: UInt64 = 0
    /// When a full retained store is next logged (Handlers/Delivery.swift).
    var nextRetainWarning: UInt64 = 0
    /// This shard's copy of the device overrides, the generation it was taken at, and
    /// (shard 0) when the hash is next read (Ops/OverrideSync.swift).
    var overrides: [String: DeviceOverride] = [:]
    var overridesSeen: UInt64 = 0
    var nextOverridesRefresh: UInt64 = 0

    init(index: Int, context: ShardContext, logger: Logger) throws {
        self.index = index
        ctx = context
        policy = context.policy
        config = context.policy.config
        broker = context.broker
        counters = context.counters[index]
        self.logger = logger
        self.logger[metadataKey: "shard"] = "\(index)"
        ring = try Ring(entries: UInt32(config.server.ringEntries))
        try ring.registerSparseFiles(UInt32(context.fileTableSize))
        buffers = try BufferRing(ring: ring, group: Shard.recvGroup, count: UInt32(config.server.recvBuffers),
                                 size: config.server.recvBufferSize)
        wheel = TimingWheel(buckets: 4096, startTick: (monotonicMillis() - context.startedAt) / Shard.tickMillis,
                            slots: context.fileTableSize)
        remote = Array(repeating: [], count: context.inboxes.count)
        if let address = context.redisAddress {
            let bridge = RedisBridge(config: config, address: address, shard: index, ring: ring, counters: counters,
                                     watch: context.streams, logger: self.logger)
            redis = bridge
            if index >= context.uplinkWriters {
                bridge.relay = RelayOut(writer: index % context.uplinkWriters)
                context.relayers.add()
            } else {
                bridge.answers = Array(repeating: [], count: context.inboxes.count)
                if config.redis.writeIntervalUs > 0 {
                    bridge.link.lingerNs = UInt64(config.redis.writeIntervalUs) * 1000
                    linger = Ring.Interval(nanoseconds: bridge.link.lingerNs)
                }
            }
            if index == 0 {
                downlink = Downlink(config: config, address: address, ring: ring, logger: self.logger)
                if config.redis.fleetFeed {
                    fleet = FleetFeed(config: config, streams: bridge.router.streams, address: address, ring: ring,
                                      logger: self.logger)
                }
                if context.streams.active { review = StreamReview(watch: context.streams, config: config.redis) }
            }
        }
        // Never regrown (a copy of every connection) and untouched pages cost no RSS.
        slab.reserveCapacity(context.fileTableSize)
        acceptor = Acceptor(listeners: [context.listenFD] + (context.tlsListenFD.map { [$0] } ?? []),
                            proxied: [config.listener.proxyProtocol, config.tls.proxyProtocol],
                            tableSize: context.fileTableSize)
        today = policy.rates.day(wallSeconds: Int64(wallMillis() / 1000))
    }

    // MARK: The loop

    func run() {
        acceptor.enabled = wantsConnections
        wireRedis()
        armAccepts()
        armInbox()
        ring.timeout(tickInterval, tag: Tag(op: Op.timer, slot: 0, generation: 0).raw)
        var submitted = ring.submitted
        while !(stopping && openSlots == 0 && redisSettled) {
            ring.submitAndWait(1)
            // Since the last turn's wait: SQEs submitted early because the SQ filled count too.
            counters.sqesPerTurn.record(ring.submitted &- submitted)
            submitted = ring.submitted
            let now = monotonicNanos()
            redis?.link.clock = now
            downlink?.link.clock = now
            fleet?.link.clock = now
            counters.cqesPerTurn.record(UInt64(ring.drainCompletions { c in self.complete(c) }))
            advanceWheel()
            endTurn()
        }
        if redis?.relay != nil { ctx.relayers.remove() }
        logger.debug("shard stopped")
    }

    /// At shutdown: what this shard sent Redis (last XADDs, disconnect events) has
    /// been answered, or Redis is away, or we have waited long enough.
    /// A writer also waits for the shards that relay to it: their last commands come
    /// after its own piles are closed.
    private var redisSettled: Bool {
        guard let r = redis, r.link.state == .up else { return true }
        let writerBusy = r.relay == nil && ctx.relayers.current > 0
        guard r.unanswered > 0 || r.carried > 0 || writerBusy else { return true }
        return monotonicMillis() > stopDeadline + (writerBusy ? 1000 : 0)
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
        case Op.redisLinger: lingerArmed = false   // endTurn flushes
        case Op.inbox: onInbox(c)
        case Op.redisConnect, Op.redisSend, Op.redisRecv:
            let link = tag.slot >> 16 == 0 ? redis?.link : tag.slot >> 16 == 1 ? downlink?.link : fleet?.link
            link?.complete(tag, res: c.res, nowMs: monotonicMillis())
        default: logger.error("completion with unknown op \(tag.op)")
        }
    }

    /// A completion for the slot's current connection (not one it held before).
    private func valid(_ tag: Tag) -> Bool {
        Int(tag.slot) < slab.count && slab[Int(tag.slot)].generation & 0xFF_FFFF == tag.generation
    }

    func tag(_ op: UInt8, _ slot: UInt32) -> UInt64 {
        Tag(op: op, slot: slot, generation: slab[Int(slot)].generation).raw
    }

    func isCurrent(_ slot: UInt32, _ generation: UInt32) -> Bool {
        Int(slot) < slab.count && slab[Int(slot)].generation == generation
    }

    private func endTurn() {
        if holds.hasPaused && redis?.canResume == true { resumePaused() }
        for slot in rearm where isReadable(slot) && !slab[Int(slot)].recvArmed {
            armRecv(slot)
        }
        rearm.removeAll(keepingCapacity: true)
        for slot in dirty {
            slab[Int(slot)].dirty = false
            if !slab[Int(slot)].sending && hasOutput(slot) && !slab[Int(slot)].tornDown {
                startSend(slot)
            } else if slab[Int(slot)].sending {
                watchSendStall(slot)   // more to send while the last send is still out
            }
        }
        dirty.removeAll(keepingCapacity: true)
        redis?.flushAcks()
        redis?.postRelays(from: index, to: ctx.inboxes)
        redis?.link.flush()
        if let linger, !lingerArmed, redis?.link.lingering == true {
            ring.timeout(linger, tag: Tag(op: Op.redisLinger, slot: 0, generation: 0).raw)
            lingerArmed = true
        }
        downlink?.link.flush()
        fleet?.link.flush()
        buffers.publish()
        for s in remote.indices where !remote[s].isEmpty {
            ctx.inboxes[s].post(contentsOf: remote[s].lazy.map { ShardMessage.deliver($0) })
            remote[s].removeAll(keepingCapacity: true)
        }
    }

    // MARK: The tick (every `tickMillis`)

    /// Bring the wheel to the clock and act on what expired. After every turn as well
    /// as on the tick: `wheel.now` stamps packets (`lastSeen`) and sends, and it would
    /// otherwise lag the clock by as long as the timer completion waits behind a busy
    /// turn, so keepalive closed early (1.11 s for a 1.5 s deadline under bench/tsan.sh).
    private func advanceWheel() {
        let now = currentTick
        guard now > wheel.now else { return }
        wheel.advance(to: now, expired: &expired)
        for e in expired { deadline(e) }
        expired.removeAll(keepingCapacity: true)
    }

    private func onTimer() {
        advanceWheel()
        let now = wheel.now
        ring.timeout(tickInterval, tag: Tag(op: Op.timer, slot: 0, generation: 0).raw)
        if !stopping && index >= ctx.primaryShards { reviewAccepting() }
        if acceptor.heldByRate { armAccepts() }
        if drain.perTick > 0 { drainSome() }
        let ms = monotonicMillis()
        let day = policy.rates.day(wallSeconds: Int64(wallMillis() / 1000))
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
        redis?.link.tick(nowMs: ms)
        downlink?.link.tick(nowMs: ms)
        downlink?.reviewIfDue(nowMs: ms)
        fleet?.link.tick(nowMs: ms)
        fleet?.tick(wanted: broker.hasWildcardSubscribers)
        if index == 0 {
            refreshBansIfDue(nowMs: ms)
            heartbeatIfDue(nowMs: ms)
        }
        syncOverrides(nowMs: ms)
        if let r = redis?.link { noteRedis(r, nowMs: ms) }
        if review != nil { reviewStreams(nowMs: ms) }
        if index == 0 && config.server.memoryTrimInterval > 0 && now >= nextTrim {
            nextTrim = now + ticks(seconds: config.server.memoryTrimInterval)
            trimMemoryIfDue()
        }
        if index == 0 && config.server.sysInterval > 0 && now >= nextSys {
            nextSys = now + ticks(seconds: config.server.sysInterval)
            publishSysStats()
        }
    }

    // MARK: The inbox (messages from other shards and the admin thread)

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
            if isCurrent(d.slot, d.generation) { deliver(d) }
        case .kick(let slot, let gen, let reason):
            if isCurrent(slot, gen) {
                if reason == .takeover { counters.add(.takeovers) }
                close(slot, reason)
            }
        case .resumeConnect(let slot, let gen):
            if isCurrent(slot, gen) { resumeConnect(slot) }
        case .inspect(let slot, let gen, let reply):
            reply.post(isCurrent(slot, gen) ? info(slot) : ClientInfo(clientID: "", shard: index))
        case .movedAway(let slot, let gen, let since):
            if isCurrent(slot, gen), let s = slab[Int(slot)].session, s.connectedAtMs < since {
                s.persistent = false   // the session lives on with the pile, on its new node
                close(slot, .takeoverRemote)
            }
        case .top(let n, let reply):
            reply.post(top(n))
        case .nodes(let reply):
            readNodes(reply: reply)
        case .events(let n, let device, let reply):
            readEvents(n, device: device, reply: reply)
        case .drain(let perTick):
            drain.perTick = max(1, perTick)
        case .operatorBan(let clientID, let ban):
            storeBan(clientID, ban)
        case .override(let clientID, let text):
            storeOverride(clientID, text)
        case .reload(let p, let done):
            // Between two turns: connected clients keep their connections; their next
            // PUBLISH or SUBSCRIBE is judged by the new rules (their role index names
            // the same role: ACL(keeping:)).
            policy = p
            config = p.config
            if let r = redis {
                r.reroute(Router(routes: config.routes, defaultStream: config.redis.defaultStream,
                                 partitions: r.router.partitions, keeping: r.router.names))
            }
            done.post(index)
        case .relay(let batch):
            redis?.carry(batch)
        case .relayAnswers(let answers):
            let now = redis?.link.clock ?? 0
            for a in answers { uplinkReplied(a.uplink, a.outcome, waited: now &- a.at) }
        case .shutdown:
            stopping = true
            stopDeadline = monotonicMillis() + 5000
            cancelAccepts()
            for i in slab.indices where slab[i].isOpen { close(UInt32(i), .shutdown) }
        }
    }
}
