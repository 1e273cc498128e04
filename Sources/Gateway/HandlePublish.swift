import MQTTCodec

extension Shard {
    /// PUBLISH from a client (3.3): authorize, hand on, acknowledge.
    func handlePublish(_ slot: UInt32, _ p: Publish) {
        guard let session = slab[Int(slot)].session else { return }
        spoke(slot, session)
        // QoS 2, method B (4.3.3): a resent PUBLISH whose id is still unreleased is
        // acknowledged again but not routed again.
        if p.qos == .exactlyOnce && session.awaitingRelease.contains(p.packetID) {
            return send(slot, .pubrec(p.packetID))
        }
        if let why = authorizePublish(session, p) {
            // Dropped; QoS 1/2 still acknowledged, as 3.1.1 leaves the client no other signal.
            denied(slot, .publishACL, "PUBLISH to \(p.topic): \(why)", extra: [("topic", p.topic)])
        } else {
            let m = Message(topic: p.topic, payload: p.payload, qos: p.qos, retain: p.retain)
            dispatch(m)
            if let redis {
                // Stored before acked: a QoS 1/2 acknowledgement waits for Redis (redisReplied).
                if p.qos == .atMostOnce {
                    if redis.canAccept { redis.xadd(m, device: session.clientID, expect: .uplinkQoS0) }
                    else { counters.add(.uplinkDropped) }   // qos0_overload = "drop"
                } else {
                    slab[Int(slot)].uplinksPending += 1
                    redis.xadd(m, device: session.clientID, expect: .uplink(
                        slot: slot, generation: slab[Int(slot)].generation, packetID: p.packetID, qos: p.qos))
                }
                return
            }
        }
        acknowledge(slot, p.packetID, p.qos)
    }

    /// PUBACK, or PUBREC (remembering the id until PUBREL) once the message is stored.
    func acknowledge(_ slot: UInt32, _ packetID: UInt16, _ qos: QoS) {
        switch qos {
        case .atMostOnce: break
        case .atLeastOnce: send(slot, .puback(packetID))
        case .exactlyOnce:
            slab[Int(slot)].session?.awaitingRelease.append(packetID)
            send(slot, .pubrec(packetID))
        }
    }

    /// The one place an accepted message is handed on: retained store, then every
    /// matching subscriber (this shard now, other shards at the end of the turn).
    /// With a `target` client id (a downlink command) it also says what became of
    /// the message for that client.
    @discardableResult
    func dispatch(_ m: Message, target: String? = nil) -> DownlinkOutcome? {
        if m.retain && config.mqtt.retainAvailable { broker.retain(m) }
        let outcome = broker.route(m, into: &remote, target: target)
        if !remote[index].isEmpty {
            // Swap, not copy: a copy alive during removeAll would make it reallocate
            // the list on every publish.
            swap(&remote[index], &local)
            for d in local where isCurrent(d.slot, d.generation) {
                deliver(d.slot, d.message, qos: d.qos, retain: d.retain)
            }
            local.removeAll(keepingCapacity: true)
        }
        return outcome
    }

    /// One of the pile's stored-before-acked PUBLISHes was answered: a pile held at
    /// `max_inflight_in` reads on once half its window is free.
    private func uplinkAnswered(_ slot: UInt32) {
        slab[Int(slot)].uplinksPending -= 1
        if slab[Int(slot)].throttled && delayedConnects[slot] == nil
            && Int(slab[Int(slot)].uplinksPending) <= config.limits.maxInflightIn / 2 {
            endHold(slot)
        }
    }

    /// A reply from Redis to something this shard sent.
    /// `waited`: nanoseconds from enqueue to reply (the XADD latency histogram).
    func redisReplied(_ e: RedisExpectation, _ r: RedisReply, waited: UInt64) {
        switch e {
        case .uplink(let slot, let generation, let packetID, let qos):
            counters.xaddLatency.record(waited)
            if isCurrent(slot, generation) { uplinkAnswered(slot) }
            guard !r.isError else {
                counters.add(.redisErrors)
                logger.error("redis refused an uplink XADD: \(r.text)")
                // Not stored, so never acknowledged: the pile resends after reconnecting.
                if isCurrent(slot, generation) { close(slot, .storeFailed) }
                return
            }
            counters.add(.uplinkStored)
            if isCurrent(slot, generation) && slab[Int(slot)].state == .connected {
                acknowledge(slot, packetID, qos)
            }
        case .uplinkQoS0:
            counters.xaddLatency.record(waited)
            if r.isError {
                counters.add(.redisErrors)
                logger.warning("redis refused a QoS 0 uplink XADD: \(r.text)")
            } else {
                counters.add(.uplinkStored)
            }
        case .bookkeeping:
            if r.isError {
                counters.add(.redisErrors)
                logger.warning("redis error: \(r.text)")
            }
        case .downlink(let step):
            downlinkReplied(step, r)
        case .credentials(let slot, let generation, let user):
            credentialsReplied(slot: slot, generation: generation, user: user, r)
        }
    }
}
