import MQTTCodec
import PileLoop

/// Packet dispatch, the one place bytes become packets and packets reach their
/// handler: decode, the gates a PUBLISH passes before it is read (Redis
/// backpressure, the in-flight bound, rate rules), then a switch by packet type.
extension Shard {
    /// Decode and handle packets until the bytes run out or the connection stops
    /// taking packets; returns how many bytes were used.
    func consume(_ slot: UInt32, _ bytes: UnsafeRawBufferPointer) -> Int {
        var offset = 0
        while offset < bytes.count {
            let state = slab[Int(slot)].state
            guard state == .awaitingConnect || state == .connected, !slab[Int(slot)].throttled else { break }
            switch Decoder.decode(UnsafeRawBufferPointer(rebasing: bytes[offset...]),
                                  maxPacketSize: config.mqtt.maxPacketSize) {
            case .packet(let packet, let n):
                var handleIt = true
                if case .publish(let p) = packet, state == .connected {
                    if mustWaitForRedis(p) {
                        pause(slot)
                        return offset   // this PUBLISH is read again on resume
                    }
                    switch gatePublish(slot, p, size: n) {
                    case .pass: break
                    case .hold: return offset   // read again when the hold ends
                    case .dropped: handleIt = false
                    case .closed: return bytes.count
                    }
                }
                offset += n
                counters.packet(.in, packet.type, bytes: n)
                slab[Int(slot)].lastSeen = nowTick32
                if let s = slab[Int(slot)].session { s.countIn(n, overhead: overhead(slot), today: today) }
                if handleIt { handle(slot, packet) }
            case .incomplete:
                return offset
            case .failure(let error):
                if case .unacceptableProtocolLevel = error, state == .awaitingConnect {
                    refuseConnect(slot, .unacceptableProtocolVersion, why: error.description)
                } else {
                    malformed(slot, error)
                }
                return bytes.count
            }
        }
        return offset
    }

    /// One switch over packet types; each handler is in its own file (Handle*.swift).
    private func handle(_ slot: UInt32, _ packet: Packet) {
        if slab[Int(slot)].state == .awaitingConnect {
            guard case .connect(let c) = packet else {
                return protocolViolation(slot, "first packet is \(packet.type), not CONNECT")   // 3.1.0-1
            }
            return handleConnect(slot, c)
        }
        switch packet {
        case .connect: protocolViolation(slot, "second CONNECT")                 // 3.1.0-2
        case .publish(let p): handlePublish(slot, p)
        case .puback(let id): handlePuback(slot, id)
        case .pubrec(let id): handlePubrec(slot, id)
        case .pubrel(let id): handlePubrel(slot, id)
        case .pubcomp(let id): handlePubcomp(slot, id)
        case .subscribe(let s): handleSubscribe(slot, s)
        case .unsubscribe(let u): handleUnsubscribe(slot, u)
        case .pingreq: handlePingreq(slot)
        case .disconnect: handleDisconnect(slot)
        case .connack, .suback, .unsuback, .pingresp:
            protocolViolation(slot, "client sent \(packet.type), a server-to-client packet")
        }
    }
}
