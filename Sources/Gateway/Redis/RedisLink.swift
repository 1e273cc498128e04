import Logging
import PileLoop

/// Where one of a shard's Redis clients (uplink, downlink reader, fleet feed)
/// sends its commands: one pipelined connection to a standalone Redis, or, with
/// `redis.cluster`, one to each master its keys live on, chosen per command by the
/// key's hash slot (Cluster/ClusterRouting.swift has the slot map, redirects and
/// failover). Every connection is on the shard's ring; a completion's tag names the
/// link (`id`) and the connection (`Tag.slot = id << 16 | index`).
final class RedisLink<Expectation> {
    /// What a connection's reply means: a caller's command for a slot, or the link's own.
    enum Routed {
        case command(slot: UInt16, Expectation)
        /// CLUSTER SLOTS, asked of the node at this address.
        case slots(asked: String)
        /// The ASKING before a command an ASK redirect sent elsewhere.
        case asking
    }

    let id: UInt32
    let name: String
    let cluster: Bool
    var conns: [RedisConnection<Routed>?] = []
    let logger: Logger
    let ring: Ring
    let handshake: [[String]]
    let connectTimeoutMs: UInt64
    let resendOnReconnect: Bool
    let replicaWait: (replicas: Int, timeoutMs: Int)?
    /// Cluster mode: the seeds from `redis.address`, the slot map and, per master in
    /// it, the index of its connection.
    let seeds: [String]
    var map: SlotMap?
    /// Per master in the map, its connection's index (nil until a command needs it).
    var masterConn: [Int?] = []
    /// The slots this link works on (the downlink reader's stream), if only some:
    /// it is up when their masters are; nil: every master (the uplink).
    var homeSlots: [UInt16]?
    var mapAtMs: UInt64 = 0
    var refreshWanted = true
    /// A CLUSTER SLOTS is out, since `askedAtMs`.
    var asking = false
    var askedAtMs: UInt64 = 0
    /// Commands a cluster could not take yet (TRYAGAIN, CLUSTERDOWN, a slot with no
    /// master), sent again from the tick.
    var parked: [(bytes: [UInt8], at: UInt64, slot: UInt16, expectation: Expectation)] = []
    var stats = ClusterStats()
    private(set) var state = RedisConnection<Routed>.State.down

    var onReply: (Expectation, RedisReply, UInt64) -> Void = { _, _, _ in }
    var onState: (RedisConnection<Routed>.State) -> Void = { _ in }
    /// Each WAIT reply (`redis.wait_replicas`): replicas confirmed, enough or not.
    var onWait: (Int, Bool) -> Void = { _, _ in }

    /// `address`: HOST:PORT of a standalone Redis, or the cluster's comma-separated seeds.
    init(id: UInt32, name: String, redis: Config.Redis, address: SocketAddress?, clientName: String,
         extraHandshake: [[String]] = [], resendOnReconnect: Bool = true, waitReplicas: Bool = false,
         ring: Ring, logger: Logger) {
        self.id = id
        self.name = name
        self.ring = ring
        self.logger = logger
        cluster = redis.cluster
        seeds = redis.cluster ? redis.seeds : []
        handshake = redis.handshake(clientName: clientName) + extraHandshake
        connectTimeoutMs = UInt64(redis.connectTimeoutMs)
        self.resendOnReconnect = resendOnReconnect
        replicaWait = waitReplicas && redis.waitReplicas > 0 ? (redis.waitReplicas, redis.waitTimeoutMs) : nil
        if let address, !cluster { _ = connection(to: address) }
        else { for s in seeds { if let a = SocketAddress(s) { _ = connection(to: a) } } }
    }

    /// The slot of a key, for `enqueue` (0 without a cluster: not computed).
    func slot(_ key: String) -> UInt16 { cluster ? HashSlot.of(key) : 0 }
    func slot(_ prefix: String, _ rest: String) -> UInt16 { cluster ? HashSlot.of(prefix, rest) : 0 }

    /// Append a command for a key in `slot` (see `slot(_:)`); `anywhere` for one with no key.
    func enqueue(_ e: Expectation, slot: UInt16, _ write: (inout ByteBuffer) -> Void) {
        guard cluster else { return conns[0]!.enqueue(.command(slot: 0, e), write) }
        guard let c = owner(of: slot) else {
            var b = ByteBuffer()
            write(&b)
            parked.append((Array(b.bytes), clock, slot, e))
            b.release()
            return
        }
        c.enqueue(.command(slot: slot, e), write)
    }

    /// A command with no key: to the first master (cluster), or the one connection.
    func enqueueAnywhere(_ e: Expectation, _ write: (inout ByteBuffer) -> Void) {
        enqueue(e, slot: cluster ? firstServedSlot : 0, write)
    }

    /// Commands sent and not answered, over all connections, with the parked ones.
    var unanswered: Int { conns.reduce(parked.count) { $0 + ($1?.unanswered ?? 0) } }

    /// Nanoseconds the oldest unanswered (or parked) command has waited: a Redis
    /// that holds the connection open and answers nothing (a stopped process).
    var stalledNs: UInt64 {
        let oldest = (conns.compactMap { $0?.oldestUnanswered } + parked.map(\.at)).min()
        return oldest.map { clock &- $0 } ?? 0
    }

    var clock: UInt64 = 0 {
        didSet { for c in conns { c?.clock = clock } }
    }

    func flush() { for c in conns { c?.flush() } }

    /// See `RedisConnection.lingerNs`; set on the uplink writers' links.
    var lingerNs: UInt64 = 0 {
        didSet { for c in conns { c?.lingerNs = lingerNs } }
    }
    /// Some connection holds commands back: flush again within `lingerNs`.
    var lingering: Bool { conns.contains { $0?.lingering == true } }

    func tick(nowMs: UInt64) {
        for c in conns { c?.tick(nowMs: nowMs) }
        if cluster { clusterTick(nowMs: nowMs) }
    }

    func complete(_ tag: Tag, res: Int32, nowMs: UInt64) {
        let i = Int(tag.slot & 0xFFFF)
        guard i < conns.count, let c = conns[i] else { return }
        c.complete(op: tag.op, generation: tag.generation, res: res, nowMs: nowMs)
    }

    /// The connection to `address`, made on first use. Its index is its tag, never
    /// reused: a retired connection's last completions must not reach a new one.
    func connection(to address: SocketAddress) -> RedisConnection<Routed> {
        let text = address.description
        if let c = conns.first(where: { $0?.addressText == text }) { return c! }
        let index = conns.count
        let c = RedisConnection<Routed>(id: id << 16 | UInt32(index), name: cluster ? "\(name) \(text)" : name,
                                        address: address, handshake: handshake, connectTimeoutMs: connectTimeoutMs,
                                        resendOnReconnect: resendOnReconnect, replicaWait: replicaWait,
                                        ring: ring, logger: logger)
        c.clock = clock
        c.lingerNs = lingerNs
        c.onReply = { [unowned self] routed, r, waited in self.replied(routed, r, waited, from: text) }
        c.onState = { [unowned self] _ in self.connectionChanged() }
        c.onWait = { [unowned self] n, ok in self.onWait(n, ok) }
        c.heldUntilReplicated = { if case .command = $0 { true } else { false } }
        if cluster { c.onError = { [unowned self] routed, bytes, r in self.redirected(routed, bytes, r) } }
        conns.append(c)
        return c
    }

    private func replied(_ routed: Routed, _ r: RedisReply, _ waited: UInt64, from address: String) {
        switch routed {
        case .command(_, let e): onReply(e, r, waited)
        case .slots(let asked): slotsReplied(r, asked: asked)
        case .asking: if r.isError { logger.warning("redis cluster: ASKING refused: \(r.text)") }
        }
    }

    /// A connection went up or down: the link is up when every connection it needs is.
    func connectionChanged() {
        let now: RedisConnection<Routed>.State
        if !cluster {
            now = conns[0]!.state
        } else if let map, map.unservedSlots == 0 {
            let needed: [RedisConnection<Routed>?] = homeSlots.map { $0.map { owner(of: $0) } }
                ?? masterConn.indices.map { owner(master: $0) }
            now = needed.allSatisfy { $0?.state == .up } ? .up : .down
            if now == .down { refreshWanted = true }
        } else {
            now = .down
        }
        if cluster, refreshWanted { askForSlots() }
        guard now != state else { return }
        state = now
        onState(now)
    }
}
