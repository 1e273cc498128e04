import Foundation
import Glibc
import MQTTCodec
import XCTest
@testable import Gateway

/// The gateway on a real Redis Cluster (ClusterFixture.swift): the data path, a
/// resharding step and a master's death under load, a cluster without quorum, and
/// the startup errors of a wrong `[redis] cluster` setting.
final class ClusterTests: XCTestCase {
    var cluster: RedisClusterFixture!
    var gw: Gateway?

    override func setUpWithError() throws { cluster = try RedisClusterFixture() }

    override func tearDown() {
        if let gw { XCTAssertEqual(gw.stop(), 0, "clean exit on SIGTERM") }
        cluster = nil
    }

    func startGateway(_ extra: String = "") throws -> Gateway {
        let g = try Gateway(config: """
        [redis]
        cluster = true
        address = "\(cluster.seeds)"
        max_inflight = 200
        \(extra)
        """)
        gw = g
        XCTAssertNotNil(g.waitForLog("redis cluster (uplink): 3 masters", timeout: 10), g.logText)
        XCTAssertTrue(cluster.nodes[0].waitUntil { (try? http(g.adminPort!, "/readyz").status) == 200 }, g.logText)
        return g
    }

    static let partitions = (0..<16).map { "pilegate:up:{\($0)}" }

    /// Every uplink payload in the cluster (all partitions), with the stream it is in.
    func storedPayloads() throws -> [String: String] {
        var out: [String: String] = [:]
        for s in Self.partitions {
            for e in try cluster.entries(s) { out[String(decoding: e.fields["payload"] ?? [], as: UTF8.self)] = s }
        }
        return out
    }

    func testUplinkDownlinkPresenceAndEventsOnACluster() throws {
        let g = try startGateway("wait_replicas = 1")
        var piles: [RawClient] = []
        for i in 0..<12 {
            let id = String(format: "CL%02d", i)
            let c = try RawClient(port: g.port)
            XCTAssertEqual(c.connect(Connect(cleanSession: true, keepAlive: 30, clientID: id))?.returnCode, .accepted)
            c.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/\(id)/msg", payload: Array("m-\(id)".utf8), qos: .atLeastOnce, packetID: 7)))
            XCTAssertEqual(c.receive(timeout: 5), .puback(7))
            piles.append(c)
        }
        let stored = try storedPayloads()
        XCTAssertEqual(Set(stored.keys), Set((0..<12).map { String(format: "m-CL%02d", $0) }))
        let masters = try Set(Set(stored.values).map { try cluster.master(of: $0).port })
        XCTAssertGreaterThan(masters.count, 1, "partitions spread the uplink over the masters: \(stored)")

        // A resend (DUP=1, same id and payload) is acknowledged and not stored again (Lua on tagged keys).
        piles[0].send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/CL00/msg", payload: Array("m-CL00".utf8), qos: .atLeastOnce,
                                       dup: true, packetID: 7)))
        XCTAssertEqual(piles[0].receive(timeout: 5), .puback(7))
        XCTAssertEqual(metricValue(try http(g.adminPort!, "/metrics").body, "pilegate_uplink_duplicates_total{kind=\"resend\"}"), 1)
        XCTAssertEqual(try storedPayloads().count, 12)

        // Presence and events.
        XCTAssertTrue(try cluster.nodes[0].waitUntil {
            (try self.cluster.command(["HGET", "{pilegate}:presence", "CL03"], key: "{pilegate}:presence").text ?? "").hasPrefix("test-node|")
        })
        XCTAssertTrue(try cluster.nodes[0].waitUntil {
            try self.cluster.entries("pilegate:events").contains { String(decoding: $0.fields["device"] ?? [], as: UTF8.self) == "CL05" }
        })

        // A command through the node's stream, acknowledged by the pile, with its outcome.
        let pile = piles[1]
        pile.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/CL01/cmd", .atLeastOnce)])))
        XCTAssertEqual(pile.receive(timeout: 5), .suback(Suback(packetID: 1, returnCodes: [1])))
        let entry = try cluster.command(["XADD", "{pilegate}:down:test-node", "*", "device", "CL01", "qos", "1", "payload", "hello"],
                                        key: "{pilegate}:down:test-node").text!
        guard case .publish(let cmd) = pile.receive(timeout: 5) else { return XCTFail("no command: \(g.logText)") }
        XCTAssertEqual(cmd.payload, Array("hello".utf8))
        pile.send(.puback(cmd.packetID))
        XCTAssertTrue(try cluster.nodes[0].waitUntil {
            try self.cluster.entries("pilegate:down:outcome").contains {
                String(decoding: $0.fields["id"] ?? [], as: UTF8.self) == entry && $0.fields["outcome"] == Array("acked".utf8)
            }
        }, g.logText)
        XCTAssertEqual(try cluster.command(["HLEN", "pilegate:mail:CL01"], key: "pilegate:mail:CL01").int, 0)

        let metrics = try http(g.adminPort!, "/metrics").body
        XCTAssertEqual(metricValue(metrics, "pilegate_redis_cluster_masters"), 3)
        XCTAssertEqual(metricValue(metrics, "pilegate_redis_cluster_unserved_slots"), 0)
        XCTAssertEqual(try http(g.adminPort!, "/readyz").status, 200)
    }

    /// `redis-cli --cluster reshard` moves the lowest 2,000 slots of a master (the
    /// slots of partitions 3, 10 and 14 among them) while eight piles publish.
    func testReshardingUnderLoadLosesNothingAcknowledged() throws {
        let g = try startGateway()
        let pubs = try (0..<8).map { try AckedPublisher(port: g.port, device: "RS\($0)") }
        let from = try cluster.master(of: "{3}")   // slot 1584
        let to = try cluster.master(of: "{0}")     // slot 13907: another master
        sleep(1)
        _ = try shell("redis-cli", ["--cluster", "reshard", from.address, "--cluster-from", try cluster.id(of: from),
                                    "--cluster-to", try cluster.id(of: to), "--cluster-slots", "2000", "--cluster-yes"], timeout: 120)
        XCTAssertEqual(try cluster.master(of: "{3}").port, to.port, "partition 3 moved")
        sleep(1)
        let acked = pubs.flatMap { $0.stop() }
        XCTAssertGreaterThan(acked.count, 100)
        let stored = try storedPayloads()
        let lost = acked.filter { stored[$0.payload] == nil }
        XCTAssertEqual(lost.count, 0, "acknowledged but not stored: \(lost.prefix(5).map(\.payload))")
        let metrics = try http(g.adminPort!, "/metrics").body
        let redirects = (metricValue(metrics, "pilegate_redis_cluster_redirects_total{kind=\"moved\"}") ?? 0)
            + (metricValue(metrics, "pilegate_redis_cluster_redirects_total{kind=\"ask\"}") ?? 0)
        print("reshard: \(acked.count) acknowledged, all stored; redirects \(redirects)")
        XCTAssertGreaterThan(redirects, 0, "the move was followed by redirects")
    }

    /// SIGKILL of the master holding the busiest uplink stream, with
    /// `wait_replicas = 1`: every acknowledged message survives on the promoted
    /// replica, and the uplink resumes.
    func testMasterKilledUnderLoadWithWaitReplicas() throws {
        let g = try startGateway("wait_replicas = 1")
        let pubs = try (0..<8).map { try AckedPublisher(port: g.port, device: "FO\($0)") }
        sleep(2)
        var counts: [Int: Int] = [:]
        for stream in Self.partitions { counts[Int(try cluster.master(of: stream).port), default: 0] += try cluster.entries(stream).count }
        let busiest = cluster.nodes.first { $0.port == UInt16(counts.max { $0.value < $1.value }!.key) }!
        let killedAt = Date()
        busiest.killHard()
        // Its replica takes over; with no replica left, WAIT cannot confirm its slots
        // until the old master is back (as the new master's replica), as an operator's
        // restart would bring it.
        XCTAssertTrue(cluster.nodes[1].waitUntil(30) { Self.partitions.allSatisfy { (try? self.cluster.master(of: $0)) != nil } })
        let promotedAt = Date()
        sleep(1)
        try busiest.start()
        XCTAssertTrue(cluster.waitHealthy(), "the old master rejoined as a replica")
        let before = pubs.map(\.acknowledged).reduce(0, +)
        XCTAssertTrue(cluster.nodes[1].waitUntil(30) { pubs.map(\.acknowledged).reduce(0, +) > before + 200 }, "the uplink resumed: \(g.logText.suffix(3000))")
        let acked = pubs.flatMap { $0.stop() }
        let resumed = acked.filter { $0.sentAt > killedAt.addingTimeInterval(0.05) }.map(\.ackedAt).min()
        XCTAssertTrue(cluster.waitHealthy())
        let stored = try storedPayloads()
        let lost = acked.filter { stored[$0.payload] == nil }
        XCTAssertEqual(lost.count, 0, "acknowledged but not stored: \(lost.prefix(5).map(\.payload))")
        print(String(format: "failover: %d acknowledged, all stored; replica promoted %.2f s after the SIGKILL; first PUBACK for a message sent after it %.2f s after it",
                     acked.count, promotedAt.timeIntervalSince(killedAt), resumed.map { $0.timeIntervalSince(killedAt) } ?? -1))
        XCTAssertGreaterThan(metricValue(try http(g.adminPort!, "/metrics").body, "pilegate_redis_cluster_failovers_total") ?? 0, 0)
        // Nothing stays unanswered: every command (the cluster's own probes too) is
        // released by a WAIT, so the journals drain and the node is ready again.
        XCTAssertTrue(try cluster.nodes[1].waitUntil(10) {
            metricValue(try http(g.adminPort!, "/metrics").body, "pilegate_redis_inflight_commands") == 0
        }, "every command released")
        XCTAssertEqual(try http(g.adminPort!, "/readyz").status, 200)
    }

    /// Two masters stopped: no slot quorum. Publishes are held, the gateway stays
    /// up (not ready), and everything held is stored once they are back.
    func testNoQuorumHoldsThenRecovers() throws {
        let g = try startGateway()
        let c = try RawClient(port: g.port)
        XCTAssertEqual(c.connect(Connect(cleanSession: true, keepAlive: 60, clientID: "NQ1"))?.returnCode, .accepted)
        let masters = try [cluster.master(of: "{1}"), cluster.master(of: "{3}")]
        XCTAssertNotEqual(masters[0].port, masters[1].port)
        masters.forEach { $0.signal(SIGSTOP) }
        defer { masters.forEach { $0.signal(SIGCONT) } }
        sleep(3)
        for i in 1...5 {
            c.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/NQ1/msg", payload: Array("nq-\(i)".utf8), qos: .atLeastOnce,
                                    packetID: UInt16(i))))
        }
        XCTAssertNil(c.receive(timeout: 3), "held while the cluster has no quorum")
        XCTAssertEqual(try http(g.adminPort!, "/healthz").status, 200)
        XCTAssertEqual(try http(g.adminPort!, "/readyz").status, 503)
        masters.forEach { $0.signal(SIGCONT) }
        var acks: Set<UInt16> = []
        let deadline = Date().addingTimeInterval(30)
        while acks.count < 5 && Date() < deadline { if case .puback(let id) = c.receive(timeout: 1) { acks.insert(id) } }
        XCTAssertEqual(acks, Set(1...5), g.logText.suffix(3000).description)
        let stored = try storedPayloads()
        XCTAssertEqual(Set(stored.keys.filter { $0.hasPrefix("nq-") }), Set((1...5).map { "nq-\($0)" }))
    }

    /// Two nodes on the cluster: credentials from a Redis hash, a takeover across
    /// nodes (presence and the other node's command stream in one script), a command
    /// published on one node for a pile on the other, the fleet feed, daily traffic.
    func testAFleetOnACluster() throws {
        var passwords = PasswordFile()
        passwords.set("CRED1", password: "s3cret")
        try cluster.command(["HSET", "pilegate:credentials", "CRED1", String(passwords.text.dropFirst("CRED1:".count).dropLast())],
                            key: "pilegate:credentials")
        let config = """
        [redis]
        cluster = true
        address = "\(cluster.seeds)"
        [auth]
        allow_anonymous = "true"
        redis_hash = "pilegate:credentials"
        [devices]
        traffic_flush_seconds = 1
        """
        let a = try Gateway(config: config, node: "node-a"), b = try Gateway(config: config, node: "node-b")
        defer { XCTAssertEqual(a.stop(), 0); XCTAssertEqual(b.stop(), 0) }
        for g in [a, b] { XCTAssertTrue(cluster.nodes[0].waitUntil { (try? http(g.adminPort!, "/readyz").status) == 200 }, g.logText) }
        func connect(_ g: Gateway, _ id: String, clean: Bool = true, user: String? = nil, password: String? = nil) throws -> (RawClient, ConnectReturnCode?) {
            let c = try RawClient(port: g.port)
            let code = c.connect(Connect(cleanSession: clean, keepAlive: 60, clientID: id, username: user,
                                         password: password.map { Array($0.utf8) }))?.returnCode
            return (c, code)
        }
        XCTAssertEqual(try connect(a, "CRED1", user: "CRED1", password: "s3cret").1, .accepted)
        XCTAssertEqual(try connect(b, "CRED1", user: "CRED1", password: "wrong").1, .badUsernameOrPassword, b.logText.suffix(3000).description)

        func presence(_ id: String) -> String {
            (try? cluster.command(["HGET", "{pilegate}:presence", id], key: "{pilegate}:presence").text) ?? ""
        }
        let (old, _) = try connect(a, "TK1", clean: false)
        XCTAssertTrue(cluster.nodes[0].waitUntil { presence("TK1").hasPrefix("node-a|") })
        let (new, code) = try connect(b, "TK1", clean: false)
        XCTAssertEqual(code, .accepted)
        XCTAssertTrue(old.waitClosed(), "node A closes the old connection")
        XCTAssertTrue(cluster.nodes[0].waitUntil { presence("TK1").hasPrefix("node-b|") })
        new.send(.pingreq)
        XCTAssertEqual(new.receive(), .pingresp)

        let sub = try Background("mosquitto_sub", ["-h", "127.0.0.1", "-p", "\(a.port)", "-q", "1", "-v", "-W", "5",
                                                   "-t", "/xjdy/ops/v1/TCU/+/msg"])
        XCTAssertNotNil(a.waitSubscribed("/xjdy/ops/v1/TCU/+/msg"))
        usleep(400_000)   // the feed's first poll starts from the streams' ends
        let (pile, _) = try connect(b, "CMD1")
        pile.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/CMD1/cmd", .atLeastOnce)])))
        guard case .suback = pile.receive() else { throw Failure("no SUBACK") }
        pile.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/CMD1/msg", payload: Array("up from b".utf8), qos: .atLeastOnce, packetID: 2)))
        XCTAssertEqual(pile.receive(timeout: 5), .puback(2))
        XCTAssertTrue(cluster.nodes[0].waitUntil { presence("CMD1").hasPrefix("node-b|") })
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(a.port)", "-q", "1", "-t", "/xjdy/ops/v1/TCU/CMD1/cmd", "-m", "go"])
        guard case .publish(let cmd) = pile.receive(timeout: 5) else { throw Failure("the pile on B got nothing: \(a.logText.suffix(2000))") }
        XCTAssertEqual(cmd.payload, Array("go".utf8))
        pile.send(.puback(cmd.packetID))
        XCTAssertTrue(try cluster.nodes[0].waitUntil {
            try self.cluster.entries("pilegate:down:outcome").contains {
                $0.fields["outcome"] == Array("acked".utf8) && $0.fields["node"] == Array("node-b".utf8)
            }
        })
        XCTAssertEqual(sub.finish(timeout: 10).split(separator: "\n"), ["/xjdy/ops/v1/TCU/CMD1/msg up from b"], "the fleet feed")

        XCTAssertTrue(cluster.nodes[0].waitUntil {
            let days = (try? self.cluster.live.flatMap { try $0.command(["KEYS", "pilegate:traffic:*"]).items.compactMap(\.text) }) ?? []
            return days.contains { day in ((try? self.cluster.command(["HGET", day, "CMD1:in"], key: day).text) ?? nil).map { Int($0) ?? 0 > 0 } ?? false }
        }, "daily traffic")
    }

    func testStartupErrors() throws {
        // A standalone Redis named as a cluster: the gateway exits with the reason.
        let standalone = try RedisServer()
        XCTAssertThrowsError(try Gateway(config: "[redis]\ncluster = true\naddress = \"\(standalone.address)\"\n")) { e in
            XCTAssertTrue("\(e)".contains("is not a Redis Cluster"), "\(e)")
        }
        // A seed that is not HOST:PORT: a config error.
        XCTAssertThrowsError(try Gateway(config: "[redis]\ncluster = true\naddress = \"\(cluster.nodes[0].address),nonsense\"\n")) { e in
            XCTAssertTrue("\(e)".contains("seed \"nonsense\" is not HOST:PORT"), "\(e)")
        }
        // Seeds nobody listens on: said at startup, the gateway runs and is not ready.
        let g = try Gateway(config: "[redis]\ncluster = true\naddress = \"127.0.0.1:\(freeLoopbackPort()),127.0.0.1:\(freeLoopbackPort())\"\n")
        gw = g
        XCTAssertNotNil(g.waitForLog("redis cluster: no seed answers"), g.logText)
        XCTAssertEqual(try http(g.adminPort!, "/readyz").status, 503)
    }
}
