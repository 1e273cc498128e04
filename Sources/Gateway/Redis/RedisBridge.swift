import Glibc
import Logging
import MQTTCodec
import PileLoop

/// What a Redis reply means to the shard that sent the command.
enum RedisExpectation {
    /// One of this shard's uplink commands (UplinkRelay.swift).
    case uplink(Uplink)
    /// Writer shards: another shard's uplink command, answered back to it.
    case relayed(Uplink, origin: UInt16, at: UInt64)
    /// Events, presence, XACKs: only an error matters.
    case bookkeeping
    case downlink(Downlink.Step)
    /// A command's steps through the mailbox (DownlinkCommands, CommandReceipts).
    case command(CommandStep)
    /// HGET of a user's credentials for a waiting CONNECT.
    case credentials(slot: UInt32, generation: UInt32, user: String)
    /// A step of the stream review (shard 0).
    case review(StreamReview.Step)
    /// CONFIG GET maxmemory-policy (shard 0, on each connect).
    case evictionPolicy
    /// HGETALL of the operator bans (shard 0).
    case bans
    /// HGETALL of the device overrides (shard 0).
    case overrides
    /// INFO at connect (shard 0): version and cluster mode.
    case serverInfo
    /// XREAD of the uplink streams for this node's wildcard subscribers (shard 0).
    case fleet
    /// XREVRANGE of one uplink stream's newest entry: where the fleet feed starts (cluster).
    case fleetTail(stream: Int)
    /// HGETALL of the fleet's node states for the console (shard 0).
    case nodes(reply: Inbox<[[String: String]]?>)
    /// XREVRANGE of the events stream for the console (shard 0).
    case events(device: String?, limit: Int, reply: Inbox<[[String: String]]?>)
}

enum CommandStep {
    /// `Script.mailboxAdd` (shard 0).
    case stored(Arrival)
    /// HEXISTS for a pending entry the review found (shard 0).
    case reviewed(Arrival)
    /// HDEL of a command that ended.
    case removed(Ending)
    /// HGETALL of the mailbox of the pile on this connection.
    case mailbox(slot: UInt32, generation: UInt32)
}

/// One shard's side of the Redis contract (Sources/ARCHITECTURE.md, "The Redis contract"): uplink XADDs
/// with their acknowledgements held until Redis confirms, the presence hash, the
/// events stream. The connection underneath is pipelined and flushed per turn.
final class RedisBridge {
    /// The uplink link: one Redis, or each master of a cluster (RedisLink.swift).
    let link: RedisLink<RedisExpectation>
    /// Replaced by a reload that keeps the same streams (Ops/Reload.swift).
    var router: Router
    let config: Config.Redis
    let node: String
    /// `msgid` = NODE-BOOTMS-SHARD-SEQUENCE: unique across restarts and shards.
    private let msgidPrefix: [UInt8]
    /// NODE| (a presence value is NODE|SINCE), and the away hash's key.
    private let nodeBar: [UInt8]
    private let presenceAwayKey: String
    private var sequence: UInt64 = 0
    let maxlen: String
    private let credentialsKey: String
    /// Hash slots of the keys written most (computed once; 0 without a cluster).
    private var streamSlots: [UInt16]
    let eventsSlot: UInt16, presenceSlot: UInt16, outcomeSlot: UInt16
    private let counters: Counters
    /// Commands that ended this turn, XACKed together at its end (CommandStore).
    var ended: [CommandTag] = []
    /// Worker lag (StreamWatch): when active, uplink XADDs do not trim, and piles
    /// are held while the review says the workers are behind.
    private let watch: StreamWatch
    /// This shard's uplink commands not answered yet, wherever they were sent.
    private(set) var pendingUplinks = 0
    /// Not an uplink writer: where this shard's uplink commands go (UplinkRelay.swift).
    var relay: RelayOut?
    /// A writer: other shards' commands in `link`, not answered yet, and the answers
    /// of this turn per shard (one list per shard, set up by the shard).
    var carried = 0
    var answers: [[RelayAnswer]] = []

    init(config: Config, address: SocketAddress, shard: Int, ring: Ring, counters: Counters, watch: StreamWatch,
         logger: Logger) {
        self.counters = counters
        self.watch = watch
        self.config = config.redis
        node = config.server.node
        msgidPrefix = Array("\(config.server.node)-\(wallMillis())-\(shard)-".utf8)
        nodeBar = Array("\(config.server.node)|".utf8)
        presenceAwayKey = config.redis.presenceKey + ":away"
        maxlen = String(config.redis.streamMaxlen)
        credentialsKey = config.auth.redisHash
        router = Router(routes: config.routes, defaultStream: config.redis.defaultStream, partitions: config.redis.partitions)
        link = RedisLink(id: 0, name: "uplink", redis: config.redis, address: address, clientName: "pilegate-\(node)-\(shard)",
                         extraHandshake: Script.load, waitReplicas: true, ring: ring, logger: logger)
        streamSlots = router.streams.map(link.slot)
        eventsSlot = link.slot(config.redis.eventsStream)
        presenceSlot = link.slot(config.redis.presenceKey)
        outcomeSlot = link.slot(config.redis.outcomeStream)
    }

    /// A reload may name the same streams in another order (Router(keeping:)).
    func reroute(_ r: Router) {
        router = r
        streamSlots = r.streams.map(link.slot)
    }

    deinit { relay?.release() }

    /// One of this shard's uplink commands was answered (here or by its writer).
    func answered(_ u: Uplink) {
        pendingUplinks -= 1
        if u.isMessage { watch.answer() }
    }

    /// Commands this shard sent and Redis has not answered: its own, not those it
    /// carries for other shards, with those a writer carries for it.
    var unanswered: Int { link.unanswered - carried + (relay == nil ? 0 : pendingUplinks) }

    /// Room for another uplink XADD now (and the workers are not behind).
    var canAccept: Bool { link.state == .up && pendingUplinks < config.maxInflight && watch.hasRoom }
    /// Room enough to resume paused piles (half the bound: no flapping at the edge).
    var canResume: Bool { link.state == .up && pendingUplinks < config.maxInflight / 2 && watch.hasRoom }
    /// Bookkeeping beyond this many unanswered commands is dropped (and counted):
    /// while Redis is away, events must not grow memory without bound.
    private var bookkeepingFull: Bool { unanswered >= 2 * config.maxInflight }

    /// An uplink command: into this shard's pipeline, or (not a writer) its writer's.
    private func send(_ u: Uplink, slot: UInt16, _ write: (inout ByteBuffer) -> Void) {
        pendingUplinks += 1
        if relay != nil {
            relay!.add(u, slot: slot, at: link.clock, write)
            counters.add(.redisRelayed)
        } else {
            link.enqueue(.uplink(u), slot: slot, write)
        }
    }

    /// XADD stream [MAXLEN ~ N] * device .. topic .. qos .. ts .. node .. msgid .. payload ..
    /// (no MAXLEN when the stream review trims by what the worker groups have read).
    ///
    /// With the dedup window on, a QoS 1/2 PUBLISH (`resend`) leaves a record of its
    /// packet id and payload in its client's recent-ids key: after a plain XADD for a
    /// first transmission (SETRANGE and PEXPIRE behind it in the pipeline: a crash
    /// between the two can only let a later resend be stored twice, never lose one);
    /// a resend (DUP=1), or a message whose route names an identity, runs the check,
    /// the XADD and the record as one step (`Script.dedupAdd`). The Lua step for every
    /// message cost Redis 4x the CPU of the XADD alone (bench/uplink-dedup.sh).
    func xadd(_ m: Message, device: String, expect: Uplink, resend: Resend? = nil) {
        let routed = router.route(topic: m.topic, payload: m.payload)
        let index = router.stream(routed, device: device)
        counters.routed(toStream: index)
        let stream = router.streams[index], slot = streamSlots[index]
        watch.took()
        sequence &+= 1
        let ts = wallMillis()
        let window = config.dedupWindowMs
        let record = window > 0 ? resend.map { ($0.packetID, PayloadHash.of(m.payload)) } : nil
        let offset = UInt64(resend.map { Int($0.packetID) % config.dedupRecent * 10 } ?? 0)
        let scripted = window > 0 && (resend?.dup == true || routed.identity != nil)
        send(expect, slot: slot) { b in
            let fields = watch.active ? 15 : 18
            if scripted {
                b.respArray(3 + (routed.identity == nil ? 2 : 3) + 4 + fields)
                b.respBulk("EVALSHA"); b.respBulk(Script.dedupAdd.sha)
                b.respBulk(routed.identity == nil ? "2" : "3")
                b.respBulk(stream, ":dd:", device); b.respBulk(stream)
                if let id = routed.identity { b.respBulk(Array((stream + ":dd:" + device + ":").utf8) + id) }
                if let (id, hash) = record { b.respBulk(id, hash) } else { b.respBulk("") }
                b.respBulk(number: offset)
                b.respBulk(resend?.dup == true ? "1" : "0"); b.respBulk(number: UInt64(window))
            } else {
                b.respArray(2 + fields)
                b.respBulk("XADD"); b.respBulk(stream)
            }
            if !watch.active { b.respBulk("MAXLEN"); b.respBulk("~"); b.respBulk(maxlen) }
            b.respBulk("*")
            b.respBulk("device"); b.respBulk(device)
            b.respBulk("topic"); b.respBulk(m.topic)
            b.respBulk("qos"); b.respBulk(number: UInt64(m.qos.rawValue))
            b.respBulk("ts"); b.respBulk(number: ts)
            b.respBulk("node"); b.respBulk(node)
            b.respBulk("msgid"); b.respBulk(prefix: msgidPrefix, number: sequence)
            b.respBulk("payload"); b.respBulk(m.payload)
        }
        guard let (id, hash) = record, !scripted, let resend else { return }
        send(.record, slot: slot) { b in
            b.respArray(4)
            b.respBulk("SETRANGE"); b.respBulk(stream, ":dd:", device); b.respBulk(number: offset); b.respBulk(id, hash)
        }
        guard needsTTL(resend.session, stream: index) else { return }
        // Kept for the window after the last write up to a quarter window from now.
        let ttl = UInt64(window + window / 4 + 100)
        send(.record, slot: slot) { b in
            b.respArray(3)
            b.respBulk("PEXPIRE"); b.respBulk(stream, ":dd:", device); b.respBulk(number: ttl)
        }
    }

    /// What tells a QoS 1/2 PUBLISH's resend from a new message: the same packet id
    /// and payload, with DUP set (3.3.1.1). A client's recent-ids key holds one
    /// 10-byte record (packet id, payload hash; big-endian) per packet id modulo
    /// `dedup_recent`: with ids counting up, its last `dedup_recent` messages.
    struct Resend {
        var packetID: UInt16
        var dup: Bool
        /// Whose dedup key it is: the session notes when the key's TTL was set.
        var session: Session
    }

    /// The dedup keys' clock: `link.clock` in 100 ms units (32 bits last 13 years).
    private var dedupNow: UInt32 { UInt32(truncatingIfNeeded: link.clock / 100_000_000) }
    /// Keys written before this (dedupNow) may have been lost with the Redis that held
    /// them (its link went down since) and rewritten without a TTL: they get a PEXPIRE.
    private var dedupKeysSince: UInt32 = 0

    /// The link is up again: the Redis behind it may have lost the dedup keys.
    func dedupKeysMayBeLost() { dedupKeysSince = dedupNow &+ 1 }
    /// A first transmission's record is followed by a PEXPIRE only every quarter
    /// window per client and stream (with a TTL longer by as much), not every message:
    /// a PEXPIRE is a whole command, and with a SETRANGE beside each XADD it cost
    /// Redis about a third more per message (bench/redis-cost.sh, `nodedup`).
    private func needsTTL(_ s: Session, stream: Int) -> Bool {
        let now = dedupNow, every = Int32(config.dedupWindowMs / 400)
        guard every == 0 || s.dedupStream != UInt16(truncatingIfNeeded: stream)
                || Int32(bitPattern: now &- s.dedupRefreshed) >= every
                || Int32(bitPattern: s.dedupRefreshed &- dedupKeysSince) < 0 else { return false }
        // Not before `dedupKeysSince`: a link that came up this very 100 ms asks once.
        s.dedupRefreshed = Int32(bitPattern: dedupKeysSince &- now) > 0 ? dedupKeysSince : now
        s.dedupStream = UInt16(truncatingIfNeeded: stream)
        return true
    }

    /// An event on the events stream; false if dropped (Redis away too long).
    /// Written field by field: a connect's event and presence were ten transient
    /// allocations, left as holes between the sessions of a connect burst.
    @discardableResult
    func event(_ type: String, device: String, _ fields: [(String, String)] = []) -> Bool {
        guard !bookkeepingFull else { return false }
        let ts = wallMillis()
        link.enqueue(.bookkeeping, slot: eventsSlot) { b in
            b.respArray(14 + 2 * fields.count)
            b.respBulk("XADD"); b.respBulk(config.eventsStream); b.respBulk("MAXLEN"); b.respBulk("~"); b.respBulk(maxlen)
            b.respBulk("*"); b.respBulk("type"); b.respBulk(type); b.respBulk("device"); b.respBulk(device)
            b.respBulk("node"); b.respBulk(node); b.respBulk("ts"); b.respBulk(number: ts)
            for (k, v) in fields { b.respBulk(k); b.respBulk(v) }
        }
        return true
    }

    /// HINCRBY KEY DEVICE:in IN, DEVICE:out OUT (the daily traffic hash); false when
    /// the bookkeeping bound is reached, so the caller keeps the bytes for later.
    func addTraffic(key: String, device: String, in bytesIn: UInt32, out bytesOut: UInt32) -> Bool {
        guard !bookkeepingFull else { return false }
        if bytesIn > 0 { hincrby(key, device + ":in", bytesIn) }
        if bytesOut > 0 { hincrby(key, device + ":out", bytesOut) }
        return true
    }

    private func hincrby(_ key: String, _ field: String, _ n: UInt32) {
        link.enqueue(.bookkeeping, slot: link.slot(key)) { b in
            b.respArray(4)
            b.respBulk("HINCRBY"); b.respBulk(key); b.respBulk(field); b.respBulk(number: UInt64(n))
        }
    }

    /// A one-off command whose reply only matters if it is an error.
    func write(_ args: [String]) { link.enqueue(.bookkeeping, slot: link.slot(args[1])) { $0.respCommand(args) } }

    func expire(_ key: String, seconds: Int) {
        guard !bookkeepingFull else { return }
        link.enqueue(.bookkeeping, slot: link.slot(key)) { $0.respCommand(["EXPIRE", key, String(seconds)]) }
    }

    /// HGET auth.redis_hash USER. Not subject to the bookkeeping bound: a CONNECT
    /// waits on it, and only while Redis is up (see Authenticator).
    func lookupCredentials(_ user: String, expect: RedisExpectation) {
        link.enqueue(expect, slot: link.slot(credentialsKey)) { $0.respCommand(["HGET", credentialsKey, user]) }
    }

    /// presence[device] = "node|since": where the pile is and since when; the node
    /// it was on before closes its old connection (`Script.claimPresence`).
    func present(_ device: String, since: UInt64) {
        guard !bookkeepingFull else { return }
        link.enqueue(.bookkeeping, slot: presenceSlot) { b in
            b.respArray(11)
            b.respBulk("EVALSHA"); b.respBulk(Script.claimPresence.sha); b.respBulk("2")
            b.respBulk(config.presenceKey); b.respBulk(presenceAwayKey); b.respBulk(device)
            b.respBulk(prefix: nodeBar, number: since)
            b.respBulk(node); b.respBulk(config.downlinkPrefix); b.respBulk(maxlen); b.respBulk(number: since)
        }
    }

    /// A PUBLISH to the command topic of a pile that is not here: to its node's
    /// command stream, as a worker's command (`Script.forwardCommand`).
    func forwardCommand(_ m: Message, device: String) {
        guard !bookkeepingFull else { return }
        link.enqueue(.bookkeeping, slot: presenceSlot) { b in
            b.respArray(11)
            for a in ["EVALSHA", Script.forwardCommand.sha, "1", config.presenceKey, device, node, config.downlinkPrefix,
                      maxlen, m.topic] { b.respBulk(a) }
            b.respBulk(m.payload)
            b.respBulk(String(m.qos.rawValue))
        }
    }

    /// Remove presence only if it is still this connection's: after a takeover by
    /// another node the entry is theirs. A session kept here (`sessionKept`) is noted
    /// in `presence:away`, so the node the pile next connects to has it dropped here.
    func absent(_ device: String, since: UInt64, sessionKept: Bool) {
        guard !bookkeepingFull else { return }
        link.enqueue(.bookkeeping, slot: presenceSlot) { b in
            b.respArray(6)
            b.respBulk("EVAL"); b.respBulk(RedisBridge.deleteIfOwned); b.respBulk("1"); b.respBulk(config.presenceKey)
            b.respBulk(device); b.respBulk(prefix: nodeBar, number: since)
        }
        if sessionKept {
            link.enqueue(.bookkeeping, slot: link.slot(presenceAwayKey)) { b in
                b.respArray(4)
                b.respBulk("HSET"); b.respBulk(presenceAwayKey); b.respBulk(device); b.respBulk(prefix: nodeBar, number: since)
            }
        }
    }

    private static let deleteIfOwned =
        "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0"
}
