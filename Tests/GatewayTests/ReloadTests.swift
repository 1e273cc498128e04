import Foundation
import Glibc
import MQTTCodec
import XCTest

/// Reload without a restart: the real binary, its config file rewritten, SIGHUP or
/// `POST /admin/reload`; real clients stay connected through it.
final class ReloadTests: XCTestCase {
    var gw: Gateway?
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "pilegate-reload-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try writeTestPasswords("\(dir!)/passwd")
    }

    override func tearDown() {
        if let gw { XCTAssertEqual(gw.stop(), 0) }
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Passwords from the file, piles may publish to `publish` (with `%c`), anonymous
    /// loopback clients are operators.
    func config(publish: String = "/xjdy/ops/v1/TCU/%c/msg", extra: String = "") -> String {
        """
        [redis]
        enabled = false
        [auth]
        allow_anonymous = "loopback"
        password_file = "\(dir!)/passwd"
        [acl.roles.pile]
        publish = ["\(publish)"]
        subscribe = ["/xjdy/ops/v1/TCU/%c/cmd"]
        [acl.roles.operator]
        publish = ["#"]
        subscribe = ["#"]
        \(extra)
        """
    }

    func start(_ text: String) throws -> Gateway {
        let g = try Gateway(config: text)
        gw = g
        return g
    }

    func login(_ g: Gateway, _ user: String, _ password: String) throws -> (RawClient, ConnectReturnCode?) {
        let c = try RawClient(port: g.port)
        return (c, c.connect(Connect(clientID: user, username: user, password: Array(password.utf8)))?.returnCode)
    }

    /// A pile added to the password file gets in after SIGHUP; one removed can no
    /// longer connect, and its open connection stays.
    func testThePasswordFileIsReadAgain() throws {
        let g = try start(config())
        XCTAssertEqual(try login(g, "AAAAANEW", "new-secret").1, .badUsernameOrPassword)
        let (kept, code) = try login(g, "AAAAAAAB", "other-secret")
        XCTAssertEqual(code, .accepted)
        try shell(Gateway.binary.path, ["passwd", "\(dir!)/passwd", "AAAAANEW", "--password", "new-secret"])
        try shell(Gateway.binary.path, ["passwd", "\(dir!)/passwd", "AAAAAAAB", "--delete"])
        XCTAssertNotNil(g.sighup(), g.logText)
        XCTAssertEqual(try login(g, "AAAAANEW", "new-secret").1, .accepted)
        XCTAssertEqual(try login(g, "AAAAAAAB", "other-secret").1, .badUsernameOrPassword)
        kept.send(.pingreq)
        XCTAssertEqual(kept.receive(), .pingresp, "the removed pile's open connection stays")
    }

    /// A role's rules change: a connected pile's next PUBLISH is judged by them.
    func testAConnectedPileIsJudgedByTheNewRole() throws {
        let g = try start(config())
        let watcher = try RawClient(port: g.port)
        XCTAssertEqual(watcher.connect(Connect(clientID: "watcher"))?.returnCode, .accepted)
        watcher.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/#", .atMostOnce)])))
        XCTAssertNotNil(watcher.receive())
        let (pile, code) = try login(g, "AAAAAJQX", "pile-secret")
        XCTAssertEqual(code, .accepted)
        func publish(_ topic: String) { pile.send(.publish(Publish(topic: topic, payload: Array("x".utf8)))) }
        publish("/xjdy/ops/v1/TCU/AAAAAJQX/msg")
        guard case .publish(let first) = watcher.receive(timeout: 2) else { return XCTFail("allowed before") }
        XCTAssertEqual(first.topic, "/xjdy/ops/v1/TCU/AAAAAJQX/msg")

        try g.rewriteConfig(config(publish: "/xjdy/ops/v1/TCU/%c/other"))
        XCTAssertNotNil(g.sighup(), g.logText)
        publish("/xjdy/ops/v1/TCU/AAAAAJQX/msg")
        publish("/xjdy/ops/v1/TCU/AAAAAJQX/other")
        guard case .publish(let next) = watcher.receive(timeout: 2) else { return XCTFail("nothing after the reload") }
        XCTAssertEqual(next.topic, "/xjdy/ops/v1/TCU/AAAAAJQX/other", "the old topic is denied now, the new one allowed")
        XCTAssertNotNil(g.waitForLog("PUBLISH to /xjdy/ops/v1/TCU/AAAAAJQX/msg"))
    }

    /// A tightened rate rule catches a pile that is already connected.
    func testATightenedRateRuleCatchesAConnectedPile() throws {
        let loose = "[rate]\nmessages_per_second = 1000\nburst = 1000\naction = \"disconnect\""
        let g = try start(config(extra: loose))
        let (pile, code) = try login(g, "AAAAAJQX", "pile-secret")
        XCTAssertEqual(code, .accepted)
        try g.rewriteConfig(config(extra: "[rate]\nmessages_per_second = 1\nburst = 1\naction = \"disconnect\""))
        XCTAssertNotNil(g.sighup(), g.logText)
        for _ in 0..<5 { pile.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAJQX/msg", payload: [1]))) }
        XCTAssertTrue(pile.waitClosed(), "disconnected by the new rule")
    }

    /// A bad file changes nothing: refused with the reason (admin API: 400), counted,
    /// and the running config stays in force. A change that needs a restart is said.
    func testABadReloadKeepsTheRunningConfig() throws {
        let token = "token = \"t0k\"\n"   // [admin] keys come first
        let g = try start(token + config())
        let admin = try XCTUnwrap(g.adminPort)
        func reload() throws -> (status: Int, body: String) { try http(admin, "/admin/reload", method: "POST", token: "t0k") }
        let bad = [(token + "[auth\n", "line"),
                   (token + config(extra: "bogus_key = 1"), "unknown key acl.roles.operator.bogus_key"),
                   (token + config(extra: "[rate]\naction = \"sometimes\""), "rate.action"),
                   (token + config().replacingOccurrences(of: "/passwd", with: "/missing"), "missing"),
                   (token + config() + "\n[éclairage]\n", "a table name must start with")]  // toml++ would abort
        for (text, reason) in bad {
            try g.rewriteConfig(text)
            let r = try reload()
            XCTAssertEqual(r.status, 400, text)
            XCTAssertTrue(r.body.contains(reason), r.body)
        }
        XCTAssertNotNil(g.sighup(expect: "refused, the running config stays"))
        XCTAssertEqual(metricValue(try http(admin, "/metrics").body, #"pilegate_reloads_total{result="refused"}"#), 6)
        XCTAssertEqual(try login(g, "AAAAAJQX", "pile-secret").1, .accepted, "the running config still works")

        try g.rewriteConfig(token + config().replacingOccurrences(of: "enabled = false", with: "enabled = false\nmax_inflight = 5"))
        XCTAssertEqual(try reload().status, 200)
        XCTAssertNotNil(g.waitForLog("[redis] changed; it needs a restart"))
        XCTAssertEqual(metricValue(try http(admin, "/metrics").body, #"pilegate_reloads_total{result="applied"}"#), 1)
    }

    /// 2,000 connected piles (pileload) stay connected through ten reloads.
    func testPilesStayConnectedThroughTenReloads() throws {
        let g = try start(config().replacingOccurrences(of: "password_file = \"\(dir!)/passwd\"", with: "")
                            .replacingOccurrences(of: "allow_anonymous = \"loopback\"", with: "allow_anonymous = \"true\"\n[acl]\nanonymous_role = \"pile\""))
        let exe = Gateway.binary.deletingLastPathComponent().appendingPathComponent("pileload").path
        let json = dir + "/report.json"
        let load = try Background(exe, ["--target", "127.0.0.1:\(g.port)", "--sources", "4", "--profile", "idle",
                                        "--subscribe", "--connections", "2000", "--duration", "6", "--json", json])
        XCTAssertNotNil(g.waitForLog("AAAAAAA", timeout: 10))
        sleep(1)
        for _ in 0..<10 {
            XCTAssertNotNil(g.sighup())
            usleep(200_000)
        }
        _ = load.finish(timeout: 60)
        let r = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
        XCTAssertEqual((r["connected"] as? NSNumber)?.intValue, 2000)
        XCTAssertEqual((r["closed_by_server"] as? NSNumber)?.intValue, 0)
        XCTAssertEqual((r["failed"] as? NSNumber)?.intValue, 0)
    }
}

/// Routes change on reload while they name the same streams; a new stream needs a
/// restart (said, and the running routes kept).
final class RouteReloadTests: RedisGatewayTestCase {
    func routes(_ trade: String, _ boot: String, extra: String = "") -> String {
        """
        [redis]
        address = "\(redis.address)"
        [[route]]
        filter = "/xjdy/ops/v1/TCU/+/msg"
        json_key = "命令"
        json_value = "交易记录"
        stream = "\(trade)"
        [[route]]
        filter = "/xjdy/ops/v1/TCU/+/msg"
        json_key = "命令"
        json_value = "启动失败原因"
        stream = "\(boot)"
        \(extra)
        """
    }

    func testRoutesChangeLiveWhileTheStreamsStayTheSame() throws {
        let g = try Gateway(config: routes("s:a", "s:b"))
        gw = g
        XCTAssertNotNil(g.waitForLog("connected to redis"))
        let pile = try connected(g, "AAAAARTE")
        func trade(_ id: UInt16) {
            pile.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAARTE/msg", payload: Array(#"{"命令":"交易记录","n":\#(id)}"#.utf8),
                                       qos: .atLeastOnce, packetID: id)))
            XCTAssertEqual(pile.receive(), .puback(id))
        }
        trade(1)
        try g.rewriteConfig(routes("s:b", "s:a"))
        XCTAssertNotNil(g.sighup(), g.logText)
        trade(2)
        XCTAssertEqual(try redis.command(["XLEN", "s:a"]).int, 1)
        XCTAssertEqual(try redis.command(["XLEN", "s:b"]).int, 1, "the same pile's next trade record follows the new route")

        try g.rewriteConfig(routes("s:c", "s:a"))
        XCTAssertNotNil(g.sighup(), g.logText)
        XCTAssertNotNil(g.waitForLog("the set of [[route]] streams changed; it needs a restart"))
        trade(3)
        XCTAssertEqual(try redis.command(["XLEN", "s:b"]).int, 2, "the running routes stay")
        XCTAssertEqual(try redis.command(["EXISTS", "s:c"]).int, 0)
    }
}
