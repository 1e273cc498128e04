import Foundation
import XCTest
@testable import Gateway

final class ConfigTests: XCTestCase {
    func testExampleConfigParsesToTheEmbeddedDefaults() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("ops/pilegate.example.toml"), encoding: .utf8)
        let c = try Config(toml: text)
        let d = Config()
        XCTAssertEqual(c.listener.bind, d.listener.bind)
        XCTAssertEqual(c.listener.backlog, d.listener.backlog)
        XCTAssertEqual(c.server.maxConnections, d.server.maxConnections)
        XCTAssertEqual(c.server.recvBuffers, d.server.recvBuffers)
        XCTAssertEqual(c.server.sysInterval, d.server.sysInterval)
        XCTAssertEqual(c.mqtt.maxPacketSize, d.mqtt.maxPacketSize)
        XCTAssertEqual(c.mqtt.maxInflight, d.mqtt.maxInflight)
        XCTAssertEqual(c.mqtt.maxQueuedMessages, d.mqtt.maxQueuedMessages)
        XCTAssertEqual(c.mqtt.maxSendBuffer, d.mqtt.maxSendBuffer)
        XCTAssertEqual(c.log.level, d.log.level)
    }

    func testMistakesAreErrors() {
        XCTAssertThrowsError(try Config(toml: "[mqtt]\nmax_inflight_msgs = 3\n")) {
            XCTAssertEqual("\($0)", "config: unknown key mqtt.max_inflight_msgs")
        }
        XCTAssertThrowsError(try Config(toml: "[mqtt]\nmax_inflight = \"3\"\n"))
        XCTAssertThrowsError(try Config(toml: "[mqtt]\nmax_inflight = 0\n"))
        XCTAssertThrowsError(try Config(toml: "[server]\nrecv_buffers = 1000\n"))
        XCTAssertThrowsError(try Config(toml: "[log]\nlevel = \"loud\"\n"))
        XCTAssertThrowsError(try Config(toml: "[listener\n"))
        XCTAssertThrowsError(try Config(toml: "listener = 3\n"))
    }

    func testShardLayoutFollowsTheFileLimit() {
        var c = Config()
        c.server.maxConnections = 200_000
        let (shards, table) = Server.layout(config: c, cores: 2, fileLimit: 20_000)
        XCTAssertEqual(table, 19_744)
        XCTAssertEqual(shards, 11, "200k / 19,744 per ring")
        c.server.maxConnections = 1000
        XCTAssertEqual(Server.layout(config: c, cores: 2, fileLimit: 20_000).shards, 2, "at least one per core")
        c.server.shards = 5
        XCTAssertEqual(Server.layout(config: c, cores: 2, fileLimit: 20_000).shards, 5)
    }
}
