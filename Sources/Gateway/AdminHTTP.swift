import Glibc
import Logging
import PileLoop

/// The operator's HTTP endpoint (`[admin] bind`, loopback by default): `/metrics`
/// for Prometheus, `/healthz` and `/readyz` for load balancers.
///
/// Low volume (a scrape every few seconds, a health check per balancer), so it is a
/// plain blocking loop on its own thread: one request per connection, answered and
/// closed. Nothing here touches a shard; it reads the shared atomics.
final class AdminHTTP: @unchecked Sendable {
    let fd: Int32
    private let metrics: Metrics
    private let counters: [Counters]
    private let redisEnabled: Bool
    private let logger: Logger

    init(address: SocketAddress, metrics: Metrics, counters: [Counters], redisEnabled: Bool, logger: Logger) throws {
        fd = try makeListener(address, backlog: 64)
        self.metrics = metrics
        self.counters = counters
        self.redisEnabled = redisEnabled
        self.logger = logger
    }

    /// Serve until the listener is shut down (`stop`).
    func run() {
        while true {
            let c = accept(fd, nil, nil)
            if c < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return   // shut down
            }
            var tv = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            serve(c)
            Glibc.close(c)
        }
    }

    func stop() { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    /// Read the request head (up to 8 KiB), answer by method and path.
    private func serve(_ c: Int32) {
        var buf = [UInt8](repeating: 0, count: 8192)
        var n = 0
        while n < buf.count {
            let r = buf.withUnsafeMutableBytes { recv(c, $0.baseAddress! + n, $0.count - n, 0) }
            if r <= 0 { break }
            n += r
            if buf[..<n].firstRange(of: [13, 10, 13, 10]) != nil { break }
        }
        guard let lineEnd = buf[..<n].firstIndex(of: 13) else {
            return respond(c, 400, "text/plain", Array("bad request\n".utf8))
        }
        let parts = String(decoding: buf[..<lineEnd], as: UTF8.self).split(separator: " ")
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else {
            return respond(c, 400, "text/plain", Array("bad request\n".utf8))
        }
        let method = parts[0], path = parts[1].split(separator: "?").first.map(String.init) ?? ""
        switch (method, path) {
        case ("GET", "/metrics"):
            respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", metrics.scrape())
        case ("GET", "/healthz"):
            respond(c, 200, "text/plain", Array("ok\n".utf8))
        case ("GET", "/readyz"):
            let up = !redisEnabled || Counters.total(.redisUp, counters) > 0
            respond(c, up ? 200 : 503, "text/plain", Array((up ? "ready\n" : "not ready: redis unreachable\n").utf8))
        case (_, "/metrics"), (_, "/healthz"), (_, "/readyz"):
            respond(c, 405, "text/plain", Array("method not allowed\n".utf8))
        default:
            respond(c, 404, "text/plain", Array("not found\n".utf8))
        }
    }

    private func respond(_ c: Int32, _ status: Int, _ type: String, _ body: [UInt8]) {
        let reason = [200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                      503: "Service Unavailable"][status] ?? "Error"
        let head = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        let all = Array(head.utf8) + body
        var sent = 0
        while sent < all.count {
            let r = all.withUnsafeBytes { send(c, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if r <= 0 { return }
            sent += r
        }
    }
}
