/// Result of trying to read one packet from the front of a byte buffer.
public enum DecodeResult: Equatable, Sendable {
    /// A complete packet and how many bytes it used.
    case packet(Packet, consumed: Int)
    /// Not enough bytes yet; `needed` is the full packet size once the fixed header
    /// is readable (so the caller can reserve), nil before that.
    case incomplete(needed: Int?)
    case failure(DecodeError)
}

/// The MQTT 3.1.1 decoder: no I/O, no state between calls.
public enum Decoder {
    /// Largest remaining length the 4-byte variable integer can express (2.2.3).
    public static let maxRemainingLength = 268_435_455

    /// Read the fixed header: (type/flags byte, remaining length, header size).
    /// Returns nil when more bytes are needed; throws on a malformed length.
    @inlinable
    public static func fixedHeader(_ bytes: UnsafeRawBufferPointer) throws(DecodeError) -> (UInt8, Int, Int)? {
        guard bytes.count >= 2 else { return nil }
        var value = 0
        var multiplier = 1
        var i = 1
        while true {
            if i > 4 { throw .malformedRemainingLength }
            guard i < bytes.count else { return nil }
            let b = bytes[i]
            value += Int(b & 0x7F) * multiplier
            i += 1
            if b & 0x80 == 0 { break }
            multiplier *= 128
        }
        return (bytes[0], value, i)
    }

    /// Decode one packet from the front of `bytes`. `maxPacketSize` bounds the whole
    /// packet, checked as soon as the fixed header is readable.
    public static func decode(_ bytes: UnsafeRawBufferPointer, maxPacketSize: Int = maxRemainingLength + 5) -> DecodeResult {
        let header: (UInt8, Int, Int)?
        do { header = try fixedHeader(bytes) } catch { return .failure(error) }
        guard let (first, remaining, headerSize) = header else { return .incomplete(needed: nil) }
        let total = headerSize + remaining
        if total > maxPacketSize { return .failure(.packetTooLarge(length: total, limit: maxPacketSize)) }
        guard bytes.count >= total else { return .incomplete(needed: total) }
        let typeBits = first >> 4
        let flags = first & 0x0F
        guard let type = PacketType(rawValue: typeBits) else { return .failure(.reservedPacketType(typeBits)) }
        var r = Reader(UnsafeRawBufferPointer(rebasing: bytes[headerSize..<total]))
        do {
            let packet = try body(type, flags: flags, &r)
            if !r.atEnd { return .failure(.trailingBytes(type)) }
            return .packet(packet, consumed: total)
        } catch {
            return .failure(error)
        }
    }

    static func body(_ type: PacketType, flags: UInt8, _ r: inout Reader) throws(DecodeError) -> Packet {
        switch type {
        case .publish:
            return .publish(try publish(flags: flags, &r))
        case .pubrel, .subscribe, .unsubscribe:
            // 3.6.1, 3.8.1, 3.10.1: flags are 0b0010
            if flags != 0b0010 { throw .invalidFlags(type, flags) }
        default:
            if flags != 0 { throw .invalidFlags(type, flags) }
        }
        switch type {
        case .connect: return .connect(try connect(&r))
        case .connack:
            let ackFlags = try r.u8("CONNACK flags")
            if ackFlags & 0xFE != 0 { throw .invalidFlags(.connack, ackFlags) }
            let code = try r.u8("CONNACK return code")
            guard let rc = ConnectReturnCode(rawValue: code) else { throw .truncated("CONNACK return code \(code)") }
            return .connack(Connack(sessionPresent: ackFlags & 1 == 1, returnCode: rc))
        case .puback: return .puback(try r.packetID(type))
        case .pubrec: return .pubrec(try r.packetID(type))
        case .pubrel: return .pubrel(try r.packetID(type))
        case .pubcomp: return .pubcomp(try r.packetID(type))
        case .unsuback: return .unsuback(try r.packetID(type))
        case .subscribe:
            let id = try r.packetID(type)
            var topics: [TopicRequest] = []
            while !r.atEnd {
                let filter = try r.filter()
                let q = try r.u8("requested QoS")
                if q & 0xFC != 0 { throw .reservedSubscribeBits(q) }
                guard let qos = QoS(rawValue: q) else { throw .invalidQoS(q) }
                topics.append(TopicRequest(filter, qos))
            }
            if topics.isEmpty { throw .noTopics(type) }
            return .subscribe(Subscribe(packetID: id, topics: topics))
        case .suback:
            let id = try r.packetID(type)
            var codes: [UInt8] = []
            while !r.atEnd {
                let c = try r.u8("SUBACK return code")
                if c > 2 && c != Suback.failure { throw .invalidQoS(c) }
                codes.append(c)
            }
            if codes.isEmpty { throw .noTopics(type) }
            return .suback(Suback(packetID: id, returnCodes: codes))
        case .unsubscribe:
            let id = try r.packetID(type)
            var filters: [String] = []
            while !r.atEnd { filters.append(try r.filter()) }
            if filters.isEmpty { throw .noTopics(type) }
            return .unsubscribe(Unsubscribe(packetID: id, filters: filters))
        case .pingreq: return .pingreq
        case .pingresp: return .pingresp
        case .disconnect: return .disconnect
        case .publish: fatalError("handled above")
        }
    }

    static func publish(flags: UInt8, _ r: inout Reader) throws(DecodeError) -> Publish {
        let q = (flags >> 1) & 0b11
        guard let qos = QoS(rawValue: q) else { throw .invalidQoS(q) }   // 3.3.1-4
        let dup = flags & 0b1000 != 0
        if dup && qos == .atMostOnce { throw .dupOnQoS0 }                 // 3.3.1-2
        let topicBytes = try r.lengthPrefixed("topic name")
        guard Topic.isValidName(topicBytes) else {
            throw .invalidTopicName(String(decoding: topicBytes, as: UTF8.self))
        }
        let topic = try Reader.string(topicBytes, "topic name")
        let id: UInt16 = qos == .atMostOnce ? 0 : try r.packetID(.publish)
        let payload = [UInt8](r.rest())
        return Publish(topic: topic, payload: payload, qos: qos, retain: flags & 1 != 0, dup: dup, packetID: id)
    }

    static func connect(_ r: inout Reader) throws(DecodeError) -> Connect {
        let name = try Reader.string(try r.lengthPrefixed("protocol name"), "protocol name")
        let level = try r.u8("protocol level")
        switch (name, level) {
        case ("MQTT", 4), ("MQIsdp", 3): break
        case ("MQTT", _), ("MQIsdp", _): throw .unacceptableProtocolLevel(level)
        default: throw .invalidProtocolName(name)
        }
        let flags = try r.u8("connect flags")
        if flags & 0x01 != 0 { throw .reservedConnectFlag }              // 3.1.2-3
        let hasWill = flags & 0x04 != 0
        let willQoSBits = (flags >> 3) & 0b11
        let willRetain = flags & 0x20 != 0
        if !hasWill && (willQoSBits != 0 || willRetain) { throw .invalidWillFlags }  // 3.1.2-11/13/15
        if willQoSBits == 3 { throw .invalidWillFlags }                   // 3.1.2-14
        let hasPassword = flags & 0x40 != 0
        let hasUsername = flags & 0x80 != 0
        if hasPassword && !hasUsername { throw .passwordWithoutUsername } // 3.1.2-22
        let keepAlive = try r.u16("keep alive")
        let clientID = try Reader.string(try r.lengthPrefixed("client identifier"), "client identifier")
        var will: Will?
        if hasWill {
            let topicBytes = try r.lengthPrefixed("will topic")
            guard Topic.isValidName(topicBytes) else {
                throw .invalidTopicName(String(decoding: topicBytes, as: UTF8.self))
            }
            let topic = try Reader.string(topicBytes, "will topic")
            let payload = [UInt8](try r.lengthPrefixed("will message"))
            will = Will(topic: topic, payload: payload, qos: QoS(rawValue: willQoSBits)!, retain: willRetain)
        }
        let username = hasUsername ? try Reader.string(try r.lengthPrefixed("user name"), "user name") : nil
        let password = hasPassword ? [UInt8](try r.lengthPrefixed("password")) : nil
        return Connect(protocolName: name, protocolLevel: level, cleanSession: flags & 0x02 != 0,
                       keepAlive: keepAlive, clientID: clientID, will: will,
                       username: username, password: password)
    }
}

/// A cursor over one packet's variable header and payload.
struct Reader {
    let bytes: UnsafeRawBufferPointer
    var pos = 0
    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var atEnd: Bool { pos == bytes.count }

    mutating func u8(_ what: String) throws(DecodeError) -> UInt8 {
        guard pos < bytes.count else { throw .truncated(what) }
        defer { pos += 1 }
        return bytes[pos]
    }

    mutating func u16(_ what: String) throws(DecodeError) -> UInt16 {
        guard pos + 2 <= bytes.count else { throw .truncated(what) }
        defer { pos += 2 }
        return UInt16(bytes[pos]) << 8 | UInt16(bytes[pos + 1])
    }

    mutating func packetID(_ type: PacketType) throws(DecodeError) -> UInt16 {
        let id = try u16("packet identifier")
        if id == 0 { throw .zeroPacketID(type) }   // 2.3.1-1
        return id
    }

    mutating func lengthPrefixed(_ what: String) throws(DecodeError) -> UnsafeRawBufferPointer {
        let n = Int(try u16(what))
        guard pos + n <= bytes.count else { throw .truncated(what) }
        defer { pos += n }
        return UnsafeRawBufferPointer(rebasing: bytes[pos..<pos + n])
    }

    mutating func filter() throws(DecodeError) -> String {
        let raw = try lengthPrefixed("topic filter")
        guard Topic.isValidFilter(raw) else { throw .invalidTopicFilter(String(decoding: raw, as: UTF8.self)) }
        return try Reader.string(raw, "topic filter")
    }

    mutating func rest() -> UnsafeRawBufferPointer {
        defer { pos = bytes.count }
        return UnsafeRawBufferPointer(rebasing: bytes[pos...])
    }

    /// An MQTT UTF-8 string: well-formed (no surrogates, no overlongs) and no U+0000 (1.5.3).
    static func string(_ raw: UnsafeRawBufferPointer, _ what: String) throws(DecodeError) -> String {
        if raw.contains(0) { throw .invalidUTF8(what) }
        guard let s = String(validating: raw, as: UTF8.self) else { throw .invalidUTF8(what) }
        return s
    }
}
