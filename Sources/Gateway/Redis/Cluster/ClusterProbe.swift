import CHiredis
import Glibc

/// At startup with `redis.cluster`: ask the seeds, one after another and blocking
/// (once, before the shards start), whether they are a cluster. A seed that answers
/// as a standalone server, or refuses the credentials, is a config error: pilegate
/// exits with it rather than run with every key refused. Seeds that do not answer
/// are only reported: the shards keep trying, as they do for an unreachable Redis.
enum ClusterProbe {
    /// The seeds that did not answer and why; empty when one answered as a cluster.
    static func check(_ redis: Config.Redis) throws -> [String] {
        var unreachable: [String] = []
        for seed in redis.seeds {
            guard let colon = seed.lastIndex(of: ":"), let port = Int32(seed[seed.index(after: colon)...]) else { continue }
            let host = String(seed[..<colon]).trimmingCharacters(in: ["[", "]"])
            let ms = redis.connectTimeoutMs
            guard let c = redisConnectWithTimeout(host, port, timeval(tv_sec: ms / 1000, tv_usec: (ms % 1000) * 1000)) else {
                unreachable.append("\(seed): out of memory"); continue
            }
            defer { redisFree(c) }
            if c.pointee.err != 0 {
                unreachable.append("\(seed): \(errorText(c))")
                continue
            }
            for command in redis.handshake(clientName: nil) + [["CLUSTER", "SLOTS"]] {
                guard let reply = run(c, command) else {
                    unreachable.append("\(seed): \(errorText(c))")
                    break
                }
                defer { freeReplyObject(reply) }
                let r = reply.assumingMemoryBound(to: redisReply.self)
                guard r.isError else {
                    if command.first == "CLUSTER" { return [] }
                    continue
                }
                let why = r.text.contains("cluster support disabled")
                    ? "\(seed) is not a Redis Cluster (cluster support disabled) but redis.cluster = true: set cluster = false, or give the cluster's nodes"
                    : "redis cluster seed \(seed) refused \(command[0]): \(r.text)"
                throw Config.Invalid(description: why)
            }
        }
        return unreachable
    }

    private static func run(_ c: UnsafeMutablePointer<redisContext>, _ args: [String]) -> UnsafeMutableRawPointer? {
        var cStrings = args.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        var lengths = args.map { $0.utf8.count }
        return cStrings.withUnsafeMutableBufferPointer { argv in
            argv.withMemoryRebound(to: UnsafePointer<CChar>?.self) { p in
                redisCommandArgv(c, Int32(args.count), p.baseAddress, &lengths)
            }
        }
    }

    private static func errorText(_ c: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}

private extension String {
    func trimmingCharacters(in set: Set<Character>) -> String { String(filter { !set.contains($0) }) }
}
