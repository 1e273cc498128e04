import Foundation
import Glibc
import MQTTCodec
import XCTest

/// The token-protected admin API and draining, against the real binary with curl.
final class AdminTests: XCTestCase {
    var gateways: [Gateway] = []

    override func tearDown() {
        for g in gateways { XCTAssertEqual(g.stop(), 0) }
    }

    /// `admin`: keys for the [admin] table (the harness's base config ends with it).
    func start(admin: String = "") throws -> (Gateway, UInt16) {
        let g = try Gateway(config: admin + "\n[redis]\nenabled = false\n")
        gateways.append(g)
        guard let port = g.adminPort else { throw Failure("no admin HTTP line") }
        return (g, port)
    }

    static let token = "s3cret-token"

    func call(_ port: UInt16, _ method: String, _ path: String, token: String? = AdminTests.token) throws -> (Int, String) {
        try http(port, path, method: method, token: token)
    }

    func json(_ s: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(s.utf8))) as? [String: Any] ?? [:]
    }

    func pile(_ g: Gateway, _ id: String) throws -> RawClient {
        let c = try RawClient(port: g.port)
        XCTAssertEqual(c.connect(Connect(clientID: id))?.returnCode, .accepted)
        return c
    }

    func testTokenLookupTopAndKick() throws {
        let (g, port) = try start(admin: "token = \"\(AdminTests.token)\"")
        XCTAssertEqual(try call(port, "GET", "/admin/top", token: nil).0, 401)
        XCTAssertEqual(try call(port, "GET", "/admin/top", token: "wrong").0, 401)
        let a = try pile(g, "AAAAAJQX"), b = try pile(g, "AAAAAJQY")
        a.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/AAAAAJQX/cmd", .atLeastOnce)])))
        _ = a.receive()
        for i in 1...5 {
            b.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAJQY/msg", payload: [UInt8](repeating: 1, count: 500), qos: .atLeastOnce, packetID: UInt16(i))))
            XCTAssertEqual(b.receive(), .puback(UInt16(i)))
        }
        let (status, body) = try call(port, "GET", "/admin/clients/AAAAAJQX")
        XCTAssertEqual(status, 200, body)
        let info = json(body)
        XCTAssertEqual(info["client_id"] as? String, "AAAAAJQX")
        XCTAssertEqual(info["subscriptions"] as? [String], ["/xjdy/ops/v1/TCU/AAAAAJQX/cmd"])
        XCTAssertTrue((info["peer"] as? String)?.hasPrefix("127.0.0.1:") == true)
        XCTAssertNotNil(info["shard"] as? Int)
        XCTAssertEqual(try call(port, "GET", "/admin/clients/NOBODY").0, 404)
        let top = json(try call(port, "GET", "/admin/top?n=2").1)["clients"] as? [[String: Any]] ?? []
        XCTAssertEqual(top.compactMap { $0["client_id"] as? String }, ["AAAAAJQY", "AAAAAJQX"], "most bytes today first")
        let bIn = ((top.first?["today"] as? [String: Any])?["bytes_in"] as? Int) ?? 0
        XCTAssertGreaterThan(bIn, 5 * 500, "MQTT bytes plus the per-packet overhead estimate")
        XCTAssertEqual(try call(port, "POST", "/admin/clients/AAAAAJQX/kick").0, 200)
        XCTAssertTrue(a.waitClosed())
        XCTAssertNotNil(g.waitForLog("disconnected: closed by an operator"))
        XCTAssertEqual(try call(port, "POST", "/admin/clients/AAAAAJQX/kick").0, 404, "gone already")
    }

    func testAdminAPIIsOffWithoutAToken() throws {
        let (_, port) = try start()
        XCTAssertEqual(try call(port, "GET", "/admin/top").0, 403)
        XCTAssertEqual(try call(port, "POST", "/drain").0, 403)
    }

    /// POST /drain: the node stops accepting, closes its piles in paced batches, says
    /// not ready, and every pile gets in again on another node.
    func testDrainMovesEveryPileToAnotherNode() throws {
        let (a, port) = try start(admin: "token = \"\(AdminTests.token)\"\ndrain_rate = 200")
        let (b, _) = try start()
        let piles = try (0..<40).map { try pile(a, "DRAIN\(String(format: "%03d", $0))") }
        let t0 = Date()
        XCTAssertEqual(try call(port, "POST", "/drain").0, 202)
        XCTAssertEqual(try call(port, "GET", "/readyz").0, 503)
        for p in piles { XCTAssertTrue(p.waitClosed()) }
        XCTAssertGreaterThan(Date().timeIntervalSince(t0), 0.1, "paced: 40 piles at 200/s take about 0.2 s")
        XCTAssertThrowsError(try RawClient(port: a.port), "the drained node no longer accepts")
        for i in 0..<40 { _ = try pile(b, "DRAIN\(String(format: "%03d", i))") }
        XCTAssertNotNil(a.waitForLog("disconnected: node draining"))
    }

    func testSIGUSR1Drains() throws {
        let (g, port) = try start()
        let p = try pile(g, "USR1PILE")
        kill(g.process.processIdentifier, SIGUSR1)
        XCTAssertTrue(p.waitClosed())
        XCTAssertEqual(try call(port, "GET", "/readyz", token: nil).0, 503)
        XCTAssertNotNil(g.waitForLog("SIGUSR1: draining"))
    }
}
