import Foundation
import Glibc
import MQTTCodec
import XCTest

/// A real Redis Cluster for one test: six redis-servers with cluster mode on, on
/// free loopback ports, joined by `redis-cli --cluster create --cluster-replicas 1`
/// (three masters, each with a replica), node timeout 1 s. Stopped at the end.
final class RedisClusterFixture {
    let nodes: [RedisServer]

    init() throws {
        nodes = try (0..<6).map { _ in
            try RedisServer(extra: ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                    "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
                                    "--repl-diskless-sync-delay", "0"],
                            port: Self.freePortPair())
        }
        _ = try shell("redis-cli", ["--cluster", "create"] + nodes.map(\.address) + ["--cluster-replicas", "1", "--cluster-yes"],
                      timeout: 60)
        guard waitHealthy() else { throw Failure("the cluster did not reach cluster_state:ok") }
    }

    /// A port free with its cluster bus port (+10,000), below the ephemeral range.
    static func freePortPair() -> UInt16 {
        while true {
            let p = UInt16.random(in: 20000..<30000)
            if portIsFree(p) && portIsFree(p + 10000) { return p }
        }
    }

    var seeds: String { nodes.prefix(2).map(\.address).joined(separator: ",") }

    /// Every live node says the cluster is ok, and every replica is in sync (a
    /// WAIT can count it).
    func waitHealthy(_ timeout: TimeInterval = 30) -> Bool {
        nodes[0].waitUntil(timeout) {
            let infos = nodes.compactMap { try? $0.command(["CLUSTER", "INFO"]).text }
            let replication = nodes.compactMap { try? $0.command(["INFO", "replication"]).text }
            return !infos.isEmpty && infos.allSatisfy { $0.contains("cluster_state:ok") }
                && replication.allSatisfy { $0.contains("master_link_status:up") || $0.contains("state=online") }
        }
    }

    /// Nodes whose process answers.
    var live: [RedisServer] { nodes.filter { (try? $0.command(["PING"])) != nil } }

    /// The node serving `key` as master now.
    func master(of key: String) throws -> RedisServer {
        for n in live {
            if case .integer = try n.command(["EXISTS", key]) { return n }   // the others answer MOVED
        }
        throw Failure("no master serves \(key)")
    }

    /// A command on the master of `key` (the fixture's own redirect following).
    @discardableResult
    func command(_ args: [String], key: String) throws -> RedisServer.Value {
        try master(of: key).command(args)
    }

    func entries(_ key: String) throws -> [(id: String, fields: [String: [UInt8]])] { try master(of: key).entries(key) }

    /// The cluster node id of a node.
    func id(of n: RedisServer) throws -> String { try n.command(["CLUSTER", "MYID"]).text ?? "" }
}

/// A pile publishing QoS 1 on its own thread, one message at a time, each payload
/// `DEVICE-SEQ`: which were acknowledged, and when (to check none is lost).
final class AckedPublisher: @unchecked Sendable {
    let device: String
    private let client: RawClient
    private let lock = NSLock()
    private var stopFlag = false
    private var acks: [(payload: String, sentAt: Date, ackedAt: Date)] = []
    private let done = DispatchSemaphore(value: 0)

    init(port: UInt16, device: String) throws {
        self.device = device
        client = try RawClient(port: port)
        guard client.connect(Connect(cleanSession: true, keepAlive: 60, clientID: device))?.returnCode == .accepted else {
            throw Failure("\(device) not accepted")
        }
        Thread.detachNewThread { self.run() }
    }

    private func run() {
        var seq = 0
        while !lock.withLock({ stopFlag }) {
            seq += 1
            let payload = "\(device)-\(seq)"
            let id = UInt16(truncatingIfNeeded: seq % 65535 + 1)
            let sent = Date()
            client.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/\(device)/msg", payload: Array(payload.utf8),
                                         qos: .atLeastOnce, packetID: id)))
            guard case .puback(id) = client.receive(timeout: 60) else { break }
            lock.withLock { acks.append((payload, sent, Date())) }
        }
        done.signal()
    }

    /// Stop after the message in flight is answered; what was acknowledged.
    func stop() -> [(payload: String, sentAt: Date, ackedAt: Date)] {
        lock.withLock { stopFlag = true }
        _ = done.wait(timeout: .now() + 70)
        return lock.withLock { acks }
    }

    var acknowledged: Int { lock.withLock { acks.count } }
}
