import Foundation
import MQTTCodec
import XCTest
@testable import Gateway

/// Deny rules inside wider grants, and piles bound to their own client id.
final class ACLDenyTests: XCTestCase {
    var gw: Gateway?
    var redis: RedisServer?
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "pilegate-deny-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try writeTestPasswords("\(dir!)/passwd")
    }

    override func tearDown() {
        if let gw { XCTAssertEqual(gw.stop(), 0, "clean exit on SIGTERM") }
        redis = nil
        try? FileManager.default.removeItem(atPath: dir)
    }

    func connect(_ g: Gateway, _ id: String, user: String? = nil, password: String? = nil) throws -> (RawClient, ConnectReturnCode?) {
        let c = try RawClient(port: g.port)
        return (c, c.connect(Connect(clientID: id, username: user, password: password.map { Array($0.utf8) }))?.returnCode)
    }

    // MARK: Deny rules

    func testDenyPatternsWinInsideWiderGrants() {
        var c = Config.ACL()
        c.roles["ops"] = Config.Role(publish: ["#"], subscribe: ["#"], denyPublish: ["/xjdy/ops/v1/TCU/+/cmd"],
                                     denySubscribe: ["/xjdy/ops/v1/TCU/AAAAAAAS/#", "private/%c/#"])
        let acl = ACL(c)
        let ops = UInt16(["operator", "ops", "pile"].firstIndex(of: "ops")!)
        func denies(_ f: String) -> Bool { acl.deniesSubscribe(ops, filter: f, clientID: "watcher", username: nil) }
        XCTAssertTrue(denies("/xjdy/ops/v1/TCU/AAAAAAAS/msg"), "inside the denied filter")
        XCTAssertTrue(denies("/xjdy/ops/v1/TCU/AAAAAAAS/#"))
        XCTAssertTrue(denies("/xjdy/ops/v1/TCU/AAAAAAAS/+"))
        XCTAssertTrue(denies("/xjdy/ops/v1/TCU/AAAAAAAS"), "the parent level: a/# matches a (4.7.1.2)")
        XCTAssertTrue(denies("private/watcher/x"), "%c is the client's own id")
        XCTAssertFalse(denies("private/other/x"))
        XCTAssertFalse(denies("/xjdy/ops/v1/TCU/+/msg"), "wider: granted, filtered per message")
        XCTAssertFalse(denies("#"))
        XCTAssertFalse(denies("/xjdy/ops/v1/TCU/AAAAAAAT/msg"))
        XCTAssertTrue(acl.filtersDeliveries(ops))
        XCTAssertFalse(acl.mayReceive(ops, topic: "/xjdy/ops/v1/TCU/AAAAAAAS/msg", clientID: "watcher", username: nil))
        XCTAssertTrue(acl.mayReceive(ops, topic: "/xjdy/ops/v1/TCU/AAAAAAAT/msg", clientID: "watcher", username: nil))
        XCTAssertFalse(acl.mayPublish(ops, topic: "/xjdy/ops/v1/TCU/AAAAAAAT/cmd", clientID: "watcher", username: nil))
        XCTAssertTrue(acl.mayPublish(ops, topic: "/xjdy/ops/v1/TCU/AAAAAAAT/msg", clientID: "watcher", username: nil))
        let op = UInt16(["operator", "ops", "pile"].firstIndex(of: "operator")!)
        XCTAssertFalse(acl.filtersDeliveries(op), "no deny rules: no per-message check")
    }

    func testDenyRulesThroughRealClients() throws {
        let g = try Gateway(config: """
        [redis]
        enabled = false
        [acl]
        anonymous_role = "ops"
        [acl.roles.ops]
        publish = ["#"]
        subscribe = ["#", "$SYS/#"]
        deny_publish = ["/xjdy/ops/v1/TCU/+/cmd"]
        deny_subscribe = ["/xjdy/ops/v1/TCU/AAAAAAAS/#"]
        [acl.roles.pile]
        publish = ["/xjdy/ops/v1/TCU/%c/msg"]
        subscribe = ["/xjdy/ops/v1/TCU/%c/cmd"]
        """)
        gw = g
        let (watcher, rc) = try connect(g, "watcher")
        XCTAssertEqual(rc, .accepted)
        watcher.send(.subscribe(Subscribe(packetID: 1, topics: [
            TopicRequest("/xjdy/ops/v1/TCU/AAAAAAAS/msg", .atLeastOnce),   // the denied topic itself: 0x80
            TopicRequest("/xjdy/ops/v1/TCU/AAAAAAAS/#", .atLeastOnce),     // the denied filter: 0x80
            TopicRequest("/xjdy/ops/v1/TCU/+/msg", .atLeastOnce),          // overlaps: granted
            TopicRequest("#", .atMostOnce),                                // overlaps: granted
        ])))
        XCTAssertEqual(watcher.receive(), .suback(Suback(packetID: 1, returnCodes: [0x80, 0x80, 1, 0])))
        XCTAssertNotNil(g.waitForLog("SUBSCRIBE to /xjdy/ops/v1/TCU/AAAAAAAS/msg: ACL: role ops denies this filter (deny_subscribe)"))
        // A retained message on the denied topic, then live traffic on both.
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(g.port)", "-t", "/xjdy/ops/v1/TCU/AAAAAAAS/msg", "-m", "secret", "-r", "-q", "1"])
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(g.port)", "-t", "/xjdy/ops/v1/TCU/AAAAAAAT/msg", "-m", "open", "-q", "1"])
        guard case .publish(let p) = watcher.receive(timeout: 2) else { return XCTFail("the allowed topic was not delivered") }
        XCTAssertEqual(p.topic, "/xjdy/ops/v1/TCU/AAAAAAAT/msg")
        XCTAssertEqual(p.qos, .atLeastOnce, "one copy, at the highest matching QoS (3.3.5)")
        watcher.send(.puback(p.packetID))
        XCTAssertNil(watcher.receive(timeout: 0.5), "the denied topic never arrives through a wider filter")
        XCTAssertGreaterThanOrEqual(try g.waitForCounter("deliveriesDenied", atLeast: 1), 1)
        // A later subscriber gets no retained message from the denied topic either.
        let late = try connect(g, "late").0
        late.send(.subscribe(Subscribe(packetID: 2, topics: [TopicRequest("/xjdy/ops/v1/TCU/+/msg", .atMostOnce)])))
        XCTAssertEqual(late.receive(), .suback(Suback(packetID: 2, returnCodes: [0])))
        XCTAssertNil(late.receive(timeout: 0.5), "retained message on a denied topic withheld")
        // deny_publish: acknowledged (3.1.1 has no other answer), dropped, counted.
        watcher.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAAAT/cmd", payload: Array("forged".utf8), qos: .atLeastOnce, packetID: 9)))
        XCTAssertEqual(watcher.receive(), .puback(9))
        XCTAssertNotNil(g.waitForLog("denied (publish_acl): PUBLISH to /xjdy/ops/v1/TCU/AAAAAAAT/cmd"))
    }

    // MARK: Client id bound to the user name

    func start(_ extra: String = "") throws -> Gateway {
        let r = try RedisServer()
        redis = r
        let g = try Gateway(config: """
        [redis]
        address = "\(r.address)"
        [auth]
        allow_anonymous = "false"
        password_file = "\(dir!)/passwd"
        [acl.users]
        op1 = "operator"
        \(extra)
        """)
        gw = g
        return g
    }

    func testAPileCannotBorrowAnotherPilesClientID() throws {
        let g = try start()
        let (_, rc) = try connect(g, "AAAAAAAB", user: "AAAAAJQX", password: "pile-secret")
        XCTAssertEqual(rc, .notAuthorized, "A's password with B's id: CONNACK 5")
        XCTAssertNotNil(g.waitForLog("denied (client_id): CONNECT refused (notAuthorized): client id AAAAAAAB is not the user name AAAAAJQX"))
        XCTAssertThrowsError(try shell("mosquitto_sub", ["-h", "127.0.0.1", "-p", "\(g.port)", "-i", "AAAAAAAB", "-u", "AAAAAJQX",
                                                         "-P", "pile-secret", "-t", "/xjdy/ops/v1/TCU/AAAAAAAB/cmd", "-C", "1", "-W", "3"]),
                             "a real client gets the refusal too")
        XCTAssertEqual(try connect(g, "AAAAAJQX", user: "AAAAAJQX", password: "pile-secret").1, .accepted, "its own id")
        XCTAssertEqual(try connect(g, "console-7", user: "op1", password: "op secret").1, .accepted,
                       "a role without %c patterns may use any id")
        let r = try XCTUnwrap(redis)
        XCTAssertTrue(try r.waitUntil {
            try r.entries("pilegate:events").contains {
                $0.fields["type"] == Array("denied".utf8) && $0.fields["kind"] == Array("client_id".utf8)
                    && $0.fields["device"] == Array("AAAAAAAB".utf8)
            }
        }, "a denied event")
        let metrics = try http(try XCTUnwrap(g.adminPort), "/metrics").body
        XCTAssertEqual(metricValue(metrics, "pilegate_client_id_refusals_total"), 2)
    }

    func testTheBindingCanBeSwitchedOffPerRole() throws {
        let g = try start("""
        [acl.roles.pile]
        publish = ["/xjdy/ops/v1/TCU/%c/msg"]
        subscribe = ["/xjdy/ops/v1/TCU/%c/cmd"]
        bind_client_id = false
        [acl.roles.operator]
        publish = ["#"]
        subscribe = ["#"]
        """)
        let (c, rc) = try connect(g, "pile-0042", user: "AAAAAJQX", password: "pile-secret")
        XCTAssertEqual(rc, .accepted, "another id scheme, allowed where the switch is off")
        c.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/pile-0042/cmd", .atLeastOnce),
                                                         TopicRequest("/xjdy/ops/v1/TCU/AAAAAJQX/cmd", .atLeastOnce)])))
        XCTAssertEqual(c.receive(), .suback(Suback(packetID: 1, returnCodes: [1, 0x80])), "%c is the id it presented")
    }
}
