import Logging
import MQTTCodec
import PileLoop

/// What became of one downlink command (the outcome stream's `outcome` field).
enum DownlinkOutcome: String {
    /// Handed to the pile's connection (QoS 1/2: into its in-flight window or queue).
    case delivered
    /// The pile is away with a persistent session: queued until it comes back.
    case queued
    /// Not connected (and no session that could hold it).
    case offline
    /// Connected, but not subscribed to the command's topic.
    case notSubscribed = "not_subscribed"
}

/// The node's command reader, run by shard 0 on its own Redis connection (its
/// XREADGROUP blocks, so it cannot share the pipelined uplink connection).
///
/// Reads `downlink_prefix + node` with consumer group `group`, consumer = node.
/// On every (re)connect: create the group if missing, claim every pending entry
/// (XAUTOCLAIM from 0-0: what a crashed run read but never acknowledged), then read
/// new entries. Each entry is delivered, XACKed and its outcome reported through
/// the uplink bridge.
final class Downlink {
    enum Step { case createGroup, claim, read }

    let connection: RedisConnection<RedisExpectation>
    let key: String
    private let group: String
    private let consumer: String

    init(config: Config, address: SocketAddress, ring: Ring, logger: Logger) {
        key = config.redis.downlinkPrefix + config.server.node
        group = config.redis.group
        consumer = config.server.node
        connection = RedisConnection(id: 1, name: "downlink", address: address,
                                     handshake: config.redis.handshake(clientName: "pilegate-\(config.server.node)-downlink"),
                                     connectTimeoutMs: UInt64(config.redis.connectTimeoutMs), resendOnReconnect: false,
                                     ring: ring, logger: logger)
    }

    /// The connection is up: start from the top (the journal was emptied by design:
    /// only the latest step is ever outstanding, and it is re-issued here).
    func start() {
        connection.enqueue(.downlink(.createGroup)) { $0.respCommand(["XGROUP", "CREATE", key, group, "$", "MKSTREAM"]) }
        claim(from: "0-0")
    }

    func claim(from cursor: String) {
        connection.enqueue(.downlink(.claim)) {
            $0.respCommand(["XAUTOCLAIM", key, group, consumer, "0", cursor, "COUNT", "500"])
        }
    }

    func read() {
        connection.enqueue(.downlink(.read)) {
            $0.respCommand(["XREADGROUP", "GROUP", group, consumer, "COUNT", "500", "BLOCK", "1000", "STREAMS", key, ">"])
        }
    }

    /// Entries of an XREADGROUP or XAUTOCLAIM reply as (id, fields).
    static func entries(_ list: RedisReply) -> [(id: String, fields: [String: [UInt8]])] {
        list.elements.compactMap { e in
            let parts = e.elements
            guard parts.count == 2 else { return nil }   // deleted entries come back as nil fields
            let kv = parts[1].elements
            var fields: [String: [UInt8]] = [:]
            var i = 0
            while i + 1 < kv.count {
                fields[kv[i].text] = kv[i + 1].bytes
                i += 2
            }
            return (parts[0].text, fields)
        }
    }
}

extension Shard {
    /// Replies on the downlink connection drive its little state machine.
    func downlinkReplied(_ step: Downlink.Step, _ r: RedisReply) {
        guard let downlink else { return }
        switch step {
        case .createGroup:
            if r.isError && !r.text.hasPrefix("BUSYGROUP") {
                logger.error("downlink: XGROUP CREATE failed: \(r.text)")
            }
        case .claim:
            let parts = r.elements
            if r.isError || parts.count < 2 {
                logger.error("downlink: XAUTOCLAIM failed: \(r.text)")
                return downlink.read()
            }
            let claimed = Downlink.entries(parts[1])
            if !claimed.isEmpty { logger.info("downlink: re-delivering \(claimed.count) entries left pending") }
            for e in claimed { deliverCommand(id: e.id, fields: e.fields, key: downlink.key) }
            let next = parts[0].text
            if next == "0-0" || claimed.isEmpty { downlink.read() } else { downlink.claim(from: next) }
        case .read:
            if r.isError {
                logger.error("downlink: XREADGROUP failed: \(r.text)")
            } else if !r.isNil {
                for stream in r.elements {
                    let parts = stream.elements
                    guard parts.count == 2 else { continue }
                    for e in Downlink.entries(parts[1]) { deliverCommand(id: e.id, fields: e.fields, key: downlink.key) }
                }
            }
            downlink.read()
        }
    }

    /// One command from a worker: `device` (required), `payload`, optional `topic`
    /// (default: the pile's command topic) and `qos` (default 1).
    private func deliverCommand(id: String, fields: [String: [UInt8]], key: String) {
        guard let redis else { return }
        let device = fields["device"].map { String(decoding: $0, as: UTF8.self) } ?? ""
        let topic = fields["topic"].map { String(decoding: $0, as: UTF8.self) } ?? "/xjdy/ops/v1/TCU/\(device)/cmd"
        let qosByte = fields["qos"].flatMap { UInt8(String(decoding: $0, as: UTF8.self)) } ?? 1
        guard !device.isEmpty, Topic.isValidName(Array(topic.utf8)), let qos = QoS(rawValue: qosByte) else {
            logger.warning("downlink: entry \(id) is missing device or has a bad topic/qos; acknowledged as offline")
            redis.downlinkDone(key: key, id: id, device: device, outcome: .offline)
            return
        }
        let outcome = dispatch(Message(topic: topic, payload: fields["payload"] ?? [], qos: qos, retain: false), target: device)
            ?? .offline
        counters.add(outcome.counter)
        redis.downlinkDone(key: key, id: id, device: device, outcome: outcome)
    }
}

extension DownlinkOutcome {
    var counter: Counter {
        switch self {
        case .delivered: .downlinkDelivered
        case .queued: .downlinkQueued
        case .offline: .downlinkOffline
        case .notSubscribed: .downlinkNotSubscribed
        }
    }
}
