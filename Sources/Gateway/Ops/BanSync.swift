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
        guard let redis, redis.link.state == .up, nowMs >= nextBansRefresh else { return }
        nextBansRefresh = nowMs + OperatorBans.refreshMs
        redis.link.enqueue(.bans, slot: redis.link.slot(config.redis.bansKey)) { $0.respCommand(["HGETALL", config.redis.bansKey]) }
    }

    func bansReplied(_ r: RedisReply) {
        guard !r.isError else {
            counters.add(.redisErrors)
            return logger.warning("bans: HGETALL \(config.redis.bansKey) failed: \(r.text)")
        }
        let now = wallMillis()
        var fresh: [String: OperatorBans.Ban] = [:]
        for (id, value) in r.pairs {
            if let ban = OperatorBans.decode(value.text) {
                if ban.untilMs > now { fresh[id] = ban } else { redis?.write(["HDEL", config.redis.bansKey, id]) }
            } else {
                logger.warning("bans: \(config.redis.bansKey) field \(id) is not UNTIL_MS|REASON; ignored")
            }
        }
        for id in ctx.operatorBans.replace(with: fresh, nowMs: now) { closeBanned(id, fresh[id]!.reason) }
    }

    /// A client id banned here or elsewhere: close its connection on this node, if it has one.
    func closeBanned(_ clientID: String, _ why: String) {
        guard let o = broker.owner(of: clientID) else { return }
        logger.notice("\(clientID) is banned (\(why)); closing its connection")
        ctx.inboxes[o.shard].post(.kick(slot: o.slot, generation: o.generation, reason: .banned))
    }

    /// Why a CONNECT with this client id is refused for a ban (an operator's, or its
    /// override's), or nil.
    func banRefusal(_ clientID: String) -> String? {
        let now = wallMillis()
        if let until = overrides[clientID]?.bannedUntilMs, until > now { return "banned by its override until \(until)" }
        return ctx.operatorBans.refusal(clientID, nowMs: now)
    }
}
