import Glibc
import MQTTCodec
import Prometheus

extension PacketType {
    /// Packet types that can travel in direction `d` (3.1.1 table 2.1).
    func flows(_ d: Counters.Direction) -> Bool {
        switch self {
        case .connect, .subscribe, .unsubscribe, .pingreq, .disconnect: d == .in
        case .connack, .suback, .unsuback, .pingresp: d == .out
        case .publish, .puback, .pubrec, .pubrel, .pubcomp: true
        }
    }
}

/// Prometheus exposition of the gateway's counters (Sources/ARCHITECTURE.md, "Observability").
///
/// The hot path keeps bumping its own per-shard atomics (`Counters`); a scrape sums
/// them and carries the sums into a swift-prometheus registry, which writes the text
/// format. So scraping costs nothing per packet, and names, types and help text follow
/// Prometheus conventions in one table below. No label ever names a device.
final class Metrics: @unchecked Sendable {   // used by the admin thread only
    private let registry = PrometheusCollectorRegistry()
    private let sets: [Counters]
    private var counters: [(Counter, Mirror)] = []
    private var gauges: [(Counter, Gauge)] = []
    private var closes: [(CloseReason, Mirror)] = []
    private var packets: [(Counters.Direction, PacketType, count: Mirror, bytes: Mirror)] = []
    /// `pilegate_publishes_total{direction}`: the PUBLISH rows of the packet counts,
    /// under the name dashboards know.
    private var publishes: [(Counters.Direction, Mirror)] = []
    private var routed: [Mirror] = []
    private var ruleActions: [Mirror] = []
    private let rss: Gauge
    private let fds: Gauge
    private let clients: Gauge
    private let retained: (messages: Gauge, bytes: Gauge)
    private let queued: Gauge
    private let broker: Broker
    private let watch: StreamWatch
    /// Per uplink stream, and per (stream, group) in `StreamWatch` order.
    private var streamGauges: [Gauge] = []
    private var groupGauges: [(lag: Gauge, pending: Gauge, age: Gauge, missing: Gauge)] = []
    private var held: Gauge?

    /// `rules` and `watch.streams` name the configured label values (RateRules.rules,
    /// Router.streams), in the order `Counters` keeps them.
    init(counters sets: [Counters], broker: Broker, rules: [String], maxConnections: Int, watch: StreamWatch) {
        self.sets = sets
        self.broker = broker
        self.watch = watch
        for c in Counter.allCases {
            let m = c.metric
            if m.gauge {
                gauges.append((c, registry.makeGauge(descriptor: Metrics.metric(m.name, m.help))))
            } else {
                counters.append((c, Mirror(registry.makeCounter(descriptor: Metrics.metric(m.name, m.help), labels: m.labels ?? []))))
            }
        }
        let closed = Metrics.metric("pilegate_connections_closed_by_reason_total", "Connections closed, by reason")
        for r in CloseReason.allCases {
            closes.append((r, Mirror(registry.makeCounter(descriptor: closed, labels: [("reason", r.eventReason)]))))
        }
        let packet = Metrics.metric("pilegate_packets_total", "MQTT packets, by direction and type")
        let packetBytes = Metrics.metric("pilegate_packet_bytes_total", "MQTT bytes (before TLS), by direction and packet type")
        for d in [Counters.Direction.in, .out] {
            for t in PacketType.allCases where t.flows(d) {
                let labels = [("direction", d == .in ? "in" : "out"), ("type", "\(t)")]
                packets.append((d, t, Mirror(registry.makeCounter(descriptor: packet, labels: labels)),
                                Mirror(registry.makeCounter(descriptor: packetBytes, labels: labels))))
            }
        }
        let registry = registry
        let publish = Metrics.metric("pilegate_publishes_total", "PUBLISH packets")
        publishes = [(.in, "in"), (.out, "out")].map { d, label in
            (d, Mirror(registry.makeCounter(descriptor: publish, labels: [("direction", label)])))
        }
        let route = Metrics.metric("pilegate_uplink_routed_total", "Uplink PUBLISHes, by the Redis stream they were routed to")
        routed = watch.streams.map { Mirror(registry.makeCounter(descriptor: route, labels: [("stream", $0)])) }
        let rule = Metrics.metric("pilegate_rate_rule_actions_total", "Send-rate actions (throttle, drop, disconnect, ban), by rule")
        ruleActions = (rules + ["daily_quota"]).map { Mirror(registry.makeCounter(descriptor: rule, labels: [("rule", $0)])) }
        rss = registry.makeGauge(descriptor: Metrics.metric("pilegate_process_resident_memory_bytes", "Resident set size of the process"))
        fds = registry.makeGauge(descriptor: Metrics.metric("pilegate_process_open_fds",
                                                    "File descriptors open in the process table (fixed-file slots are not counted)"))
        clients = registry.makeGauge(descriptor: Metrics.metric("pilegate_sessions", "Client sessions known to the broker (connected and parked)"))
        retained = (registry.makeGauge(descriptor: Metrics.metric("pilegate_retained_messages",
                                                                  "Retained messages of clients (against mqtt.max_retained_messages; $SYS not counted)")),
                    registry.makeGauge(descriptor: Metrics.metric("pilegate_retained_bytes",
                                                                  "Topic and payload bytes of the retained messages (against mqtt.max_retained_bytes)")))
        queued = registry.makeGauge(descriptor: Metrics.metric("pilegate_queued_bytes",
                                                       "Bytes queued for clients in all sessions (against mqtt.queue_memory_budget)"))
        registry.makeGauge(descriptor: Metrics.metric("pilegate_shards", "Event-loop shards (rings) in this process"))
            .set(Double(Counters.shards(in: sets)))
        registry.makeGauge(descriptor: Metrics.metric("pilegate_connections_limit", "server.max_connections"))
            .set(Double(maxConnections))
        if watch.active { makeStreamGauges() }
    }

    /// Worker lag, as the stream review last saw it: one series per uplink stream and
    /// per (stream, named group); both sets come from the config, so they stay small.
    private func makeStreamGauges() {
        let length = Metrics.metric("pilegate_stream_length", "Entries in an uplink stream at the last review")
        let cap = Metrics.metric("pilegate_stream_cap", "redis.stream_maxlen: the hard cap of each uplink stream")
        let lag = Metrics.metric("pilegate_stream_group_lag", "Entries not yet delivered to a worker group")
        let pending = Metrics.metric("pilegate_stream_group_pending", "Entries delivered to a worker group and not yet acknowledged")
        let age = Metrics.metric("pilegate_stream_group_oldest_unread_age_seconds",
                                 "Age of the oldest entry a worker group has not acknowledged")
        let missing = Metrics.metric("pilegate_stream_group_missing", "1 while a named consumer group does not exist on the stream")
        for s in watch.streams {
            streamGauges.append(registry.makeGauge(descriptor: length, labels: [("stream", s)]))
            registry.makeGauge(descriptor: cap, labels: [("stream", s)]).set(Double(watch.cap))
            for g in watch.groups {
                let l = [("stream", s), ("group", g)]
                groupGauges.append((registry.makeGauge(descriptor: lag, labels: l), registry.makeGauge(descriptor: pending, labels: l),
                                    registry.makeGauge(descriptor: age, labels: l), registry.makeGauge(descriptor: missing, labels: l)))
            }
        }
        held = registry.makeGauge(descriptor: Metrics.metric("pilegate_uplink_held_for_workers",
                                                             "1 while publishing piles are held because workers are behind"))
    }

    private func updateStreamGauges() {
        for (i, g) in streamGauges.enumerated() { g.set(Double(watch.lengths[i].load(ordering: .relaxed))) }
        for (i, g) in groupGauges.enumerated() {
            g.lag.set(Double(watch.lag[i].load(ordering: .relaxed)))
            g.pending.set(Double(watch.pending[i].load(ordering: .relaxed)))
            g.age.set(Double(watch.oldestUnreadAgeMs[i].load(ordering: .relaxed)) / 1000)
            g.missing.set(Double(watch.missing[i].load(ordering: .relaxed) ? 1 : 0))
        }
        held?.set(Double(watch.isHeld ? 1 : 0))
    }

    /// The text exposition format (version 0.0.4).
    func scrape() -> [UInt8] {
        for i in counters.indices { counters[i].1.advance(to: Counters.total(counters[i].0, sets)) }
        for (c, gauge) in gauges { gauge.set(Double(Counters.total(c, sets))) }
        for i in closes.indices { closes[i].1.advance(to: Counters.totalClosed(closes[i].0, sets)) }
        for i in packets.indices {
            let (n, bytes) = Counters.totalPackets(packets[i].0, packets[i].1, sets)
            packets[i].count.advance(to: n)
            packets[i].bytes.advance(to: bytes)
        }
        for i in publishes.indices { publishes[i].1.advance(to: Counters.totalPackets(publishes[i].0, .publish, sets).packets) }
        for i in routed.indices { routed[i].advance(to: Counters.totalRouted(i, sets)) }
        for i in ruleActions.indices { ruleActions[i].advance(to: Counters.totalRateActions(rule: i, sets)) }
        rss.set(Double(Metrics.residentBytes()))
        fds.set(Double(Metrics.openFDs()))
        clients.set(Double(broker.clientCount))
        let usage = broker.retainedUsage
        retained.messages.set(Double(usage.messages))
        retained.bytes.set(Double(usage.bytes))
        queued.set(Double(QueueMemory.used.load(ordering: .relaxed)))
        updateStreamGauges()
        var out: [UInt8] = []
        out.reserveCapacity(16384)
        registry.emit(into: &out)
        Metrics.histogram(&out, "pilegate_redis_xadd_latency_seconds",
                          "Uplink XADDs, from enqueue to Redis's reply", sets.map(\.xaddLatency), scale: 1e-9)
        Metrics.histogram(&out, "pilegate_ring_submissions_per_turn",
                          "io_uring SQEs submitted per event-loop turn", sets.map(\.sqesPerTurn), scale: 1)
        Metrics.histogram(&out, "pilegate_ring_completions_per_turn",
                          "io_uring CQEs handled per event-loop turn", sets.map(\.cqesPerTurn), scale: 1)
        return out
    }

    /// One histogram in the text format, summed over the shards' `Histogram`s.
    private static func histogram(_ out: inout [UInt8], _ name: String, _ help: String, _ hs: [Histogram], scale: Double) {
        let (counts, sum) = Histogram.merged(hs)
        var text = "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        var cumulative: UInt64 = 0
        for (i, bound) in hs[0].bounds.enumerated() {
            cumulative += counts[i]
            text += "\(name)_bucket{le=\"\(Double(bound) * scale)\"} \(cumulative)\n"
        }
        cumulative += counts[counts.count - 1]
        text += "\(name)_bucket{le=\"+Inf\"} \(cumulative)\n\(name)_sum \(Double(sum) * scale)\n\(name)_count \(cumulative)\n"
        out += text.utf8
    }

    /// Our names are complete (prefix, base unit, `_total`): the descriptor adds nothing.
    private static func metric(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// A Prometheus counter following one of our totals: it can only be incremented,
    /// so each scrape adds what the total gained since the last.
    private struct Mirror {
        let counter: Prometheus.Counter
        var emitted: UInt64 = 0
        init(_ c: Prometheus.Counter) { counter = c }

        mutating func advance(to total: UInt64) {
            if total > emitted { counter.increment(by: Int64(total - emitted)) }
            emitted = max(total, emitted)
        }
    }

    /// Resident pages (second field of /proc/self/statm) in bytes.
    static func residentBytes() -> Int {
        guard let f = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 128)
        guard fgets(&buf, 128, f) != nil else { return 0 }
        let fields = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }.split(separator: " ")
        guard fields.count >= 2, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    static func openFDs() -> Int {
        guard let d = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(d) }
        var n = 0
        while let e = readdir(d) {
            if e.pointee.d_name.0 != UInt8(ascii: ".") { n += 1 }
        }
        return n - 1   // the directory being read
    }
}

extension Counter {
    /// Prometheus name (base units, `_total` on counters), help, and for a family of
    /// counters under one name its label.
    var metric: (name: String, help: String, gauge: Bool, labels: [(String, String)]?) {
        func c(_ n: String, _ h: String, _ l: [(String, String)]? = nil) -> (String, String, Bool, [(String, String)]?) {
            ("pilegate_" + n, h, false, l)
        }
        func g(_ n: String, _ h: String) -> (String, String, Bool, [(String, String)]?) { ("pilegate_" + n, h, true, nil) }
        switch self {
        case .connectionsAccepted: return c("connections_accepted_total", "TCP connections accepted")
        case .clientsConnected: return g("connections", "Clients connected (CONNACK 0 sent, connection open)")
        case .connectionsClosed: return c("connections_closed_total", "Connections closed, all reasons")
        case .connectsAccepted: return c("connects_total", "CONNECTs answered", [("result", "accepted")])
        case .connectsRefused: return c("connects_total", "CONNECTs answered", [("result", "refused")])
        case .acceptPauses: return c("accept_table_full_total", "A shard stopped accepting: its fixed-file table was full")
        case .acceptRatePauses: return c("accept_rate_pauses_total", "A shard stopped accepting for a while: the connect queue (limits.over_rate = wait) was more than half full")
        case .connectionsOverLimit: return c("connections_over_limit_total", "Connections closed at accept: max_connections reached")
        case .malformedPackets: return c("malformed_packets_total", "Connections closed for a malformed packet")
        case .protocolViolations: return c("protocol_violations_total", "Connections closed for a protocol violation")
        case .keepaliveExpiries: return c("keepalive_expiries_total", "Connections closed: no packet within 1.5x keepalive")
        case .connectTimeouts: return c("connect_timeouts_total", "Connections closed: no CONNECT in time")
        case .takeovers: return c("takeovers_total", "Connections closed because their client id connected again")
        case .willsPublished: return c("wills_published_total", "Will messages published")
        case .bytesIn: return c("bytes_total", "Bytes on client sockets (after TLS)", [("direction", "in")])
        case .bytesOut: return c("bytes_total", "Bytes on client sockets (after TLS)", [("direction", "out")])
        case .queueDropsMessages: return c("queue_drops_total", "Messages dropped for a subscriber, by reason", [("reason", "queue_messages")])
        case .queueDropsBytes: return c("queue_drops_total", "Messages dropped for a subscriber, by reason", [("reason", "queue_bytes")])
        case .queueDropsBudget: return c("queue_drops_total", "Messages dropped for a subscriber, by reason", [("reason", "queue_budget")])
        case .queueDropsSendBuffer: return c("queue_drops_total", "Messages dropped for a subscriber, by reason", [("reason", "send_buffer")])
        case .deliveriesDenied: return c("acl_denials_total", "ACL denials", [("packet", "delivery")])
        case .uplinkStored: return c("uplink_stored_total", "Uplink XADDs confirmed by Redis (any QoS)")
        case .uplinkDropped: return c("uplink_dropped_total", "QoS 0 uplink dropped under backpressure (qos0_overload = drop)")
        case .redisErrors: return c("redis_errors_total", "Redis error replies")
        case .redisRelayed: return c("redis_relayed_total", "Uplink commands a shard handed to its uplink writer shard")
        case .backpressurePauses: return c("backpressure_pauses_total", "Connections paused because Redis was busy or away")
        case .workerLagHolds: return c("worker_lag_holds_total", "Times the uplink was held because workers were behind (stream cap or Redis memory)")
        case .bookkeepingDropped: return c("bookkeeping_dropped_total", "Events and presence updates dropped while Redis was away")
        case .uplinkResends: return c("uplink_duplicates_total", "Uplink PUBLISHes acknowledged but not stored again", [("kind", "resend")])
        case .uplinkRepeatedRecords: return c("uplink_duplicates_total", "Uplink PUBLISHes acknowledged but not stored again", [("kind", "record")])
        case .downlinkAcked, .downlinkSent, .downlinkQueued, .downlinkOffline, .downlinkNotSubscribed, .downlinkExpired, .downlinkRejected:
            let o = CommandOutcome.allCases.first { $0.counter == self }!
            return c("downlink_total", "Downlink command outcomes (queued is interim, the others final)", [("outcome", o.rawValue)])
        case .reloads: return c("reloads_total", "Config reloads", [("result", "applied")])
        case .reloadsRefused: return c("reloads_total", "Config reloads", [("result", "refused")])
        case .mailboxBadEntries: return c("mailbox_bad_entries_total", "Mailbox entries that do not parse (removed, outcome rejected)")
        case .authFailures: return c("auth_failures_total", "CONNECTs refused for credentials or certificate")
        case .clientIDRefused: return c("client_id_refusals_total", "CONNACK 5: client id is not the user name (bind_client_id)")
        case .publishDenied: return c("acl_denials_total", "ACL denials", [("packet", "publish")])
        case .subscribeDenied: return c("acl_denials_total", "ACL denials", [("packet", "subscribe")])
        case .bannedRefused: return c("banned_refusals_total", "Connections refused: client id or IP banned")
        case .flappingBans: return c("bans_total", "Bans set", [("cause", "flapping")])
        case .authFailureBans: return c("bans_total", "Bans set", [("cause", "auth_failures")])
        case .rateBans: return c("bans_total", "Bans set", [("cause", "rate_rule")])
        case .connectRateRefused: return c("connect_rate_refusals_total", "CONNACK 3: over a connect rate")
        case .connectRateWaits: return c("connect_rate_waits_total", "CONNECTs held for their connect-rate slot")
        case .ipConnectionsRefused: return c("ip_connection_refusals_total", "Connections closed at accept: max_connections_per_ip")
        case .rateThrottles: return c("rate_actions_total", "Send-rate rule actions", [("action", "throttle")])
        case .rateDrops: return c("rate_actions_total", "Send-rate rule actions", [("action", "drop")])
        case .rateDisconnects: return c("rate_actions_total", "Send-rate rule actions", [("action", "disconnect")])
        case .quotaBreaches: return c("quota_breaches_total", "Devices over their daily byte quota (once a day each)")
        case .inflightInPauses: return c("inflight_in_pauses_total", "Piles not read: max_inflight_in PUBLISHes waiting on Redis")
        case .tlsHandshakes: return c("tls_handshakes_total", "TLS handshakes completed")
        case .tlsFailures: return c("tls_failures_total", "TLS connections closed for a TLS error")
        case .tlsHandshakeTimeouts: return c("tls_handshake_timeouts_total", "TLS handshakes not finished in time")
        case .proxyHeaderErrors: return c("proxy_header_errors_total", "Connections closed for a malformed or missing PROXY protocol v2 header")
        case .silentReports: return c("silent_reports_total", "Connected piles reported silent (no PUBLISH for devices.silent_seconds)")
        case .retainedRefused: return c("retained_refused_total", "Retained PUBLISHes delivered but not retained: the store at mqtt.max_retained_messages or max_retained_bytes")
        case .silentDevices: return g("silent_devices", "Connected piles silent at the last review")
        case .memoryTrims: return c("memory_trims_total", "Free heap returned to the kernel after connection churn (server.memory_trim_interval)")
        case .memoryTrimmedBytes: return c("memory_trimmed_bytes_total", "Resident bytes those trims gave back")
        case .redisInflight: return g("redis_inflight_commands", "Commands sent to Redis and not yet answered")
        case .redisUp: return g("redis_up_shards", "Shards whose Redis connection is up")
        case .redisStalled: return g("redis_stalled_shards", "Shards with a Redis command unanswered for longer than redis.connect_timeout_ms")
        case .redisWaitShort: return c("redis_wait_short_total", "WAITs that confirmed fewer replicas than redis.wait_replicas")
        case .redisMoved: return c("redis_cluster_redirects_total", "Redis Cluster redirects followed", [("kind", "moved")])
        case .redisAsk: return c("redis_cluster_redirects_total", "Redis Cluster redirects followed", [("kind", "ask")])
        case .redisClusterRetries: return c("redis_cluster_retries_total", "Commands a cluster could not take yet (TRYAGAIN, CLUSTERDOWN, a slot with no master), sent again")
        case .redisFailovers: return c("redis_cluster_failovers_total", "Masters that left the slot map while serving slots (per shard connection that saw it)")
        case .redisClusterMasters: return g("redis_cluster_masters", "Masters in the Redis Cluster slot map")
        case .redisUnservedSlots: return g("redis_cluster_unserved_slots", "Hash slots no master serves")
        case .redisSlotMapAge: return g("redis_cluster_slot_map_age_seconds", "Seconds since the slot map was last read")
        }
    }
}
