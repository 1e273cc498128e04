import Foundation
import MQTTCodec

// codecbench: nanoseconds per packet for the MQTT codec's encode and decode, the
// packets piles actually exchange, and topic matching. A plain harness (the codec
// is pure, so a tight loop over one buffer is the honest measurement): each case
// runs for ~0.3 s, five times; the median and the spread are printed.
//   swift run -c release codecbench [--quick]

@inline(never) func blackHole<T>(_ x: T) { withExtendedLifetime(x) {} }

func nanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// ns per call of `body` (which does `inner` operations): median of `rounds` rounds.
func measure(_ name: String, inner: Int = 1, rounds: Int, seconds: Double, _ body: () -> Void) -> (String, Double, Double, Double) {
    var n = 1
    while true {   // calibrate: iterations for ~`seconds` per round
        let t0 = nanos()
        for _ in 0..<n { body() }
        let dt = nanos() - t0
        if dt > UInt64(seconds * 1e9 / 4) { n = max(1, Int(Double(n) * seconds * 1e9 / Double(dt))); break }
        n *= 2
    }
    var results: [Double] = []
    for _ in 0..<rounds {
        let t0 = nanos()
        for _ in 0..<n { body() }
        results.append(Double(nanos() - t0) / Double(n * inner))
    }
    results.sort()
    return (name, results[results.count / 2], results.first!, results.last!)
}

let quick = CommandLine.arguments.contains("--quick")
let rounds = quick ? 3 : 5, seconds = quick ? 0.05 : 0.3
let id = "AAAAAJQX"
let runData = Array(#"{"命令":"运行数据","reqid":1,"数据分区":"1枪数据","状态数据":[{"名称":"电压_V","值":"239.977"}],"pad":""#.utf8)
    + [UInt8](repeating: 0x78, count: 300) + Array(#""}"#.utf8)
let packets: [(String, Packet)] = [
    ("CONNECT (user, password, will)", .connect(Connect(cleanSession: true, keepAlive: 120, clientID: id,
                                                        will: Will(topic: "/xjdy/ops/v1/TCU/\(id)/msg", payload: Array("offline".utf8),
                                                                   qos: .atLeastOnce, retain: false),
                                                        username: id, password: Array("pile-secret".utf8)))),
    ("PUBLISH QoS 1, 400 B run data", .publish(Publish(topic: "/xjdy/ops/v1/TCU/\(id)/msg", payload: runData, qos: .atLeastOnce, packetID: 77))),
    ("PUBLISH QoS 0, 400 B run data", .publish(Publish(topic: "/xjdy/ops/v1/TCU/\(id)/msg", payload: runData, qos: .atMostOnce))),
    ("PUBACK", .puback(77)),
    ("SUBSCRIBE (own cmd topic)", .subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/\(id)/cmd", .atLeastOnce)]))),
    ("PINGREQ", .pingreq),
]

var rows: [(String, Double, Double, Double)] = []
var sink: [UInt8] = []
sink.reserveCapacity(4096)
for (name, p) in packets {
    let bytes = Encoder.encode(p)
    rows.append(measure("encode \(name)", rounds: rounds, seconds: seconds) {
        sink.removeAll(keepingCapacity: true)
        Encoder.encode(p, into: &sink)
        blackHole(sink.count)
    })
    rows.append(measure("decode \(name)", rounds: rounds, seconds: seconds) {
        bytes.withUnsafeBytes { b in
            if case .packet(let q, let n) = Decoder.decode(b) { blackHole((q, n)) } else { fatalError("decode failed") }
        }
    })
}
// A receive buffer of 32 back-to-back PUBLISHes, as a shard decodes it.
let stream = (0..<32).flatMap { _ in Encoder.encode(packets[1].1) }
rows.append(measure("decode PUBLISH QoS 1 x32 from one buffer, per packet", inner: 32, rounds: rounds, seconds: seconds) {
    stream.withUnsafeBytes { b in
        var off = 0
        while off < b.count, case .packet(let q, let n) = Decoder.decode(UnsafeRawBufferPointer(rebasing: b[off...])) {
            blackHole(q); off += n
        }
    }
})
let filter = "/xjdy/ops/v1/TCU/+/msg", topic = "/xjdy/ops/v1/TCU/\(id)/msg"
rows.append(measure("Topic.matches pile ACL pattern (5 levels)", rounds: rounds, seconds: seconds) {
    blackHole(Topic.matches(filter: filter, topic: topic))
})

print("codec micro benchmarks (ns per operation; median of \(rounds) rounds, [min, max])")
for (name, median, lo, hi) in rows {
    print("  \(name.padding(toLength: 56, withPad: " ", startingAt: 0)) \(String(format: "%8.1f", median))  [\(String(format: "%.1f", lo)), \(String(format: "%.1f", hi))]")
}
