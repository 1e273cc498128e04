import Foundation
import MQTTCodec
import XCTest
@testable import Gateway

/// Credentials and per-device ACLs, with real clients.
final class SecurityTests: XCTestCase {
    var gw: Gateway?
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "pilegate-sec-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try writeTestPasswords("\(dir!)/passwd")
    }

    override func tearDown() {
        if let gw { XCTAssertEqual(gw.stop(), 0) }
        try? FileManager.default.removeItem(atPath: dir)
    }

    func start(anonymous: String = "false") throws -> Gateway {
        let g = try Gateway(config: """
        [redis]
        enabled = false
        [auth]
        allow_anonymous = "\(anonymous)"
        password_file = "\(dir!)/passwd"
        [acl.users]
        op1 = "operator"
        """)
        gw = g
        return g
    }

    func connect(_ g: Gateway, _ id: String, user: String?, password: String?) throws -> (RawClient, ConnectReturnCode?) {
        let c = try RawClient(port: g.port)
        let ack = c.connect(Connect(clientID: id, username: user, password: password.map { Array($0.utf8) }))
        return (c, ack?.returnCode)
    }

    func testCredentialsFromBothToolsAndRefusals() throws {
        let g = try start()
        XCTAssertEqual(try connect(g, "AAAAAJQX", user: "AAAAAJQX", password: "pile-secret").1, .accepted, "mosquitto_passwd entry")
        XCTAssertEqual(try connect(g, "AAAAAAAB", user: "AAAAAAAB", password: "other-secret").1, .accepted, "pilegate passwd entry")
        XCTAssertEqual(try connect(g, "AAAAAJQX", user: "AAAAAJQX", password: "wrong").1, .badUsernameOrPassword)
        XCTAssertEqual(try connect(g, "ZZZZZZZZ", user: "ZZZZZZZZ", password: "pile-secret").1, .badUsernameOrPassword)
        XCTAssertEqual(try connect(g, "anon", user: nil, password: nil).1, .notAuthorized, "anonymous off")
        // a cached verification must not let a different password through
        XCTAssertEqual(try connect(g, "AAAAAJQX", user: "AAAAAJQX", password: "pile-secret").1, .accepted)
        XCTAssertEqual(try connect(g, "AAAAAJQX", user: "AAAAAJQX", password: "pile-secret2").1, .badUsernameOrPassword)
        // ordinary tools
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(g.port)", "-i", "AAAAAAAB", "-u", "AAAAAAAB", "-P", "other-secret",
                                    "-t", "/xjdy/ops/v1/TCU/AAAAAAAB/msg", "-m", "x", "-q", "1"])
        XCTAssertThrowsError(try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(g.port)", "-i", "AAAAAAAB", "-u", "AAAAAAAB",
                                                         "-P", "nope", "-t", "/xjdy/ops/v1/TCU/AAAAAAAB/msg", "-m", "x"]))
        XCTAssertGreaterThanOrEqual(try g.counterWithAuth("authFailures"), 4)
    }

    func testAPileStaysOnItsOwnTopics() throws {
        let g = try start(anonymous: "loopback")
        let (op, _) = try connect(g, "ops-console", user: "op1", password: "op secret")
        op.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/+/#", .atLeastOnce)])))
        XCTAssertEqual(op.receive(), .suback(Suback(packetID: 1, returnCodes: [1])), "operator role gets wildcards")
        let (pile, rc) = try connect(g, "AAAAAJQX", user: "AAAAAJQX", password: "pile-secret")
        XCTAssertEqual(rc, .accepted)
        pile.send(.subscribe(Subscribe(packetID: 2, topics: [
            TopicRequest("/xjdy/ops/v1/TCU/AAAAAJQX/cmd", .atLeastOnce),   // its own: granted
            TopicRequest("/xjdy/ops/v1/TCU/AAAAAAAB/cmd", .atLeastOnce),   // another pile's: 0x80
            TopicRequest("/xjdy/ops/v1/TCU/+/cmd", .atLeastOnce),          // a wildcard over others: 0x80
            TopicRequest("#", .atMostOnce),
        ])))
        XCTAssertEqual(pile.receive(), .suback(Suback(packetID: 2, returnCodes: [1, 0x80, 0x80, 0x80])))
        // Publishing as another pile: acknowledged (3.1.1), dropped, counted.
        pile.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAAAB/msg", payload: Array("forged".utf8), qos: .atLeastOnce, packetID: 7)))
        XCTAssertEqual(pile.receive(), .puback(7))
        pile.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAJQX/msg", payload: Array("mine".utf8), qos: .atLeastOnce, packetID: 8)))
        XCTAssertEqual(pile.receive(), .puback(8))
        guard case .publish(let p) = op.receive() else { return XCTFail("operator got nothing") }
        XCTAssertEqual(p.payload, Array("mine".utf8), "the forged message never reached anyone")
        XCTAssertNotNil(g.waitForLog("denied (publish_acl): PUBLISH to /xjdy/ops/v1/TCU/AAAAAAAB/msg: ACL: role pile may not publish here"))
        // Anonymous on loopback (the default) is the operator role: the local debugging path.
        XCTAssertEqual(try connect(g, "local-debug", user: nil, password: nil).1, .accepted)
    }

    func testACLPatternsCoverOnlyWhatTheyName() {
        var c = Config.ACL()
        c.roles["reader"] = Config.Role(publish: [], subscribe: ["site/%u/#", "$SYS/broker/+"])
        let acl = ACL(c)
        let pile = acl.role(username: "AAAAAJQX", authenticated: true)
        XCTAssertEqual(acl.roleName(pile), "pile")
        func sub(_ r: UInt16, _ f: String, _ id: String = "AAAAAJQX", _ u: String? = "AAAAAJQX") -> Bool {
            acl.maySubscribe(r, filter: f, clientID: id, username: u)
        }
        XCTAssertTrue(sub(pile, "/xjdy/ops/v1/TCU/AAAAAJQX/cmd"))
        XCTAssertFalse(sub(pile, "/xjdy/ops/v1/TCU/AAAAAJQX/#"))
        XCTAssertFalse(sub(pile, "/xjdy/ops/v1/TCU/+/cmd"))
        XCTAssertFalse(sub(pile, "/xjdy/ops/v1/TCU/AAAAAJQX/cmd/x"))
        XCTAssertTrue(acl.mayPublish(pile, topic: "/xjdy/ops/v1/TCU/AAAAAJQX/msg", clientID: "AAAAAJQX", username: nil))
        XCTAssertFalse(acl.mayPublish(pile, topic: "/xjdy/ops/v1/TCU/AAAAAJQY/msg", clientID: "AAAAAJQX", username: nil))
        let op = acl.role(username: nil, authenticated: false)
        XCTAssertEqual(acl.roleName(op), "operator")
        XCTAssertTrue(sub(op, "#"))
        XCTAssertTrue(sub(op, "+/x/#"))
        XCTAssertTrue(sub(op, "$SYS/#"), "named by its own pattern")
        let reader = UInt16(["operator", "pile", "reader"].firstIndex(of: "reader")!)
        XCTAssertTrue(sub(reader, "site/bob/#", "c1", "bob"))
        XCTAssertTrue(sub(reader, "site/bob/a/+", "c1", "bob"))
        XCTAssertFalse(sub(reader, "site/+/#", "c1", "bob"))
        XCTAssertFalse(sub(reader, "site/bob/#", "c1", nil), "%u needs a user name")
        XCTAssertTrue(sub(reader, "$SYS/broker/uptime", "c1", "bob"))
        XCTAssertFalse(sub(reader, "$SYS/broker/#", "c1", "bob"))
    }

    func testAnonymousPolicyFollowsThePeer() throws {
        func check(_ policy: String, loopback: Bool) throws -> ConnectReturnCode? {
            var a = Config.Auth()
            a.allowAnonymous = policy
            var p = Peer()
            p.isLoopback = loopback
            if case .refused(let code, _) = try Authenticator(config: a).check(username: nil, password: nil, peer: p) {
                return code
            }
            return nil
        }
        XCTAssertNil(try check("loopback", loopback: true))
        XCTAssertEqual(try check("loopback", loopback: false), .notAuthorized)
        XCTAssertNil(try check("true", loopback: false))
        XCTAssertEqual(try check("false", loopback: true), .notAuthorized)
    }

    /// `pilegate passwd FILE --import`: 2,000 piles from USER:PASSWORD / USER,PASSWORD
    /// lines in one write; a bad line leaves the file as it was.
    func testBulkImportOfPasswords() throws {
        let file = "\(dir!)/passwd"
        let lines = (0..<2000).map { i in String(format: "PILE%04d", i) + (i % 2 == 0 ? ":" : ",") + "secret-\(i)" }
        try (lines.joined(separator: "\n") + "\n").write(toFile: "\(dir!)/piles.txt", atomically: true, encoding: .utf8)
        let out = try shell("sh", ["-c", "\(Gateway.binary.path) passwd \(file) --import < \(dir!)/piles.txt"], timeout: 120)
        XCTAssertTrue(out.contains("2000 users imported"), out)
        XCTAssertEqual(try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").count, 2003,
                       "the 3 users there before, and 2,000 more")
        chmod(file, 0o640)
        try shell(Gateway.binary.path, ["passwd", file, "PILE0001", "--password", "secret-1"])
        var st = stat()
        XCTAssertEqual(stat(file, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o640, "an edit keeps the file's mode")
        let before = try String(contentsOfFile: file, encoding: .utf8)
        try "PILE9999:ok\nno separator here\n".write(toFile: "\(dir!)/bad.txt", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try shell("sh", ["-c", "\(Gateway.binary.path) passwd \(file) --import < \(dir!)/bad.txt"]))
        XCTAssertEqual(try String(contentsOfFile: file, encoding: .utf8), before, "unchanged by a bad import")
        let g = try start()
        XCTAssertEqual(try connect(g, "PILE0042", user: "PILE0042", password: "secret-42").1, .accepted)
        XCTAssertEqual(try connect(g, "PILE1999", user: "PILE1999", password: "secret-1999").1, .accepted)
        XCTAssertEqual(try connect(g, "PILE0043", user: "PILE0043", password: "secret-42").1, .badUsernameOrPassword)
    }
}

extension SecurityTests {
    /// Credentials held in a Redis hash (the same `$7$` entries), read through the
    /// bridge and cached: found, wrong, unknown, changed in Redis, Redis away.
    func testCredentialsFromARedisHash() throws {
        let redis = try RedisServer()
        let entry = try String(contentsOfFile: "\(dir!)/passwd", encoding: .utf8)
            .split(separator: "\n").first { $0.hasPrefix("AAAAAJQX:") }!.dropFirst("AAAAAJQX:".count)
        _ = try redis.command(["HSET", "pilegate:credentials", "REDISPILE", String(entry)])
        let g = try Gateway(config: """
        [redis]
        address = "\(redis.address)"
        [auth]
        allow_anonymous = "false"
        redis_hash = "pilegate:credentials"
        cache_seconds = 1
        """)
        gw = g
        // Every shard's connection up (4 shards and the downlink reader): a CONNECT on a
        // shard still in its handshake is refused as "credential store unreachable".
        let deadline = Date().addingTimeInterval(10)
        while g.logText.components(separatedBy: "connected to redis").count - 1 < 5 && Date() < deadline { usleep(20_000) }
        XCTAssertEqual(try connect(g, "REDISPILE", user: "REDISPILE", password: "pile-secret").1, .accepted)
        XCTAssertEqual(try connect(g, "REDISPILE", user: "REDISPILE", password: "nope").1, .badUsernameOrPassword)
        XCTAssertEqual(try connect(g, "GHOST", user: "GHOST", password: "x").1, .badUsernameOrPassword, "not in the hash")
        // Change the password in Redis: the old one stops working once the cached entry ages out.
        var other = PasswordFile()
        other.set("REDISPILE", password: "rotated")
        _ = try redis.command(["HSET", "pilegate:credentials", "REDISPILE",
                               String(other.text.dropFirst("REDISPILE:".count).dropLast())])
        sleep(2)
        XCTAssertEqual(try connect(g, "REDISPILE", user: "REDISPILE", password: "pile-secret").1, .badUsernameOrPassword)
        XCTAssertEqual(try connect(g, "REDISPILE", user: "REDISPILE", password: "rotated").1, .accepted)
        // Redis away: a known (cached) pile still gets in; an unknown one gets CONNACK 3.
        redis.stop()
        sleep(2)
        XCTAssertEqual(try connect(g, "REDISPILE", user: "REDISPILE", password: "rotated").1, .accepted, "stale entry used")
        XCTAssertEqual(try connect(g, "NEWPILE", user: "NEWPILE", password: "x").1, .serverUnavailable)
    }

    func testBoundedCacheStaysBounded() {
        var c = BoundedCache<Int, Int>(capacity: 100)
        for i in 0..<10_000 {
            c.set(i, i)
            _ = c.get(0)   // a hot key survives every generation change
        }
        XCTAssertLessThanOrEqual(c.count, 100)
        XCTAssertEqual(c.get(0), 0)
        XCTAssertEqual(c.get(9_999), 9_999)
        XCTAssertNil(c.get(5_000))
    }
}

extension Gateway {
    /// $SYS counters are readable by the operator role: read one as op1.
    func counterWithAuth(_ name: String) throws -> UInt64 {
        let out = try shell("mosquitto_sub", ["-p", "\(port)", "-h", "127.0.0.1", "-u", "op1", "-P", "op secret",
                                              "-t", "$SYS/broker/counters/\(name)", "-C", "1", "-W", "5"])
        return UInt64(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

}
