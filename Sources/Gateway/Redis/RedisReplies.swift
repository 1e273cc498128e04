import MQTTCodec

/// Replies from Redis to what this shard sent: uplink XADDs (a QoS 1/2 PUBLISH
/// is acknowledged here, once stored), bookkeeping, the downlink reader's steps
/// and credential lookups.
extension Shard {
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
