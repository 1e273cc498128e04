import Foundation
import PileLoop

/// `pilegate check-config FILE`: everything a start (or a reload) would find wrong
/// with a config, found without starting: every key (all problems, not the first),
/// the files it names (password file, TLS certificate, key and CA loaded as the
/// server loads them), and the settings that run but are risky in production
/// (warnings). Redis itself is checked when the gateway connects (version, eviction
/// policy, cluster mode), since the file cannot say what the server is.
public struct ConfigCheck {
    public private(set) var problems: [String] = []
    public private(set) var warnings: [String] = []

    public init(path: String) {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            problems = ["cannot read \(path)"]
            return
        }
        let (config, found) = Config.check(toml: text)
        problems = found
        if config.auth.passwordFile.isEmpty == false {
            do { _ = try PasswordFile(path: config.auth.passwordFile) } catch {
                problems.append("auth.password_file: \(error)")
            }
        }
        if config.tls.enabled && !config.tls.certificate.isEmpty && !config.tls.privateKey.isEmpty {
            do { _ = try TLSContext(config.tls) } catch { problems.append("\(error)") }
        }
        warnings = ConfigCheck.risks(config)
    }

    /// What runs but should not run like this in production.
    static func risks(_ c: Config) -> [String] {
        var w: [String] = []
        let piles = SocketAddress(c.listener.bind)
        if c.embeddedRedisServesNetwork {
            w.append("redis.address is empty: an embedded redis-server without persistence stores the uplink while piles are served on \(c.listener.bind); set it to the platform's Redis")
        }
        if c.auth.allowAnonymous == "true" {
            w.append("auth.allow_anonymous = \"true\": any client may connect without credentials, with role \"\(c.acl.anonymousRole)\"")
        }
        if c.auth.allowAnonymous == "loopback" && !c.listener.proxyProtocol && piles.map({ !$0.isLoopback }) ?? false {
            w.append("auth.allow_anonymous = \"loopback\": behind a balancer on this host without PROXY v2 ([listener] proxy_protocol) every pile arrives from loopback and gets role \"\(c.acl.anonymousRole)\"")
        }
        if c.auth.passwordFile.isEmpty && c.auth.redisHash.isEmpty && !(c.tls.enabled && c.tls.requireClientCertificate) {
            w.append("no credential source (auth.password_file, auth.redis_hash or mutual TLS): user names are not checked")
        }
        if let a = SocketAddress(c.admin.bind), c.admin.enabled, !a.isLoopback {
            w.append("admin.bind \(c.admin.bind) is reachable from other hosts (/metrics, and /admin with the token); a balancer's health check needs only admin.health_bind")
        }
        if c.redis.enabled && c.redis.consumerGroups.isEmpty {
            w.append("redis.consumer_groups is empty: each XADD trims the uplink at stream_maxlen (\(c.redis.streamMaxlen)), which can drop entries no worker has read")
        }
        if c.redis.enabled && c.redis.cluster && c.redis.waitReplicas == 0 {
            w.append("redis.cluster without redis.wait_replicas: a PUBACK is sent once the master has the message, and a master that dies before its replica has it loses it; wait_replicas = 1 acknowledges only what a replica has")
        }
        return w
    }
}
