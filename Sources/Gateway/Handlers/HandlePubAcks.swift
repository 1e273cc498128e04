import MQTTCodec

/// The acknowledgements of QoS 1 and 2 flows (3.4 - 3.7, 4.3).
extension Shard {
    /// PUBACK: a QoS 1 message we sent is done.
    func handlePuback(_ slot: UInt32, _ id: UInt16) {
        guard let s = slab[Int(slot)].session else { return }
        if let i = s.inflight.firstIndex(where: { $0.packetID == id && $0.qos == .atLeastOnce }) {
            if let c = s.inflight.remove(at: i).command { commandAcked(s, c) }
            pump(slot)
        }
    }

    /// PUBREC: the client has our QoS 2 message; release it with PUBREL.
    func handlePubrec(_ slot: UInt32, _ id: UInt16) {
        guard let s = slab[Int(slot)].session else { return }
        if let i = s.inflight.firstIndex(where: { $0.packetID == id && $0.qos == .exactlyOnce }) {
            s.inflight[i].released = true
        }
        send(slot, .pubrel(id))
    }

    /// PUBREL: the client releases its QoS 2 message; always answered (4.3.3).
    func handlePubrel(_ slot: UInt32, _ id: UInt16) {
        guard let s = slab[Int(slot)].session else { return }
        s.awaitingRelease.removeAll { $0 == id }
        send(slot, .pubcomp(id))
    }

    /// PUBCOMP: our QoS 2 message is done.
    func handlePubcomp(_ slot: UInt32, _ id: UInt16) {
        guard let s = slab[Int(slot)].session else { return }
        if let i = s.inflight.firstIndex(where: { $0.packetID == id && $0.released }) {
            if let c = s.inflight.remove(at: i).command { commandAcked(s, c) }
            pump(slot)
        }
    }
}
