import MQTTCodec

/// Picks the Redis stream for an uplink message: the first `[[route]]` whose
/// filter matches the topic and, if it names a JSON key, whose payload has that
/// top-level key with that string value; else the default stream. A rule may also
/// name `dedup_json_key`, whose string value identifies the record.
struct Router {
    private struct Rule {
        var filter: String
        var key: [UInt8]?
        var value: [UInt8]?
        var stream: Int
        var identityKey: [UInt8]?
    }

    /// Where one PUBLISH goes: an index in `names`, and the value of its route's
    /// `dedup_json_key` when the route names one and the payload has it.
    struct Routed {
        var stream: Int
        var identity: [UInt8]?
    }

    private let rules: [Rule]
    /// Every stream name a route names, each once; the default stream first.
    let names: [String]
    /// `redis.partitions`: each name is this many streams, `NAME:{0}`, `NAME:{1}`..
    /// (the hash tag puts partition i of every route in one cluster slot); with 1,
    /// the name itself.
    let partitions: Int
    /// Every stream key a PUBLISH can go to: each name's partitions in turn.
    let streams: [String]

    /// `keeping`: the names of the router this one replaces (a reload), in their
    /// order, which the per-stream counters follow; the routes must name no others.
    init(routes: [Config.Route], defaultStream: String, partitions: Int = 1, keeping previous: [String]? = nil) {
        var names = previous ?? [defaultStream]
        for r in routes where !names.contains(r.stream) { names.append(r.stream) }
        rules = routes.map { r in Rule(filter: r.filter, key: r.jsonKey.map { Array($0.utf8) },
                                       value: r.jsonValue.map { Array($0.utf8) },
                                       stream: names.firstIndex(of: r.stream)!,
                                       identityKey: r.dedupJSONKey.map { Array($0.utf8) }) }
        self.names = names
        self.partitions = partitions
        streams = partitions == 1 ? names : names.flatMap { n in (0..<partitions).map { "\(n):{\($0)}" } }
    }

    /// The index in `streams` of a routed message from `device`: its route's
    /// partition CRC16(client id) mod `partitions` (all of one pile's messages in one
    /// stream, in order).
    func stream(_ routed: Routed, device: String) -> Int {
        guard partitions > 1 else { return routed.stream }
        var d = device
        let crc = d.withUTF8 { HashSlot.crc16(UnsafeRawBufferPointer($0)) }
        return routed.stream * partitions + Int(crc) % partitions
    }

    /// Where this PUBLISH goes.
    func route(topic: String, payload: [UInt8]) -> Routed {
        for r in rules where Topic.matches(filter: r.filter, topic: topic) {
            if let key = r.key, let value = r.value {
                let hit = payload.withUnsafeBytes { p in
                    JSONScan.topLevelString(p, key: key).map { $0.elementsEqual(value) } ?? false
                }
                guard hit else { continue }
            }
            guard let idKey = r.identityKey else { return Routed(stream: r.stream) }
            return Routed(stream: r.stream, identity: payload.withUnsafeBytes { p in
                JSONScan.topLevelString(p, key: idKey).map { Array($0) }
            })
        }
        return Routed(stream: 0)
    }
}

/// Just enough JSON to read one top-level string: piles send UTF-8 JSON objects,
/// some malformed (duplicate keys, garbage bytes inside strings), and the payload
/// itself is carried untouched whatever this finds.
enum JSONScan {
    /// The raw bytes (escapes not decoded) of the first top-level member `key` whose
    /// value is a string; nil if there is none or the text is not an object.
    static func topLevelString(_ b: UnsafeRawBufferPointer, key: [UInt8]) -> UnsafeRawBufferPointer? {
        var i = 0
        func ws() { while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 } }
        /// A string starting at b[i] == '"': its content range, i past the closing quote.
        func string() -> Range<Int>? {
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { return nil }
            i += 1
            let start = i
            while i < b.count {
                if b[i] == UInt8(ascii: "\\") { i += 2; continue }
                if b[i] == UInt8(ascii: "\"") { i += 1; return start..<(i - 1) }
                i += 1
            }
            return nil
        }
        /// Skip any value; false if it runs off the end.
        func skipValue() -> Bool {
            if i < b.count, b[i] == UInt8(ascii: "\"") { return string() != nil }
            var depth = 0
            while i < b.count {
                switch b[i] {
                case UInt8(ascii: "\""): if string() == nil { return false }; continue
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    if depth == 0 { return true }
                    depth -= 1
                case UInt8(ascii: ","): if depth == 0 { return true }
                default: break
                }
                i += 1
            }
            return depth == 0
        }
        ws()
        guard i < b.count, b[i] == UInt8(ascii: "{") else { return nil }
        i += 1
        while true {
            ws()
            guard let k = string() else { return nil }
            ws()
            guard i < b.count, b[i] == UInt8(ascii: ":") else { return nil }
            i += 1
            ws()
            let isString = i < b.count && b[i] == UInt8(ascii: "\"")
            if isString {
                guard let v = string() else { return nil }
                if UnsafeRawBufferPointer(rebasing: b[k]).elementsEqual(key) {
                    return UnsafeRawBufferPointer(rebasing: b[v])
                }
            } else if !skipValue() {
                return nil
            }
            ws()
            guard i < b.count else { return nil }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            return nil   // "}" (key not found) or garbage
        }
    }
}
