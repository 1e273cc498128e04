/// Why a byte sequence is not a valid MQTT 3.1.1 packet. Every case closes the
/// connection (section 4.8); the text is what the server logs.
public enum DecodeError: Error, Equatable, Sendable, CustomStringConvertible {
    case reservedPacketType(UInt8)
    case invalidFlags(PacketType, UInt8)
    case malformedRemainingLength
    case packetTooLarge(length: Int, limit: Int)
    case truncated(String)
    case trailingBytes(PacketType)
    case invalidProtocolName(String)
    /// Known protocol name, unsupported level: answer CONNACK 0x01, then close (3.1.2.2).
    case unacceptableProtocolLevel(UInt8)
    case reservedConnectFlag
    case invalidWillFlags
    case passwordWithoutUsername
    case invalidQoS(UInt8)
    case invalidUTF8(String)
    case invalidTopicName(String)
    case invalidTopicFilter(String)
    case zeroPacketID(PacketType)
    case noTopics(PacketType)
    case reservedSubscribeBits(UInt8)
    case dupOnQoS0

    public var description: String {
        switch self {
        case .reservedPacketType(let t): "reserved packet type \(t)"
        case .invalidFlags(let t, let f): "invalid fixed-header flags 0x\(String(f, radix: 16)) on \(t)"
        case .malformedRemainingLength: "malformed remaining length"
        case .packetTooLarge(let n, let l): "packet of \(n) bytes exceeds the limit of \(l)"
        case .truncated(let what): "packet ends inside \(what)"
        case .trailingBytes(let t): "bytes left over after \(t)"
        case .invalidProtocolName(let n): "invalid protocol name \"\(n)\""
        case .unacceptableProtocolLevel(let l): "unsupported protocol level \(l)"
        case .reservedConnectFlag: "CONNECT reserved flag is set"
        case .invalidWillFlags: "will QoS or retain set without the will flag, or will QoS 3"
        case .passwordWithoutUsername: "password flag set without username flag"
        case .invalidQoS(let q): "invalid QoS \(q)"
        case .invalidUTF8(let what): "\(what) is not well-formed UTF-8 or contains U+0000"
        case .invalidTopicName(let t): "invalid topic name \"\(t)\""
        case .invalidTopicFilter(let f): "invalid topic filter \"\(f)\""
        case .zeroPacketID(let t): "packet identifier 0 on \(t)"
        case .noTopics(let t): "\(t) without any topic"
        case .reservedSubscribeBits(let b): "reserved bits set in requested QoS byte 0x\(String(b, radix: 16))"
        case .dupOnQoS0: "DUP flag set on a QoS 0 PUBLISH"
        }
    }
}
