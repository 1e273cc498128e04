import Foundation
import Glibc
import MQTTCodec
import XCTest

/// Per-device overrides from Redis (`rate.overrides_hash`): written by hand or
/// through the admin API, applied to a pile that is already connected.
final class DeviceOverrideTests: RedisGatewayTestCase {
    func start() throws -> Gateway {
        let g = try Gateway(config: """
        token = "t0k"
        [redis]
        address = "\(redis.address)"
        [rate]
        overrides_hash = "pilegate:overrides"
        overrides_cache_seconds = 1
        """)
        gw = g
        XCTAssertNotNil(g.waitForLog("connected to redis"))
        return g
    }

    func publish(_ c: RawClient, _ n: Int) {
        for i in 0..<n {
            c.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAOVR/msg", payload: Array(repeating: 0x61, count: 100),
                                    qos: .atLeastOnce, packetID: UInt16(i + 1))))
        }
    }

    /// A quota lowered in Redis while the pile is connected is enforced within the
    /// cache time (the default quota action: disconnect); cleared, the pile is free.
    func testAQuotaLoweredInRedisCatchesAConnectedPile() throws {
        let g = try start()
        let pile = try connected(g, "AAAAAOVR")
        publish(pile, 3)
        for _ in 0..<3 { guard case .puback = pile.receive() else { return XCTFail("no quota yet") } }
        try redis.command(["HSET", "pilegate:overrides", "AAAAAOVR", "daily_quota_bytes=1000;note=SIM plan exceeded"])
        sleep(2)   // the cache time is 1 s
        publish(pile, 20)
        XCTAssertTrue(pile.waitClosed(), "over its own quota: disconnected")
        XCTAssertNotNil(g.waitForLog("quota"))
        try redis.command(["HDEL", "pilegate:overrides", "AAAAAOVR"])
        sleep(2)
        let free = try connected(g, "AAAAAOVR")
        publish(free, 20)
        var acked = 0
        while acked < 20, case .puback = free.receive(timeout: 2) { acked += 1 }
        XCTAssertEqual(acked, 20, "the override cleared, the pile is free again")
    }

    /// The admin API sets an override (applied at once, with an event), lists it, and
    /// clears it; a ban in an override refuses the pile and closes it.
    func testTheAdminAPISetsAndClearsOverrides() throws {
        let g = try start()
        let port = try XCTUnwrap(g.adminPort)
        XCTAssertEqual(try http(port, "/admin/overrides/AAAAAOVR?burst=x", method: "POST", token: "t0k").status, 400)
        XCTAssertEqual(try http(port, "/admin/overrides/AAAAAOVR?colour=red", method: "POST", token: "t0k").status, 400)
        let pile = try connected(g, "AAAAAOVR")
        let until = UInt64(Date().timeIntervalSince1970 * 1000) + 600_000
        let r = try http(port, "/admin/overrides/AAAAAOVR?banned_until=\(until)&note=tampered%20meter", method: "POST", token: "t0k")
        XCTAssertEqual(r.status, 200, r.body)
        XCTAssertTrue(pile.waitClosed(), "a banned pile connected here is closed")
        XCTAssertTrue(try redis.waitUntil(2) {   // every shard takes the new map at its next 100 ms tick
            try RawClient(port: g.port).connect(Connect(clientID: "AAAAAOVR"))?.returnCode == .notAuthorized
        })
        XCTAssertTrue(try http(port, "/admin/overrides", token: "t0k").body.contains("tampered meter"))
        XCTAssertEqual(try redis.command(["HGET", "pilegate:overrides", "AAAAAOVR"]).text, "banned_until=\(until);note=tampered meter")
        XCTAssertEqual(try http(port, "/admin/overrides/AAAAAOVR", method: "DELETE", token: "t0k").status, 200)
        XCTAssertTrue(try redis.waitUntil(5) {
            try RawClient(port: g.port).connect(Connect(clientID: "AAAAAOVR"))?.returnCode == .accepted
        })
        let events = try redis.entries("pilegate:events").map { String(decoding: $0.fields["type"] ?? [], as: UTF8.self) }
        XCTAssertTrue(events.contains("override") && events.contains("override_cleared"), "\(events)")
        try redis.command(["HSET", "pilegate:overrides", "AAAAABAD", "messages_per_second=fast"])
        XCTAssertNotNil(g.waitForLog("field AAAAABAD: messages_per_second = \"fast\" is not a valid number", timeout: 5))
    }
}
