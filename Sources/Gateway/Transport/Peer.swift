import Glibc

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
