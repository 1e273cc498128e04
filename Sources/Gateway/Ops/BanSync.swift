import PileLoop

/// Operator bans between this node and Redis (Policy/OperatorBans.swift): shard 0
/// writes the admin API's bans with an event, and reads the hash back every
/// `OperatorBans.refreshMs`, so bans made on other nodes, or before a restart, hold
/// here too, and a banned client connected here is closed.
extension Shard {
    func storeBan(_ clientID: String, _ ban: OperatorBans.Ban?) {
        guard let redis else { return }
        if let ban {
            redis.write(["HSET", config.redis.bansKey, clientID, OperatorBans.encode(ban)])
            redis.event("ban", device: clientID, [("until", String(ban.untilMs)), ("reason", ban.reason), ("by", "admin")])
        } else {
            redis.write(["HDEL", config.redis.bansKey, clientID])
            redis.event("unban", device: clientID, [("by", "admin")])
        }
    }

    /// Each tick on shard 0: read the bans hash when it is due.
    func refreshBansIfDue(nowMs: UInt64) {
        guard let redis, redis.connection.state == .up, nowMs >= nextBansRefresh else { return }
        nextBansRefresh = nowMs + OperatorBans.refreshMs
        redis.connection.enqueue(.bans) { $0.respCommand(["HGETALL", config.redis.bansKey]) }
    }

    func bansReplied(_ r: RedisReply) {
        guard !r.isError else {
            counters.add(.redisErrors)
            return logger.warning("bans: HGETALL \(config.redis.bansKey) failed: \(r.text)")
        }
        let now = wallMillis()
        var fresh: [String: OperatorBans.Ban] = [:]
        let kv = r.elements
        var i = 0
        while i + 1 < kv.count {
            let id = kv[i].text
            if let ban = OperatorBans.decode(kv[i + 1].text) {
                if ban.untilMs > now { fresh[id] = ban } else { redis?.write(["HDEL", config.redis.bansKey, id]) }
            } else {
                logger.warning("bans: \(config.redis.bansKey) field \(id) is not UNTIL_MS|REASON; ignored")
            }
            i += 2
        }
        for id in ctx.operatorBans.replace(with: fresh, nowMs: now) {
            guard let o = broker.owner(of: id) else { continue }
            logger.notice("bans: \(id) is banned (\(fresh[id]!.reason)); closing its connection")
            ctx.inboxes[o.shard].post(.kick(slot: o.slot, generation: o.generation, reason: .banned))
        }
    }
}
