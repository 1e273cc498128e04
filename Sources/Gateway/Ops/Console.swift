import PileLoop

/// What the operator console (`GET /` on the admin endpoint, Ops/Console/console.html)
/// reads, each second: the node's totals and gauges as JSON, under the names of the
/// metrics they come from (`connections` is `pilegate_connections`). The page turns
/// totals into rates itself, from one poll to the next, so the node keeps no history.
struct ConsoleFeed {
    let counters: [Counters]
    let broker: Broker
    let watch: StreamWatch
    let control: AdminControl
    let node: String
    let startedAt: UInt64
    let maxConnections: Int

    /// `GET /admin/overview`.
    func overview() -> [String: Any] {
        func total(_ c: Counter) -> UInt64 { Counters.total(c, counters) }
        let connections = total(.clientsConnected)
        let rss = Metrics.residentBytes()
        let xadd = Histogram.merged(counters.map(\.xaddLatency))
        return [
            "node": node, "version": pilegateVersion,
            "uptime_seconds": (monotonicMillis() - startedAt) / 1000,
            "shards": Counters.shards(in: counters),
            "connections": connections, "connections_limit": maxConnections, "sessions": broker.clientCount,
            "connects_total": total(.connectsAccepted), "connects_refused_total": total(.connectsRefused),
            "connections_closed_total": total(.connectionsClosed),
            "publishes_in_total": Counters.totalPackets(.in, .publish, counters).packets,
            "publishes_out_total": Counters.totalPackets(.out, .publish, counters).packets,
            "uplink_stored_total": total(.uplinkStored),
            "redis_up_shards": total(.redisUp), "redis_inflight_commands": total(.redisInflight),
            // Per-bucket counts (+Inf last): the page takes its p99 over the last seconds.
            "redis_xadd_latency_seconds": ["bounds": counters[0].xaddLatency.bounds.map { Double($0) / 1e9 },
                                           "counts": xadd.counts],
            "backpressure_pauses_total": total(.backpressurePauses),
            "uplink_held_for_workers": watch.isHeld,
            "denials": [
                "auth": total(.authFailures), "client_id": total(.clientIDRefused), "banned": total(.bannedRefused),
                "publish_acl": total(.publishDenied), "subscribe_acl": total(.subscribeDenied),
                "connect_rate": total(.connectRateRefused), "ip_connections": total(.ipConnectionsRefused),
                "rate": total(.rateThrottles) + total(.rateDrops) + total(.rateDisconnects), "quota": total(.quotaBreaches),
            ],
            "process_resident_memory_bytes": rss,
            "memory_per_connection_bytes": connections > 0 ? rss / Int(connections) : 0,
            "draining": control.isDraining,
        ]
    }
}

extension Shard {
    /// Shard 0, for the console: the newest `limit` entries of the events stream
    /// (those of `device` only, when given; the newest 2,000 are searched).
    func readEvents(_ limit: Int, device: String?, reply: Inbox<[[String: String]]?>) {
        guard let redis, redis.link.state == .up else { return reply.post(nil) }
        let count = device == nil ? limit : 2000
        redis.link.enqueue(.events(device: device, limit: limit, reply: reply), slot: redis.eventsSlot) {
            $0.respCommand(["XREVRANGE", config.redis.eventsStream, "+", "-", "COUNT", String(count)])
        }
    }

    func eventsReplied(device: String?, limit: Int, reply: Inbox<[[String: String]]?>, _ r: RedisReply) {
        guard !r.isError else { return reply.post(nil) }
        var out: [[String: String]] = []
        for entry in r.elements where out.count < limit {
            let parts = entry.elements
            guard parts.count == 2 else { continue }
            var e = ["id": parts[0].text]
            for (k, v) in parts[1].pairs { e[k] = v.text }
            if device == nil || e["device"] == device { out.append(e) }
        }
        reply.post(out)
    }
}

/// The fleet as the console shows it: every node writes its state to one Redis hash
/// (`redis.presence_key` + `:nodes`, field = node name, value
/// `CONNECTIONS|STATE|VERSION|WALL_MS`, STATE `ready`, `draining` or `held`) every
/// two seconds from shard 0; a node not heard from for 10 s is shown as silent.
extension Shard {
    static let heartbeatMs: UInt64 = 2000

    func heartbeatIfDue(nowMs: UInt64) {
        guard let redis, redis.link.state == .up, nowMs >= nextHeartbeat else { return }
        nextHeartbeat = nowMs + Shard.heartbeatMs
        let state = drain.perTick > 0 ? "draining" : ctx.streams.isHeld ? "held" : "ready"
        redis.write(["HSET", config.redis.presenceKey + ":nodes", config.server.node,
                     "\(Counters.total(.clientsConnected, ctx.counters))|\(state)|\(pilegateVersion)|\(wallMillis())"])
    }

    func readNodes(reply: Inbox<[[String: String]]?>) {
        guard let redis, redis.link.state == .up else { return reply.post(nil) }
        redis.link.enqueue(.nodes(reply: reply), slot: redis.link.slot(config.redis.presenceKey + ":nodes")) { $0.respCommand(["HGETALL", config.redis.presenceKey + ":nodes"]) }
    }

    func nodesReplied(reply: Inbox<[[String: String]]?>, _ r: RedisReply) {
        guard !r.isError else { return reply.post(nil) }
        let now = wallMillis()
        reply.post(r.pairs.compactMap { node, v in
            let f = v.text.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            guard f.count == 4, let at = UInt64(f[3]) else { return nil }
            let ago = now > at ? now - at : 0
            return ["node": node, "connections": f[0], "state": ago > 10_000 ? "silent" : f[1], "version": f[2],
                    "heard_ms_ago": String(ago)]
        }.sorted { $0["node"]! < $1["node"]! })
    }
}
