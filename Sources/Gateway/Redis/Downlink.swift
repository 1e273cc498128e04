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
/// new entries. Each entry is delivered, its outcome reported through the uplink
/// bridge, and each batch XACKed with one command.
final class Downlink {
    enum Step { case createGroup, claim, read }

    /// Reads kept in flight: while the shard works through one batch, Redis is
    /// already collecting the next. With batched XACKs, a 200k command burst went
    /// from 28-33k to 43-45k deliveries/s (`pileload --profile downlink`).
    static let readsInFlight = 2
    static let batch = "1000"

    let connection: RedisConnection<RedisExpectation>
    let key: String
    private let group: String
    private let consumer: String
    private var reading = 0

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
    /// nothing outstanding survives a reconnect, so it is all re-issued here).
    func start() {
        reading = 0
        connection.enqueue(.downlink(.createGroup)) { $0.respCommand(["XGROUP", "CREATE", key, group, "$", "MKSTREAM"]) }
        claim(from: "0-0")
    }

    func claim(from cursor: String) {
        connection.enqueue(.downlink(.claim)) {
            $0.respCommand(["XAUTOCLAIM", key, group, consumer, "0", cursor, "COUNT", Downlink.batch])
        }
    }

    /// A read came back (or the claim phase ended): keep `readsInFlight` outstanding.
    func read(answered: Bool = false) {
        if answered { reading -= 1 }
        while reading < Downlink.readsInFlight {
            reading += 1
            connection.enqueue(.downlink(.read)) {
                $0.respCommand(["XREADGROUP", "GROUP", group, consumer, "COUNT", Downlink.batch, "BLOCK", "1000",
                                "STREAMS", key, ">"])
            }
        }
    }
}

/// One downlink stream entry: its id and the fields the contract names, read
/// straight out of the reply (no dictionary per entry).
struct DownlinkEntry {
    var id: String
    var device = ""
    var topic: String?
    var qos: String?
    var payload: [UInt8] = []

    /// Nil for an entry XAUTOCLAIM reports as deleted (its fields are nil).
    init?(_ entry: RedisReply) {
        let parts = entry.elements
        guard parts.count == 2 else { return nil }
        id = parts[0].text
        let kv = parts[1].elements
        var i = 0
        while i + 1 < kv.count {
            let value = kv[i + 1]
            switch kv[i].text {
            case "device": device = value.text
            case "topic": topic = value.text
            case "qos": qos = value.text
            case "payload": payload = value.bytes
            default: break
            }
            i += 2
        }
    }

    /// The entries of an XREADGROUP stream's or an XAUTOCLAIM reply's entry list.
    static func all(_ list: RedisReply) -> [DownlinkEntry] { list.elements.compactMap(DownlinkEntry.init) }
}
