import MQTTCodec
import PileLoop
import TOMLKit

/// Reading `pilegate.toml`: every key, its type and range, and the checks that
/// span keys. An unknown key is an error, so a typo never silently keeps a default.
/// A problem does not stop the read: `check(toml:)` returns them all.
extension Config {
    /// Parse a TOML document over the defaults; every problem in the one error.
    public init(toml text: String) throws {
        let (config, problems) = Config.check(toml: text)
        guard problems.isEmpty else { throw Invalid(problems: problems) }
        self = config
    }

    /// The config a document gives, and every problem found in it (empty: valid).
    public static func check(toml text: String) -> (Config, [String]) {
        let report = ConfigReport()
        var config = Config()
        config.read(toml: text, report)
        return (config, report.problems)
    }

    /// Every key a config file may hold (`route[].stream`, `acl.roles.*.publish`).
    public static var knownKeys: Set<String> {
        let report = ConfigReport()
        var config = Config()
        config.read(toml: ["listener", "server", "mqtt", "log", "redis", "auth", "acl.roles.r", "acl.users", "admin",
                           "devices", "tls", "limits", "rate", "[rate.topic]", "[route]", "downlink"]
            .map { "[\($0)]" }.joined(separator: "\n"), report)
        return report.known
    }

    private mutating func read(toml text: String, _ report: ConfigReport) {
        if let problem = TOMLPrecheck.problem(in: text) { return report.problems.append(problem) }
        let root: TOMLTable
        do { root = try TOMLTable(string: text) } catch let e as TOMLParseError {
            return report.problems.append("config: \(e.description) at line \(e.source.begin.line)")
        } catch {
            return report.problems.append("config: \(error)")
        }
        var r = TableReader(root, path: "", pattern: "", report: report)
        var rolesGiven = false
        r.table("listener") { t in
            t.address("bind", &listener.bind)
            t.int("backlog", &listener.backlog, 1...65535)
            t.int("defer_accept", &listener.deferAccept, 0...600)
            t.bool("proxy_protocol", &listener.proxyProtocol)
        }
        r.table("server") { t in
            t.string("node", &server.node)
            t.int("shards", &server.shards, 0...256)
            t.int("max_connections", &server.maxConnections, 1...10_000_000)
            t.int("ring_entries", &server.ringEntries, 64...32768)
            t.int("recv_buffers", &server.recvBuffers, 16...32768)
            t.int("recv_buffer_size", &server.recvBufferSize, 256...1 << 20)
            t.int("sys_interval", &server.sysInterval, 0...86400)
            t.int("memory_trim_interval", &server.memoryTrimInterval, 0...86400)
        }
        r.table("mqtt") { t in
            t.int("max_packet_size", &mqtt.maxPacketSize, 64...268_435_460)
            t.int("connect_timeout", &mqtt.connectTimeout, 1...3600)
            t.int("max_inflight", &mqtt.maxInflight, 1...65535)
            t.int("max_queued_messages", &mqtt.maxQueuedMessages, 0...10_000_000)
            t.int("max_queued_bytes", &mqtt.maxQueuedBytes, 0...1 << 32 - 1)
            t.int("queue_memory_budget", &mqtt.queueMemoryBudget, 0...1 << 40)
            t.int("max_subscriptions_per_client", &mqtt.maxSubscriptionsPerClient, 1...100_000)
            t.int("max_send_buffer", &mqtt.maxSendBuffer, 4096...1 << 30)
            t.int("send_stall_timeout", &mqtt.sendStallTimeout, 0...86400)
            t.int("max_client_id_length", &mqtt.maxClientIDLength, 23...65535)
            t.bool("allow_zero_length_client_id", &mqtt.allowZeroLengthClientID)
            t.bool("retain_available", &mqtt.retainAvailable)
            t.int("max_retained_messages", &mqtt.maxRetainedMessages, 0...100_000_000)
            t.int("max_retained_bytes", &mqtt.maxRetainedBytes, 0...1 << 40)
            t.string("command_topic", &mqtt.commandTopic)
            t.check(mqtt.commandTopic.contains("%c") && Topic.isValidName(mqtt.commandTopic(for: "X").utf8),
                    "mqtt.command_topic must be a topic name containing %c")
        }
        r.table("log") { t in
            t.string("level", &log.level)
            t.check(["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(log.level),
                    "log.level \"\(log.level)\" is not a log level")
        }
        r.table("redis") { t in
            t.bool("enabled", &redis.enabled)
            t.bool("cluster", &redis.cluster)
            if redis.cluster {
                t.string("address", &redis.address)
                t.check(!redis.seeds.isEmpty, "redis.address must list the cluster's seeds (HOST:PORT, comma-separated) with cluster = true")
                for s in redis.seeds where SocketAddress(s) == nil { t.check(false, "redis.address: seed \"\(s)\" is not HOST:PORT") }
            } else {
                t.address("address", &redis.address, emptyAllowed: true)
            }
            t.int("wait_replicas", &redis.waitReplicas, 0...16)
            t.int("wait_timeout_ms", &redis.waitTimeoutMs, 10...60_000)
            t.int("uplink_partitions", &redis.uplinkPartitions, 0...1024)
            t.string("username", &redis.username)
            t.string("password", &redis.password)
            t.int("database", &redis.database, 0...15)
            t.int("connect_timeout_ms", &redis.connectTimeoutMs, 10...600_000)
            t.int("max_inflight", &redis.maxInflight, 1...1_000_000)
            t.int("uplink_writers", &redis.uplinkWriters, 0...1024)
            t.int("write_interval_us", &redis.writeIntervalUs, 0...100_000)
            t.int("stream_maxlen", &redis.streamMaxlen, 1...1_000_000_000)
            t.strings("consumer_groups", &redis.consumerGroups)
            t.int("review_interval_ms", &redis.reviewIntervalMs, 100...60_000)
            t.double("memory_budget", &redis.memoryBudget)
            t.check(redis.memoryBudget <= 1, "redis.memory_budget must be a fraction, 0 to 1")
            t.check(Set(redis.consumerGroups).count == redis.consumerGroups.count && !redis.consumerGroups.contains(""),
                    "redis.consumer_groups must name distinct groups")
            t.enumeration("qos0_overload", &redis.qos0Overload)
            t.string("default_stream", &redis.defaultStream)
            t.string("events_stream", &redis.eventsStream)
            t.string("presence_key", &redis.presenceKey)
            t.string("downlink_prefix", &redis.downlinkPrefix)
            t.string("outcome_stream", &redis.outcomeStream)
            t.string("mailbox_prefix", &redis.mailboxPrefix)
            t.string("bans_key", &redis.bansKey)
            t.int("dedup_window_ms", &redis.dedupWindowMs, 0...30 * 86_400_000)
            t.int("dedup_recent", &redis.dedupRecent, 1...1000)
            t.string("group", &redis.group)
            t.string("embedded_server", &redis.embeddedServer)
            t.bool("fleet_feed", &redis.fleetFeed)
        }
        r.table("auth") { t in
            var anonymous = ""
            t.string("allow_anonymous", &anonymous)
            t.string("password_file", &auth.passwordFile)
            t.string("redis_hash", &auth.redisHash)
            // Unsaid, anonymous access follows the credentials: none configured, the
            // loopback-only trial default; a password file or Redis hash, off (behind a
            // balancer on the same host every pile would otherwise come from loopback).
            if !anonymous.isEmpty {
                auth.allowAnonymous = anonymous
            } else if !auth.passwordFile.isEmpty || !auth.redisHash.isEmpty {
                auth.allowAnonymous = "false"
            }
            t.int("cache_size", &auth.cacheSize, 2...100_000_000)
            t.int("cache_seconds", &auth.cacheSeconds, 0...30 * 86400)
            t.check(["true", "false", "loopback"].contains(auth.allowAnonymous),
                    "auth.allow_anonymous must be \"true\", \"false\" or \"loopback\"")
        }
        r.table("acl") { t in
            t.bool("enabled", &acl.enabled)
            t.string("default_role", &acl.defaultRole)
            t.string("anonymous_role", &acl.anonymousRole)
            var roles: [String: Role] = [:]
            t.each("roles") { name, t in
                var r = Role()
                t.strings("publish", &r.publish)
                t.strings("subscribe", &r.subscribe)
                t.strings("deny_publish", &r.denyPublish)
                t.strings("deny_subscribe", &r.denySubscribe)
                t.bool("bind_client_id", &r.bindClientID)
                t.optionalInt("max_queued_messages", &r.maxQueuedMessages, 0...10_000_000)
                t.optionalInt("max_queued_bytes", &r.maxQueuedBytes, 0...1 << 32 - 1)
                t.optionalInt("max_send_buffer", &r.maxSendBuffer, 4096...1 << 30)
                for f in r.publish + r.subscribe + r.denyPublish + r.denySubscribe {
                    t.check(Topic.isValidFilter(Array(f.utf8)), "acl.roles.\(name): \"\(f)\" is not a topic filter")
                }
                roles[name] = r
            }
            if !roles.isEmpty {
                acl.roles = roles
                rolesGiven = true
            }
            t.eachString("users") { user, role in acl.users[user] = role }
            for role in Set([acl.defaultRole, acl.anonymousRole] + acl.users.values).sorted() {
                t.check(acl.roles[role] != nil, "acl role \"\(role)\" is not defined under [acl.roles]")
            }
        }
        r.table("admin") { t in
            t.bool("enabled", &admin.enabled)
            t.address("bind", &admin.bind)
            t.address("health_bind", &admin.healthBind, emptyAllowed: true)
            t.string("token", &admin.token)
            t.int("drain_rate", &admin.drainRate, 1...1_000_000)
        }
        r.table("devices") { t in
            t.string("traffic_prefix", &devices.trafficPrefix)
            t.int("traffic_flush_seconds", &devices.trafficFlushSeconds, 1...86400)
            t.int("traffic_retention_days", &devices.trafficRetentionDays, 1...3660)
            t.int("silent_seconds", &devices.silentSeconds, 0...30 * 86400)
        }
        r.table("tls") { t in
            t.bool("enabled", &tls.enabled)
            t.address("bind", &tls.bind)
            t.bool("proxy_protocol", &tls.proxyProtocol)
            t.string("certificate", &tls.certificate)
            t.string("private_key", &tls.privateKey)
            t.string("ca", &tls.ca)
            t.bool("require_client_certificate", &tls.requireClientCertificate)
            t.int("handshake_timeout", &tls.handshakeTimeout, 1...600)
            t.int("session_cache_size", &tls.sessionCacheSize, 0...10_000_000)
            if tls.enabled {
                t.check(!tls.certificate.isEmpty && !tls.privateKey.isEmpty,
                        "tls.enabled needs tls.certificate and tls.private_key")
                t.check(!tls.requireClientCertificate || !tls.ca.isEmpty,
                        "tls.require_client_certificate needs tls.ca")
            }
        }
        r.table("limits") { t in
            t.double("connect_rate", &limits.connectRate)
            t.int("connect_burst", &limits.connectBurst, 1...10_000_000)
            t.double("connect_rate_per_ip", &limits.connectRatePerIP)
            t.int("connect_burst_per_ip", &limits.connectBurstPerIP, 1...10_000_000)
            t.enumeration("over_rate", &limits.overRate)
            t.int("max_connections_per_ip", &limits.maxConnectionsPerIP, 0...10_000_000)
            t.int("flap_connects", &limits.flapConnects, 0...1_000_000)
            t.int("flap_window", &limits.flapWindow, 1...86400)
            t.int("flap_ban", &limits.flapBan, 1...30 * 86400)
            t.int("auth_failures_per_ip", &limits.authFailuresPerIP, 0...1_000_000)
            t.int("auth_failure_window", &limits.authFailureWindow, 1...86400)
            t.int("auth_failure_ban", &limits.authFailureBan, 1...30 * 86400)
            t.int("max_inflight_in", &limits.maxInflightIn, 1...65535)
        }
        r.table("rate") { t in
            t.rateRule(&rate.device)
            t.int("daily_quota_bytes", &rate.dailyQuotaBytes, 0...Int.max)
            t.enumeration("quota_action", &rate.quotaAction)
            t.int("quota_ban_seconds", &rate.quotaBanSeconds, 1...30 * 86400)
            t.int("packet_overhead_bytes", &rate.packetOverheadBytes, 0...1500)
            t.int("tls_overhead_bytes", &rate.tlsOverheadBytes, 0...1500)
            t.int("day_offset_minutes", &rate.dayOffsetMinutes, -1440...1440)
            t.string("overrides_hash", &rate.overridesHash)
            t.int("overrides_cache_seconds", &rate.overridesCacheSeconds, 1...86400)
            t.tables("topic") { rt in
                var rule = RateRules.Rule(name: "", filter: "", messages: nil, bytes: nil, action: .throttle, banSeconds: 300)
                rt.string("name", &rule.name)
                rt.string("filter", &rule.filter!)
                rt.rateRule(&rule)
                rt.check(!rule.name.isEmpty && Topic.isValidFilter(Array(rule.filter!.utf8)),
                         "every [[rate.topic]] needs a name and a valid filter")
                rate.topics.append(rule)
            }
        }
        r.tables("route") { t in
            var filter = "", stream = "", key = "", value = "", dedupKey = ""
            t.string("filter", &filter)
            t.string("dedup_json_key", &dedupKey)
            t.string("stream", &stream)
            t.string("json_key", &key)
            t.string("json_value", &value)
            t.check(Topic.isValidFilter(Array(filter.utf8)) && !stream.isEmpty, "every [[route]] needs a valid filter and a stream")
            t.check(key.isEmpty == value.isEmpty, "[[route]] json_key and json_value go together")
            routes.append(Route(filter: filter, jsonKey: key.isEmpty ? nil : key,
                                jsonValue: value.isEmpty ? nil : value, stream: stream,
                                dedupJSONKey: dedupKey.isEmpty ? nil : dedupKey))
        }
        r.table("downlink") { t in
            t.bool("redeliver", &downlink.redeliver)
            t.int("max_pending", &downlink.maxPending, 1...100_000)
            t.int("default_ttl", &downlink.defaultTTL, 0...365 * 86400)
            t.int("review_idle_ms", &downlink.reviewIdleMs, 1000...86_400_000)
        }
        r.finish()
        if !rolesGiven {   // the built-in pile role follows mqtt.command_topic
            acl.roles["pile"]?.subscribe = [mqtt.commandTopic]
        }
        redis.clusterDefaults()
        for problem in redis.clusterProblems(routes: routes) { r.check(false, problem) }
        r.check(rate.overridesHash.isEmpty || redis.enabled, "rate.overrides_hash needs the Redis bridge ([redis] enabled = true)")
        r.check(auth.redisHash.isEmpty || redis.enabled, "auth.redis_hash needs the Redis bridge ([redis] enabled = true)")
        r.check(recvBufferCountIsPowerOfTwo, "server.recv_buffers must be a power of two")
    }
}
