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
            if s == .up && self.index == 0 { self.checkEvictionPolicy() }
        }
    }

    /// Each tick: the Redis gauges, and what the links saw of a cluster.
    func noteRedis(_ uplink: RedisLink<RedisExpectation>, nowMs: UInt64) {
        counters.set(.redisInflight, UInt64(uplink.unanswered))
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

    /// An uplink XADD's reply: stored, or (`Script.dedupAdd`) recognised as a
    /// resend (0) or a repeated record (-1), acknowledged all the same.
    private func stored(_ r: RedisReply) -> Counter {
        switch r.integer {
        case 0: .uplinkResends
        case -1: .uplinkRepeatedRecords
        default: .uplinkStored
        }
    }

    /// A reply from Redis to something this shard sent.
    /// `waited`: nanoseconds from enqueue to reply (the XADD latency histogram).
    func redisReplied(_ e: RedisExpectation, _ r: RedisReply, waited: UInt64) {
        switch e {
        case .uplink(let slot, let generation, let packetID, let qos):
            counters.xaddLatency.record(waited)
            redis?.answered()
            if isCurrent(slot, generation) { uplinkAnswered(slot) }
            guard !r.isError else {
                counters.add(.redisErrors)
                logger.error("redis refused an uplink XADD: \(r.text)")
                // Not stored, so never acknowledged: the pile resends after reconnecting.
                if isCurrent(slot, generation) { close(slot, .storeFailed) }
                return
            }
            counters.add(stored(r))
            if isCurrent(slot, generation) && slab[Int(slot)].state == .connected {
                acknowledge(slot, packetID, qos)
            }
        case .uplinkQoS0:
            counters.xaddLatency.record(waited)
            redis?.answered()
            if r.isError {
                counters.add(.redisErrors)
                logger.warning("redis refused a QoS 0 uplink XADD: \(r.text)")
            } else {
                counters.add(stored(r))
            }
        case .bookkeeping, .will:
            if case .will = e { redis?.answered() }
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
