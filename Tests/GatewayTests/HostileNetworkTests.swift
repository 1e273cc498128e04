import Foundation
import Glibc
import MQTTCodec
import XCTest

/// Piles on bad links, through LoadTest/faultproxy.py (delay, jitter, a bandwidth cap,
/// stalls, half-open connections), and connections cut at every byte: nothing
/// acknowledged is lost, no keepalive expiry the 1.5x rule does not call for, and
/// nothing is left behind.
final class HostileNetworkTests: RedisGatewayTestCase {
    var proxy: Background?

    override func tearDown() {
        proxy?.stop()
        super.tearDown()
    }

    static var proxyScript: String { repoRoot.appendingPathComponent("LoadTest/faultproxy.py").path }

    /// The proxy in front of `g`, on a free port; `args` are its fault options.
    func startProxy(_ g: Gateway, _ args: [String]) throws -> UInt16 {
        let port = freeLoopbackPort()
        let p = try Background("python3", [Self.proxyScript, "--listen", "127.0.0.1:\(port)", "--target", "127.0.0.1:\(g.port)",
                                           "--duration", "300"] + args)
        proxy = p
        XCTAssertTrue(redis.waitUntil { (try? RawClient(port: port)) != nil }, "the proxy listens")
        return port
    }

    func metric(_ g: Gateway, _ name: String) throws -> Double {
        metricValue(try http(XCTUnwrap(g.adminPort), "/metrics").body, name) ?? -1
    }

    /// 200 piles at 300 +- 200 ms RTT and 64 kbit/s, with 5 s stalls, publish QoS 1
    /// for 40 s with a 10 s keepalive: every acknowledged message is stored, no pile
    /// is expired, and none is left connected afterwards.
    func testPilesOnA4GLinkLoseNothingAndAreNotExpired() throws {
        let g = try startGateway()
        let port = try startProxy(g, ["--delay-ms", "150", "--jitter-ms", "100", "--rate-kbit", "64",
                                      "--stall-every", "15", "--stall-ms", "5000", "--seed", "7"])
        let exe = Gateway.binary.deletingLastPathComponent().appendingPathComponent("pileload").path
        let json = NSTemporaryDirectory() + "badlink-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: json) }
        let out = try shell(exe, ["--target", "127.0.0.1:\(port)", "--profile", "uplink", "--qos", "1", "--connections", "200",
                                  "--burst", "1", "--rate", "200", "--keepalive", "10", "--connect-rate", "200",
                                  "--duration", "40", "--json", json], timeout: 120)
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any], out)
        let acked = (report["acked"] as? NSNumber)?.intValue ?? -1
        let stored = try redis.command(["XLEN", "pilegate:up"]).int ?? -1
        proxy?.stop()
        print("bad link: \(acked) acknowledged, \(stored) stored; proxy \(proxy!.out.text.suffix(300))")
        XCTAssertGreaterThan(acked, 1000, out)
        XCTAssertGreaterThanOrEqual(stored, acked, "every acknowledged message is stored")
        XCTAssertEqual(try metric(g, "pilegate_keepalive_expiries_total"), 0, "no pile expired by a stall shorter than 1.5 x keepalive")
        XCTAssertTrue(redis.waitUntil { (try? self.metric(g, "pilegate_connections")) == 0 }, "no connection left behind")
    }

    /// Half-open piles (the link drops everything silently both ways, no FIN, no RST)
    /// are found by keepalive: their wills go out, presence is cleared, slots are freed.
    func testHalfOpenPilesAreFoundByKeepalive() throws {
        let g = try startGateway()
        let port = try startProxy(g, ["--blackhole-fraction", "1", "--blackhole-after", "1.5", "--blackhole-within", "0.5"])
        var piles: [RawClient] = []
        for i in 0..<10 {
            let id = "HALF\(i)"
            let c = try RawClient(port: port)
            let will = Will(topic: "/xjdy/ops/v1/TCU/\(id)/will", payload: Array("lost".utf8), qos: .atLeastOnce, retain: false)
            XCTAssertEqual(c.connect(Connect(cleanSession: true, keepAlive: 2, clientID: id, will: will))?.returnCode, .accepted)
            piles.append(c)
        }
        XCTAssertTrue(try redis.waitUntil { try self.redis.command(["HLEN", "pilegate:presence"]).int == 10 })
        let started = Date()
        XCTAssertTrue(redis.waitUntil(15) { (try? self.metric(g, "pilegate_keepalive_expiries_total")) == 10 }, g.logText.suffix(2000).description)
        let took = Date().timeIntervalSince(started)
        XCTAssertLessThan(took, 8, "found within 1.5 x keepalive of the last packet")
        XCTAssertTrue(try redis.waitUntil { try self.redis.command(["HLEN", "pilegate:presence"]).int == 0 }, "presence cleared")
        let wills = try redis.entries("pilegate:up").filter { $0.fields["topic"].map { String(decoding: $0, as: UTF8.self).hasSuffix("/will") } ?? false }
        XCTAssertEqual(wills.count, 10, "every will went out")
        XCTAssertEqual(try metric(g, "pilegate_connections"), 0)
        print("half-open: 10 piles found by keepalive \(String(format: "%.1f", took)) s after the link went silent")
        // Their ids connect again at once, directly: the old state is gone.
        for i in 0..<10 { _ = try connected(g, "HALF\(i)") }
    }

    /// A connection cut after every byte offset of a session's packets (CONNECT
    /// with a will, SUBSCRIBE, PUBLISH QoS 0/1/2, PUBREL, UNSUBSCRIBE, PINGREQ,
    /// DISCONNECT), by a FIN or an RST: afterwards no connection, session,
    /// subscription or in-flight message is left, and the gateway serves as before.
    func testACutAtEveryByteLeavesNothingBehind() throws {
        let g = try startGateway()
        let id = "CUT1"
        let will = Will(topic: "/xjdy/ops/v1/TCU/\(id)/will", payload: Array("w".utf8), qos: .atLeastOnce, retain: false)
        let packets: [Packet] = [
            .connect(Connect(cleanSession: true, keepAlive: 30, clientID: id, will: will)),
            .subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/\(id)/cmd", .exactlyOnce)])),
            .publish(Publish(topic: "/xjdy/ops/v1/TCU/\(id)/msg", payload: Array("zero".utf8))),
            .publish(Publish(topic: "/xjdy/ops/v1/TCU/\(id)/msg", payload: Array("one".utf8), qos: .atLeastOnce, packetID: 2)),
            .publish(Publish(topic: "/xjdy/ops/v1/TCU/\(id)/msg", payload: Array("two".utf8), qos: .exactlyOnce, packetID: 3)),
            .pubrel(3),
            .unsubscribe(Unsubscribe(packetID: 4, filters: ["/xjdy/ops/v1/TCU/\(id)/cmd"])),
            .pingreq,
            .disconnect,
        ]
        let bytes = packets.flatMap { Encoder.encode($0) }
        for cut in 1..<bytes.count {
            let c = try RawClient(port: g.port)
            c.send(Array(bytes[..<cut]))
            if cut % 2 == 0 { c.closeAbruptly() }   // RST, else FIN at deinit
        }
        XCTAssertTrue(redis.waitUntil(10) {
            (try? self.metric(g, "pilegate_connections")) == 0 && (try? self.metric(g, "pilegate_sessions")) == 0
                && (try? self.metric(g, "pilegate_connections_accepted_total")) == (try? self.metric(g, "pilegate_connections_closed_total"))
        }, g.logText.suffix(2000).description)
        print("cut at every byte: \(bytes.count - 1) connections cut, nothing left")
        // And the whole exchange still works end to end.
        let c = try connected(g, id)
        c.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/\(id)/msg", payload: Array("after".utf8), qos: .atLeastOnce, packetID: 9)))
        XCTAssertEqual(c.receive(timeout: 5), .puback(9))
    }
}
