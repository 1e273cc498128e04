import Glibc
import Logging
import PileLoop

public let pilegateVersion = "0.1.0"

/// Starts the shards and runs until SIGINT/SIGTERM, then stops them cleanly;
/// SIGHUP reloads the config (Ops/Reload.swift), SIGUSR1 drains.
public final class Server {
    public let config: Config
    let logger: Logger
    /// The file `config` came from and the `--listen` override, for a reload.
    let configPath: String?
    let listenOverride: String?

    public init(config: Config, logger: Logger, configPath: String? = nil, listenOverride: String? = nil) {
        self.config = config
        self.logger = logger
        self.configPath = configPath
        self.listenOverride = listenOverride
    }

    /// Shards = max(cores, ceil(max_connections / table size)): every ring's
    /// fixed-file table is capped by RLIMIT_NOFILE, so 200k connections need
    /// more rings than cores (Sources/ARCHITECTURE.md, "Threads and rings").
    public static func layout(config: Config, cores: Int, fileLimit: Int) -> (shards: Int, tableSize: Int) {
        let table = max(64, min(fileLimit - 256, 32768))
        if config.server.shards > 0 { return (config.server.shards, table) }
        let needed = (config.server.maxConnections + table - 1) / table
        return (max(cores, needed), table)
    }

    /// Uplink writers: `redis.uplink_writers`, or one per core (0), at most one per shard.
    static func uplinkWriters(config: Config, shards: Int, cores: Int) -> Int {
        min(shards, config.redis.uplinkWriters > 0 ? config.redis.uplinkWriters : cores)
    }

    /// Blocks until a stop signal; returns after every shard has closed its clients.
    public func run() throws {
        guard let address = SocketAddress(config.listener.bind) else {
            throw Config.Invalid(description: "listener.bind \"\(config.listener.bind)\" is not HOST:PORT")
        }
        var embedded: EmbeddedRedis?
        var redisAddress: SocketAddress?
        if config.redis.enabled {
            if config.redis.address.isEmpty {
                embedded = try EmbeddedRedis(binary: config.redis.embeddedServer, logger: logger)
                redisAddress = embedded?.address
            } else if config.redis.cluster {
                redisAddress = SocketAddress(config.redis.seeds[0])
                let unreachable = try ClusterProbe.check(config.redis)
                if !unreachable.isEmpty {
                    logger.error("redis cluster: no seed answers (\(unreachable.joined(separator: "; "))); retrying in the background, publishes are held until it does")
                }
            } else {
                redisAddress = SocketAddress(config.redis.address)
            }
        }
        defer { embedded?.stop() }
        if config.embeddedRedisServesNetwork {
            logger.warning("redis: the embedded redis-server keeps nothing on disk and is for trying pilegate out, yet piles are served on \(config.listener.bind); for production set [redis] address to the platform's Redis")
        }

        // Signals go to sigwait below, not to whichever thread the kernel picks.
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGINT, SIGTERM, SIGPIPE, SIGUSR1, SIGHUP] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let listenFD = try makeListener(address, backlog: Int32(config.listener.backlog),
                                        deferAccept: Int32(config.listener.deferAccept))
        defer { Glibc.close(listenFD) }
        var tlsListenFD: Int32?
        var tls: TLSContext?
        if config.tls.enabled {
            tls = try TLSContext(config.tls)
            tlsListenFD = try makeListener(SocketAddress(config.tls.bind)!, backlog: Int32(config.listener.backlog),
                                           deferAccept: Int32(config.listener.deferAccept))
        }
        defer { if let tlsListenFD { Glibc.close(tlsListenFD) } }
        MemoryTrim.keepLargeBlocksOutOfTheHeap()
        let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let (shards, tableSize) = Server.layout(config: config, cores: cores, fileLimit: fileLimit())
        let inboxes = (0..<shards).map { _ in Inbox<ShardMessage>() }
        let rates = RateRules(config.rate)
        let streams = Router(routes: config.routes, defaultStream: config.redis.defaultStream,
                             partitions: config.redis.partitions).streams
        let counters = (0...shards).map { _ in Counters(streams: streams.count, rules: rates.rules.count) }
        let acl = ACL(config.acl, mqtt: config.mqtt)
        let bans = OperatorBans()
        let overrides = DeviceOverrides()
        let policy = PolicySet(config: config, authenticator: try Authenticator(config: config.auth), acl: acl,
                               rates: rates, tls: tls)
        let broker = Broker(acl: acl, queueBudget: config.mqtt.queueMemoryBudget, keepUsage: rates.quota > 0,
                            ownTopic: OwnTopic(pattern: config.mqtt.commandTopic), inboxes: inboxes,
                            counters: counters[shards])
        broker.reserve(clients: config.server.maxConnections)
        let watch = StreamWatch(streams: streams, groups: config.redis.enabled ? config.redis.consumerGroups : [],
                                cap: config.redis.streamMaxlen)
        let context = ShardContext(policy: policy, broker: broker, inboxes: inboxes, counters: counters,
                                   listenFD: listenFD, tlsListenFD: tlsListenFD, redisAddress: redisAddress,
                                   connectGuard: ConnectGuard(config.limits, connectTimeoutSeconds: config.mqtt.connectTimeout),
                                   operatorBans: bans, overrides: overrides,
                                   streams: watch,
                                   fileTableSize: tableSize,
                                   live: LiveCount(),
                                   occupancy: (0..<shards).map { _ in LiveCount() },
                                   primaryShards: min(shards, cores),
                                   uplinkWriters: Server.uplinkWriters(config: config, shards: shards, cores: cores),
                                   relayers: LiveCount(), startedAt: monotonicMillis())
        let ready = Inbox<Int>()   // each shard reports its setup result here (0 = ok)
        var threads: [PileLoop.Thread] = []
        for i in 0..<shards {
            let log = logger
            threads.append(PileLoop.Thread(name: "shard-\(i)") {
                Server.shardMain(index: i, context: context, logger: log, ready: ready)
            })
        }
        var results: [Int] = []
        while results.count < shards { results += ready.wait(timeoutMillis: -1) }
        if results.contains(where: { $0 != 0 }) {
            inboxes.forEach { $0.post(.shutdown) }
            threads.forEach { $0.join() }
            throw RingError("shard setup (see log)", Int32(results.first { $0 != 0 }!))
        }
        logger.info("listening on \(hostPort(address, listenFD))",
                    metadata: ["shards": "\(shards)", "fixed_files_per_shard": "\(tableSize)",
                               "node": "\(config.server.node)", "version": "\(pilegateVersion)"])

        let reloader = Reloader(policy: policy, path: configPath, listen: listenOverride, broker: broker, inboxes: inboxes,
                                counters: counters[shards], logger: logger)
        let control = AdminControl(broker: broker, inboxes: inboxes, listeners: [listenFD] + (tlsListenFD.map { [$0] } ?? []),
                                   drainRate: config.admin.drainRate, reloader: reloader, bans: bans, overrides: overrides)
        var endpoints: [(AdminHTTP, PileLoop.Thread)] = []
        defer {
            for (http, thread) in endpoints { http.stop(); thread.join(); Glibc.close(http.fd) }
        }
        if config.admin.enabled {
            let metrics = Metrics(counters: counters, broker: broker, rules: rates.rules.map(\.name),
                                  maxConnections: config.server.maxConnections, watch: watch)
            let console = ConsoleFeed(counters: counters, broker: broker, watch: watch, control: control,
                                      node: config.server.node, startedAt: context.startedAt,
                                      maxConnections: config.server.maxConnections)
            for (bind, healthOnly) in [(config.admin.bind, false), (config.admin.healthBind, true)] where !bind.isEmpty {
                let http = try AdminHTTP(address: SocketAddress(bind)!, metrics: metrics, counters: counters,
                                         redisEnabled: config.redis.enabled, watch: watch, control: control, console: console,
                                         token: config.admin.token, healthOnly: healthOnly, logger: logger)
                endpoints.append((http, PileLoop.Thread(name: healthOnly ? "health-http" : "admin-http") { http.run() }))
                let serves = healthOnly ? "health HTTP on %@ (/healthz /readyz only)" : "admin HTTP on %@ (/metrics /healthz /readyz /admin)"
                logger.info("\(serves.replacing("%@", with: hostPort(SocketAddress(bind)!, http.fd)))")
            }
        }
        if let tlsListenFD {
            logger.info("TLS listener on \(hostPort(SocketAddress(config.tls.bind)!, tlsListenFD))",
                        metadata: ["mutual_tls": "\(config.tls.requireClientCertificate)"])
        }

        var sig: Int32 = 0
        while true {
            sigwait(&signals, &sig)
            if sig == SIGUSR1 {
                logger.notice("SIGUSR1: draining")
                control.drain()
            } else if sig == SIGHUP {
                _ = reloader.reload(by: "SIGHUP")
            } else if sig != SIGPIPE {
                break
            }
        }
        logger.info("stopping on signal \(sig): closing clients")
        // Stop accepting now: shutdown(2) takes the socket out of LISTEN, so new piles
        // are refused at once (and go to another node) instead of completing into a
        // backlog nobody will accept, and the port is free for a restart whatever
        // the rings' pending accepts still reference.
        Glibc.shutdown(listenFD, Int32(SHUT_RDWR))
        if let tlsListenFD { Glibc.shutdown(tlsListenFD, Int32(SHUT_RDWR)) }
        inboxes.forEach { $0.post(.shutdown) }
        threads.forEach { $0.join() }
        logger.info("stopped", metadata: [
            "accepted": "\(Counters.total(.connectionsAccepted, counters))",
            "publishes_in": "\(Counters.totalPackets(.in, .publish, counters).packets)",
            "malformed": "\(Counters.total(.malformedPackets, counters))",
        ])
    }

    /// The configured host (bracketed for IPv6) with the port actually bound (port 0 picks one).
    private func hostPort(_ a: SocketAddress, _ fd: Int32) -> String {
        let host = a.description.split(separator: ":").dropLast().joined(separator: ":")
        return "\(host):\(boundPort(fd))"
    }

    private static func shardMain(index: Int, context: ShardContext, logger: Logger, ready: Inbox<Int>) {
        let shard: Shard
        do {
            shard = try Shard(index: index, context: context, logger: logger)
        } catch {
            logger.critical("shard \(index) setup failed: \(error)")
            ready.post(Int((error as? RingError)?.errno ?? EINVAL))
            return
        }
        ready.post(0)
        shard.run()
    }
}
