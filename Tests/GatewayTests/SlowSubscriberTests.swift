import Foundation
import MQTTCodec
import XCTest

/// A subscriber slower than the piles: an operator's wildcard subscription absorbs a
/// burst on the defaults; past a bound, drops are counted by reason, logged once per
/// connection and emitted as an event, and the Redis copy is untouched.
final class SlowSubscriberTests: XCTestCase {
    var gw: Gateway?
    var redis: RedisServer?

    override func tearDown() {
        if let gw { XCTAssertEqual(gw.stop(), 0, "clean exit on SIGTERM") }
        redis = nil
    }

    func int(_ r: [String: Any], _ k: String) -> Int { (r[k] as? NSNumber)?.intValue ?? -1 }

    /// 2,000 piles publish about 20,000 QoS 1 messages of 300 bytes in 2 s; one paho
    /// subscriber on `+/#` takes 0.2 ms a message. The outside suite lost ~13,000 of
    /// them to the old 1,000-message queue.
    func testAnOperatorWildcardAbsorbsABurstOnDefaults() throws {
        let g = try Gateway(config: "[redis]\nenabled = false\n")
        gw = g
        let script = Bundle.module.url(forResource: "interop/slow_subscriber", withExtension: "py")!
        let sub = try Background("python3", [script.path, "127.0.0.1", "\(g.port)", "0.0002", "3", "90"])
        XCTAssertNotNil(sub.out.waitFor("ready", timeout: 10), "subscriber up")
        let exe = Gateway.binary.deletingLastPathComponent().appendingPathComponent("pileload").path
        let json = NSTemporaryDirectory() + "slow-sub-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: json) }
        _ = try shell(exe, ["--target", "127.0.0.1:\(g.port)", "--sources", "4", "--profile", "uplink", "--qos", "1",
                            "--connections", "2000", "--burst", "1", "--rate", "10000", "--payload", "300",
                            "--duration", "2", "--json", json], timeout: 90)
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
        XCTAssertGreaterThan(int(report, "acked"), 15_000, "a real burst (pileload counts after its warm-up)")
        let received = Int(sub.finish(timeout: 100).split(separator: "\n").last.map(String.init) ?? "") ?? -1
        // Bridge off: every PUBLISH the gateway read was acknowledged to its pile.
        let metrics = try http(try XCTUnwrap(g.adminPort), "/metrics").body
        let accepted = Int(try XCTUnwrap(metricValue(metrics, "pilegate_publishes_total{direction=\"in\"}")))
        XCTAssertEqual(received, accepted, "every acknowledged message reached the slow subscriber, once")
        for reason in ["queueDropsMessages", "queueDropsBytes", "queueDropsBudget"] {
            XCTAssertEqual(try g.counter(reason), 0, reason)
        }
        XCTAssertNil(g.waitForLog("dropping messages", timeout: 0.1))
    }

    /// A subscriber that never acknowledges, a queue bound of each kind: the drops.
    func testEachBoundDropsCountsLogsOnceAndReports() throws {
        let cases: [(config: String, reason: String, counter: String, limit: String)] = [
            ("[acl.roles.operator]\npublish = [\"#\"]\nsubscribe = [\"#\", \"$SYS/#\"]\nmax_queued_messages = 10\n"
                + "[acl.roles.pile]\npublish = [\"x\"]\nsubscribe = [\"x\"]\n",
             "queue_messages", "queueDropsMessages", "max_queued_messages = 10"),
            ("[acl.roles.operator]\npublish = [\"#\"]\nsubscribe = [\"#\", \"$SYS/#\"]\nmax_queued_bytes = 1290\n"
                + "[acl.roles.pile]\npublish = [\"x\"]\nsubscribe = [\"x\"]\n",
             "queue_bytes", "queueDropsBytes", "max_queued_bytes = 1290"),
            ("[mqtt]\nqueue_memory_budget = 1290\n", "queue_budget", "queueDropsBudget", "queue_memory_budget = 1290"),
        ]
        for c in cases {
            let r = try RedisServer()
            redis = r
            let g = try Gateway(config: "[redis]\naddress = \"\(r.address)\"\n" + c.config)
            gw = g
            XCTAssertNotNil(g.waitForLog("connected to redis"))
            // The subscriber: 32 in flight (mqtt.max_inflight), then 10 queued (10 x 129 B
            // = 1290 B for the byte and budget bounds), then drops.
            let slow = try RawClient(port: g.port)
            XCTAssertEqual(slow.connect(Connect(clientID: "slow-op"))?.returnCode, .accepted)
            slow.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/+/#", .atLeastOnce)])))
            XCTAssertEqual(slow.receive(), .suback(Suback(packetID: 1, returnCodes: [1])))
            let pile = try RawClient(port: g.port)
            XCTAssertEqual(pile.connect(Connect(clientID: "AAAAAAAP"))?.returnCode, .accepted)
            for i in 1...60 {   // topic 29 B + payload 100 B
                pile.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAAAP/msg", payload: Array(repeating: UInt8(i), count: 100),
                                           qos: .atLeastOnce, packetID: UInt16(i))))
                XCTAssertEqual(pile.receive(), .puback(UInt16(i)), "acknowledged: stored in Redis")
            }
            XCTAssertNotNil(g.waitForLog("dropping messages for this subscriber (\(c.reason)): \(c.limit) reached"), c.reason)
            XCTAssertEqual(try g.waitForCounter(c.counter, atLeast: 18), 18, "60 - 32 in flight - 10 queued")
            XCTAssertEqual(g.logText.components(separatedBy: "dropping messages for this subscriber").count - 1, 1, "logged once")
            XCTAssertTrue(try r.waitUntil {
                try r.entries("pilegate:events").contains {
                    $0.fields["type"] == Array("queue_drop".utf8) && $0.fields["reason"] == Array(c.reason.utf8)
                        && $0.fields["device"] == Array("slow-op".utf8)
                }
            }, "queue_drop event")
            XCTAssertEqual(try r.entries("pilegate:up").count, 60, "the durable copy is whole")
            slow.closeAbruptly()
            XCTAssertNotNil(g.waitForLog("18 messages were dropped for this client over its connection"))
            XCTAssertEqual(g.stop(), 0)
            gw = nil
        }
    }

    /// A subscriber that stops reading but still pings (keepalive cannot catch it) is
    /// closed by `mqtt.send_stall_timeout`: logged, counted, its will sent. The gateway
    /// held at most `max_send_buffer` for it meanwhile, and one that reads stays.
    func testASubscriberThatStopsReadingIsClosedByPolicy() throws {
        let g = try Gateway(config: "[mqtt]\nsend_stall_timeout = 2\n[acl.roles.operator]\npublish = [\"#\"]\n"
                            + "subscribe = [\"#\"]\nmax_send_buffer = 1048576\n[acl.roles.pile]\npublish = [\"x\"]\nsubscribe = [\"x\"]\n")
        gw = g
        let topic = "/xjdy/ops/v1/TCU/AAAAAAAS/msg"
        let watcher = try RawClient(port: g.port)
        XCTAssertEqual(watcher.connect(Connect(clientID: "watcher"))?.returnCode, .accepted)
        watcher.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("gone/#", .atMostOnce)])))
        guard case .suback = watcher.receive() else { throw Failure("no SUBACK") }
        func subscriber(_ id: String, keepAlive: UInt16) throws -> RawClient {
            let c = try RawClient(port: g.port)
            let will = Will(topic: "gone/\(id)", payload: Array("stalled".utf8), qos: .atMostOnce, retain: false)
            XCTAssertEqual(c.connect(Connect(keepAlive: keepAlive, clientID: id, will: will))?.returnCode, .accepted)
            c.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest(topic, .atMostOnce)])))
            guard case .suback = c.receive() else { throw Failure("no SUBACK for \(id)") }
            return c
        }
        let stuck = try subscriber("stuck", keepAlive: 2), reader = try subscriber("reader", keepAlive: 60)
        let pile = try RawClient(port: g.port)
        XCTAssertEqual(pile.connect(Connect(clientID: "AAAAAAAS"))?.returnCode, .accepted)
        // 20 MB of QoS 0: more than both sockets' buffers and max_send_buffer together.
        let payload = [UInt8](repeating: 0x55, count: 64 << 10)
        for _ in 0..<320 { pile.send(.publish(Publish(topic: topic, payload: payload))) }
        // `reader` drains, `stuck` only pings (each 1 s, keepalive 2 s).
        let drained = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            var buf = [UInt8](repeating: 0, count: 1 << 16), quietSince = Date()
            while Date().timeIntervalSince(quietSince) < 3 {
                if recv(reader.fd, &buf, buf.count, 0) > 0 { quietSince = Date() }
            }
            drained.signal()
        }
        let start = Date()
        var closedAfter: TimeInterval?
        while closedAfter == nil && Date().timeIntervalSince(start) < 15 {
            stuck.send(.pingreq)
            sleep(1)
            if g.logText.contains("client=stuck") && g.logText.contains("(mqtt.send_stall_timeout)") {
                closedAfter = Date().timeIntervalSince(start)
            }
        }
        XCTAssertNotNil(closedAfter, "closed by the policy, not by keepalive: \(g.logText.suffix(2000))")
        XCTAssertNotNil(g.waitForLog("closing connection: it has read nothing for 2 s"))
        XCTAssertEqual(watcher.receive(timeout: 5).flatMap { if case .publish(let p) = $0 { p.topic } else { nil } }, "gone/stuck",
                       "its will went out")
        drained.wait()
        let metrics = try http(XCTUnwrap(g.adminPort), "/metrics").body
        XCTAssertEqual(metricValue(metrics, #"pilegate_connections_closed_by_reason_total{reason="send_stalled"}"#), 1,
                       "only the one that stopped reading")
        XCTAssertEqual(metricValue(metrics, #"pilegate_connections_closed_by_reason_total{reason="keepalive"}"#), 0)
        XCTAssertGreaterThan(metricValue(metrics, #"pilegate_queue_drops_total{reason="send_buffer"}"#) ?? 0, 0,
                             "past max_send_buffer QoS 0 was dropped, not held")
        reader.send(.pingreq)
        XCTAssertEqual(reader.receive(timeout: 5), .pingresp, "the reading subscriber is still served")
    }

    /// A persistent operator session away: what its queue could not hold is reported
    /// when it comes back, and the queue memory is given back when it drains.
    func testDropsWhileAwayAreReportedOnReturn() throws {
        let g = try Gateway(config: """
        [redis]
        enabled = false
        [acl.roles.operator]
        publish = ["#"]
        subscribe = ["#", "$SYS/#"]
        max_queued_messages = 5
        [acl.roles.pile]
        publish = ["x"]
        subscribe = ["x"]
        """)
        gw = g
        let away = try RawClient(port: g.port)
        XCTAssertEqual(away.connect(Connect(cleanSession: false, clientID: "night-op"))?.returnCode, .accepted)
        away.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("site/#", .atLeastOnce)])))
        XCTAssertNotNil(away.receive())
        away.send(.disconnect)
        XCTAssertTrue(away.waitClosed())
        for i in 0..<8 { try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(g.port)", "-t", "site/\(i)", "-m", "m\(i)", "-q", "1"]) }
        let back = try RawClient(port: g.port)
        XCTAssertEqual(back.connect(Connect(cleanSession: false, clientID: "night-op"))?.sessionPresent, true)
        XCTAssertNotNil(g.waitForLog("3 messages were dropped for this client while it was away"))
        var got: [String] = []
        while got.count < 5, case .publish(let p) = back.receive(timeout: 2) {
            got.append(String(decoding: p.payload, as: UTF8.self))
            back.send(.puback(p.packetID))
        }
        XCTAssertEqual(got, ["m0", "m1", "m2", "m3", "m4"], "the first five, in order")
        let metrics = try http(try XCTUnwrap(g.adminPort), "/metrics").body
        XCTAssertEqual(metricValue(metrics, "pilegate_queued_bytes"), 0, "queue memory given back")
        XCTAssertEqual(metricValue(metrics, "pilegate_queue_drops_total{reason=\"queue_messages\"}"), 3)
    }
}
