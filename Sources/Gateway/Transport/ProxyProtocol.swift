/// PROXY protocol version 2 (HAProxy's proxy-protocol.txt, section 2.2): the
/// binary header an L4 load balancer sends before the client's bytes, so the
/// ACL, the per-IP limits and the logs see the pile's address, not the balancer's.
/// Pure: bytes in, verdict out.
enum ProxyHeader {
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// Fixed part, addresses and TLVs. HAProxy's own TLVs (ALPN, authority, SSL
    /// details, unique id) stay far below this; more is refused, not buffered.
    static let maxLength = 16 + 1024

    enum Result: Equatable {
        /// Not enough bytes yet (every byte so far is valid).
        case incomplete
        /// A header of `length` bytes. `source` nil: a LOCAL command (the balancer's
        /// own health check) or an address family without an IP: keep the socket's peer.
        case header(length: Int, source: Peer?)
        case invalid(String)
    }

    static func parse(_ b: UnsafeRawBufferPointer) -> Result {
        // The signature is checked as far as the bytes go, so a client that skipped
        // the balancer is turned away on its first packet, not at a timeout.
        for i in 0..<min(b.count, 12) where b[i] != signature[i] {
            return .invalid("no PROXY protocol v2 signature (a client not behind the load balancer?)")
        }
        guard b.count >= 16 else { return .incomplete }
        let version = b[12] >> 4, command = b[12] & 0x0F
        guard version == 2 else { return .invalid("version \(version), not 2") }
        guard command <= 1 else { return .invalid("unknown command \(command)") }
        let family = b[13] >> 4, transport = b[13] & 0x0F
        let length = 16 + (Int(b[14]) << 8 | Int(b[15]))
        guard length <= maxLength else { return .invalid("header of \(length) bytes (at most \(maxLength))") }
        guard b.count >= length else { return .incomplete }
        guard transport <= 1 else { return .invalid("transport \(transport) is not a stream") }
        if command == 0 { return .header(length: length, source: nil) }   // LOCAL
        func port(_ at: Int) -> UInt16 { UInt16(b[at]) << 8 | UInt16(b[at + 1]) }
        switch family {
        case 0, 3:   // UNSPEC, UNIX
            return .header(length: length, source: nil)
        case 1:      // INET: source, destination, source port, destination port
            guard length >= 16 + 12 else { return .invalid("INET header of \(length) bytes") }
            return .header(length: length, source: Peer(v4: (b[16], b[17], b[18], b[19]), port: port(24)))
        case 2:      // INET6
            guard length >= 16 + 36 else { return .invalid("INET6 header of \(length) bytes") }
            return .header(length: length,
                           source: Peer(v6: UnsafeRawBufferPointer(rebasing: b[16..<32]), port: port(48)))
        default:
            return .invalid("unknown address family \(family)")
        }
    }
}
