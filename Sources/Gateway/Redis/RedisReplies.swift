import MQTTCodec
import PileLoop

/// Replies from Redis to what this shard sent: uplink XADDs (a QoS 1/2 PUBLISH
/// is acknowledged here, once stored), bookkeeping, the downlink reader's steps
/// and credential lookups.
extension Shard {
    /// Replies and state changes of the shard's Redis links go to the handlers below.
    func wireRedis() {
        let ms = monotonicMillis()
        for link in [redis?.link, downlink?.link, fleet?.link].compactMap({ $0 }) {
            link.onReply = { [unowned self] e, r, t in self.redisReplied(e, r, waited: t) }
            link.onWait = { [unowned self] confirmed, enough in
                guard !enough else { return }
                self.counters.add(.redisWaitShort)
                self.logger.warning("redis WAIT confirmed \(confirmed) of \(self.config.redis.waitReplicas) replicas within \(self.config.redis.waitTimeoutMs) ms; its acknowledgements wait for the next WAIT")
            }
            link.tick(nowMs: ms)
        }
        downlink?.link.onState = { [unowned self] s in if s == .up { self.downlink?.start() } }
        fleet?.link.onState = { [unowned self] _ in self.fleet?.reset() }
        redis?.link.onState = { [unowned self] s in
            self.counters.set(.redisUp, s == .up ? 1 : 0)
            if s == .up { self.redis?.dedupKeysMayBeLost() }
            if s == .up && self.index == 0 { self.checkEvictionPolicy() }
        }
    }

    /// Each tick: the Redis gauges, and what the links saw of a cluster.
    func noteRedis(_ uplink: RedisLink<RedisExpectation>, nowMs: UInt64) {
        counters.set(.redisInflight, UInt64(redis?.unanswered ?? uplink.unanswered))
        counters.set(.redisStalled, uplink.stalledNs / 1_000_000 > UInt64(config.redis.connectTimeoutMs) ? 1 : 0)
        guard uplink.cluster else { return }
        let stats = [uplink, downlink?.link, fleet?.link].compactMap { $0?.stats }
        counters.set(.redisMoved, UInt64(stats.reduce(0) { $0 + $1.moved }))
        counters.set(.redisAsk, UInt64(stats.reduce(0) { $0 + $1.asks }))
        counters.set(.redisClusterRetries, UInt64(stats.reduce(0) { $0 + $1.retried }))
        counters.set(.redisFailovers, UInt64(stats.reduce(0) { $0 + $1.failovers }))
        guard index == 0 else { return }
        counters.set(.redisClusterMasters, UInt64(uplink.mastersKnown))
        counters.set(.redisUnservedSlots, UInt64(uplink.map?.unservedSlots ?? HashSlot.count))
        counters.set(.redisSlotMapAge, uplink.mapAge(nowMs: nowMs) / 1000)
    }

    /// One of the pile's stored-before-acked PUBLISHes was answered: a pile held at
    /// `max_inflight_in` reads on once half its window is free.
    private func uplinkAnswered(_ slot: UInt32) {
        slab[Int(slot)].uplinksPending -= 1
        if slab[Int(slot)].throttled && waits.rateSlot[slot] == nil
            && Int(slab[Int(slot)].uplinksPending) <= config.limits.maxInflightIn / 2 {
            endHold(slot)
        }
    }

    /// An uplink command was answered, by this shard's pipeline or its writer's: a
    /// QoS 1/2 PUBLISH stored (or recognised by `Script.dedupAdd` as a resend) is
    /// acknowledged; one refused is never acknowledged and its pile is closed, so it
    /// resends after reconnecting.
    func uplinkReplied(_ u: Uplink, _ outcome: UplinkOutcome, waited: UInt64) {
        redis?.answered(u)
        if u.isMessage && u != .will { counters.xaddLatency.record(waited) }
        switch (u, outcome) {
        case (.publish(let slot, let generation, _, _), .refused(let why)):
            counters.add(.redisErrors)
            logger.error("redis refused an uplink XADD: \(why)")
            if isCurrent(slot, generation) { uplinkAnswered(slot); close(slot, .storeFailed) }
        case (.publish(let slot, let generation, let packetID, let qos), .stored(let kind)):
            counters.add(kind)
            guard isCurrent(slot, generation) else { return }
            uplinkAnswered(slot)
            if slab[Int(slot)].state == .connected { acknowledge(slot, packetID, qos) }
        case (.qos0, .refused(let why)):
            counters.add(.redisErrors)
            logger.warning("redis refused a QoS 0 uplink XADD: \(why)")
        case (.qos0, .stored(let kind)):
            counters.add(kind)
        case (.will, .refused(let why)), (.record, .refused(let why)):
            counters.add(.redisErrors)
            logger.warning("redis error: \(why)")
        case (.will, .stored), (.record, .stored):
            break
        }
    }

    /// A reply from Redis to something this shard sent.
    /// `waited`: nanoseconds from enqueue to reply (the XADD latency histogram).
    func redisReplied(_ e: RedisExpectation, _ r: RedisReply, waited: UInt64) {
        switch e {
        case .uplink(let u):
            uplinkReplied(u, UplinkOutcome(r), waited: waited)
        case .relayed(let u, let origin, let at):
            redis?.relayedReplied(u, origin: Int(origin), at: at, r)
        case .bookkeeping:
            if r.isError {
                counters.add(.redisErrors)
                logger.warning("redis error: \(r.text)")
            }
        case .downlink(let step):
            downlinkReplied(step, r)
        case .command(.stored(let a)):
            storedReplied(a, r)
        case .command(.reviewed(let a)):
            reviewedReplied(a, r)
        case .command(.removed(let e)):
            removedReplied(e, r)
        case .command(.mailbox(let slot, let generation)):
            if isCurrent(slot, generation) && slab[Int(slot)].state == .connected { mailboxReplied(slot, r) }
        case .credentials(let slot, let generation, let user):
            credentialsReplied(slot: slot, generation: generation, user: user, r)
        case .review(let step):
            reviewReplied(step, r)
        case .evictionPolicy:
            evictionPolicyReplied(r)
        case .bans:
            bansReplied(r)
        case .overrides:
            overridesReplied(r)
        case .serverInfo:
            serverInfoReplied(r)
        case .fleetTail(let s):
            fleet?.tailed(s, r)
        case .fleet:
            let wanted = broker.hasWildcardSubscribers
            for m in fleet?.replied(r, wanted: wanted) ?? [] { fanOut(m, wildcardOnly: true) }
        case .nodes(let reply):
            nodesReplied(reply: reply, r)
        case .events(let device, let limit, let reply):
            eventsReplied(device: device, limit: limit, reply: reply, r)
        }
    }
}
