import Foundation
import MQTTCodec
import XCTest

/// `[devices]`: the daily traffic rollup into Redis and silent-device events,
/// against a real redis-server.
final class DevicesTests: XCTestCase {
    var redis: RedisServer!
    var gw: Gateway?

    override func setUpWithError() throws { redis = try RedisServer() }

    override func tearDown() {
        if let gw { XCTAssertEqual(gw.stop(), 0) }
        redis = nil
    }

    func start(_ devices: String) throws -> Gateway {
        let g = try Gateway(config: """
        [redis]
        address = "\(redis.address)"
        [rate]
        packet_overhead_bytes = 40
        [devices]
        \(devices)
        """)
        gw = g
        XCTAssertNotNil(g.waitForLog("connected to redis"), g.logText)
        return g
    }

    func traffic(_ field: String) throws -> Int {
        let keys = try redis.command(["KEYS", "pilegate:traffic:*"]).items.compactMap(\.text)
        guard let key = keys.first else { return 0 }
        return Int(try redis.command(["HGET", key, field]).text ?? "0") ?? 0
    }

    /// Bytes in and out per device, with the per-packet overhead, reach the day's
    /// hash while connected (periodic flush) and exactly once the pile leaves.
    func testTrafficIsRolledUpPerDevicePerDay() throws {
        _ = try start("traffic_flush_seconds = 1")
        let connect = Connect(keepAlive: 60, clientID: "AAAAAJQX")
        let pile = try RawClient(port: gw!.port)
        XCTAssertEqual(pile.connect(connect)?.returnCode, .accepted)
        let publish = { (i: Int) in Publish(topic: "/xjdy/ops/v1/TCU/AAAAAJQX/msg", payload: Array(repeating: 0x41, count: 300),
                                            qos: .atLeastOnce, packetID: UInt16(i)) }
        for i in 1...5 {
            pile.send(.publish(publish(i)))
            XCTAssertEqual(pile.receive(), .puback(UInt16(i)))
        }
        let inSoFar = Encoder.size(of: .connect(connect)) + 5 * Encoder.size(of: .publish(publish(1))) + 6 * 40
        XCTAssertTrue(try redis.waitUntil(5) { try traffic("AAAAAJQX:in") == inSoFar },
                      "flushed while connected: \((try? traffic("AAAAAJQX:in")) ?? -1) of \(inSoFar)")
        let other = try RawClient(port: gw!.port)
        XCTAssertEqual(other.connect(Connect(clientID: "BBBBBBBB"))?.returnCode, .accepted)
        pile.send(.disconnect)
        XCTAssertTrue(pile.waitClosed())
        let outTotal = 4 + 5 * 4 + 6 * 40   // CONNACK, PUBACKs, overhead
        XCTAssertTrue(try redis.waitUntil(5) {
            try traffic("AAAAAJQX:in") == inSoFar + 2 + 40 && traffic("AAAAAJQX:out") == outTotal
        }, "in \((try? traffic("AAAAAJQX:in")) ?? -1) out \((try? traffic("AAAAAJQX:out")) ?? -1)")
        XCTAssertTrue(try redis.waitUntil(5) { try traffic("BBBBBBBB:in") > 0 }, "each device has its own fields")
        let key = try XCTUnwrap(redis.command(["KEYS", "pilegate:traffic:*"]).items.first?.text)
        XCTAssertTrue(key.hasPrefix("pilegate:traffic:20"), key)
        XCTAssertTrue(try redis.waitUntil(5) {   // set at the end of each pass over the connections
            if case .integer(let ttl) = try redis.command(["TTL", key]) { return ttl > 60 * 86400 } else { return false }
        }, "expires after traffic_retention_days")
    }

    /// A day written only by a disconnect's flush expires too (it used to be left
    /// without a TTL when no periodic flush wrote that day).
    func testADayWrittenAtDisconnectExpires() throws {
        _ = try start("traffic_flush_seconds = 1")
        let pile = try RawClient(port: gw!.port)
        XCTAssertEqual(pile.connect(Connect(keepAlive: 60, clientID: "AAAAAJQX"))?.returnCode, .accepted)
        pile.send(.disconnect)
        XCTAssertTrue(pile.waitClosed())
        XCTAssertTrue(try redis.waitUntil(5) { try traffic("AAAAAJQX:in") > 0 })
        let key = try XCTUnwrap(redis.command(["KEYS", "pilegate:traffic:*"]).items.first?.text)
        XCTAssertTrue(try redis.waitUntil(5) {
            if case .integer(let ttl) = try redis.command(["TTL", key]) { return ttl > 60 * 86400 } else { return false }
        }, "expires after traffic_retention_days")
    }

    /// A pile that stays connected without publishing is reported once, and again
    /// when it speaks; a pile that keeps publishing never is.
    func testSilentPileIsReportedOnceAndWhenItSpeaks() throws {
        let g = try start("silent_seconds = 1")
        let quiet = try RawClient(port: g.port)
        XCTAssertEqual(quiet.connect(Connect(keepAlive: 60, clientID: "QUIETQUIET"))?.returnCode, .accepted)
        let busy = try RawClient(port: g.port)
        XCTAssertEqual(busy.connect(Connect(keepAlive: 60, clientID: "BUSYBUSY"))?.returnCode, .accepted)
        func events(_ type: String) throws -> [String] {
            try redis.entries("pilegate:events").map(\.fields).filter { $0["type"] == Array(type.utf8) }
                .map { String(decoding: $0["device"] ?? [], as: UTF8.self) }
        }
        for i in 1...12 {   // 3 s, the quiet one crosses the threshold at 1 s
            busy.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/BUSYBUSY/msg", payload: [1], qos: .atMostOnce)))
            quiet.send(.pingreq)   // keepalive traffic is not speaking
            XCTAssertEqual(quiet.receive(), .pingresp, "ping \(i)")
            usleep(250_000)
        }
        XCTAssertEqual(try events("silent"), ["QUIETQUIET"], "reported once, the busy pile never")
        XCTAssertNotNil(g.waitForLog("silent: no PUBLISH for"))
        let metrics = try http(XCTUnwrap(g.adminPort), "/metrics").body
        XCTAssertEqual(metricValue(metrics, "pilegate_silent_devices"), 1)
        XCTAssertEqual(metricValue(metrics, "pilegate_silent_reports_total"), 1)
        quiet.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/QUIETQUIET/msg", payload: [1], qos: .atLeastOnce, packetID: 1)))
        XCTAssertEqual(quiet.receive(), .puback(1))
        XCTAssertTrue(try redis.waitUntil(5) { try events("silent_end") == ["QUIETQUIET"] })
    }
}
