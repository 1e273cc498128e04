import CHiredis
import PileLoop

/// Which master serves each hash slot, as `CLUSTER SLOTS` last told: one byte per
/// slot (16 KiB), an index into `masters`.
struct SlotMap {
    static let unserved: UInt8 = 255
    private(set) var owner = [UInt8](repeating: SlotMap.unserved, count: HashSlot.count)
    /// "HOST:PORT" of each master, in the order first seen.
    private(set) var masters: [String] = []

    /// The master serving `slot`, if one does.
    func master(of slot: UInt16) -> String? {
        let i = owner[Int(slot)]
        return i == SlotMap.unserved ? nil : masters[Int(i)]
    }

    /// Slots no master serves (a cluster that lost a master and its replicas).
    var unservedSlots: Int { owner.reduce(0) { $0 + ($1 == SlotMap.unserved ? 1 : 0) } }

    /// Point one slot at a master (a MOVED reply, ahead of the next full refresh).
    mutating func assign(_ slot: UInt16, to address: String) {
        owner[Int(slot)] = index(of: address)
    }

    private mutating func index(of address: String) -> UInt8 {
        if let i = masters.firstIndex(of: address) { return UInt8(i) }
        masters.append(address)
        return UInt8(masters.count - 1)
    }

    /// A `CLUSTER SLOTS` reply: `[[start, end, [ip, port, id], replicas...], ...]`.
    /// An empty ip means the node that was asked (`askedHost`). Nil with the reason
    /// when the reply is not a slot map (an error: cluster support disabled).
    static func parse(_ r: RedisReply, askedHost: String) -> (map: SlotMap?, problem: String?) {
        if r.isError { return (nil, r.text) }
        guard r.pointee.type == CHR_REPLY_ARRAY else { return (nil, "CLUSTER SLOTS did not answer with an array") }
        var map = SlotMap()
        for range in r.elements {
            let parts = range.elements
            guard parts.count >= 3, let start = parts[0].integer, let end = parts[1].integer,
                  0 <= start, start <= end, end < HashSlot.count else { return (nil, "CLUSTER SLOTS: a bad slot range") }
            let node = parts[2].elements
            guard node.count >= 2, let port = node[1].integer else { return (nil, "CLUSTER SLOTS: a bad node entry") }
            let host = node[0].text.isEmpty ? askedHost : node[0].text
            let address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            guard SocketAddress(address) != nil else {
                return (nil, "CLUSTER SLOTS names \(address), which is not an IP address (set cluster-preferred-endpoint-type ip)")
            }
            guard map.masters.count < Int(SlotMap.unserved) || map.masters.contains(address) else {
                return (nil, "CLUSTER SLOTS: more than 254 masters")
            }
            let i = map.index(of: address)
            for s in Int(start)...Int(end) { map.owner[s] = i }
        }
        return (map, nil)
    }
}
