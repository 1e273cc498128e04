import Logging
import MQTTCodec
import PileLoop

/// What the other nodes' piles publish, for this node's wildcard subscribers: an
/// operator's `mosquitto_sub -t '/xjdy/ops/v1/TCU/+/#'` through the balancer sees
/// the whole fleet, not only the piles that share its node. Fed from the uplink
/// streams every node already writes (no node-to-node protocol): shard 0 keeps one
/// blocking XREAD on its own connection while this node has a wildcard subscription,
/// from where the streams were when it started, and routes the entries of other
/// nodes to wildcard subscriptions only (a pile's own subscription, an exact topic,
/// stays local). Delivery goes through the subscribers' queues with their bounds,
/// as any other message.
final class FleetFeed {
    let connection: RedisConnection<RedisExpectation>
    private let streams: [String]
    private let node: String
    /// Per stream, the last entry seen ("$" until the first read answered).
    private var last: [String]
    private var reading = false

    init(config: Config, streams: [String], address: SocketAddress, ring: Ring, logger: Logger) {
        self.streams = streams
        node = config.server.node
        last = Array(repeating: "$", count: streams.count)
        connection = RedisConnection(id: 2, name: "fleet", address: address,
                                     handshake: config.redis.handshake(clientName: "pilegate-\(config.server.node)-fleet"),
                                     connectTimeoutMs: UInt64(config.redis.connectTimeoutMs), resendOnReconnect: false,
                                     ring: ring, logger: logger)
    }

    /// Each tick: read while there is someone to read for; stop (and start from the
    /// streams' ends next time) when there is not.
    func tick(wanted: Bool) {
        if !wanted && !reading { last = last.map { _ in "$" } }
        guard wanted, !reading, connection.state == .up else { return }
        read()
    }

    /// The connection went down: what was in flight is gone with it.
    func reset() { reading = false }

    private func read() {
        reading = true
        connection.enqueue(.fleet) { $0.respCommand(["XREAD", "COUNT", "1000", "BLOCK", "1000", "STREAMS"] + streams + last) }
    }

    /// A read came back: the other nodes' entries as messages; read on.
    func replied(_ r: RedisReply, wanted: Bool) -> [Message] {
        reading = false
        var out: [Message] = []
        if !r.isError && !r.isNil {
            for s in r.elements {
                let parts = s.elements
                guard parts.count == 2, let i = streams.firstIndex(of: parts[0].text) else { continue }
                for e in parts[1].elements {
                    let entry = e.elements
                    guard entry.count == 2 else { continue }
                    last[i] = entry[0].text
                    var topic = "", payload: [UInt8] = [], qos = QoS.atMostOnce, from = ""
                    for (k, v) in entry[1].pairs {
                        switch k {
                        case "topic": topic = v.text
                        case "payload": payload = v.bytes
                        case "qos": qos = UInt8(v.text).flatMap(QoS.init) ?? .atMostOnce
                        case "node": from = v.text
                        default: break
                        }
                    }
                    if from != node && !topic.isEmpty { out.append(Message(topic: topic, payload: payload, qos: qos, retain: false)) }
                }
            }
        }
        if wanted && connection.state == .up { read() }
        return out
    }
}
