import Foundation
import MQTTCodec
import XCTest

/// Several nodes on one Redis, as a fleet runs behind a balancer: a client id that
/// connects to another node ends its old connection (3.1.4-2 across nodes), and a
/// PUBLISH to a pile's command topic reaches the pile on whichever node holds it.
final class FleetTests: XCTestCase {
    var redis: RedisServer!
    var nodes: [Gateway] = []

    override func setUpWithError() throws { redis = try RedisServer() }
    override func tearDown() {
        for n in nodes { XCTAssertEqual(n.stop(), 0) }
        redis = nil
    }

    /// `admin`: [admin] keys; `extra`: tables after [redis].
    func node(_ name: String, admin: String = "", _ extra: String = "") throws -> Gateway {
        let g = try Gateway(config: "\(admin)[redis]\naddress = \"\(redis.address)\"\n\(extra)", node: name)
        nodes.append(g)
        XCTAssertNotNil(g.waitForLog("connected to redis"), g.logText)
        return g
    }

    func connect(_ g: Gateway, _ id: String, clean: Bool = true, will: Will? = nil) throws -> RawClient {
        let c = try RawClient(port: g.port)
        XCTAssertEqual(c.connect(Connect(cleanSession: clean, keepAlive: 60, clientID: id, will: will))?.returnCode, .accepted)
        return c
    }

    func presence(_ id: String) throws -> String? { try redis.command(["HGET", "pilegate:presence", id]).text }

    /// The old connection on node A ends within a second of the CONNECT on node B,
    /// with its will, and its persistent session does not stay behind on A.
    func testTakeoverAcrossNodes() throws {
        let a = try node("node-a"), b = try node("node-b")
        let will = Will(topic: "/xjdy/ops/v1/TCU/AAAAAJQX/will", payload: Array("gone".utf8), qos: .atLeastOnce, retain: false)
        let old = try connect(a, "AAAAAJQX", clean: false, will: will)
        XCTAssertTrue(try redis.waitUntil { try self.presence("AAAAAJQX")?.hasPrefix("node-a|") == true })
        let started = Date()
        let new = try connect(b, "AAAAAJQX", clean: false)
        XCTAssertTrue(old.waitClosed(), "node A closes the old connection")
        XCTAssertLessThan(Date().timeIntervalSince(started), 2)
        XCTAssertNotNil(a.waitForLog("disconnected: client id connected to another node"))
        XCTAssertTrue(try redis.waitUntil { try self.presence("AAAAAJQX")?.hasPrefix("node-b|") == true }, "presence is B's")
        // Node A writes the will and the disconnect event after it closes the socket:
        // wait for them rather than read the stream once.
        func events() throws -> [[String: String]] {
            try redis.entries("pilegate:events").map { $0.fields.mapValues { String(decoding: $0, as: UTF8.self) } }
        }
        XCTAssertTrue(try redis.waitUntil { try events().contains { $0["type"] == "will" && $0["node"] == "node-a" } }, "\((try? events()) ?? [])")
        XCTAssertTrue(try redis.waitUntil { try events().contains { $0["type"] == "disconnect" && $0["reason"] == "takeover_remote" } },
                      "\((try? events()) ?? [])")
        XCTAssertTrue(try redis.waitUntil { metricValue(try http(XCTUnwrap(a.adminPort), "/metrics").body, "pilegate_sessions") == 0 },
                      "the session moved with the pile")
        // The new connection is not touched by its own claim.
        new.send(.pingreq)
        XCTAssertEqual(new.receive(), .pingresp)

        // A session parked on B (the pile went away) is dropped when the pile shows up on A.
        new.send(.disconnect)
        XCTAssertTrue(new.waitClosed())
        XCTAssertTrue(try redis.waitUntil { metricValue(try http(XCTUnwrap(b.adminPort), "/metrics").body, "pilegate_sessions") == 1 })
        _ = try connect(a, "AAAAAJQX", clean: true)
        XCTAssertTrue(try redis.waitUntil { metricValue(try http(XCTUnwrap(b.adminPort), "/metrics").body, "pilegate_sessions") == 0 })
    }

    /// An operator's wildcard subscription on node A sees the piles of node B too,
    /// each message once; its own node's piles it sees directly, not twice.
    func testAWildcardSubscriberSeesTheWholeFleet() throws {
        let a = try node("node-a"), b = try node("node-b")
        let sub = try Background("mosquitto_sub", ["-h", "127.0.0.1", "-p", "\(a.port)", "-q", "1", "-v", "-W", "4",
                                                   "-t", "/xjdy/ops/v1/TCU/+/msg"])
        XCTAssertNotNil(a.waitSubscribed("/xjdy/ops/v1/TCU/+/msg"))
        usleep(300_000)   // the feed's first read starts from the streams' ends
        for (g, id) in [(a, "AAAAAAAA"), (b, "BBBBBBBB")] {
            try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(g.port)", "-i", id, "-q", "1",
                                        "-t", "/xjdy/ops/v1/TCU/\(id)/msg", "-m", "from \(id)"])
        }
        let lines = sub.finish(timeout: 10).split(separator: "\n").sorted()
        XCTAssertEqual(lines, ["/xjdy/ops/v1/TCU/AAAAAAAA/msg from AAAAAAAA", "/xjdy/ops/v1/TCU/BBBBBBBB/msg from BBBBBBBB"])
    }

    /// Every node says where it stands; the console's fleet view reads it from any node.
    func testEachNodeIsListedInTheFleetView() throws {
        let a = try node("node-a", admin: "token = \"t\"\n"), b = try node("node-b")
        let pile = try connect(b, "AAAAAAAB")
        let admin = try XCTUnwrap(a.adminPort)
        XCTAssertTrue(try redis.waitUntil(8) {
            let body = try http(admin, "/admin/fleet", token: "t").body
            return body.contains(#""node":"node-a""#) && body.contains(#""connections":"1""#) && body.contains(#""node":"node-b""#)
        }, (try? http(admin, "/admin/fleet", token: "t").body) ?? "")
        XCTAssertTrue(try http(admin, "/admin/fleet", token: "t").body.contains(#""state":"ready""#))
        _ = pile
    }

    /// Clean sessions too: the old connection goes, nothing is kept on either side
    /// but the new connection.
    func testCleanSessionTakeoverAcrossNodes() throws {
        let a = try node("node-a"), b = try node("node-b")
        let old = try connect(a, "AAAAAAAC")
        XCTAssertTrue(try redis.waitUntil { try self.presence("AAAAAAAC")?.hasPrefix("node-a|") == true })
        let new = try connect(b, "AAAAAAAC")
        XCTAssertTrue(old.waitClosed())
        XCTAssertTrue(try redis.waitUntil { metricValue(try http(XCTUnwrap(a.adminPort), "/metrics").body, "pilegate_sessions") == 0 })
        new.send(.pingreq)
        XCTAssertEqual(new.receive(), .pingresp)
    }

    /// A wildcard subscriber on A that stops reading: the other node's uplink reaches
    /// it through the same bounded queue as local messages, so past the bound it is
    /// dropped and counted, and A serves on.
    func testASlowFleetSubscriberIsBoundedByItsQueue() throws {
        let a = try node("node-a", "[acl.roles.operator]\npublish = [\"#\"]\nsubscribe = [\"#\"]\nmax_queued_messages = 10\n"
                         + "[acl.roles.pile]\npublish = [\"/xjdy/ops/v1/TCU/%c/msg\"]\nsubscribe = [\"/xjdy/ops/v1/TCU/%c/cmd\"]\n")
        let b = try node("node-b")
        let slow = try connect(a, "operator-slow")
        slow.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/+/msg", .atLeastOnce)])))
        guard case .suback = slow.receive() else { throw Failure("no SUBACK") }
        usleep(500_000)   // the feed's first read
        let pile = try connect(b, "BBBBBBBB")
        for i in 1...100 {
            pile.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/BBBBBBBB/msg", payload: Array("m\(i)".utf8), qos: .atLeastOnce,
                                       packetID: UInt16(i))))
            XCTAssertEqual(pile.receive(), .puback(UInt16(i)))
        }
        // 32 in flight (never acknowledged), 10 queued, the rest dropped and counted.
        XCTAssertTrue(try redis.waitUntil {
            metricValue(try http(XCTUnwrap(a.adminPort), "/metrics").body, #"pilegate_queue_drops_total{reason="queue_messages"}"#) == 58
        })
        XCTAssertNoThrow(try connect(a, "AAAAAAAA"), "node A serves on")
    }

    /// `mosquitto_pub` on node A to a pile's command topic, the pile on node B: B
    /// delivers it as a command, and its outcome is `acked` once the pile acknowledges.
    func testACommandPublishedOnOneNodeReachesAPileOnAnother() throws {
        let a = try node("node-a"), b = try node("node-b")
        let pile = try connect(b, "AAAAAJQX")
        pile.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/AAAAAJQX/cmd", .atLeastOnce)])))
        guard case .suback = pile.receive() else { throw Failure("no SUBACK") }
        XCTAssertTrue(try redis.waitUntil { try self.presence("AAAAAJQX")?.hasPrefix("node-b|") == true })
        let command = #"{"命令":"下载","reqid":2}"#
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(a.port)", "-q", "1",
                                    "-t", "/xjdy/ops/v1/TCU/AAAAAJQX/cmd", "-m", command])
        guard case .publish(let p) = pile.receive(timeout: 5) else { throw Failure("the pile on B got nothing") }
        XCTAssertEqual(p.payload, Array(command.utf8))
        XCTAssertEqual(p.qos, .atLeastOnce)
        pile.send(.puback(p.packetID))
        XCTAssertTrue(try redis.waitUntil {
            try redis.entries("pilegate:down:outcome").contains {
                String(decoding: $0.fields["outcome"] ?? [], as: UTF8.self) == "acked"
                    && String(decoding: $0.fields["node"] ?? [], as: UTF8.self) == "node-b"
            }
        })
        XCTAssertNil(pile.receive(timeout: 0.5), "once, not also as a copy")
        // A pile on the publishing node itself gets it directly, not through Redis.
        let local = try connect(a, "AAAAAAAB")
        local.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/AAAAAAAB/cmd", .atLeastOnce)])))
        guard case .suback = local.receive() else { throw Failure("no SUBACK") }
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(a.port)", "-q", "1", "-t", "/xjdy/ops/v1/TCU/AAAAAAAB/cmd", "-m", "x"])
        guard case .publish = local.receive(timeout: 5) else { throw Failure("local pile got nothing") }
        XCTAssertEqual(try redis.command(["XLEN", "pilegate:down:node-a"]).int ?? 0, 0, "nothing forwarded for a local pile")
    }
}
