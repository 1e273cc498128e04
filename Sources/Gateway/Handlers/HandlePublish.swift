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
            fanOut(m)
            if let redis {
                // To a pile's command topic, and the pile is on another node: there,
                // as a worker's command (with its outcome).
                if let device = config.mqtt.device(inCommandTopic: p.topic), !broker.holds(device) {
                    redis.forwardCommand(m, device: device)
                }
                // Stored before acked: a QoS 1/2 acknowledgement waits for Redis (redisReplied).
                if p.qos == .atMostOnce {
                    if redis.canAccept { redis.xadd(m, device: session.clientID, expect: .qos0) }
                    else { counters.add(.uplinkDropped) }   // qos0_overload = "drop"
                } else {
                    slab[Int(slot)].uplinksPending += 1
                    redis.xadd(m, device: session.clientID, expect: .publish(
                        slot: slot, generation: slab[Int(slot)].generation, packetID: p.packetID, qos: p.qos),
                               resend: .init(packetID: p.packetID, dup: p.dup, session: session))
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
}
