import Glibc
import MQTTCodec
import PileLoop

/// Why a connection ended: logged, counted, and it decides whether the will is sent.
enum CloseReason: String, Sendable, CaseIterable {
    case clientDisconnect = "client disconnect"
    case peerClosed = "connection closed by peer"
    case keepalive = "keepalive expired"
    case connectTimeout = "no CONNECT in time"
    case malformed = "malformed packet"
    case protocolError = "protocol violation"
    case refused = "CONNECT refused"
    case takeover = "client id taken over"
    case overLimit = "connection limit reached"
    case ioError = "socket error"
    case storeFailed = "Redis refused to store a message"
    case rateLimited = "over a send-rate rule"
    case quota = "over the daily byte quota"
    case banned = "banned"
    case tlsError = "TLS error"
    case tlsHandshakeTimeout = "TLS handshake timeout"
    case shutdown = "server shutdown"
    case kicked = "closed by an operator"
    case drain = "node draining"
    case badProxyHeader = "malformed PROXY protocol header"

    /// A TLS peer still there is told with close_notify (not after it closed, after a
    /// socket error, or after a TLS alert).
    var sendsCloseNotify: Bool {
        switch self {
        case .peerClosed, .ioError, .tlsError, .tlsHandshakeTimeout: false
        default: true
        }
    }

    /// The will is published unless the client said DISCONNECT (3.14.4-3) or the
    /// server is stopping on purpose (or the client never got a session).
    var publishesWill: Bool {
        switch self {
        case .clientDisconnect, .shutdown, .drain, .refused, .connectTimeout, .overLimit, .tlsHandshakeTimeout,
             .badProxyHeader: false
        default: true
        }
    }
}

/// Where a connection comes from, kept small: the IPv4 address and port (an IPv6
/// peer keeps only its port and whether it is loopback).
struct Peer: CustomStringConvertible, Equatable {
    var v4: UInt32 = 0          // network order
    var port: UInt16 = 0
    var isV6 = false
    var isLoopback = false

    init() {}

    /// `address` as in `in_addr.s_addr` (network byte order).
    init(v4 address: UInt32, port: UInt16) {
        v4 = address
        self.port = port
        isLoopback = UInt8(truncatingIfNeeded: address) == 127   // first octet
    }

    /// From the four address bytes, first octet first (a PROXY protocol header).
    init(v4 a: (UInt8, UInt8, UInt8, UInt8), port: UInt16) {
        self.init(v4: withUnsafeBytes(of: a) { $0.load(as: UInt32.self) }, port: port)
    }

    init(v6 a: UnsafeRawBufferPointer, port: UInt16) {
        isV6 = true
        self.port = port
        isLoopback = a.prefix(15).allSatisfy { $0 == 0 } && a[15] == 1
    }

    init(_ ss: UnsafePointer<sockaddr_storage>) {
        if Int32(ss.pointee.ss_family) == AF_INET {
            let a = UnsafeRawPointer(ss).load(as: sockaddr_in.self)
            self.init(v4: a.sin_addr.s_addr, port: UInt16(bigEndian: a.sin_port))
        } else if Int32(ss.pointee.ss_family) == AF_INET6 {
            let a = UnsafeRawPointer(ss).load(as: sockaddr_in6.self)
            self = withUnsafeBytes(of: a.sin6_addr) { Peer(v6: $0, port: UInt16(bigEndian: a.sin6_port)) }
        } else {
            self.init()
        }
    }

    var description: String {
        if isV6 { return isLoopback ? "[::1]:\(port)" : "[ipv6]:\(port)" }
        let b = withUnsafeBytes(of: v4) { Array($0) }
        return "\(b[0]).\(b[1]).\(b[2]).\(b[3]):\(port)"
    }
}

/// One slab entry. Plain value, addressed by (slot, generation) in every SQE's
/// user_data. An idle connected client owns: this struct, its Session, and no
/// buffers (the three ByteBuffers are released whenever they drain). Rarely used
/// state lives with the shard, by slot: the will in `Shard.wills`, an unfinished
/// CONNECT in `Shard.waits` (ConnectWaits).
struct Connection {
    enum State: UInt8 {
        case free, awaitingConnect, awaitingTakeover, connected, closing
    }

    var state: State = .free
    var generation: UInt32 = 0
    /// Index in the ring's fixed-file table.
    var file: Int32 = -1
    var recvArmed = false
    var sending = false
    var dirty = false
    var tornDown = false
    /// Close once the send queue has drained (a refusing CONNACK must arrive).
    var closeAfterFlush = false
    /// Not being read: its next PUBLISH waits for room in the Redis pipeline
    /// (backpressure). Bytes already received wait in `inbound`.
    var paused = false
    /// Held: not being read until whoever held it lets go (Loop/ReadHolds.swift):
    /// a throttle rate rule or a connect-rate slot (its wheel entry), the in-flight
    /// bound (Redis replies), a credential lookup (the reply).
    var throttled = false
    /// Counted in the ConnectGuard's per-IP table (released at close).
    var ipCounted = false
    /// From a listener with `proxy_protocol`: the first bytes must be a PROXY v2
    /// header, which replaces `peer` (ProxyProtocol.swift).
    var awaitingProxy = false
    /// QoS 1/2 PUBLISHes from this pile waiting on Redis (limits.max_inflight_in).
    var uplinksPending: UInt16 = 0
    /// Completions the kernel still owes for this slot; it is reused only at 0.
    var pendingOps: UInt16 = 0
    var keepAlive: UInt16 = 0
    /// Wheel tick (100 ms; 32 bits last 13 years) of the last packet received, and
    /// of the live wheel entry.
    var lastSeen: UInt32 = 0
    var timerDeadline: UInt32 = 0
    /// Bytes of a packet that straddles receive buffers.
    var inbound = ByteBuffer()
    /// Encoded packets waiting for this turn's flush, and the bytes the kernel is sending.
    var outbound = ByteBuffer()
    var inFlight = ByteBuffer()
    var session: Session?
    var peer = Peer()
    /// Set on connections from the TLS listener: bytes pass through it both ways.
    var tls: TLSSession?

    var isOpen: Bool { state == .awaitingConnect || state == .awaitingTakeover || state == .connected }
}

extension ByteBuffer: ByteSink {
    @inlinable public mutating func append(byte: UInt8) {
        write(max: 1) { $0[0] = byte; return 1 }
    }
    @inlinable public mutating func append(bytes: UnsafeRawBufferPointer) { append(bytes) }
}
