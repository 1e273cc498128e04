import Glibc
import MQTTCodec
import PileLoop
import TOMLKit

/// Everything the gateway can be told, with embedded defaults. The TOML file
/// (ops/pilegate.example.toml documents every key) overrides them; unknown keys
/// are an error so a typo never silently keeps a default.
public struct Config: Sendable {
    public struct Listener: Sendable {
        public var bind = "0.0.0.0:1883"
        public var backlog = 65535
        /// Every connection starts with a PROXY protocol v2 header (HAProxy
        /// `send-proxy-v2`): the pile's real address for the ACL, limits and logs.
        public var proxyProtocol = false
    }

    public struct Server: Sendable {
        /// Node name: in logs, and later in Redis presence and stream entries.
        public var node = Config.hostname()
        /// 0 = max(cores, ceil(max_connections / fixed-file table size)).
        public var shards = 0
        public var maxConnections = 200_000
        /// Submission queue entries per ring.
        public var ringEntries = 4096
        /// Provided receive buffers per shard, and their size.
        public var recvBuffers = 128
        public var recvBufferSize = 4096
        /// Seconds between $SYS/broker/... statistics publishes; 0 turns them off.
        public var sysInterval = 10
    }

    public struct MQTT: Sendable {
        /// Whole-packet limit; a larger packet closes the connection.
        public var maxPacketSize = 1 << 20
        /// Seconds from accept to a CONNECT before the connection is closed.
        public var connectTimeout = 10
        /// QoS 1/2 messages in flight to one client before the rest queue.
        public var maxInflight = 32
        /// Messages queued per client (past the in-flight window, or while a
        /// persistent session is away); past it, new messages are dropped and counted.
        public var maxQueuedMessages = 1000
        public var maxSubscriptionsPerClient = 64
        /// Bytes waiting to be sent to one client past which QoS 0 messages to it are
        /// dropped and counted (a subscriber that stops reading).
        public var maxSendBuffer = 4 << 20
        public var maxClientIDLength = 128
        /// Clean-session clients with an empty client id get a generated one (3.1.3-6).
        public var allowZeroLengthClientID = true
        public var retainAvailable = true
    }

    public struct Log: Sendable {
        public var level = "info"
    }

    /// Who may connect (DESIGN.md, "Security model").
    public struct Auth: Sendable {
        /// "false", "true", or "loopback": anonymous clients only from 127.0.0.0/8 and
        /// ::1 (so a fresh install works on the box itself and nowhere else).
        public var allowAnonymous = "loopback"
        /// mosquitto_passwd-compatible file (`pilegate passwd` maintains it). Empty: user
        /// names are not checked and every client counts as anonymous.
        public var passwordFile = ""
        /// Redis hash of further users (field = user name, value = a `$7$` entry as in
        /// the password file), read through the bridge's connection. Empty: off.
        public var redisHash = ""
        /// Entries kept in each credential cache (Redis entries, verified passwords).
        public var cacheSize = 250_000
        /// Seconds a Redis entry is trusted before it is fetched again (a changed or
        /// removed password takes effect within this; stale entries are used while
        /// Redis is unreachable).
        public var cacheSeconds = 300
    }

    /// What each client may publish and subscribe to. Patterns are topic filters whose
    /// whole levels may be `%c` (the client id) or `%u` (the user name).
    public struct ACL: Sendable {
        public var enabled = true
        /// Role of authenticated users not listed in `users`.
        public var defaultRole = "pile"
        /// Role of anonymous clients (loopback-only by default: someone on the node).
        public var anonymousRole = "operator"
        public var roles: [String: (publish: [String], subscribe: [String])] = [
            "pile": (["/xjdy/ops/v1/TCU/%c/msg"], ["/xjdy/ops/v1/TCU/%c/cmd"]),
            "operator": (["#"], ["#", "$SYS/#"]),
        ]
        /// user name -> role
        public var users: [String: String] = [:]
    }

    /// The operator's HTTP endpoint: /metrics, /healthz, /readyz.
    public struct Admin: Sendable {
        public var enabled = true
        /// Loopback by default: put it on a management network deliberately.
        public var bind = "127.0.0.1:9883"
        /// Bearer token for /admin/* and /drain. Empty: those are refused (403).
        public var token = ""
        /// Piles closed per second over the node while draining.
        public var drainRate = 2000
    }

    /// Per-device accounting and monitoring: the daily traffic rollup into Redis
    /// (SIM data use) and silent-device events.
    public struct Devices: Sendable {
        /// Traffic per device per day goes to hash `traffic_prefix` + YYYY-MM-DD (the
        /// quota day of `rate.day_offset_minutes`), fields `ID:in` and `ID:out`
        /// (estimated SIM bytes: MQTT plus `rate.*_overhead_bytes`). Empty: no rollup.
        public var trafficPrefix = "pilegate:traffic:"
        /// Each device's bytes since the last flush are added (HINCRBY) this often,
        /// when its connection ends, and at the day change.
        public var trafficFlushSeconds = 60
        /// Each day's hash expires this long after its last update.
        public var trafficRetentionDays = 62
        /// A connected pile that sends no PUBLISH for this long is reported once on the
        /// events stream (`type=silent`), and again when it speaks (`silent_end`). 0: off.
        public var silentSeconds = 0
    }

    /// The TLS listener (OpenSSL 3 through memory BIOs on the shard's ring).
    public struct TLS: Sendable {
        public var enabled = false
        public var bind = "0.0.0.0:8883"
        /// As `listener.proxy_protocol`, for the TLS listener (the header comes before the handshake).
        public var proxyProtocol = false
        /// PEM files: the server's certificate chain and key, and the CA client
        /// certificates must chain to (mutual TLS).
        public var certificate = ""
        public var privateKey = ""
        public var ca = ""
        /// Mutual TLS: a pile must present a certificate from `ca` whose subject CN
        /// equals its client id; the certificate then authenticates it.
        public var requireClientCertificate = false
        /// Seconds from accept to a finished handshake.
        public var handshakeTimeout = 10
        /// Server-side TLS sessions kept for resumption (a reconnect storm then costs
        /// no full handshakes for TLS 1.2 clients; TLS 1.3 uses stateless tickets).
        public var sessionCacheSize = 20480
    }

    /// Storm and abuse protection at CONNECT time (0 turns a limit off). Per-IP
    /// limits are off by default: piles on a mobile network often share a few
    /// carrier NAT addresses.
    public struct Limits: Sendable {
        public enum OverRate: String, Sendable, CaseIterable { case refuse, wait }
        /// CONNECTs per second over the whole node, and how many may come at once.
        public var connectRate = 0.0
        public var connectBurst = 1000
        public var connectRatePerIP = 0.0
        public var connectBurstPerIP = 100
        /// Over a connect rate: CONNACK 3 ("refuse") or hold the CONNECT until its
        /// turn, up to half the connect timeout ("wait").
        public var overRate = OverRate.refuse
        public var maxConnectionsPerIP = 0
        /// More than `flap_connects` CONNECTs with one client id within
        /// `flap_window` seconds: that client id is refused for `flap_ban` seconds.
        public var flapConnects = 0
        public var flapWindow = 60
        public var flapBan = 300
        /// More than `auth_failures_per_ip` refused credentials from one IP within
        /// `auth_failure_window` seconds: the IP is refused for `auth_failure_ban` seconds.
        public var authFailuresPerIP = 0
        public var authFailureWindow = 60
        public var authFailureBan = 300
        /// Unacknowledged QoS 1/2 PUBLISHes one pile may have waiting on Redis; past
        /// it that pile is not read until some are stored (one pile cannot fill the
        /// shard's whole Redis window).
        public var maxInflightIn = 64
    }

    /// Send-rate rules per device (DESIGN.md, "Security model").
    public struct Rate: Sendable {
        /// The device rule (name "device", all topics) and `[[rate.topic]]` overrides.
        public var device = RateRules.Rule(name: "device", filter: nil, messages: nil, bytes: nil,
                                           action: .throttle, banSeconds: 300)
        public var topics: [RateRules.Rule] = []
        /// Bytes a device may move per day (in + out + overhead estimate); 0 = no quota.
        public var dailyQuotaBytes = 0
        public var quotaAction = RateAction.disconnect
        public var quotaBanSeconds = 3600
        /// Estimated TCP/IP bytes per MQTT packet (IPv4 + TCP headers with timestamps).
        public var packetOverheadBytes = 52
        /// Estimated TLS record bytes per MQTT packet (header + AEAD tag), on TLS connections.
        public var tlsOverheadBytes = 22
        /// Quota days start at UTC midnight plus this (e.g. 480 for Beijing time).
        public var dayOffsetMinutes = 0
    }

    /// The Redis Streams bridge (DESIGN.md, "Data flows").
    public struct Redis: Sendable {
        public var enabled = true
        /// HOST:PORT of the platform's Redis. Empty: pilegate starts a local
        /// redis-server on a free loopback port (`embedded_server`) and uses that.
        public var address = ""
        public var username = ""
        public var password = ""
        public var database = 0
        public var connectTimeoutMs = 2000
        /// Uplink XADDs waiting for Redis per shard; past it the shard stops reading
        /// from publishing piles until Redis catches up.
        public var maxInflight = 10_000
        /// Approximate cap on every stream pilegate writes (XADD MAXLEN ~).
        public var streamMaxlen = 1_000_000
        /// QoS 0 under backpressure: "block" (stop reading, like QoS 1) or "drop" (count).
        public enum QoS0Overload: String, Sendable, CaseIterable { case block, drop }
        public var qos0Overload = QoS0Overload.block
        public var defaultStream = "pilegate:up"
        public var eventsStream = "pilegate:events"
        public var presenceKey = "pilegate:presence"
        /// Each node reads commands from `downlink_prefix` + node name.
        public var downlinkPrefix = "pilegate:down:"
        public var outcomeStream = "pilegate:down:outcome"
        public var group = "pilegate"
        public var embeddedServer = "redis-server"

        /// Commands every new Redis connection starts with.
        func handshake(clientName: String?) -> [[String]] {
            var h: [[String]] = []
            if !password.isEmpty { h.append(username.isEmpty ? ["AUTH", password] : ["AUTH", username, password]) }
            if database != 0 { h.append(["SELECT", String(database)]) }
            if let clientName { h.append(["CLIENT", "SETNAME", clientName]) }
            return h
        }
    }

    /// An uplink routing rule: PUBLISHes whose topic matches `filter` (and, when
    /// given, whose payload is a JSON object with top-level `json_key` equal to
    /// `json_value`) go to `stream`. First match wins; no match: `default_stream`.
    public struct Route: Sendable {
        public var filter: String
        public var jsonKey: String?
        public var jsonValue: String?
        public var stream: String
        public init(filter: String, jsonKey: String? = nil, jsonValue: String? = nil, stream: String) {
            self.filter = filter; self.jsonKey = jsonKey; self.jsonValue = jsonValue; self.stream = stream
        }
    }

    public var listener = Listener()
    public var server = Server()
    public var mqtt = MQTT()
    public var log = Log()
    public var redis = Redis()
    public var auth = Auth()
    public var acl = ACL()
    public var routes: [Route] = []
    public var limits = Limits()
    public var tls = TLS()
    public var admin = Admin()
    public var rate = Rate()
    public var devices = Devices()

    public init() {}

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// Parse a TOML document over the defaults.
    public init(toml text: String) throws {
        let root: TOMLTable
        do { root = try TOMLTable(string: text) } catch let e as TOMLParseError {
            throw Invalid(description: "config: \(e.description) at line \(e.source.begin.line)")
        }
        var r = TableReader(root, path: "")
        try r.table("listener") { t in
            try t.string("bind", &listener.bind)
            try t.int("backlog", &listener.backlog, 1...65535)
            try t.bool("proxy_protocol", &listener.proxyProtocol)
        }
        try r.table("server") { t in
            try t.string("node", &server.node)
            try t.int("shards", &server.shards, 0...256)
            try t.int("max_connections", &server.maxConnections, 1...10_000_000)
            try t.int("ring_entries", &server.ringEntries, 64...32768)
            try t.int("recv_buffers", &server.recvBuffers, 16...32768)
            try t.int("recv_buffer_size", &server.recvBufferSize, 256...1 << 20)
            try t.int("sys_interval", &server.sysInterval, 0...86400)
        }
        try r.table("mqtt") { t in
            try t.int("max_packet_size", &mqtt.maxPacketSize, 64...268_435_460)
            try t.int("connect_timeout", &mqtt.connectTimeout, 1...3600)
            try t.int("max_inflight", &mqtt.maxInflight, 1...65535)
            try t.int("max_queued_messages", &mqtt.maxQueuedMessages, 0...10_000_000)
            try t.int("max_subscriptions_per_client", &mqtt.maxSubscriptionsPerClient, 1...100_000)
            try t.int("max_send_buffer", &mqtt.maxSendBuffer, 4096...1 << 30)
            try t.int("max_client_id_length", &mqtt.maxClientIDLength, 23...65535)
            try t.bool("allow_zero_length_client_id", &mqtt.allowZeroLengthClientID)
            try t.bool("retain_available", &mqtt.retainAvailable)
        }
        try r.table("log") { t in
            try t.string("level", &log.level)
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(log.level) else {
                throw Invalid(description: "config: log.level \"\(log.level)\" is not a log level")
            }
        }
        try r.table("redis") { t in
            try t.bool("enabled", &redis.enabled)
            try t.string("address", &redis.address)
            try t.string("username", &redis.username)
            try t.string("password", &redis.password)
            try t.int("database", &redis.database, 0...15)
            try t.int("connect_timeout_ms", &redis.connectTimeoutMs, 10...600_000)
            try t.int("max_inflight", &redis.maxInflight, 1...1_000_000)
            try t.int("stream_maxlen", &redis.streamMaxlen, 1...1_000_000_000)
            try t.enumeration("qos0_overload", &redis.qos0Overload)
            try t.string("default_stream", &redis.defaultStream)
            try t.string("events_stream", &redis.eventsStream)
            try t.string("presence_key", &redis.presenceKey)
            try t.string("downlink_prefix", &redis.downlinkPrefix)
            try t.string("outcome_stream", &redis.outcomeStream)
            try t.string("group", &redis.group)
            try t.string("embedded_server", &redis.embeddedServer)
            if !redis.address.isEmpty && SocketAddress(redis.address) == nil {
                throw Invalid(description: "config: redis.address \"\(redis.address)\" is not HOST:PORT")
            }
        }
        try r.table("auth") { t in
            try t.string("allow_anonymous", &auth.allowAnonymous)
            try t.string("password_file", &auth.passwordFile)
            try t.string("redis_hash", &auth.redisHash)
            try t.int("cache_size", &auth.cacheSize, 2...100_000_000)
            try t.int("cache_seconds", &auth.cacheSeconds, 0...30 * 86400)
            guard ["true", "false", "loopback"].contains(auth.allowAnonymous) else {
                throw Invalid(description: "config: auth.allow_anonymous must be \"true\", \"false\" or \"loopback\"")
            }
        }
        try r.table("acl") { t in
            try t.bool("enabled", &acl.enabled)
            try t.string("default_role", &acl.defaultRole)
            try t.string("anonymous_role", &acl.anonymousRole)
            var roles: [String: (publish: [String], subscribe: [String])] = [:]
            try t.each("roles") { name, role in
                var p: [String] = [], s: [String] = []
                try role.strings("publish", &p)
                try role.strings("subscribe", &s)
                for f in p + s where !Topic.isValidFilter(Array(f.utf8)) {
                    throw Invalid(description: "config: acl.roles.\(name): \"\(f)\" is not a topic filter")
                }
                roles[name] = (p, s)
            }
            if !roles.isEmpty { acl.roles = roles }
            try t.eachString("users") { user, role in acl.users[user] = role }
            for role in [acl.defaultRole, acl.anonymousRole] + acl.users.values where acl.roles[role] == nil {
                throw Invalid(description: "config: acl role \"\(role)\" is not defined under [acl.roles]")
            }
        }
        try r.table("admin") { t in
            try t.bool("enabled", &admin.enabled)
            try t.string("bind", &admin.bind)
            try t.string("token", &admin.token)
            try t.int("drain_rate", &admin.drainRate, 1...1_000_000)
            if SocketAddress(admin.bind) == nil {
                throw Invalid(description: "config: admin.bind \"\(admin.bind)\" is not HOST:PORT")
            }
        }
        try r.table("devices") { t in
            try t.string("traffic_prefix", &devices.trafficPrefix)
            try t.int("traffic_flush_seconds", &devices.trafficFlushSeconds, 1...86400)
            try t.int("traffic_retention_days", &devices.trafficRetentionDays, 1...3660)
            try t.int("silent_seconds", &devices.silentSeconds, 0...30 * 86400)
        }
        try r.table("tls") { t in
            try t.bool("enabled", &tls.enabled)
            try t.string("bind", &tls.bind)
            try t.bool("proxy_protocol", &tls.proxyProtocol)
            try t.string("certificate", &tls.certificate)
            try t.string("private_key", &tls.privateKey)
            try t.string("ca", &tls.ca)
            try t.bool("require_client_certificate", &tls.requireClientCertificate)
            try t.int("handshake_timeout", &tls.handshakeTimeout, 1...600)
            try t.int("session_cache_size", &tls.sessionCacheSize, 0...10_000_000)
            if tls.enabled {
                guard SocketAddress(tls.bind) != nil else {
                    throw Invalid(description: "config: tls.bind \"\(tls.bind)\" is not HOST:PORT")
                }
                guard !tls.certificate.isEmpty, !tls.privateKey.isEmpty else {
                    throw Invalid(description: "config: tls.enabled needs tls.certificate and tls.private_key")
                }
                guard !tls.requireClientCertificate || !tls.ca.isEmpty else {
                    throw Invalid(description: "config: tls.require_client_certificate needs tls.ca")
                }
            }
        }
        try r.table("limits") { t in
            try t.double("connect_rate", &limits.connectRate)
            try t.int("connect_burst", &limits.connectBurst, 1...10_000_000)
            try t.double("connect_rate_per_ip", &limits.connectRatePerIP)
            try t.int("connect_burst_per_ip", &limits.connectBurstPerIP, 1...10_000_000)
            try t.enumeration("over_rate", &limits.overRate)
            try t.int("max_connections_per_ip", &limits.maxConnectionsPerIP, 0...10_000_000)
            try t.int("flap_connects", &limits.flapConnects, 0...1_000_000)
            try t.int("flap_window", &limits.flapWindow, 1...86400)
            try t.int("flap_ban", &limits.flapBan, 1...30 * 86400)
            try t.int("auth_failures_per_ip", &limits.authFailuresPerIP, 0...1_000_000)
            try t.int("auth_failure_window", &limits.authFailureWindow, 1...86400)
            try t.int("auth_failure_ban", &limits.authFailureBan, 1...30 * 86400)
            try t.int("max_inflight_in", &limits.maxInflightIn, 1...65535)
        }
        try r.table("rate") { t in
            try t.rateRule(&rate.device)
            try t.int("daily_quota_bytes", &rate.dailyQuotaBytes, 0...Int.max)
            try t.enumeration("quota_action", &rate.quotaAction)
            try t.int("quota_ban_seconds", &rate.quotaBanSeconds, 1...30 * 86400)
            try t.int("packet_overhead_bytes", &rate.packetOverheadBytes, 0...1500)
            try t.int("tls_overhead_bytes", &rate.tlsOverheadBytes, 0...1500)
            try t.int("day_offset_minutes", &rate.dayOffsetMinutes, -1440...1440)
            try t.tables("topic") { rt in
                var rule = RateRules.Rule(name: "", filter: "", messages: nil, bytes: nil, action: .throttle, banSeconds: 300)
                try rt.string("name", &rule.name)
                try rt.string("filter", &rule.filter!)
                try rt.rateRule(&rule)
                guard !rule.name.isEmpty, Topic.isValidFilter(Array(rule.filter!.utf8)) else {
                    throw Invalid(description: "config: every [[rate.topic]] needs a name and a valid filter")
                }
                rate.topics.append(rule)
            }
        }
        try r.tables("route") { t in
            var filter = "", stream = "", key = "", value = ""
            try t.string("filter", &filter)
            try t.string("stream", &stream)
            try t.string("json_key", &key)
            try t.string("json_value", &value)
            guard Topic.isValidFilter(Array(filter.utf8)), !stream.isEmpty else {
                throw Invalid(description: "config: every [[route]] needs a valid filter and a stream")
            }
            guard key.isEmpty == value.isEmpty else {
                throw Invalid(description: "config: [[route]] json_key and json_value go together")
            }
            routes.append(Route(filter: filter, jsonKey: key.isEmpty ? nil : key,
                                jsonValue: value.isEmpty ? nil : value, stream: stream))
        }
        try r.finish()
        if !auth.redisHash.isEmpty && !redis.enabled {
            throw Invalid(description: "config: auth.redis_hash needs the Redis bridge ([redis] enabled = true)")
        }
        guard recvBufferCountIsPowerOfTwo else {
            throw Invalid(description: "config: server.recv_buffers must be a power of two")
        }
    }

    var recvBufferCountIsPowerOfTwo: Bool { server.recvBuffers.nonzeroBitCount == 1 }

    static func hostname() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, 255)
        return String(cString: buf)
    }
}

/// Reads typed keys from one TOML table and remembers which it saw.
private struct TableReader {
    let table: TOMLTable
    let path: String
    var seen: Set<String> = []

    init(_ table: TOMLTable, path: String) { self.table = table; self.path = path }

    func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    mutating func table(_ key: String, _ body: (inout TableReader) throws -> Void) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let t = v.table else { throw Config.Invalid(description: "config: \(name(key)) must be a table") }
        var sub = TableReader(t, path: name(key))
        try body(&sub)
        try sub.finish()
    }

    /// A table of named sub-tables (`[key.NAME]`), each read by `body`.
    mutating func each(_ key: String, _ body: (String, inout TableReader) throws -> Void) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let t = v.table else { throw Config.Invalid(description: "config: \(name(key)) must be a table") }
        for k in t.keys {
            guard let sub = t[k]?.table else { throw Config.Invalid(description: "config: \(name(key)).\(k) must be a table") }
            var r = TableReader(sub, path: "\(name(key)).\(k)")
            try body(k, &r)
            try r.finish()
        }
    }

    /// A table of string values with free keys (`[key]` name = "value").
    mutating func eachString(_ key: String, _ body: (String, String) throws -> Void) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let t = v.table else { throw Config.Invalid(description: "config: \(name(key)) must be a table") }
        for k in t.keys {
            guard let s = t[k]?.string else { throw Config.Invalid(description: "config: \(name(key)).\(k) must be a string") }
            try body(k, s)
        }
    }

    mutating func strings(_ key: String, _ into: inout [String]) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let a = v.array else { throw Config.Invalid(description: "config: \(name(key)) must be an array of strings") }
        into = try a.map { e in
            guard let s = e.string else { throw Config.Invalid(description: "config: \(name(key)) must be an array of strings") }
            return s
        }
    }

    /// An array of tables (`[[key]]`).
    mutating func tables(_ key: String, _ body: (inout TableReader) throws -> Void) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let array = v.array else { throw Config.Invalid(description: "config: \(name(key)) must be [[\(key)]] tables") }
        for (i, element) in array.enumerated() {
            guard let t = element.table else { throw Config.Invalid(description: "config: \(name(key))[\(i)] must be a table") }
            var sub = TableReader(t, path: "\(name(key))[\(i)]")
            try body(&sub)
            try sub.finish()
        }
    }

    mutating func string(_ key: String, _ into: inout String) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let s = v.string else { throw Config.Invalid(description: "config: \(name(key)) must be a string") }
        into = s
    }

    mutating func int(_ key: String, _ into: inout Int, _ range: ClosedRange<Int>) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let i = v.int, range.contains(i) else {
            throw Config.Invalid(description: "config: \(name(key)) must be an integer in \(range)")
        }
        into = i
    }

    /// A number (integer or float), at least 0.
    mutating func double(_ key: String, _ into: inout Double) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let d = v.double ?? v.int.map(Double.init), d >= 0, d.isFinite else {
            throw Config.Invalid(description: "config: \(name(key)) must be a number, at least 0")
        }
        into = d
    }

    /// One of an enumeration's raw values.
    mutating func enumeration<E: RawRepresentable & CaseIterable>(_ key: String, _ into: inout E) throws
    where E.RawValue == String {
        var raw = into.rawValue
        try string(key, &raw)
        guard let e = E(rawValue: raw) else {
            let all = E.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
            throw Config.Invalid(description: "config: \(name(key)) must be one of \(all)")
        }
        into = e
    }

    /// The limit keys shared by `[rate]` and each `[[rate.topic]]`.
    mutating func rateRule(_ rule: inout RateRules.Rule) throws {
        var messages = 0.0, bytes = 0.0, burst = 10, burstBytes = 65536
        try double("messages_per_second", &messages)
        try double("bytes_per_second", &bytes)
        try int("burst", &burst, 1...1_000_000)
        try int("burst_bytes", &burstBytes, 1...1 << 30)
        try enumeration("action", &rule.action)
        try int("ban_seconds", &rule.banSeconds, 1...30 * 86400)
        rule.messages = GCRA(perSecond: messages, burst: burst)
        rule.bytes = GCRA(perSecond: bytes, burst: burstBytes)
    }

    mutating func bool(_ key: String, _ into: inout Bool) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let b = v.bool else { throw Config.Invalid(description: "config: \(name(key)) must be true or false") }
        into = b
    }

    func finish() throws {
        for k in table.keys where !seen.contains(k) {
            throw Config.Invalid(description: "config: unknown key \(name(k))")
        }
    }
}
