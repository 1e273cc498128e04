import MQTTCodec

extension Shard {
    /// PUBLISH from a client (3.3): authorize, hand on, acknowledge.
    func handlePublish(_ slot: UInt32, _ p: Publish) {
        counters.add(.publishesIn)
        guard let session = slab[Int(slot)].session else { return }
        // QoS 2, method B (4.3.3): a resent PUBLISH whose id is still unreleased is
        // acknowledged again but not routed again.
        if p.qos == .exactlyOnce && session.awaitingRelease.contains(p.packetID) {
            return send(slot, .pubrec(p.packetID))
        }
        if let why = authorizePublish(session, p) {
            // Dropped; QoS 1/2 still acknowledged, as 3.1.1 leaves the client no other signal.
            counters.add(.publishDenied)
            logger.info("PUBLISH denied: \(why)", metadata: ["client": "\(session.clientID)", "topic": "\(p.topic)"])
        } else {
            dispatch(Message(topic: p.topic, payload: p.payload, qos: p.qos, retain: p.retain))
        }
        switch p.qos {
        case .atMostOnce: break
        case .atLeastOnce: send(slot, .puback(p.packetID))
        case .exactlyOnce:
            session.awaitingRelease.append(p.packetID)
            send(slot, .pubrec(p.packetID))
        }
    }

    /// The one place an accepted message is handed on: retained store, then every
    /// matching subscriber (this shard now, other shards at the end of the turn).
    func dispatch(_ m: Message) {
        if m.retain && config.mqtt.retainAvailable { broker.retain(m) }
        broker.route(m, into: &remote)
        if !remote[index].isEmpty {
            let mine = remote[index]
            remote[index].removeAll(keepingCapacity: true)
            for d in mine where isCurrent(d.slot, d.generation) {
                deliver(d.slot, d.message, qos: d.qos, retain: d.retain)
            }
        }
    }
}
