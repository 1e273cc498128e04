import MQTTCodec

extension Shard {
    /// UNSUBSCRIBE (3.10): always answered with UNSUBACK, matched or not (3.10.4-5).
    func handleUnsubscribe(_ slot: UInt32, _ u: Unsubscribe) {
        guard let session = slab[Int(slot)].session else { return }
        for f in u.filters { broker.unsubscribe(session, f) }
        send(slot, .unsuback(u.packetID))
    }
}
