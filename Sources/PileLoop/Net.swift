import CURing
import Glibc

/// An IPv4 or IPv6 socket address, parsed from "HOST:PORT" / "[V6]:PORT".
public struct SocketAddress: CustomStringConvertible, Sendable {
    public var storage = sockaddr_storage()
    public var length: socklen_t = 0

    public init?(_ text: String) {
        var host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let port = UInt16(portText) else { return nil }
        if host.isEmpty || host == "*" { host = "0.0.0.0" }
        if host == "localhost" { host = "127.0.0.1" }
        self.init(host: String(host), port: port)
    }

    public init?(host: String, port: UInt16) {
        var v4 = sockaddr_in()
        if inet_pton(AF_INET, host, &v4.sin_addr) == 1 {
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &storage) { dst in
                withUnsafeBytes(of: v4) { dst.copyMemory(from: $0) }
            }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            return
        }
        var v6 = sockaddr_in6()
        if inet_pton(AF_INET6, host, &v6.sin6_addr) == 1 {
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &storage) { dst in
                withUnsafeBytes(of: v6) { dst.copyMemory(from: $0) }
            }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            return
        }
        return nil
    }

    public var family: Int32 { Int32(storage.ss_family) }

    /// Whether this is a loopback address (127.0.0.0/8 or ::1).
    public var isLoopback: Bool {
        withUnsafeBytes(of: storage) { raw in
            if family == AF_INET {
                let a = raw.load(fromByteOffset: 4, as: UInt8.self)
                return a == 127
            }
            var v6 = in6_addr()
            withUnsafeMutableBytes(of: &v6) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[8..<24])) }
            return withUnsafeBytes(of: v6) { b in b.prefix(15).allSatisfy { $0 == 0 } && b[15] == 1 }
        }
    }

    public var port: UInt16 {
        withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self)) }
    }

    public var description: String {
        var buf = [CChar](repeating: 0, count: 64)
        return withUnsafeBytes(of: storage) { raw -> String in
            if family == AF_INET {
                _ = inet_ntop(AF_INET, raw.baseAddress! + 4, &buf, 64)
                return "\(SocketAddress.text(buf)):\(port)"
            }
            _ = inet_ntop(AF_INET6, raw.baseAddress! + 8, &buf, 64)
            return "[\(SocketAddress.text(buf))]:\(port)"
        }
    }

    /// A NUL-terminated C string from a buffer.
    private static func text(_ buf: [CChar]) -> String {
        String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafeBytes(of: storage) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), length) }
    }
}

/// A listening TCP socket shared by every shard's multishot accept.
/// `deferAccept` seconds > 0: TCP_DEFER_ACCEPT, the kernel completes an accept only
/// once the client's first bytes (CONNECT, a TLS hello, a PROXY header) are there, or
/// the period has passed: one wake-up per new connection instead of two.
public func makeListener(_ address: SocketAddress, backlog: Int32, deferAccept: Int32 = 0) throws -> Int32 {
    let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    if fd < 0 { throw RingError("socket", errno) }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    // Accepted sockets inherit TCP_NODELAY (Linux copies it to the child), so small
    // acknowledgements are never held back by Nagle behind a delayed ACK.
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    var seconds = deferAccept
    if seconds > 0 { setsockopt(fd, Int32(IPPROTO_TCP), TCP_DEFER_ACCEPT, &seconds, socklen_t(MemoryLayout<Int32>.size)) }
    let rc = address.withSockaddr { Glibc.bind(fd, $0, $1) }
    if rc != 0 { let e = errno; close(fd); throw RingError("bind \(address)", e) }
    if listen(fd, backlog) != 0 { let e = errno; close(fd); throw RingError("listen", e) }
    return fd
}

/// The port a socket is bound to (for listeners on port 0).
public func boundPort(_ fd: Int32) -> UInt16 {
    var ss = sockaddr_storage()
    var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
    withUnsafeMutablePointer(to: &ss) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &len) }
    }
    return withUnsafeBytes(of: ss) { UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self)) }
}

/// The soft RLIMIT_NOFILE: a ring's fixed-file table can be no larger.
public func fileLimit() -> Int {
    var rl = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
    return Int(rl.rlim_cur)
}

/// A thread that runs a static function (Swift 6: a closure from main.swift would
/// be MainActor-isolated and trap on another thread).
public final class Thread: @unchecked Sendable {
    private var handle = pthread_t()
    private let body: @Sendable () -> Void
    private let name: String

    public init(name: String, _ body: @escaping @Sendable () -> Void) {
        self.body = body
        self.name = String(name.prefix(15))
        let unmanaged = Unmanaged.passRetained(self)
        let rc = pthread_create(&handle, nil, { arg in
            let t = Unmanaged<Thread>.fromOpaque(arg!).takeRetainedValue()
            cur_set_thread_name(t.name)
            t.body()
            return nil
        }, unmanaged.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    public func join() { pthread_join(handle, nil) }
}
