import MQTTCodec

extension Shard {
    /// SUBSCRIBE (3.8): one return code per filter, in order; retained messages
    /// matching a granted filter follow the SUBACK.
    func handleSubscribe(_ slot: UInt32, _ sub: Subscribe) {
        guard let session = slab[Int(slot)].session else { return }
        var codes: [UInt8] = []
        codes.reserveCapacity(sub.topics.count)
        for t in sub.topics {
            if let why = authorizeSubscribe(session, t) {
                denied(slot, .subscribeACL, "SUBSCRIBE to \(t.filter): \(why)", extra: [("filter", t.filter)])
                codes.append(Suback.failure)
            } else {
                broker.subscribe(session, t)
                codes.append(t.qos.rawValue)
                logger.debug("subscribed", metadata: ["client": "\(session.clientID)", "filter": "\(t.filter)", "qos": "\(t.qos.rawValue)"])
            }
        }
        send(slot, .suback(Suback(packetID: sub.packetID, returnCodes: codes)))
        if codes.contains(where: { $0 != Suback.failure }) { fetchMail(slot) }   // commands waiting for it
        guard config.mqtt.retainAvailable else { return }
        for (t, code) in zip(sub.topics, codes) where code != Suback.failure {
            for m in broker.retainedMessages(matching: t.filter) {
                deliver(slot, m, qos: min(m.qos, t.qos), retain: true)   // 3.3.1-8
            }
        }
    }
}
