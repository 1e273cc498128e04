import Atomics
import CHiredis
import Glibc
import PileLoop

/// A blocking Redis client for the harness's platform side (hiredis; pileload's
/// piles stay on the ring). Commands are pipelined: append many, then read the replies.
final class RedisClient {
    private let context: UnsafeMutablePointer<redisContext>

    /// `address`: "HOST:PORT" (IPv4).
    init(_ address: String) throws {
        let parts = address.split(separator: ":")
        guard parts.count == 2, let port = Int32(parts[1]), let c = redisConnect(String(parts[0]), port), c.pointee.err == 0 else {
            throw PileLoadError("cannot connect to redis at \(address)")
        }
        context = c
    }

    deinit { redisFree(context) }

    /// Queue one command (binary-safe arguments); its reply comes from `reply()`.
    func append(_ args: [[UInt8]]) {
        var pointers = args.map { a -> UnsafePointer<CChar>? in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, a.count))
            a.withUnsafeBytes { if let b = $0.baseAddress { UnsafeMutableRawPointer(p).copyMemory(from: b, byteCount: a.count) } }
            return UnsafePointer(p)
        }
        defer { pointers.forEach { UnsafeMutablePointer(mutating: $0)?.deallocate() } }
        var lengths = args.map(\.count)
        _ = redisAppendCommandArgv(context, Int32(args.count), &pointers, &lengths)
    }

    func append(_ args: [String]) { append(args.map { Array($0.utf8) }) }

    /// The next reply, as a tree of strings (nil for nil replies); throws on I/O errors.
    func reply() throws -> RedisValue {
        var raw: UnsafeMutableRawPointer?
        guard redisGetReply(context, &raw) == CHR_OK, let r = raw?.assumingMemoryBound(to: redisReply.self) else {
            throw PileLoadError("redis: connection lost")
        }
        defer { freeReplyObject(raw) }
        return RedisValue(r)
    }

    func command(_ args: [String]) throws -> RedisValue {
        append(args)
        return try reply()
    }
}

indirect enum RedisValue {
    case bytes([UInt8]), error(String), integer(Int), array([RedisValue]), null

    init(_ r: UnsafeMutablePointer<redisReply>) {
        let bytes = { r.pointee.str.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: r.pointee.len)) } ?? [] }
        switch r.pointee.type {
        case CHR_REPLY_STRING, CHR_REPLY_STATUS: self = .bytes(bytes())
        case CHR_REPLY_ERROR: self = .error(String(decoding: bytes(), as: UTF8.self))
        case CHR_REPLY_INTEGER: self = .integer(Int(r.pointee.integer))
        case CHR_REPLY_ARRAY: self = .array((0..<r.pointee.elements).map { RedisValue(r.pointee.element[$0]!) })
        default: self = .null
        }
    }

    var items: [RedisValue] { if case .array(let a) = self { a } else { [] } }
    var bytes: [UInt8]? { if case .bytes(let b) = self { b } else { nil } }
}

/// The platform worker the harness ships (issue: end-to-end latency): it reads the
/// uplink stream with a consumer group and answers each message with a command to
/// the pile that sent it, through the node's downlink stream, carrying the
/// payload back. A pile then measures pile -> Redis -> worker -> node -> pile.
final class EchoWorker: @unchecked Sendable {
    private let redis: RedisClient
    private let stream: String
    private let downlinkPrefix: String
    private let stop: ManagedAtomic<Bool>
    let echoed = ManagedAtomic<Int>(0)

    init(address: String, stream: String, downlinkPrefix: String, stop: ManagedAtomic<Bool>) throws {
        redis = try RedisClient(address)
        self.stream = stream
        self.downlinkPrefix = downlinkPrefix
        self.stop = stop
        // "$": only what is published from now on; BUSYGROUP from an earlier run is fine.
        _ = try redis.command(["XGROUP", "CREATE", stream, "pileload-echo", "$", "MKSTREAM"])
    }

    func run() {
        do {
            while !stop.load(ordering: .relaxed) {
                let batch = try redis.command(["XREADGROUP", "GROUP", "pileload-echo", "echo", "COUNT", "1024",
                                               "BLOCK", "100", "STREAMS", stream, ">"])
                guard let entries = batch.items.first?.items.dropFirst().first?.items, !entries.isEmpty else { continue }
                var ids: [[UInt8]] = []
                var commands = 0
                for e in entries {
                    guard let id = e.items.first?.bytes else { continue }
                    ids.append(id)
                    let f = e.items.dropFirst().first?.items ?? []
                    var fields: [String: [UInt8]] = [:]
                    for i in stride(from: 0, to: f.count - 1, by: 2) {
                        if let k = f[i].bytes, let v = f[i + 1].bytes { fields[String(decoding: k, as: UTF8.self)] = v }
                    }
                    guard let device = fields["device"], let node = fields["node"], let payload = fields["payload"] else { continue }
                    redis.append([Array("XADD".utf8), Array(downlinkPrefix.utf8) + node, Array("*".utf8),
                                  Array("device".utf8), device, Array("payload".utf8), payload, Array("qos".utf8), Array("1".utf8)])
                    commands += 1
                }
                redis.append([Array("XACK".utf8), Array(stream.utf8), Array("pileload-echo".utf8)] + ids)
                for _ in 0...commands { _ = try redis.reply() }   // the XADDs, then the XACK
                echoed.wrappingIncrement(by: entries.count, ordering: .relaxed)
            }
        } catch {
            logError("pileload: echo worker: \(error)")
        }
    }
}

/// The downlink profile's platform side: one command per pile, pipelined as fast as
/// Redis takes them (a firmware rollout), each carrying its send time.
func sendDownlinkBurst(address: String, stream: String, piles: Range<Int>) throws -> Int {
    let redis = try RedisClient(address)
    var sent = 0
    var batch = 0
    func collect() throws {
        for _ in 0..<batch { if case .error(let e) = try redis.reply() { throw PileLoadError("XADD: \(e)") } }
        sent += batch
        batch = 0
    }
    for n in piles {
        let payload = Array(#"{"命令":"更新主站","reqid":\#(n),"t":\#(micros()),"pad":"firmware"}"#.utf8)
        redis.append([Array("XADD".utf8), Array(stream.utf8), Array("*".utf8), Array("device".utf8), Array(pileID(n).utf8),
                      Array("payload".utf8), payload, Array("qos".utf8), Array("1".utf8)])
        batch += 1
        if batch == 1000 { try collect() }
    }
    try collect()
    return sent
}

struct PileLoadError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
