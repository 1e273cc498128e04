import MQTTCodec
import PileLoop
import TOMLKit

/// Reading `pilegate.toml`: every key, its type and range, and the checks that
/// span keys. An unknown key is an error, so a typo never silently keeps a default.
extension Config {
    /// Parse a TOML document over the defaults.
    public init(toml text: String) throws {
        self.init()
        let root: TOMLTable
        do { root = try TOMLTable(string: text) } catch let e as TOMLParseError {
            throw Invalid(description: "config: \(e.description) at line \(e.source.begin.line)")
        }
        var r = TableReader(root, path: "")
        var rolesGiven = false
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
            try t.int("max_queued_bytes", &mqtt.maxQueuedBytes, 0...1 << 32 - 1)
            try t.int("queue_memory_budget", &mqtt.queueMemoryBudget, 0...1 << 40)
            try t.int("max_subscriptions_per_client", &mqtt.maxSubscriptionsPerClient, 1...100_000)
            try t.int("max_send_buffer", &mqtt.maxSendBuffer, 4096...1 << 30)
            try t.int("max_client_id_length", &mqtt.maxClientIDLength, 23...65535)
            try t.bool("allow_zero_length_client_id", &mqtt.allowZeroLengthClientID)
            try t.bool("retain_available", &mqtt.retainAvailable)
            try t.string("command_topic", &mqtt.commandTopic)
            guard mqtt.commandTopic.contains("%c"), Topic.isValidName(mqtt.commandTopic(for: "X").utf8) else {
                throw Invalid(description: "config: mqtt.command_topic must be a topic name containing %c")
            }
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
            try t.strings("consumer_groups", &redis.consumerGroups)
            try t.int("review_interval_ms", &redis.reviewIntervalMs, 100...60_000)
            try t.double("memory_budget", &redis.memoryBudget)
            guard redis.memoryBudget <= 1 else { throw Invalid(description: "config: redis.memory_budget must be a fraction, 0 to 1") }
            guard Set(redis.consumerGroups).count == redis.consumerGroups.count, !redis.consumerGroups.contains("") else {
                throw Invalid(description: "config: redis.consumer_groups must name distinct groups")
            }
            try t.enumeration("qos0_overload", &redis.qos0Overload)
            try t.string("default_stream", &redis.defaultStream)
            try t.string("events_stream", &redis.eventsStream)
            try t.string("presence_key", &redis.presenceKey)
            try t.string("downlink_prefix", &redis.downlinkPrefix)
            try t.string("outcome_stream", &redis.outcomeStream)
            try t.string("mailbox_prefix", &redis.mailboxPrefix)
            try t.string("bans_key", &redis.bansKey)
            try t.int("dedup_window_ms", &redis.dedupWindowMs, 0...30 * 86_400_000)
            try t.int("dedup_recent", &redis.dedupRecent, 1...1000)
            try t.string("group", &redis.group)
            try t.string("embedded_server", &redis.embeddedServer)
            if !redis.address.isEmpty && SocketAddress(redis.address) == nil {
                throw Invalid(description: "config: redis.address \"\(redis.address)\" is not HOST:PORT")
            }
        }
        try r.table("auth") { t in
            var anonymous = ""
            try t.string("allow_anonymous", &anonymous)
            try t.string("password_file", &auth.passwordFile)
            try t.string("redis_hash", &auth.redisHash)
            // Unsaid, anonymous access follows the credentials: none configured, the
            // loopback-only trial default; a password file or Redis hash, off (behind a
            // balancer on the same host every pile would otherwise come from loopback).
            if !anonymous.isEmpty {
                auth.allowAnonymous = anonymous
            } else if !auth.passwordFile.isEmpty || !auth.redisHash.isEmpty {
                auth.allowAnonymous = "false"
            }
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
            var roles: [String: Role] = [:]
            try t.each("roles") { name, t in
                var r = Role()
                try t.strings("publish", &r.publish)
                try t.strings("subscribe", &r.subscribe)
                try t.strings("deny_publish", &r.denyPublish)
                try t.strings("deny_subscribe", &r.denySubscribe)
                try t.bool("bind_client_id", &r.bindClientID)
                try t.optionalInt("max_queued_messages", &r.maxQueuedMessages, 0...10_000_000)
                try t.optionalInt("max_queued_bytes", &r.maxQueuedBytes, 0...1 << 32 - 1)
                try t.optionalInt("max_send_buffer", &r.maxSendBuffer, 4096...1 << 30)
                for f in r.publish + r.subscribe + r.denyPublish + r.denySubscribe where !Topic.isValidFilter(Array(f.utf8)) {
                    throw Invalid(description: "config: acl.roles.\(name): \"\(f)\" is not a topic filter")
                }
                roles[name] = r
            }
            if !roles.isEmpty {
                acl.roles = roles
                rolesGiven = true
            }
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
            try t.string("overrides_hash", &rate.overridesHash)
            try t.int("overrides_cache_seconds", &rate.overridesCacheSeconds, 1...86400)
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
            var filter = "", stream = "", key = "", value = "", dedupKey = ""
            try t.string("filter", &filter)
            try t.string("dedup_json_key", &dedupKey)
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
                                jsonValue: value.isEmpty ? nil : value, stream: stream,
                                dedupJSONKey: dedupKey.isEmpty ? nil : dedupKey))
        }
        try r.table("downlink") { t in
            try t.bool("redeliver", &downlink.redeliver)
            try t.int("max_pending", &downlink.maxPending, 1...100_000)
            try t.int("default_ttl", &downlink.defaultTTL, 0...365 * 86400)
            try t.int("review_idle_ms", &downlink.reviewIdleMs, 1000...86_400_000)
        }
        try r.finish()
        if !rolesGiven {   // the built-in pile role follows mqtt.command_topic
            acl.roles["pile"]?.subscribe = [mqtt.commandTopic]
        }
        if !rate.overridesHash.isEmpty && !redis.enabled {
            throw Invalid(description: "config: rate.overrides_hash needs the Redis bridge ([redis] enabled = true)")
        }
        if !auth.redisHash.isEmpty && !redis.enabled {
            throw Invalid(description: "config: auth.redis_hash needs the Redis bridge ([redis] enabled = true)")
        }
        guard recvBufferCountIsPowerOfTwo else {
            throw Invalid(description: "config: server.recv_buffers must be a power of two")
        }
    }
}
