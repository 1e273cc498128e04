import Foundation
import Logging
import PileLoop

/// Reload without a restart (SIGHUP, `systemctl reload`, `POST /admin/reload`): the
/// config file and the files it names (password file, TLS certificate, key and CA)
/// are read and checked whole; only then does every shard get the new `PolicySet`,
/// between two of its turns. Connected piles stay connected and are judged by the
/// new rules at their next PUBLISH or SUBSCRIBE; new connections use them at once.
/// A bad file changes nothing: one log line with the reason, a counter, and the
/// running config stays.
///
/// What applies live: `[auth]` (password file, anonymous access, caches; not
/// `redis_hash`), `[acl]`,
/// `[rate]` (when the rule names stay the same), `[[route]]` (when the streams stay
/// the same), the TLS certificate, key and CA,
/// `[mqtt]` (but `queue_memory_budget`), `[devices]`, `[downlink]` (but
/// `review_idle_ms`). The rest (listeners, shards, Redis, admin, log, the credentials hash,
/// connect limits) is built into sockets, threads and connections at start: a change
/// there is logged as needing a restart, and the running value is kept.
final class Reloader: @unchecked Sendable {
    private let lock = Lock()
    private var current: PolicySet
    private let path: String?
    private let listen: String?
    private let broker: Broker
    private let inboxes: [Inbox<ShardMessage>]
    private let counters: Counters
    private let logger: Logger

    init(policy: PolicySet, path: String?, listen: String?, broker: Broker, inboxes: [Inbox<ShardMessage>],
         counters: Counters, logger: Logger) {
        current = policy; self.path = path; self.listen = listen; self.broker = broker; self.inboxes = inboxes
        self.counters = counters; self.logger = logger
    }

    /// The config in force.
    var config: Config { lock.withLock { current.config } }

    /// Reload now; nil when the new config is in force on every shard, else why not.
    func reload(by who: String) -> String? {
        lock.withLock {
            let started = monotonicNanos()
            do {
                guard let path else { throw Config.Invalid(description: "reload: pilegate runs without --config") }
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                    throw Config.Invalid(description: "reload: cannot read \(path)")
                }
                var next = try Config(toml: text)
                if let listen { next.listener.bind = listen }
                let (live, restartOnly) = Reloader.split(next, running: current.config)
                let policy = PolicySet(config: live, authenticator: try Authenticator(config: live.auth),
                                       acl: ACL(live.acl, mqtt: live.mqtt, keeping: current.acl),
                                       rates: RateRules(live.rate),
                                       tls: live.tls.enabled ? try TLSContext(live.tls) : nil)
                broker.reload(acl: policy.acl)
                let done = Inbox<Int>()
                inboxes.forEach { $0.post(.reload(policy, done: done)) }
                var applied = 0
                while applied < inboxes.count { applied += done.wait(timeoutMillis: 1000).count }
                current = policy
                counters.add(.reloads)
                for section in restartOnly {
                    logger.warning("reload (\(who)): \(section) changed; it needs a restart, the running value stays")
                }
                for role in policy.acl.removedRoles(live.acl) {
                    logger.warning("reload (\(who)): role \"\(role)\" is gone; its connected clients may do nothing until they reconnect")
                }
                logger.notice("reloaded \(path) (\(who)) in \(Double(monotonicNanos() - started) / 1e6) ms")
                return nil
            } catch {
                counters.add(.reloadsRefused)
                logger.error("reload (\(who)) refused, the running config stays: \(error)")
                return "\(error)"
            }
        }
    }

    /// The new config with what cannot change while running taken from the running
    /// one, and the names of those parts that differ.
    static func split(_ next: Config, running old: Config) -> (Config, [String]) {
        var live = next
        var kept: [String] = []
        func keep<T: Equatable>(_ name: String, _ key: WritableKeyPath<Config, T>) {
            if live[keyPath: key] != old[keyPath: key] { kept.append(name) }
            live[keyPath: key] = old[keyPath: key]
        }
        keep("[listener]", \.listener)
        keep("[server]", \.server)
        keep("[redis]", \.redis)
        // Routes apply live while they name the same streams (the per-stream counters
        // and the stream review are built for those at start).
        if Set(Router(routes: next.routes, defaultStream: old.redis.defaultStream, partitions: old.redis.partitions).streams)
            != Set(Router(routes: old.routes, defaultStream: old.redis.defaultStream, partitions: old.redis.partitions).streams) {
            kept.append("the set of [[route]] streams")
            live.routes = old.routes
        }
        keep("[admin]", \.admin)
        keep("[log]", \.log)
        // The Redis connections are made for the hash named at start.
        keep("auth.redis_hash", \.auth.redisHash)
        keep("[limits]", \.limits)
        keep("tls.enabled", \.tls.enabled)
        keep("tls.bind", \.tls.bind)
        keep("tls.proxy_protocol", \.tls.proxyProtocol)
        keep("mqtt.queue_memory_budget", \.mqtt.queueMemoryBudget)
        keep("downlink.review_idle_ms", \.downlink.reviewIdleMs)
        // Rule names label the per-rule counters, sized at start.
        if next.rate.topics.map(\.name) != old.rate.topics.map(\.name) {
            kept.append("the [[rate.topic]] rule names")
            live.rate = old.rate
        }
        return (live, kept)
    }
}
