import Foundation
import Glibc
import MQTTCodec
import XCTest

/// Operator bans through the admin API, kept in Redis: every node honours them,
/// they outlive a restart, and lifting one works anywhere.
final class OperatorBanTests: RedisGatewayTestCase {
    func node(_ name: String) throws -> Gateway {
        let g = try Gateway(config: "token = \"t0k\"\n[redis]\naddress = \"\(redis.address)\"", node: name)
        XCTAssertNotNil(g.waitForLog("connected to redis"))
        return g
    }

    func admin(_ g: Gateway, _ path: String, _ method: String = "GET") throws -> (status: Int, body: String) {
        try http(try XCTUnwrap(g.adminPort), path, method: method, token: "t0k")
    }

    func tryConnect(_ g: Gateway, _ id: String) throws -> ConnectReturnCode? {
        try RawClient(port: g.port).connect(Connect(clientID: id))?.returnCode
    }

    func testABanOnOneNodeHoldsOnTheOtherAndAfterARestart() throws {
        let a = try node("node-a")
        gw = a
        let b = try node("node-b")
        defer { XCTAssertEqual(b.stop(), 0) }
        let pile = try connected(b, "AAAAABAN")

        let r = try admin(a, "/admin/bans/AAAAABAN?seconds=600&reason=SIM%20overrun", "POST")
        XCTAssertEqual(r.status, 200, r.body)
        XCTAssertEqual(try tryConnect(a, "AAAAABAN"), .notAuthorized, "refused at once on the node that took the call")
        XCTAssertTrue(pile.waitClosed(), "the pile connected to node-b is closed at node-b's next refresh")
        XCTAssertEqual(try tryConnect(b, "AAAAABAN"), .notAuthorized)
        XCTAssertNotNil(b.waitForLog("banned by an operator for"))
        XCTAssertTrue(try admin(b, "/admin/bans").body.contains("SIM overrun"), "listed on node-b too")
        let stored = try redis.command(["HGET", "pilegate:bans", "AAAAABAN"]).text ?? ""
        XCTAssertTrue(stored.hasSuffix("|SIM overrun"), stored)

        XCTAssertEqual(a.stop(), 0)
        let a2 = try node("node-a")
        gw = a2
        XCTAssertTrue(try redis.waitUntil(5) { try self.tryConnect(a2, "AAAAABAN") == .notAuthorized }, "after a restart")

        XCTAssertEqual(try admin(b, "/admin/bans/AAAAABAN", "DELETE").status, 200)
        XCTAssertTrue(try redis.waitUntil(5) { try self.tryConnect(a2, "AAAAABAN") == .accepted }, "lifted on node-b, free on node-a")
        let events = try redis.entries("pilegate:events").map { String(decoding: $0.fields["type"] ?? [], as: UTF8.self) }
        XCTAssertTrue(events.contains("ban") && events.contains("unban"), "\(events)")
        XCTAssertEqual(try redis.command(["HEXISTS", "pilegate:bans", "AAAAABAN"]).int, 0)
    }

    func testABadBanRequestIsRefused() throws {
        let g = try node("test-node")
        gw = g
        XCTAssertEqual(try admin(g, "/admin/bans/AAAAABAN", "POST").status, 400, "seconds required")
        XCTAssertEqual(try admin(g, "/admin/bans/AAAAABAN?seconds=0", "POST").status, 400)
        try redis.command(["HSET", "pilegate:bans", "AAAAAXXX", "not a ban"])
        XCTAssertNotNil(g.waitForLog("field AAAAAXXX is not UNTIL_MS|REASON", timeout: 5))
        XCTAssertEqual(try tryConnect(g, "AAAAAXXX"), .accepted)
    }
}
