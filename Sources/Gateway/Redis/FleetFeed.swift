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
/// as any other message. In a cluster, one XREAD covers the streams of one slot
/// (partition i of every route), without BLOCK: a blocked read would hold up the
/// others on its master's connection, so the feed polls each tick (100 ms).
final class FleetFeed {
    let link: RedisLink<RedisExpectation>
    private let streams: [String]
    private let node: String
    /// Per stream, the last entry seen ("$" until the first read answered).
    private var last: [String]
    /// Stream indexes read by one XREAD, with their slot.
    private let groups: [(slot: UInt16, streams: [Int])]
    private var reading = 0

    init(config: Config, streams: [String], address: SocketAddress, ring: Ring, logger: Logger) {
        self.streams = streams
        node = config.server.node
        last = Array(repeating: "$", count: streams.count)
        let link = RedisLink<RedisExpectation>(id: 2, name: "fleet", redis: config.redis, address: address,
                                               clientName: "pilegate-\(config.server.node)-fleet", resendOnReconnect: false,
                                               ring: ring, logger: logger)
        var groups: [(slot: UInt16, streams: [Int])] = []
        for (i, s) in streams.enumerated() {
            let slot = link.slot(s)
            if let g = groups.firstIndex(where: { $0.slot == slot }) { groups[g].streams.append(i) } else { groups.append((slot, [i])) }
        }
        self.groups = groups
        link.homeSlots = groups.map(\.slot)
        self.link = link
    }

    /// Each tick: read while there is someone to read for; stop (and start from the
    /// streams' ends next time) when there is not.
    func tick(wanted: Bool) {
        if !wanted && reading == 0 { last = last.map { _ in "$" } }
        guard wanted, reading == 0, link.state == .up else { return }
        // A poll (no BLOCK) from "$" never sees anything: start from each stream's newest entry.
        if link.cluster && last.contains("$") { return tail() }
        read()
    }

    /// XREVRANGE of each stream's newest entry, where a cluster's polls start.
    private func tail() {
        for (i, s) in streams.enumerated() where last[i] == "$" {
            reading += 1
            link.enqueue(.fleetTail(stream: i), slot: link.slot(s)) { $0.respCommand(["XREVRANGE", s, "+", "-", "COUNT", "1"]) }
        }
    }

    func tailed(_ i: Int, _ r: RedisReply) {
        reading = max(0, reading - 1)
        guard !r.isError else { return }
        last[i] = r.elements.first?.elements.first?.text ?? "0-0"   // an empty stream: every entry is new
    }

    /// The connection went down: what was in flight is gone with it.
    func reset() { reading = 0 }

    private func read() {
        let block = link.cluster ? [] : ["BLOCK", "1000"]
        for g in groups {
            reading += 1
            link.enqueue(.fleet, slot: g.slot) {
                $0.respCommand(["XREAD", "COUNT", "1000"] + block + ["STREAMS"] + g.streams.map { streams[$0] } + g.streams.map { last[$0] })
            }
        }
    }

    /// A read came back: the other nodes' entries as messages; read on.
    func replied(_ r: RedisReply, wanted: Bool) -> [Message] {
        reading = max(0, reading - 1)
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
        if wanted && reading == 0 && !link.cluster && link.state == .up { read() }
        return out
    }
}
