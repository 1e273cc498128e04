import Foundation
import Glibc
import MQTTCodec
import XCTest
@testable import Gateway

/// Send-rate rules, the daily quota and storm protection, against the real binary.
final class LimitsTests: XCTestCase {
    var gw: Gateway?

    override func tearDown() {
        if let gw { XCTAssertEqual(gw.stop(), 0) }
    }

    func start(_ config: String) throws -> Gateway {
        let g = try Gateway(config: "[redis]\nenabled = false\n" + config)
        gw = g
        return g
    }

    func pile(_ g: Gateway, _ id: String, source: String? = nil) throws -> (RawClient, ConnectReturnCode?) {
        let c = try RawClient(port: g.port, source: source)
        return (c, c.connect(Connect(clientID: id))?.returnCode)
    }

    static let topic = "/xjdy/ops/v1/TCU/AAAAAJQX/msg"

    /// The issue's case: 100 msg/s against a 10 msg/s throttle rule. The receiver
    /// never sees more than rate x time + burst, and every message arrives.
    func testThrottleHoldsAPileToItsRateAndLosesNothing() throws {
        let g = try start("""
        [[rate.topic]]
        name = "run-data"
        filter = "/xjdy/ops/v1/TCU/+/msg"
        messages_per_second = 10
        burst = 5
        action = "throttle"
        """)
        let (sub, _) = try pile(g, "watcher")
        sub.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/+/msg", .atLeastOnce)])))
        XCTAssertEqual(sub.receive(), .suback(Suback(packetID: 1, returnCodes: [1])))
        let (pub, rc) = try pile(g, "AAAAAJQX")
        XCTAssertEqual(rc, .accepted)
        let n = 100
        let sender = Thread {
            for i in 1...n {   // 100 msg/s for one second, QoS 1 without waiting for PUBACKs
                pub.send(.publish(Publish(topic: LimitsTests.topic, payload: Array("m\(i)".utf8), qos: .atLeastOnce, packetID: UInt16(i))))
                usleep(10_000)
            }
        }
        sender.start()
        let t0 = Date()
        var got: [String] = []
        var worst = 0.0
        while got.count < n, Date().timeIntervalSince(t0) < 20 {
            guard case .publish(let p) = sub.receive(timeout: 2) else { continue }
            got.append(String(decoding: p.payload, as: UTF8.self))
            if case .atLeastOnce = p.qos { sub.send(.puback(p.packetID)) }
            // allowed by now: burst + 10/s (+1 for the 100 ms wheel tick rounding)
            let allowed = 5 + 10 * Date().timeIntervalSince(t0) + 1
            worst = max(worst, Double(got.count) - allowed)
        }
        let elapsed = Date().timeIntervalSince(t0)
        XCTAssertEqual(got, (1...n).map { "m\($0)" }, "all delivered, in order")
        XCTAssertLessThanOrEqual(worst, 0, "receiver saw more than rate x time + burst")
        XCTAssertGreaterThan(elapsed, 8.5, "100 messages at 10/s after a burst of 5 take 9.5 s")
        var acks = 0
        while acks < n, case .puback = pub.receive(timeout: 2) { acks += 1 }
        XCTAssertEqual(acks, n, "every QoS 1 PUBLISH acknowledged")
        XCTAssertNotNil(g.waitForLog("denied (rate): over rate rule \"run-data\": throttle"))
        XCTAssertGreaterThan(try g.counter("rateThrottles"), 0)
    }

    /// A "drop" rule: over the rate the PUBLISH is acknowledged and dropped, counted.
    func testDropRuleDropsAndCounts() throws {
        let g = try start("""
        [rate]
        messages_per_second = 1
        burst = 2
        action = "drop"
        """)
        let (sub, _) = try pile(g, "watcher")
        sub.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/+/msg", .atMostOnce)])))
        _ = sub.receive()
        let (pub, _) = try pile(g, "AAAAAJQX")
        for i in 1...6 {
            pub.send(.publish(Publish(topic: LimitsTests.topic, payload: [UInt8(i)], qos: .atLeastOnce, packetID: UInt16(i))))
        }
        for i in 1...6 { XCTAssertEqual(pub.receive(), .puback(UInt16(i)), "dropped ones are still acknowledged") }
        var got: [UInt8] = []
        while case .publish(let p) = sub.receive(timeout: 1) { got += p.payload }
        XCTAssertEqual(got, [1, 2], "the burst passes, the rest is dropped")
        XCTAssertEqual(try g.waitForCounter("rateDrops", atLeast: 4), 4)
        let metrics = try http(XCTUnwrap(g.adminPort), "/metrics").body
        XCTAssertEqual(metricValue(metrics, "pilegate_rate_rule_actions_total{rule=\"device\"}"), 4, "counted by rule")
        XCTAssertEqual(metricValue(metrics, "pilegate_rate_rule_actions_total{rule=\"daily_quota\"}"), 0)
    }

    /// Over the daily quota (bytes in and out plus the per-packet overhead), the
    /// quota's action runs, and reconnecting does not reset the day.
    func testQuotaBreachTriggersItsActionAndSurvivesReconnect() throws {
        let g = try start("""
        [rate]
        daily_quota_bytes = 3000
        quota_action = "disconnect"
        packet_overhead_bytes = 52
        """)
        let (pub, _) = try pile(g, "AAAAAJQX")
        let payload = [UInt8](repeating: 0x41, count: 200)
        var acked = 0
        for i in 1...30 {
            pub.send(.publish(Publish(topic: LimitsTests.topic, payload: payload, qos: .atLeastOnce, packetID: UInt16(i))))
            guard case .puback = pub.receive(timeout: 2) else { break }
            acked += 1
        }
        // Each round trip: ~235 + 52 bytes in, 4 + 52 out, so 3000 bytes last 8-9 messages.
        XCTAssertTrue((7...10).contains(acked), "acked \(acked)")
        XCTAssertTrue(pub.waitClosed(), "closed when over quota")
        XCTAssertNotNil(g.waitForLog("denied (quota): over the daily quota of 3000 bytes"))
        let (again, rc) = try pile(g, "AAAAAJQX")
        XCTAssertEqual(rc, .accepted)
        again.send(.publish(Publish(topic: LimitsTests.topic, payload: payload, qos: .atLeastOnce, packetID: 1)))
        XCTAssertTrue(again.waitClosed(), "still over quota after reconnecting")
        XCTAssertEqual(try g.counter("quotaBreaches"), 1, "one breach a day")
        XCTAssertEqual(try g.counter("rateDisconnects"), 2)
        let (other, _) = try pile(g, "AAAAAJQY")
        other.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAJQY/msg", payload: payload, qos: .atLeastOnce, packetID: 1)))
        XCTAssertEqual(other.receive(), .puback(1), "another device has its own quota")
    }

    /// A "ban" rule closes the pile and refuses its client id until the ban ends.
    func testBanRuleRefusesTheClientUntilItExpires() throws {
        let g = try start("""
        [rate]
        messages_per_second = 1
        burst = 1
        action = "ban"
        ban_seconds = 2
        """)
        let (pub, _) = try pile(g, "AAAAAJQX")
        pub.send(.publish(Publish(topic: LimitsTests.topic, payload: [1], qos: .atMostOnce)))
        pub.send(.publish(Publish(topic: LimitsTests.topic, payload: [2], qos: .atMostOnce)))
        XCTAssertTrue(pub.waitClosed())
        XCTAssertEqual(try pile(g, "AAAAAJQX").1, .notAuthorized, "banned")
        XCTAssertEqual(try pile(g, "AAAAAJQY").1, .accepted, "only that client id")
        sleep(2)
        XCTAssertEqual(try pile(g, "AAAAAJQX").1, .accepted, "released")
        XCTAssertNotNil(g.logText.range(of: "denied (banned): CONNECT refused"))
    }

    /// N connects within W seconds: banned for T, then let in again.
    func testFlappingClientIsBannedAndReleased() throws {
        let g = try start("""
        [limits]
        flap_connects = 3
        flap_window = 30
        flap_ban = 2
        """)
        for _ in 1...3 {
            let (c, rc) = try pile(g, "AAAAAJQX")
            XCTAssertEqual(rc, .accepted)
            c.send(.disconnect)
            XCTAssertTrue(c.waitClosed())
        }
        XCTAssertEqual(try pile(g, "AAAAAJQX").1, .notAuthorized, "fourth connect within the window")
        XCTAssertEqual(try pile(g, "AAAAAJQX").1, .notAuthorized, "still banned")
        XCTAssertNotNil(g.waitForLog("denied (flapping)"))
        sleep(2)
        XCTAssertEqual(try pile(g, "AAAAAJQX").1, .accepted, "released after flap_ban")
        XCTAssertEqual(try g.counter("flappingBans"), 1)
    }

    /// Connections per IP, and an IP banned after repeated bad credentials.
    func testPerIPConnectionsAndAuthFailureBan() throws {
        let dir = NSTemporaryDirectory() + "pilegate-limits-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try shell(Gateway.binary.path, ["passwd", "\(dir)/passwd", "AAAAAJQX", "--password", "good"])
        let g = try start("""
        [auth]
        allow_anonymous = "true"
        password_file = "\(dir)/passwd"
        [limits]
        max_connections_per_ip = 2
        auth_failures_per_ip = 2
        auth_failure_window = 60
        auth_failure_ban = 2
        """)
        let (a, _) = try pile(g, "A1", source: "127.0.0.21")
        let (b, _) = try pile(g, "A2", source: "127.0.0.21")
        let third = try RawClient(port: g.port, source: "127.0.0.21")
        XCTAssertNil(third.connect(Connect(clientID: "A3")), "third from one IP: closed at accept")
        XCTAssertEqual(try pile(g, "B1", source: "127.0.0.22").1, .accepted, "other IPs unaffected")
        a.send(.disconnect)
        XCTAssertTrue(a.waitClosed())
        usleep(200_000)
        XCTAssertEqual(try pile(g, "A3", source: "127.0.0.21").1, .accepted, "a slot came free")
        _ = b

        func login(_ pw: String, _ src: String) throws -> ConnectReturnCode? {
            let c = try RawClient(port: g.port, source: src)
            return c.connect(Connect(clientID: "AAAAAJQX", username: "AAAAAJQX", password: Array(pw.utf8)))?.returnCode
        }
        XCTAssertEqual(try login("bad", "127.0.0.23"), .badUsernameOrPassword)
        XCTAssertEqual(try login("bad", "127.0.0.23"), .badUsernameOrPassword)
        XCTAssertEqual(try login("bad", "127.0.0.23"), .badUsernameOrPassword, "third failure sets the ban")
        XCTAssertNil(try login("good", "127.0.0.23"), "banned IP: closed at accept, even with the right password")
        XCTAssertEqual(try login("good", "127.0.0.24"), .accepted, "other IPs unaffected")
        sleep(2)
        XCTAssertEqual(try login("good", "127.0.0.23"), .accepted, "ban expired")
        XCTAssertEqual(try g.counter("authFailureBans"), 1)
        XCTAssertGreaterThanOrEqual(try g.counter("ipConnectionsRefused"), 1)
    }

    /// "wait" mode: CONNECTs over the rate are held for their slot, not refused.
    func testConnectRateWaitModeSpreadsConnects() throws {
        let g = try start("""
        [limits]
        connect_rate = 10
        connect_burst = 1
        over_rate = "wait"
        """)
        let t0 = Date()
        let clients = try (0..<6).map { i in try RawClient(port: g.port, source: "127.0.0.3\(i)") }
        for (i, c) in clients.enumerated() { c.send(.connect(Connect(clientID: "W\(i)"))) }
        for c in clients {
            guard case .connack(let a) = c.receive() else { return XCTFail("no CONNACK") }
            XCTAssertEqual(a.returnCode, .accepted)
        }
        XCTAssertGreaterThan(Date().timeIntervalSince(t0), 0.4, "6 connects at 10/s with a burst of 1 take 0.5 s")
        XCTAssertGreaterThanOrEqual(try g.counter("connectRateWaits"), 4)
    }

    /// A storm against a "wait" limit: the node stops accepting while its connect queue
    /// is more than half full, so the piles over the rate wait in the kernel's listen
    /// queue (retrying their SYN) instead of being read and refused. 6,000 piles at
    /// once against 1,000/s and a 2 s queue: without the pause about 3,900 would be
    /// refused and retried; with it every pile gets in with next to no refusals.
    func testConnectStormAgainstAWaitLimitWaitsInTheListenQueue() throws {
        let g = try start("""
        [mqtt]
        connect_timeout = 4
        [limits]
        connect_rate = 1000
        connect_burst = 100
        over_rate = "wait"
        """)
        let out = try pileload(g, ["--connections", "6000", "--connect-rate", "50000", "--max-pending", "6000",
                                   "--sources", "8", "--retry", "--duration", "1", "--connect-timeout", "60", "--workers", "2"])
        print("wait-limit storm: \(field(out, "connected")) connected, \(field(out, "refused")) refused")
        XCTAssertEqual(field(out, "connected"), 6000, out)
        XCTAssertLessThan(field(out, "refused"), 600, out)
        XCTAssertGreaterThan(try g.counter("acceptRatePauses"), 0)
        XCTAssertGreaterThan(try g.counter("connectRateWaits"), 1000)
        XCTAssertEqual(try pile(g, "after-the-storm").1, .accepted, "still serving")
    }

    func pileload(_ g: Gateway, _ args: [String]) throws -> String {
        let load = Gateway.binary.deletingLastPathComponent().appendingPathComponent("pileload").path
        return try shell(load, ["--target", "127.0.0.1:\(g.port)"] + args, timeout: 90)
    }

    /// A figure from pileload's summary ("connected 6000"), -1 when absent.
    func field(_ out: String, _ k: String) -> Int {
        let line = out.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix(k + " ") } ?? ""
        return Int(line.split(separator: " ").last ?? "") ?? -1
    }

    /// The issue's storm: 20,000 connects in one second against a 5,000/s limit. The
    /// gateway stays up, refusals are CONNACK 3 and counted, and every pile gets in
    /// on retry (pileload --retry, the project's own load generator).
    func testConnectStormAgainstARateLimit() throws {
        let g = try start("""
        [limits]
        connect_rate = 5000
        connect_burst = 500
        """)
        let out = try pileload(g, ["--connections", "20000", "--connect-rate", "20000", "--max-pending", "4000",
                                   "--sources", "8", "--retry", "--duration", "1", "--connect-timeout", "40", "--workers", "2"])
        func field(_ k: String) -> Int { self.field(out, k) }
        XCTAssertEqual(field("connected"), 20000, out)
        // Ideally ~14,500 of the first second's 20,000 are over the limit; on a loaded
        // 2-core machine pileload gets fewer attempts out (4,695 seen), so the bound is
        // loose: what matters is that refusals happen, are CONNACK 3, and are counted.
        XCTAssertGreaterThan(field("refused"), 2000, "many of the first second's connects are over the limit")
        let refusedCount = try g.counter("connectRateRefused")
        XCTAssertGreaterThan(refusedCount, 2000)
        XCTAssertEqual(UInt64(field("refused")), refusedCount, "every refusal counted")
        XCTAssertEqual(try pile(g, "after-the-storm").1, .accepted, "still serving")
    }
}
