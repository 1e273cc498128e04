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
    case takeoverRemote = "client id connected to another node"
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
    case sendStalled = "not reading what is sent to it"

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

extension CloseReason {
    /// The reason field of a disconnect event.
    var eventReason: String {
        switch self {
        case .clientDisconnect: "client"
        case .peerClosed: "connection_closed"
        case .keepalive: "keepalive"
        case .connectTimeout: "connect_timeout"
        case .malformed: "malformed_packet"
        case .protocolError: "protocol_error"
        case .refused: "refused"
        case .takeover: "takeover"
        case .takeoverRemote: "takeover_remote"
        case .overLimit: "over_limit"
        case .ioError: "socket_error"
        case .storeFailed: "store_failed"
        case .rateLimited: "rate_limited"
        case .quota: "quota"
        case .banned: "banned"
        case .tlsError: "tls_error"
        case .tlsHandshakeTimeout: "tls_handshake_timeout"
        case .shutdown: "shutdown"
        case .kicked: "kicked"
        case .drain: "drain"
        case .badProxyHeader: "proxy_header"
        case .sendStalled: "send_stalled"
        }
    }
}
