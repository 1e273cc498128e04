/// Somewhere encoded bytes go. Generic (not existential) so each sink gets its own
/// specialised encoder: `[UInt8]` here, the gateway's send buffers elsewhere.
public protocol ByteSink {
    mutating func append(byte: UInt8)
    mutating func append(bytes: UnsafeRawBufferPointer)
}

extension Array: ByteSink where Element == UInt8 {
    @inlinable public mutating func append(byte: UInt8) { append(byte) }
    @inlinable public mutating func append(bytes: UnsafeRawBufferPointer) { append(contentsOf: bytes) }
}

/// The MQTT 3.1.1 encoder: values in, bytes out.
public enum Encoder {
    /// Bytes needed to encode `packet`, fixed header included.
    public static func size(of packet: Packet) -> Int {
        let n = remainingLength(of: packet)
        return 1 + lengthOfLength(n) + n
    }

    public static func encode<S: ByteSink>(_ packet: Packet, into out: inout S) {
        let remaining = remainingLength(of: packet)
        switch packet {
        case .connect(let c):
            header(0x10, remaining, &out)
            string(c.protocolName, &out)
            out.append(byte: c.protocolLevel)
            var flags: UInt8 = c.cleanSession ? 0x02 : 0
            if let w = c.will {
                flags |= 0x04 | w.qos.rawValue << 3 | (w.retain ? 0x20 : 0)
            }
            if c.password != nil { flags |= 0x40 }
            if c.username != nil { flags |= 0x80 }
            out.append(byte: flags)
            u16(c.keepAlive, &out)
            string(c.clientID, &out)
            if let w = c.will {
                string(w.topic, &out)
                binary(w.payload, &out)
            }
            if let u = c.username { string(u, &out) }
            if let p = c.password { binary(p, &out) }
        case .connack(let a):
            header(0x20, remaining, &out)
            out.append(byte: a.sessionPresent ? 1 : 0)
            out.append(byte: a.returnCode.rawValue)
        case .publish(let p):
            publishHeader(topic: p.topic, payloadCount: p.payload.count, qos: p.qos, retain: p.retain,
                          dup: p.dup, packetID: p.packetID, into: &out)
            p.payload.withUnsafeBytes { out.append(bytes: $0) }
        case .puback(let id): ack(0x40, id, &out)
        case .pubrec(let id): ack(0x50, id, &out)
        case .pubrel(let id): ack(0x62, id, &out)
        case .pubcomp(let id): ack(0x70, id, &out)
        case .subscribe(let s):
            header(0x82, remaining, &out)
            u16(s.packetID, &out)
            for t in s.topics {
                string(t.filter, &out)
                out.append(byte: t.qos.rawValue)
            }
        case .suback(let s):
            header(0x90, remaining, &out)
            u16(s.packetID, &out)
            for c in s.returnCodes { out.append(byte: c) }
        case .unsubscribe(let u):
            header(0xA2, remaining, &out)
            u16(u.packetID, &out)
            for f in u.filters { string(f, &out) }
        case .unsuback(let id): ack(0xB0, id, &out)
        case .pingreq: header(0xC0, 0, &out)
        case .pingresp: header(0xD0, 0, &out)
        case .disconnect: header(0xE0, 0, &out)
        }
    }

    public static func encode(_ packet: Packet) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(size(of: packet))
        encode(packet, into: &out)
        return out
    }

    /// PUBLISH fixed and variable header only: the caller appends the payload bytes,
    /// so one shared payload can go to many subscribers without a copy per packet.
    public static func publishHeader<S: ByteSink>(topic: String, payloadCount: Int, qos: QoS, retain: Bool,
                                                  dup: Bool, packetID: UInt16, into out: inout S) {
        let first: UInt8 = 0x30 | (dup ? 0x08 : 0) | qos.rawValue << 1 | (retain ? 1 : 0)
        let remaining = 2 + topic.utf8.count + (qos == .atMostOnce ? 0 : 2) + payloadCount
        header(first, remaining, &out)
        string(topic, &out)
        if qos != .atMostOnce { u16(packetID, &out) }
    }

    public static func publishSize(topic: String, payloadCount: Int, qos: QoS) -> Int {
        let n = 2 + topic.utf8.count + (qos == .atMostOnce ? 0 : 2) + payloadCount
        return 1 + lengthOfLength(n) + n
    }

    static func remainingLength(of packet: Packet) -> Int {
        switch packet {
        case .connect(let c):
            var n = 2 + c.protocolName.utf8.count + 1 + 1 + 2 + 2 + c.clientID.utf8.count
            if let w = c.will { n += 2 + w.topic.utf8.count + 2 + w.payload.count }
            if let u = c.username { n += 2 + u.utf8.count }
            if let p = c.password { n += 2 + p.count }
            return n
        case .connack: return 2
        case .publish(let p): return 2 + p.topic.utf8.count + (p.qos == .atMostOnce ? 0 : 2) + p.payload.count
        case .puback, .pubrec, .pubrel, .pubcomp, .unsuback: return 2
        case .subscribe(let s): return 2 + s.topics.reduce(0) { $0 + 2 + $1.filter.utf8.count + 1 }
        case .suback(let s): return 2 + s.returnCodes.count
        case .unsubscribe(let u): return 2 + u.filters.reduce(0) { $0 + 2 + $1.utf8.count }
        case .pingreq, .pingresp, .disconnect: return 0
        }
    }

    @inlinable static func lengthOfLength(_ n: Int) -> Int {
        n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4
    }

    @inlinable static func header<S: ByteSink>(_ first: UInt8, _ remaining: Int, _ out: inout S) {
        precondition(remaining <= Decoder.maxRemainingLength, "packet too large for MQTT")
        out.append(byte: first)
        var x = remaining
        repeat {
            var b = UInt8(x % 128)
            x /= 128
            if x > 0 { b |= 0x80 }
            out.append(byte: b)
        } while x > 0
    }

    @inlinable static func u16<S: ByteSink>(_ v: UInt16, _ out: inout S) {
        out.append(byte: UInt8(v >> 8))
        out.append(byte: UInt8(v & 0xFF))
    }

    @inlinable static func string<S: ByteSink>(_ s: String, _ out: inout S) {
        var s = s
        s.withUTF8 { utf8 in
            u16(UInt16(utf8.count), &out)
            out.append(bytes: UnsafeRawBufferPointer(utf8))
        }
    }

    @inlinable static func binary<S: ByteSink>(_ b: [UInt8], _ out: inout S) {
        u16(UInt16(b.count), &out)
        b.withUnsafeBytes { out.append(bytes: $0) }
    }

    @inlinable static func ack<S: ByteSink>(_ first: UInt8, _ id: UInt16, _ out: inout S) {
        out.append(byte: first)
        out.append(byte: 2)
        u16(id, &out)
    }
}
