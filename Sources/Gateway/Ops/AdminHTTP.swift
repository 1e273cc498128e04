import Foundation
import Glibc
import Logging
import PileLoop

/// The operator's HTTP endpoint (`[admin] bind`, loopback by default): `/metrics`
/// for Prometheus, `/healthz` and `/readyz` for load balancers, `/` the operator
/// console (a page that asks for the token and reads the API below), and with a
/// bearer token (`[admin] token`) the admin API:
///   GET  /admin/overview          the console's figures (JSON, Ops/Console.swift)
///   GET  /admin/events?n=N&device=ID   the newest events from Redis (JSON)
///   GET  /admin/fleet             every node of the fleet: connections, state, version (JSON)
///   GET  /admin/clients/ID        one connected client (JSON)
///   GET  /admin/top?n=N           the N clients with the most bytes today (JSON)
///   POST /admin/clients/ID/kick   close that client's connection
///   POST /drain                   stop accepting, close piles in paced batches
///   POST /admin/reload            re-read the config file (as SIGHUP): 200, or 400 and why not
///   POST /admin/bans/ID?seconds=N&reason=R   ban a client id on every node (kept in Redis)
///   DELETE /admin/bans/ID         lift it;  GET /admin/bans   the bans in force
///   POST /admin/overrides/ID?messages_per_second=..&daily_quota_bytes=..&note=..
///                                 set a device override (rate.overrides_hash);
///   DELETE /admin/overrides/ID    clear it;  GET /admin/overrides   all of them
///
/// With `healthOnly` (`[admin] health_bind`) it answers /healthz and /readyz and
/// nothing else: what a balancer on another host needs, without opening the rest.
///
/// Low volume (a scrape every few seconds, a health check per balancer, one console
/// poll a second per open page), so it is a plain blocking loop on its own thread: one
/// request per connection, answered and closed. Nothing here touches a shard; it reads
/// the shared atomics. (The console did not need an HTTP framework: one embedded page
/// and two more JSON routes; Hummingbird would bring SwiftNIO into every CI build.)
final class AdminHTTP: @unchecked Sendable {
    let fd: Int32
    private let metrics: Metrics
    private let counters: [Counters]
    private let redisEnabled: Bool
    private let watch: StreamWatch
    private let control: AdminControl
    private let console: ConsoleFeed
    private let token: [UInt8]
    private let healthOnly: Bool
    private let logger: Logger

    init(address: SocketAddress, metrics: Metrics, counters: [Counters], redisEnabled: Bool, watch: StreamWatch,
         control: AdminControl, console: ConsoleFeed, token: String, healthOnly: Bool = false, logger: Logger) throws {
        fd = try makeListener(address, backlog: 64)
        self.metrics = metrics
        self.counters = counters
        self.redisEnabled = redisEnabled
        self.watch = watch
        self.control = control
        self.console = console
        self.token = Array(token.utf8)
        self.healthOnly = healthOnly
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
        let head = String(decoding: buf[..<n], as: UTF8.self)
        let parts = String(decoding: buf[..<lineEnd], as: UTF8.self).split(separator: " ")
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else {
            return respond(c, 400, "text/plain", Array("bad request\n".utf8))
        }
        let method = parts[0], target = parts[1].split(separator: "?", maxSplits: 1)
        let path = target.first.map(String.init) ?? ""
        if healthOnly && path != "/healthz" && path != "/readyz" {
            return respond(c, 404, "text/plain", Array("not found: this listener answers /healthz and /readyz only\n".utf8))
        }
        if path.hasPrefix("/admin/") || path == "/drain" {
            return admin(c, String(method), path, query: target.count > 1 ? String(target[1]) : "", head: head)
        }
        switch (method, path) {
        case ("GET", "/"):
            respond(c, 200, "text/html; charset=utf-8", PackageResources.console_html,
                    extra: "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:\r\nCache-Control: no-store\r\n")
        case ("GET", "/metrics"):
            respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", metrics.scrape())
        case ("GET", "/healthz"):
            respond(c, 200, "text/plain", Array("ok\n".utf8))
        case ("GET", "/readyz"):
            // Every shard, not any: a pile accepted on a shard whose link is still
            // connecting (at start, or after a reconnect) is refused or held.
            let shards = UInt64(Counters.shards(in: counters)), upShards = Counters.total(.redisUp, counters)
            let up = !redisEnabled || upShards >= shards
            let stalled = redisEnabled && Counters.total(.redisStalled, counters) > 0
            let lag = watch.heldReason
            let why = control.isDraining ? "not ready: draining\n"
                : !up ? (upShards == 0 ? "not ready: redis unreachable\n"
                         : "not ready: redis connected on \(upShards) of \(shards) shards\n")
                : stalled ? "not ready: redis not answering\n" : lag.map { "not ready: \($0)\n" } ?? "ready\n"
            respond(c, up && !stalled && !control.isDraining && lag == nil ? 200 : 503, "text/plain", Array(why.utf8))
        case (_, "/metrics"), (_, "/healthz"), (_, "/readyz"):
            respond(c, 405, "text/plain", Array("method not allowed\n".utf8))
        default:
            respond(c, 404, "text/plain", Array("not found\n".utf8))
        }
    }

    /// The token-protected part.
    private func admin(_ c: Int32, _ method: String, _ path: String, query: String, head: String) {
        guard !token.isEmpty else {
            return respond(c, 403, "text/plain", Array("admin API disabled: set [admin] token\n".utf8))
        }
        let presented = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("authorization: bearer ") }
            .map { Array($0.dropFirst("authorization: bearer ".count).utf8) } ?? []
        guard presented.count == token.count, zip(presented, token).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0 else {
            return respond(c, 401, "text/plain", Array("bad or missing bearer token\n".utf8))
        }
        let segments = path.split(separator: "/").map { String($0).removingPercentEncoding ?? String($0) }
        switch (method, segments.count, segments.first == "admin" ? segments.dropFirst().first : segments.first) {
        case ("GET", 3, "clients"):
            guard let info = control.lookup(segments[2]) else { return notConnected(c) }
            json(c, info.json)
        case ("POST", 4, "clients") where segments[3] == "kick":
            guard control.kick(segments[2]) else { return notConnected(c) }
            logger.notice("admin: kicked \(segments[2])")
            json(c, ["kicked": segments[2]])
        case ("GET", 2, "overview"):
            json(c, console.overview())
        case ("GET", 2, "events"):
            let args = arguments(query)
            let n = min(max(args["n"].flatMap { Int($0) } ?? 50, 1), 500)
            let device = args["device"].flatMap { $0.isEmpty ? nil : $0 }
            guard let events = control.events(limit: n, device: device) else {
                return respond(c, 503, "text/plain", Array("events unavailable: redis unreachable\n".utf8))
            }
            json(c, ["events": events])
        case ("GET", 2, "fleet"):
            guard let nodes = control.nodes() else {
                return respond(c, 503, "text/plain", Array("fleet unavailable: redis unreachable\n".utf8))
            }
            json(c, ["nodes": nodes])
        case ("GET", 2, "top"):
            let n = query.split(separator: "&").first { $0.hasPrefix("n=") }.flatMap { Int($0.dropFirst(2)) } ?? 10
            json(c, ["clients": control.top(min(max(n, 1), 1000)).map(\.json)])
        case ("POST", 3, "bans"):
            let args = arguments(query)
            guard let seconds = args["seconds"].flatMap(UInt64.init), (1...10 * 365 * 86400).contains(seconds) else {
                return respond(c, 400, "text/plain", Array("seconds=1...315360000 required\n".utf8))
            }
            let ban = OperatorBans.Ban(untilMs: wallMillis() + seconds * 1000, reason: args["reason"] ?? "")
            control.ban(segments[2], ban)
            logger.notice("admin: banned \(segments[2]) for \(seconds) s: \(ban.reason)")
            json(c, ["banned": segments[2], "until_ms": ban.untilMs, "reason": ban.reason])
        case ("DELETE", 3, "bans"):
            control.ban(segments[2], nil)
            logger.notice("admin: lifted the ban on \(segments[2])")
            json(c, ["unbanned": segments[2]])
        case ("GET", 2, "bans"):
            json(c, ["bans": control.bans.list(nowMs: wallMillis()).map {
                ["client_id": $0.clientID, "until_ms": $0.ban.untilMs, "reason": $0.ban.reason] as [String: Any]
            }])
        case (_, _, "overrides") where control.reloader.config.rate.overridesHash.isEmpty:
            respond(c, 409, "text/plain", Array("device overrides are off: set rate.overrides_hash\n".utf8))
        case ("POST", 3, "overrides"):
            let text = query.split(separator: "&").map { String($0).removingPercentEncoding ?? String($0) }.joined(separator: ";")
            if case .failure(let why) = DeviceOverride.parse(text) {
                return respond(c, 400, "text/plain", Array("bad override: \(why)\n".utf8))
            }
            control.override(segments[2], text)
            logger.notice("admin: override for \(segments[2]): \(text)")
            json(c, ["client_id": segments[2], "override": text])
        case ("DELETE", 3, "overrides"):
            control.override(segments[2], nil)
            logger.notice("admin: override for \(segments[2]) cleared")
            json(c, ["cleared": segments[2]])
        case ("GET", 2, "overrides"):
            json(c, ["overrides": control.overrides.snapshot.map { ["client_id": $0.key, "override": $0.value.text] }
                .sorted { ($0["client_id"] ?? "") < ($1["client_id"] ?? "") }])
        case ("POST", 2, "reload"):
            if let why = control.reloader.reload(by: "admin API") {
                respond(c, 400, "text/plain", Array("reload refused: \(why)\n".utf8))
            } else {
                respond(c, 200, "text/plain", Array("reloaded\n".utf8))
            }
        case ("POST", 1, "drain"), ("POST", 2, "drain"):
            logger.notice("admin: drain requested over HTTP")
            control.drain()
            respond(c, 202, "application/json", Array("{\"draining\": true}\n".utf8))
        default:
            respond(c, 404, "text/plain", Array("not found\n".utf8))
        }
    }

    /// `a=1&b=x%20y` as a dictionary (the first of a repeated name wins).
    private func arguments(_ query: String) -> [String: String] {
        Dictionary(query.split(separator: "&").compactMap { kv -> (String, String)? in
            let p = kv.split(separator: "=", maxSplits: 1)
            return p.count == 2 ? (String(p[0]), String(p[1]).removingPercentEncoding ?? String(p[1])) : nil
        }, uniquingKeysWith: { a, _ in a })
    }

    private func notConnected(_ c: Int32) { respond(c, 404, "text/plain", Array("client not connected\n".utf8)) }

    private func json(_ c: Int32, _ object: [String: Any]) {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        respond(c, 200, "application/json", [UInt8](data) + [10])
    }

    private func respond(_ c: Int32, _ status: Int, _ type: String, _ body: [UInt8], extra: String = "") {
        let reason = [200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
                      404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"][status] ?? "Error"
        let head = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\n\(extra)Connection: close\r\n\r\n"
        let all = Array(head.utf8) + body
        var sent = 0
        while sent < all.count {
            let r = all.withUnsafeBytes { send(c, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if r <= 0 { return }
            sent += r
        }
    }
}
