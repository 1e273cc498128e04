import PileLoop

/// Per-device overrides between Redis and the shards (Policy/DeviceOverrides.swift):
/// shard 0 reads the hash every `rate.overrides_cache_seconds` and writes the admin
/// API's changes (with an event); every shard copies the node's map when it changes.
extension Shard {
    /// Each tick: take a new copy of the map if there is one; on shard 0, read the
    /// hash when due.
    func syncOverrides(nowMs: UInt64) {
        let g = ctx.overrides.generation.load(ordering: .acquiring)
        if g != overridesSeen {
            overridesSeen = g
            overrides = ctx.overrides.snapshot
        }
        let key = config.rate.overridesHash
        guard index == 0, !key.isEmpty, let redis, redis.connection.state == .up, nowMs >= nextOverridesRefresh else { return }
        nextOverridesRefresh = nowMs + UInt64(config.rate.overridesCacheSeconds) * 1000
        redis.connection.enqueue(.overrides) { $0.respCommand(["HGETALL", key]) }
    }

    func overridesReplied(_ r: RedisReply) {
        guard !r.isError else {
            counters.add(.redisErrors)
            return logger.warning("overrides: HGETALL \(config.rate.overridesHash) failed: \(r.text)")
        }
        var fresh: [String: DeviceOverride] = [:]
        let kv = r.elements
        var i = 0
        while i + 1 < kv.count {
            let id = kv[i].text
            switch DeviceOverride.parse(kv[i + 1].text) {
            case .success(let o): fresh[id] = o
            case .failure(let why): logger.warning("overrides: \(config.rate.overridesHash) field \(id): \(why); ignored")
            }
            i += 2
        }
        ctx.overrides.replace(fresh)
        let now = wallMillis()
        for (id, o) in fresh where (o.bannedUntilMs ?? 0) > now {
            guard let owner = broker.owner(of: id) else { continue }
            logger.notice("overrides: \(id) is banned until \(o.bannedUntilMs!) (\(o.note)); closing its connection")
            ctx.inboxes[owner.shard].post(.kick(slot: owner.slot, generation: owner.generation, reason: .banned))
        }
    }

    /// An override from the admin API (nil: cleared): into Redis, with an event, and
    /// read back at once.
    func storeOverride(_ clientID: String, _ text: String?) {
        guard let redis, !config.rate.overridesHash.isEmpty else { return }
        if let text {
            redis.write(["HSET", config.rate.overridesHash, clientID, text])
            redis.event("override", device: clientID, [("value", text), ("by", "admin")])
        } else {
            redis.write(["HDEL", config.rate.overridesHash, clientID])
            redis.event("override_cleared", device: clientID, [("by", "admin")])
        }
        nextOverridesRefresh = 0
    }
}
