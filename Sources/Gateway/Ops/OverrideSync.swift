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
        guard index == 0, !key.isEmpty, let redis, redis.link.state == .up, nowMs >= nextOverridesRefresh else { return }
        nextOverridesRefresh = nowMs + UInt64(config.rate.overridesCacheSeconds) * 1000
        redis.link.enqueue(.overrides, slot: redis.link.slot(key)) { $0.respCommand(["HGETALL", key]) }
    }

    func overridesReplied(_ r: RedisReply) {
        guard !r.isError else {
            counters.add(.redisErrors)
            return logger.warning("overrides: HGETALL \(config.rate.overridesHash) failed: \(r.text)")
        }
        var fresh: [String: DeviceOverride] = [:]
        for (id, value) in r.pairs {
            switch DeviceOverride.parse(value.text) {
            case .success(let o): fresh[id] = o
            case .failure(let why): logger.warning("overrides: \(config.rate.overridesHash) field \(id): \(why); ignored")
            }
        }
        ctx.overrides.replace(fresh)
        let now = wallMillis()
        for (id, o) in fresh where (o.bannedUntilMs ?? 0) > now {
            closeBanned(id, "override until \(o.bannedUntilMs!): \(o.note)")
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
