/// MQTT 3.1.1 control packets (OASIS standard, 29 October 2014) as plain values.

public enum QoS: UInt8, Sendable, Comparable {
    case atMostOnce = 0, atLeastOnce = 1, exactlyOnce = 2
    public static func < (a: QoS, b: QoS) -> Bool { a.rawValue < b.rawValue }
}

public enum PacketType: UInt8, Sendable, CaseIterable {
    case connect = 1, connack, publish, puback, pubrec, pubrel, pubcomp
    case subscribe, suback, unsubscribe, unsuback, pingreq, pingresp, disconnect
}

/// CONNACK return codes (3.2.2.3).
public enum ConnectReturnCode: UInt8, Sendable {
    case accepted = 0
    case unacceptableProtocolVersion = 1
    case identifierRejected = 2
    case serverUnavailable = 3
    case badUsernameOrPassword = 4
    case notAuthorized = 5
}

public struct Will: Equatable, Sendable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: QoS
    public var retain: Bool
    public init(topic: String, payload: [UInt8], qos: QoS, retain: Bool) {
        self.topic = topic; self.payload = payload; self.qos = qos; self.retain = retain
    }
}

public struct Connect: Equatable, Sendable {
    /// "MQTT" with level 4 (3.1.1), or "MQIsdp" with level 3 (3.1, still in old firmware).
    public var protocolName: String
    public var protocolLevel: UInt8
    public var cleanSession: Bool
    public var keepAlive: UInt16
    public var clientID: String
    public var will: Will?
    public var username: String?
    public var password: [UInt8]?

    public init(protocolName: String = "MQTT", protocolLevel: UInt8 = 4, cleanSession: Bool = true,
                keepAlive: UInt16 = 60, clientID: String, will: Will? = nil,
                username: String? = nil, password: [UInt8]? = nil) {
        self.protocolName = protocolName; self.protocolLevel = protocolLevel
        self.cleanSession = cleanSession; self.keepAlive = keepAlive; self.clientID = clientID
        self.will = will; self.username = username; self.password = password
    }
}

public struct Connack: Equatable, Sendable {
    public var sessionPresent: Bool
    public var returnCode: ConnectReturnCode
    public init(sessionPresent: Bool, returnCode: ConnectReturnCode) {
        self.sessionPresent = sessionPresent; self.returnCode = returnCode
    }
}

public struct Publish: Equatable, Sendable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: QoS
    public var retain: Bool
    public var dup: Bool
    /// 0 for QoS 0 (absent on the wire), non-zero otherwise.
    public var packetID: UInt16
    public init(topic: String, payload: [UInt8], qos: QoS = .atMostOnce, retain: Bool = false,
                dup: Bool = false, packetID: UInt16 = 0) {
        self.topic = topic; self.payload = payload; self.qos = qos; self.retain = retain
        self.dup = dup; self.packetID = packetID
    }
}

public struct TopicRequest: Equatable, Sendable {
    public var filter: String
    public var qos: QoS
    public init(_ filter: String, _ qos: QoS) { self.filter = filter; self.qos = qos }
}

public struct Subscribe: Equatable, Sendable {
    public var packetID: UInt16
    public var topics: [TopicRequest]
    public init(packetID: UInt16, topics: [TopicRequest]) { self.packetID = packetID; self.topics = topics }
}

/// SUBACK return code: granted QoS 0-2, or 0x80 for failure.
public struct Suback: Equatable, Sendable {
    public static let failure: UInt8 = 0x80
    public var packetID: UInt16
    public var returnCodes: [UInt8]
    public init(packetID: UInt16, returnCodes: [UInt8]) { self.packetID = packetID; self.returnCodes = returnCodes }
}

public struct Unsubscribe: Equatable, Sendable {
    public var packetID: UInt16
    public var filters: [String]
    public init(packetID: UInt16, filters: [String]) { self.packetID = packetID; self.filters = filters }
}

public enum Packet: Equatable, Sendable {
    case connect(Connect)
    case connack(Connack)
    case publish(Publish)
    case puback(UInt16)
    case pubrec(UInt16)
    case pubrel(UInt16)
    case pubcomp(UInt16)
    case subscribe(Subscribe)
    case suback(Suback)
    case unsubscribe(Unsubscribe)
    case unsuback(UInt16)
    case pingreq
    case pingresp
    case disconnect

    public var type: PacketType {
        switch self {
        case .connect: .connect
        case .connack: .connack
        case .publish: .publish
        case .puback: .puback
        case .pubrec: .pubrec
        case .pubrel: .pubrel
        case .pubcomp: .pubcomp
        case .subscribe: .subscribe
        case .suback: .suback
        case .unsubscribe: .unsubscribe
        case .unsuback: .unsuback
        case .pingreq: .pingreq
        case .pingresp: .pingresp
        case .disconnect: .disconnect
        }
    }
}
