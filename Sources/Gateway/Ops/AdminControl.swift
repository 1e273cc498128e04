import Atomics
import Foundation
import PileLoop

/// What the admin API says about one connection. Built on the shard that owns it
/// (a session is only ever touched by its owner), then handed to the admin thread.
struct ClientInfo: Sendable {
    var clientID: String
    var shard: Int
    var connectedAtMs: UInt64 = 0
    var peer = ""
    var tls = false
    var subscriptions: [String] = []
    var usage = DailyUsage()
    var lastSeenSecondsAgo: Double = 0
    var held = false
    var paused = false
    /// Bytes a day the pile may move (its override's, else `rate.daily_quota_bytes`); 0: none.
    var dailyQuota: UInt64 = 0

    var json: [String: Any] {
        ["client_id": clientID, "shard": shard, "connected_since_ms": connectedAtMs, "peer": peer, "tls": tls,
         "subscriptions": subscriptions,
         "today": ["bytes_in": usage.inbound.bytes, "bytes_out": usage.outbound.bytes,
                   "packets_in": usage.inbound.packets, "packets_out": usage.outbound.packets],
         "last_seen_seconds_ago": lastSeenSecondsAgo,
         "rate": ["throttled": held, "backpressure_paused": paused, "quota_breached_today": usage.breachReported,
                  "daily_quota_bytes": dailyQuota, "quota_used_bytes": usage.total]]
    }
}

extension Shard {
    func info(_ slot: UInt32) -> ClientInfo {
        let c = slab[Int(slot)]
        guard let s = c.session else { return ClientInfo(clientID: "", shard: index) }
        s.usage.roll(to: today)
        return ClientInfo(clientID: s.clientID, shard: index, connectedAtMs: s.connectedAtMs, peer: "\(c.peer)",
                          tls: c.tls != nil,
                          subscriptions: s.subscriptions.map { broker.ownTopic.text($0.filter, clientID: s.clientID) },
                          usage: s.usage,
                          lastSeenSecondsAgo: Double(nowTick32 &- c.lastSeen) * Double(Shard.tickMillis) / 1000,
                          held: c.throttled, paused: c.paused,
                          dailyQuota: overrides[s.clientID]?.quota ?? UInt64(policy.rates.quota))
    }

    /// This shard's `n` connected clients with the most bytes today.
    func top(_ n: Int) -> [ClientInfo] {
        var best: [(UInt64, UInt32)] = []
        for i in slab.indices where slab[i].state == .connected {
            guard let s = slab[i].session else { continue }
            s.usage.roll(to: today)
            best.append((s.usage.total, UInt32(i)))
        }
        best.sort { $0.0 > $1.0 }
        return best.prefix(n).map { info($0.1) }
    }
}

/// The admin API's view of the running node: the operations that reach into shards.
final class AdminControl: @unchecked Sendable {
    let broker: Broker
    let inboxes: [Inbox<ShardMessage>]
    let listeners: [Int32]
    let drainRate: Int
    private let draining = ManagedAtomic<Bool>(false)

    /// `POST /admin/reload`.
    let reloader: Reloader

    let bans: OperatorBans
    let overrides: DeviceOverrides

    init(broker: Broker, inboxes: [Inbox<ShardMessage>], listeners: [Int32], drainRate: Int, reloader: Reloader,
         bans: OperatorBans, overrides: DeviceOverrides) {
        self.reloader = reloader
        self.bans = bans
        self.overrides = overrides
        self.broker = broker; self.inboxes = inboxes; self.listeners = listeners; self.drainRate = drainRate
    }

    var isDraining: Bool { draining.load(ordering: .relaxed) }

    func lookup(_ clientID: String) -> ClientInfo? {
        guard let o = broker.owner(of: clientID) else { return nil }
        let reply = Inbox<ClientInfo>()
        inboxes[o.shard].post(.inspect(slot: o.slot, generation: o.generation, reply: reply))
        return reply.wait(timeoutMillis: 2000).first.flatMap { $0.clientID.isEmpty ? nil : $0 }
    }

    func top(_ n: Int) -> [ClientInfo] {
        let reply = Inbox<[ClientInfo]>()
        for inbox in inboxes { inbox.post(.top(n, reply: reply)) }
        var all: [ClientInfo] = []
        var answers = 0
        let deadline = monotonicMillis() + 5000
        while answers < inboxes.count && monotonicMillis() < deadline {
            let got = reply.wait(timeoutMillis: 500)
            answers += got.count
            all += got.joined()
        }
        return Array(all.sorted { $0.usage.total > $1.usage.total }.prefix(n))
    }

    /// The newest `limit` events (of `device`), read from Redis by shard 0; nil when
    /// Redis does not answer.
    func events(limit: Int, device: String?) -> [[String: String]]? {
        ask { .events(limit: limit, device: device, reply: $0) }
    }

    /// The fleet's nodes as each last said (Ops/Console.swift); nil when Redis does not answer.
    func nodes() -> [[String: String]]? { ask { .nodes(reply: $0) } }

    /// One question to shard 0 that Redis answers, waited for up to 2 s.
    private func ask(_ message: (Inbox<[[String: String]]?>) -> ShardMessage) -> [[String: String]]? {
        let reply = Inbox<[[String: String]]?>()
        inboxes[0].post(message(reply))
        return reply.wait(timeoutMillis: 2000).first ?? nil
    }

    func kick(_ clientID: String, reason: CloseReason = .kicked) -> Bool {
        guard let o = broker.owner(of: clientID) else { return false }
        inboxes[o.shard].post(.kick(slot: o.slot, generation: o.generation, reason: reason))
        return true
    }

    /// Ban (or with nil, unban) a client id on every node: here at once (a connected
    /// client is closed), in Redis through shard 0 (with an event), and so on every
    /// node at its next refresh.
    func ban(_ clientID: String, _ ban: OperatorBans.Ban?) {
        bans.set(clientID, ban, nowMs: wallMillis())
        if ban != nil { _ = kick(clientID, reason: .banned) }
        inboxes[0].post(.operatorBan(clientID: clientID, ban))
    }

    /// Set (or with nil, clear) a device override: through shard 0 into Redis, read
    /// back at once; every node has it within `rate.overrides_cache_seconds`.
    func override(_ clientID: String, _ text: String?) {
        inboxes[0].post(.override(clientID: clientID, text))
    }

    /// Stop accepting (the listeners leave LISTEN, so new piles go to other nodes),
    /// then close connected piles at `drain_rate` per second over all shards.
    func drain() {
        guard draining.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        for fd in listeners { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        let perTick = max(1, drainRate * Int(Shard.tickMillis) / 1000 / inboxes.count)
        for inbox in inboxes { inbox.post(.drain(perTick: perTick)) }
    }
}

