import MQTTCodec
import PileLoop

/// Storm and abuse protection at the front door, shared by every shard
/// (Sources/ARCHITECTURE.md, "Policy"): global and per-IP connect rates, connections
/// per IP, authentication failures per IP, flapping client ids, and bans.
///
/// One lock; it is taken per accept, per CONNECT and per close, never per PUBLISH.
/// Per-IP state exists only for IPv4 peers (an IPv6 peer keeps no address) and is
/// kept only while it matters, so a steady node holds one small entry per IP with
/// open connections and nothing per idle device.
final class ConnectGuard: @unchecked Sendable {
    struct Limits: Sendable {
        var global: GCRA?
        var perIP: GCRA?
        var maxPerIP: Int
        var overRate: Config.Limits.OverRate
        var maxWaitNanos: UInt64
        var flapCount: Int
        var flapWindowNanos: UInt64
        var flapBanNanos: UInt64
        var authFailures: Int
        var authWindowNanos: UInt64
        var authBanNanos: UInt64
    }

    /// What to do with a CONNECT.
    enum Admission: Equatable {
        case go
        /// Connect-rate limit in "wait" mode: a slot is reserved this far ahead.
        case wait(nanos: UInt64)
        case refuse(ConnectReturnCode, why: String, kind: Denial)
    }

    private struct IPState {
        var tat: UInt64 = 0
        var connections: Int32 = 0
        var authFailures: Int32 = 0
        var authWindowStart: UInt64 = 0
        var bannedUntil: UInt64 = 0
        var lastUsed: UInt64 = 0
    }

    private struct ClientState {
        var windowStart: UInt64
        var connects: Int32
    }

    let limits: Limits
    private let lock = Lock()
    private var globalTAT: UInt64 = 0
    private var ips: [UInt32: IPState] = [:]
    private var flapping: [String: ClientState] = [:]
    private var bannedClients: [String: UInt64] = [:]

    init(_ c: Config.Limits, connectTimeoutSeconds: Int) {
        let s: UInt64 = 1_000_000_000
        limits = Limits(
            global: GCRA(perSecond: c.connectRate, burst: c.connectBurst),
            perIP: GCRA(perSecond: c.connectRatePerIP, burst: c.connectBurstPerIP),
            maxPerIP: c.maxConnectionsPerIP, overRate: c.overRate,
            maxWaitNanos: UInt64(connectTimeoutSeconds) * s / 2,
            flapCount: c.flapConnects, flapWindowNanos: UInt64(c.flapWindow) * s, flapBanNanos: UInt64(c.flapBan) * s,
            authFailures: c.authFailuresPerIP, authWindowNanos: UInt64(c.authFailureWindow) * s,
            authBanNanos: UInt64(c.authFailureBan) * s)
    }

    private var tracksIPs: Bool { limits.perIP != nil || limits.maxPerIP > 0 || limits.authFailures > 0 }

    /// Is this peer counted in the per-IP table (so its close must be reported)?
    func tracks(_ peer: Peer) -> Bool { tracksIPs && !peer.isV6 }

    /// A socket was accepted: false when its IP is over `max_connections_per_ip` or
    /// banned for authentication failures (the caller closes it, counted, and does
    /// not call `closed`).
    func accepted(_ peer: Peer, now: UInt64) -> Denial? {
        guard tracksIPs, !peer.isV6 else { return nil }
        return lock.withLock {
            var s = ips[peer.v4] ?? IPState()
            s.lastUsed = now
            if s.bannedUntil > now { ips[peer.v4] = s; return .ipBanned }
            if limits.maxPerIP > 0 && Int(s.connections) >= limits.maxPerIP { ips[peer.v4] = s; return .ipConnections }
            s.connections += 1
            ips[peer.v4] = s
            return nil
        }
    }

    /// A socket that `accepted` admitted has closed.
    func closed(_ peer: Peer) {
        guard tracksIPs, !peer.isV6 else { return }
        lock.withLock { ips[peer.v4]?.connections -= 1 }
    }

    /// Bans, flapping, then the global and per-IP connect rates, in that order: a
    /// refused client should not use up a rate slot.
    func admit(clientID: String, peer: Peer, now: UInt64) -> Admission {
        lock.withLock {
            if let until = bannedClients[clientID] {
                if until > now { return .refuse(.notAuthorized, why: "client id banned for \((until - now) / 1_000_000_000 + 1) s more", kind: .banned) }
                bannedClients[clientID] = nil
            }
            if limits.flapCount > 0 {
                var f = flapping[clientID] ?? ClientState(windowStart: now, connects: 0)
                if now - f.windowStart > limits.flapWindowNanos { f = ClientState(windowStart: now, connects: 0) }
                f.connects += 1
                if Int(f.connects) > limits.flapCount {
                    flapping[clientID] = nil
                    bannedClients[clientID] = now + limits.flapBanNanos
                    return .refuse(.notAuthorized, why: "flapping: more than \(limits.flapCount) connects within \(limits.flapWindowNanos / 1_000_000_000) s, banned for \(limits.flapBanNanos / 1_000_000_000) s", kind: .flapping)
                }
                flapping[clientID] = f
            }
            // The per-IP rate (for IPs `accepted` tracks) is taken on a copy and kept
            // only once the global rate has admitted the CONNECT too.
            let perIP = peer.isV6 ? nil : limits.perIP.flatMap { g in ips[peer.v4].map { (g, $0.tat) } }
            var ipTAT = perIP?.1 ?? 0
            var wait: UInt64 = 0
            switch limits.overRate {
            case .refuse:
                if let (g, _) = perIP, g.take(&ipTAT, now: now) != nil {
                    return .refuse(.serverUnavailable, why: "over the per-IP connect rate", kind: .connectRatePerIP)
                }
                if let g = limits.global, g.take(&globalTAT, now: now) != nil {
                    return .refuse(.serverUnavailable, why: "over the global connect rate", kind: .connectRate)
                }
            case .wait:
                if let g = limits.global {
                    guard let w = g.reserve(&globalTAT, now: now, maxWait: limits.maxWaitNanos) else {
                        return .refuse(.serverUnavailable, why: "over the global connect rate (queue full)", kind: .connectRate)
                    }
                    wait = w
                }
                if let (g, _) = perIP {
                    guard let w = g.reserve(&ipTAT, now: now + wait, maxWait: limits.maxWaitNanos) else {
                        return .refuse(.serverUnavailable, why: "over the per-IP connect rate (queue full)", kind: .connectRatePerIP)
                    }
                    wait += w
                }
            }
            if perIP != nil { ips[peer.v4]?.tat = ipTAT }
            return wait > 0 ? .wait(nanos: wait) : .go
        }
    }

    /// In "wait" mode, is the global connect queue more than half full? Then the
    /// shards stop accepting until it is not (checked at their next accept or tick),
    /// and a storm waits in the kernel's listen queue, where a waiting pile costs
    /// nothing, instead of being accepted, read and refused, which costs the node a
    /// whole connect per retry (bench/absorb.sh: 721,694 refusals for 300,000 piles).
    func queueIsFull() -> Bool {
        guard limits.overRate == .wait, let g = limits.global else { return false }
        let now = monotonicNanos()
        let next = lock.withLock { max(globalTAT, now) } + g.interval
        return next > now + g.tolerance + limits.maxWaitNanos / 2
    }

    /// A CONNECT failed authentication: past `auth_failures_per_ip` within the
    /// window, the IP is banned. True when this failure set the ban.
    func authFailed(_ peer: Peer, now: UInt64) -> Bool {
        guard limits.authFailures > 0, !peer.isV6 else { return false }
        return lock.withLock {
            var s = ips[peer.v4] ?? IPState()
            if now - s.authWindowStart > limits.authWindowNanos {
                s.authWindowStart = now
                s.authFailures = 0
            }
            s.authFailures += 1
            let ban = Int(s.authFailures) > limits.authFailures
            if ban {
                s.bannedUntil = now + limits.authBanNanos
                s.authFailures = 0
            }
            ips[peer.v4] = s
            return ban
        }
    }

    /// Refuse this client id for a while (rate rule or quota action "ban").
    func ban(clientID: String, seconds: Int, now: UInt64) {
        lock.withLock { bannedClients[clientID] = now + UInt64(seconds) * 1_000_000_000 }
    }

    /// Forget what no longer matters: expired bans and flapping windows, IPs with
    /// no connections whose rate and ban state has run out. Called every few seconds.
    func sweep(now: UInt64) {
        lock.withLock {
            bannedClients = bannedClients.filter { $0.value > now }
            flapping = flapping.filter { now - $0.value.windowStart <= limits.flapWindowNanos }
            let window = max(limits.authWindowNanos, limits.perIP?.tolerance ?? 0)
            ips = ips.filter { $0.value.connections > 0 || $0.value.bannedUntil > now || now - $0.value.lastUsed <= window }
        }
    }

}

/// Why the front door said no: the counter, the log line and the event's `kind`.
enum Denial: String, Sendable {
    case auth = "auth"
    case certificate = "certificate"
    case clientID = "client_id"
    case banned = "banned"
    case flapping = "flapping"
    case connectRate = "connect_rate"
    case connectRatePerIP = "connect_rate_ip"
    case ipConnections = "ip_connections"
    case ipBanned = "ip_banned"
    case publishACL = "publish_acl"
    case subscribeACL = "subscribe_acl"
    case rate = "rate"
    case quota = "quota"

    /// Rate-rule actions are counted by action instead.
    var counter: Counter? {
        switch self {
        case .auth, .certificate: .authFailures
        case .clientID: .clientIDRefused
        case .banned, .ipBanned: .bannedRefused
        case .flapping: .flappingBans
        case .connectRate, .connectRatePerIP: .connectRateRefused
        case .ipConnections: .ipConnectionsRefused
        case .publishACL: .publishDenied
        case .subscribeACL: .subscribeDenied
        case .rate, .quota: nil
        }
    }
}
