import Foundation
import XCTest

/// The operator console (`GET /` on the admin endpoint) in a real browser: headless
/// chromium driven by Selenium (Tests/GatewayTests/interop/console_browser.py) against
/// the real gateway and Redis, with paho piles. Screenshots of each view are written
/// to .build/test-artifacts/console/.
final class ConsoleTests: RedisGatewayTestCase {
    func testConsoleInABrowser() throws {
        gw = try Gateway(config: "token = \"console-token\"\n[redis]\naddress = \"\(redis.address)\"\n")
        let admin = try XCTUnwrap(gw!.adminPort)
        XCTAssertNotNil(gw!.waitForLog("connected to redis"))
        let page = try http(admin, "/")
        XCTAssertEqual(page.status, 200)
        XCTAssertTrue(page.body.contains("data-testid=\"device-lookup\""))
        XCTAssertFalse(page.body.contains("http://") || page.body.contains("https://"), "the page loads nothing from elsewhere")
        XCTAssertEqual(try http(admin, "/admin/overview").status, 401, "the API needs the token")

        let script = Bundle.module.url(forResource: "interop/console_browser", withExtension: "py")!
        let artifacts = repoRoot.appendingPathComponent(".build/test-artifacts/console").path
        let out = try shell("python3", [script.path, "http://127.0.0.1:\(admin)", "\(gw!.port)", "console-token", artifacts],
                            timeout: 180)
        XCTAssertTrue(out.contains("console: all checks passed"), out)
    }

    /// The console's two JSON routes: the overview's figures follow the node, and the
    /// events answer 503 (not an empty list) while Redis is away.
    func testOverviewAndEventsAPI() throws {
        let g = try Gateway(config: "token = \"t\"\n[redis]\naddress = \"\(redis.address)\"\n")
        gw = g
        let admin = try XCTUnwrap(g.adminPort)
        XCTAssertNotNil(g.waitForLog("connected to redis"))
        let pile = try connected(g, "AAAAAJQX")
        func overview() throws -> [String: Any] {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data(http(admin, "/admin/overview", token: "t").body.utf8)) as? [String: Any])
        }
        XCTAssertTrue(try redis.waitUntil { try overview()["connections"] as? Int == 1 })
        let o = try overview()
        XCTAssertEqual(o["node"] as? String, "test-node")
        XCTAssertEqual(o["shards"] as? Int, 4)
        XCTAssertEqual(o["redis_up_shards"] as? Int, 4)
        let events = try http(admin, "/admin/events?n=5&device=AAAAAJQX", token: "t")
        XCTAssertEqual(events.status, 200)
        XCTAssertTrue(events.body.contains("\"type\":\"connect\""), events.body)
        redis.stop()
        XCTAssertEqual(try http(admin, "/admin/events", token: "t").status, 503)
        _ = pile
    }
}
