import Glibc
import MQTTCodec
import PileLoop

/// Everything the gateway can be told, with embedded defaults. The TOML file
/// (ops/pilegate.example.toml documents every key) overrides them; unknown keys
/// are an error so a typo never silently keeps a default.
public struct Config: Sendable {
    public struct Listener: Sendable, Equatable {
        public var bind = "0.0.0.0:1883"
        public var backlog = 65535
        /// TCP_DEFER_ACCEPT seconds (0: off): an accept completes with the client's
        /// first bytes already there.
        public var deferAccept = 0
        /// Every connection starts with a PROXY protocol v2 header (HAProxy
        /// `send-proxy-v2`): the pile's real address for the ACL, limits and logs.
        public var proxyProtocol = false
    }

    public struct Server: Sendable, Equatable {
        /// Node name: in logs, in the presence hash and stream entries, and in the
        /// name of this node's downlink stream.
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
        /// Seconds between checks whether a burst of connections opened or closed
        /// is over, to return the free heap it left to the kernel; 0 turns it off.
        public var memoryTrimInterval = 10
    }

    public struct MQTT: Sendable {
        /// Whole-packet limit; a larger packet closes the connection.
        public var maxPacketSize = 1 << 20
        /// Seconds from accept to a CONNECT before the connection is closed.
        public var connectTimeout = 10
        /// QoS 1/2 messages in flight to one client before the rest queue.
        public var maxInflight = 32
        /// QoS 1/2 messages queued per client (past the in-flight window, or while a
        /// persistent session is away), and their bytes; past either, new messages are
        /// dropped, counted by reason, logged once per connection and emitted as an
        /// event. Defaults for roles that set no bounds of their own.
        public var maxQueuedMessages = 1000
        public var maxQueuedBytes = 1 << 20
        /// Bytes all client queues together may hold on this node (the sum over every
        /// session, live or away): past it, messages are dropped (reason `budget`).
        public var queueMemoryBudget = 1 << 30
        public var maxSubscriptionsPerClient = 64
        /// Bytes waiting to be sent to one client past which QoS 0 messages to it are
        /// dropped and counted (a subscriber that stops reading). A role default.
        public var maxSendBuffer = 4 << 20
        /// Seconds a connected client may leave bytes unread (a send to it making no
        /// progress at all) before it is closed; 0: never. Keepalive does not catch a
        /// client that still sends PINGREQ but never reads (TCP answers zero-window
        /// probes for ever); this frees its slot and send memory.
        public var sendStallTimeout = 60
        public var maxClientIDLength = 128
        /// Clean-session clients with an empty client id get a generated one (3.1.3-6).
        public var allowZeroLengthClientID = true
        public var retainAvailable = true
        /// Bounds on the retained store (topics, and their topic and payload bytes): a
        /// retained PUBLISH for a new topic past either is delivered but not retained
        /// (counted, logged). One client writing a million topics cannot grow it further.
        public var maxRetainedMessages = 100_000
        public var maxRetainedBytes = 64 << 20
        /// A pile's command topic, `%c` standing for its client id: where a downlink
        /// entry without `topic` is published, and what the built-in `pile` role may
        /// subscribe to.
        public var commandTopic = Config.defaultCommandTopic

        /// The command topic of one pile.
        func commandTopic(for device: String) -> String { commandTopic.replacing("%c", with: device) }

        /// The pile whose command topic `topic` is, if it is one (the pattern now in force).
        func device(inCommandTopic topic: String) -> String? {
            // Run for every PUBLISH: a pile's uplink topic fails on its last byte.
            guard commandTopic.hasSuffix("%c") || topic.utf8.last == commandTopic.utf8.last else { return nil }
            return OwnTopic(pattern: commandTopic).clientID(of: topic)
        }
    }

    static let defaultCommandTopic = "/xjdy/ops/v1/TCU/%c/cmd"

    public struct Log: Sendable, Equatable {
        public var level = "info"
    }

    /// Who may connect (Sources/ARCHITECTURE.md, "Policy").
    public struct Auth: Sendable {
        /// "false", "true", or "loopback": anonymous clients only from 127.0.0.0/8 and
        /// ::1 (so a fresh install works on the box itself and nowhere else). When the
        /// file does not say, "false" as soon as a password file or Redis hash is set.
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
        public var roles: [String: Role] = [
            "pile": Role(publish: ["/xjdy/ops/v1/TCU/%c/msg"], subscribe: [Config.defaultCommandTopic]),
            // An operator's `+/#` must absorb a burst from every pile at once (20,000 run
            // data messages of ~300 B from 2,000 piles) while it reads at a script's pace.
            "operator": Role(publish: ["#"], subscribe: ["#", "$SYS/#"], maxQueuedMessages: 100_000,
                             maxQueuedBytes: 64 << 20, maxSendBuffer: 64 << 20),
        ]
        /// user name -> role
        public var users: [String: String] = [:]
    }

    /// One ACL role: what its clients may publish and subscribe to, what is denied
    /// inside those grants, and how much may wait for one of its clients.
    public struct Role: Sendable, Equatable {
        public var publish: [String]
        public var subscribe: [String]
        /// Denied even where `publish` / `subscribe` allow. A SUBSCRIBE whose filter
        /// lies wholly inside a denied filter gets 0x80; a wider filter is granted, and
        /// the denied topics are never delivered through it.
        public var denyPublish: [String] = []
        public var denySubscribe: [String] = []
        /// When the role's patterns use `%c`, an authenticated client must present its
        /// user name (or certificate CN) as client id, else CONNACK 5: a pile cannot
        /// take another pile's rights by borrowing its id. Off for fleets whose client
        /// ids are not their user names.
        public var bindClientID = true
        /// Bounds on what waits for one client of this role; nil: the `[mqtt]` default.
        public var maxQueuedMessages: Int?
        public var maxQueuedBytes: Int?
        public var maxSendBuffer: Int?

        public init(publish: [String] = [], subscribe: [String] = [], denyPublish: [String] = [],
                    denySubscribe: [String] = [], bindClientID: Bool = true, maxQueuedMessages: Int? = nil,
                    maxQueuedBytes: Int? = nil, maxSendBuffer: Int? = nil) {
            self.publish = publish; self.subscribe = subscribe
            self.denyPublish = denyPublish; self.denySubscribe = denySubscribe
            self.bindClientID = bindClientID
            self.maxQueuedMessages = maxQueuedMessages; self.maxQueuedBytes = maxQueuedBytes
            self.maxSendBuffer = maxSendBuffer
        }
    }

    /// The operator's HTTP endpoint: /metrics, /healthz, /readyz.
    public struct Admin: Sendable, Equatable {
        public var enabled = true
        /// Loopback by default: put it on a management network deliberately.
        public var bind = "127.0.0.1:9883"
        /// A second listener that answers only GET /healthz and /readyz, for a load
        /// balancer on another host (the admin API stays on `bind`). Empty: none.
        public var healthBind = ""
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
    public struct Limits: Sendable, Equatable {
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

    /// Send-rate rules per device (Sources/ARCHITECTURE.md, "Policy").
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
        /// Redis hash of per-device overrides (Policy/DeviceOverrides.swift); empty: off.
        public var overridesHash = ""
        /// Seconds between reads of the overrides hash (an admin change applies at once).
        public var overridesCacheSeconds = 30
    }

    /// The Redis Streams bridge (Sources/ARCHITECTURE.md, "The Redis contract").
    public struct Redis: Sendable, Equatable {
        public var enabled = true
        /// HOST:PORT of the platform's Redis. Empty: pilegate starts a local
        /// redis-server on a free loopback port (`embedded_server`) and uses that.
        /// With `cluster`: the comma-separated seeds of a Redis Cluster.
        public var address = ""
        /// Speak Redis Cluster (Redis/Cluster/): keys go to their slots' masters.
        public var cluster = false
        /// An uplink PUBLISH is acknowledged only once this many replicas have its
        /// XADD (one WAIT per pipelined batch); 0: once the master has it.
        public var waitReplicas = 0
        /// How long one WAIT waits; a WAIT that falls short is sent again.
        public var waitTimeoutMs = 1000
        /// Streams per uplink route, `NAME:{0}`..: a pile's messages go to partition
        /// CRC16(client id) mod this. 0: 1 (`NAME` itself) standalone, 16 with `cluster`.
        public var uplinkPartitions = 0
        public var username = ""
        public var password = ""
        public var database = 0
        public var connectTimeoutMs = 2000
        /// Uplink XADDs waiting for Redis per shard; past it the shard stops reading
        /// from publishing piles until Redis catches up.
        public var maxInflight = 10_000
        /// Shards that write the uplink to Redis; the others hand their XADDs to one of
        /// them each turn, so Redis reads deep pipelines. 0: one per core.
        public var uplinkWriters = 1
        /// A writer's uplink connection writes to Redis at most once per this many
        /// microseconds while busy (a quiet one writes at once). 0: once per loop turn.
        public var writeIntervalUs = 1000
        /// Cap on every stream pilegate writes. Without `consumer_groups`: each XADD
        /// trims with MAXLEN ~ this, which may drop entries no worker has read yet.
        /// With them: a hard cap on each uplink stream; at it, publishing piles are
        /// held (as during a Redis outage) until the workers catch up.
        public var streamMaxlen = 1_000_000
        /// Worker consumer groups that must see every uplink entry: uplink streams are
        /// trimmed (XTRIM MINID) only past what each of these groups has read and
        /// acknowledged, reviewed every `review_interval_ms` instead of per XADD.
        public var consumerGroups: [String] = []
        public var reviewIntervalMs = 1000
        /// With `consumer_groups`: hold publishing piles also while Redis's used memory
        /// is at this fraction of its `maxmemory` (0: off; off when maxmemory is 0).
        public var memoryBudget = 0.8
        /// QoS 0 under backpressure: "block" (stop reading, like QoS 1) or "drop" (count).
        public enum QoS0Overload: String, Sendable, CaseIterable { case block, drop }
        public var qos0Overload = QoS0Overload.block
        public var defaultStream = "pilegate:up"
        public var eventsStream = "pilegate:events"
        public var presenceKey = "pilegate:presence"
        /// Each node reads commands from `downlink_prefix` + node name.
        public var downlinkPrefix = "pilegate:down:"
        public var outcomeStream = "pilegate:down:outcome"
        /// Per device, the QoS 1/2 commands not yet in a final state (a hash, field =
        /// `ENTRYID@STREAM`): kept in Redis so a restarted node, or another node the
        /// pile reconnects to, delivers them.
        public var mailboxPrefix = "pilegate:mail:"
        /// Operator bans (`POST /admin/bans/ID`): client id -> `UNTIL_MS|REASON`.
        public var bansKey = "pilegate:bans"
        /// Uplink resends are stored once within this window (0: off): a QoS 1/2
        /// PUBLISH with DUP=1 matching a recent packet id and payload of the same
        /// client, and, per `[[route]] dedup_json_key`, the same device and key value.
        public var dedupWindowMs = 600_000
        /// Packet ids remembered per client for the DUP check: one slot per id modulo
        /// this (with ids counting up, the client's last this many messages).
        public var dedupRecent = 16
        public var group = "pilegate"
        public var embeddedServer = "redis-server"
        /// Wildcard subscribers here also get what the piles of the other nodes publish,
        /// read from the uplink streams while there are any (Redis/FleetFeed.swift).
        public var fleetFeed = true

        /// Commands every new Redis connection starts with.
        func handshake(clientName: String?) -> [[String]] {
            var h: [[String]] = []
            if !password.isEmpty { h.append(username.isEmpty ? ["AUTH", password] : ["AUTH", username, password]) }
            if database != 0 { h.append(["SELECT", String(database)]) }
            if let clientName { h.append(["CLIENT", "SETNAME", clientName]) }
            return h
        }
    }

    /// Commands from workers to piles (Sources/ARCHITECTURE.md, "Commands end to end").
    public struct Downlink: Sendable {
        /// A QoS 1/2 command sent but not acknowledged is sent again when its pile is
        /// back and subscribed, also after a clean-session reconnect. Off: only a
        /// persistent session gets it again (MQTT's own rule); a clean-session pile
        /// that leaves without acknowledging ends the command `offline`.
        public var redeliver = true
        /// Commands waiting for one pile; past it the oldest ends `expired`.
        public var maxPending = 100
        /// Seconds a command lives when its entry names no `ttl` or `expires` (0: forever).
        public var defaultTTL = 86400
        /// Pending commands idle this long are looked at again (expiry, a pile that
        /// is back): how late an `expired` outcome can be for an absent pile.
        public var reviewIdleMs = 60_000
    }

    /// An uplink routing rule: PUBLISHes whose topic matches `filter` (and, when
    /// given, whose payload is a JSON object with top-level `json_key` equal to
    /// `json_value`) go to `stream`. First match wins; no match: `default_stream`.
    public struct Route: Sendable, Equatable {
        public var filter: String
        public var jsonKey: String?
        public var jsonValue: String?
        public var stream: String
        /// A top-level JSON key whose value identifies a record (a trade serial): the
        /// same device and value within `redis.dedup_window_ms` is stored once.
        public var dedupJSONKey: String?
        public init(filter: String, jsonKey: String? = nil, jsonValue: String? = nil, stream: String,
                    dedupJSONKey: String? = nil) {
            self.filter = filter; self.jsonKey = jsonKey; self.jsonValue = jsonValue; self.stream = stream
            self.dedupJSONKey = dedupJSONKey
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
    public var downlink = Downlink()
    public var limits = Limits()
    public var tls = TLS()
    public var admin = Admin()
    public var rate = Rate()
    public var devices = Devices()

    public init() {}

    /// A config that cannot run: every problem found, each one line.
    public struct Invalid: Error, CustomStringConvertible {
        public let problems: [String]
        public var description: String { problems.joined(separator: "; ") }
        public init(description: String) { problems = [description] }
        public init(problems: [String]) { self.problems = problems }
    }

    var recvBufferCountIsPowerOfTwo: Bool { server.recvBuffers.nonzeroBitCount == 1 }

    /// An embedded redis-server (no `redis.address`) while piles are served on a
    /// network address: fine for a trial, nothing is kept on disk.
    var embeddedRedisServesNetwork: Bool {
        redis.enabled && redis.address.isEmpty && SocketAddress(listener.bind).map { !$0.isLoopback } ?? false
    }

    static func hostname() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, 255)
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

