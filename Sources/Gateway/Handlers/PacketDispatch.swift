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
            // The first byte says whether this can be a CONNECT (0x10: type 1, flags 0,
            // 3.1.0-1, 2.2.2): an HTTP request or other garbage is refused now, not
            // once "the packet" it seems to announce is complete or the deadline passes.
            if state == .awaitingConnect && bytes[offset] != 0x10 {
                notConnect(slot, firstByte: bytes[offset])
                return bytes.count
            }
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

    /// A connection's first byte cannot start a CONNECT: say what it is instead.
    private func notConnect(_ slot: UInt32, firstByte b: UInt8) {
        guard let type = PacketType(rawValue: b >> 4) else { return malformed(slot, .reservedPacketType(b >> 4)) }
        if type == .connect { return malformed(slot, .invalidFlags(.connect, b & 0x0F)) }   // 2.2.2
        protocolViolation(slot, "first packet is \(type), not CONNECT (first byte 0x\(String(b, radix: 16)))")   // 3.1.0-1
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
