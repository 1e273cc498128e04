import Foundation
import MQTTCodec
import XCTest
@testable import Gateway

/// Stored means readable: with `redis.consumer_groups`, nothing acknowledged is
/// trimmed before every named group has read it, and piles are held at the cap.
final class WorkerLagTests: RedisGatewayTestCase {

    func start(_ extra: String) throws -> Gateway {
        let g = try Gateway(config: "[redis]\naddress = \"\(redis.address)\"\nreview_interval_ms = 100\n" + extra)
        gw = g
        XCTAssertNotNil(g.waitForLog("connected to redis"), g.logText)
        return g
    }

    func group(_ name: String) throws {
        XCTAssertEqual(try redis.command(["XGROUP", "CREATE", "pilegate:up", name, "$", "MKSTREAM"]).text, "OK")
    }

    func length() throws -> Int { Int(try redis.command(["XLEN", "pilegate:up"]).int ?? -1) }

    /// Read everything new for `group` (and acknowledge it unless `ack` is false):
    /// the payloads read.
    @discardableResult
    func read(_ group: String, ack: Bool = true) throws -> [String] {
        let r = try redis.command(["XREADGROUP", "GROUP", group, "w1", "COUNT", "100000", "STREAMS", "pilegate:up", ">"])
        let entries = r.items.first?.items.last?.items ?? []
        var payloads: [String] = [], ids: [String] = []
        for e in entries {
            ids.append(e.items[0].text ?? "")
            let kv = e.items[1].items
            for i in stride(from: 0, to: kv.count - 1, by: 2) where kv[i].text == "payload" { payloads.append(kv[i + 1].text ?? "") }
        }
        if ack && !ids.isEmpty { _ = try redis.command(["XACK", "pilegate:up", group] + ids) }
        return payloads
    }

    /// A connected pile that sends QoS 1 PUBLISHes with payloads PREFIX1, PREFIX2, ...
    /// (packet id = the number) without waiting for acknowledgements.
    final class Pile {
        let client: RawClient
        let id: String
        init(_ g: Gateway, _ id: String) throws {
            client = try RawClient(port: g.port)
            self.id = id
            XCTAssertEqual(client.connect(Connect(clientID: id))?.returnCode, .accepted)
        }
        /// PUBACKs read until `limit` or a `timeout` with none.
        func acks(limit: Int = .max, timeout: Double) -> Int {
            var n = 0
            while n < limit, case .puback = client.receive(timeout: timeout) { n += 1 }
            return n
        }
        func publish(_ numbers: ClosedRange<Int>, _ prefix: String) {
            for i in numbers {
                client.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/\(id)/msg", payload: Array("\(prefix)\(i)".utf8),
                                             qos: .atLeastOnce, packetID: UInt16(i))))
            }
        }
    }

    func testAcknowledgedMessagesStayReadableAndPilesAreHeldAtTheCap() throws {
        try group("workers")
        let g = try start("stream_maxlen = 100\nconsumer_groups = [\"workers\"]\n")
        let sender = try Pile(g, "AAAAAAAL")
        let pile = sender.client
        sender.publish(1...300, "m")
        var acked = sender.acks(timeout: 1)
        XCTAssertEqual(acked, 100, "acknowledged up to the cap, not past it; then held: no PUBACK while the workers are behind")
        XCTAssertEqual(try length(), acked, "every acknowledged message is in the stream, none trimmed")
        XCTAssertNotNil(g.waitForLog("uplink held: workers behind: stream pilegate:up at its cap of 100 entries"))
        let port = try XCTUnwrap(g.adminPort)
        let ready = try http(port, "/readyz")
        XCTAssertEqual(ready.status, 503)
        XCTAssertTrue(ready.body.contains("workers behind"), ready.body)
        XCTAssertEqual(metricValue(try http(port, "/metrics").body, "pilegate_uplink_held_for_workers"), 1)
        // The workers catch up, round after round; the pile is released each time.
        var seen = try read("workers")
        let deadline = Date().addingTimeInterval(20)
        while acked < 300 && Date() < deadline {
            if case .puback = pile.receive(timeout: 0.3) { acked += 1 } else { seen += try read("workers") }
        }
        seen += try read("workers")
        XCTAssertEqual(acked, 300)
        XCTAssertEqual(Set(seen), Set((1...300).map { "m\($0)" }), "the group read every acknowledged message")
        XCTAssertEqual(seen.count, 300, "once each")
        XCTAssertNotNil(g.waitForLog("uplink released: the workers caught up"))
        XCTAssertTrue(try redis.waitUntil(5) { try length() == 0 }, "trimmed once read and acknowledged")
        XCTAssertEqual(try http(port, "/readyz").status, 200)
    }

    func testRedisMemoryAtItsBudgetHoldsPilesToo() throws {
        try group("workers")
        _ = try redis.command(["CONFIG", "SET", "maxmemory", "100mb"])
        // used_memory is about 1 MB: a budget of 0.5% of 100 MB is already spent.
        let g = try start("consumer_groups = [\"workers\"]\nmemory_budget = 0.005\n")
        XCTAssertNotNil(g.waitForLog("uplink held: workers behind: Redis memory at redis.memory_budget"))
        let sender = try Pile(g, "AAAAAAAM")
        let pile = sender.client
        sender.publish(1...1, "m")
        XCTAssertNil(pile.receive(timeout: 0.5), "not acknowledged while Redis memory is at its budget")
        _ = try redis.command(["CONFIG", "SET", "maxmemory", "0"])   // no maxmemory: no budget
        XCTAssertEqual(pile.receive(timeout: 3), .puback(1), "released once Redis has room")
        XCTAssertNotNil(g.waitForLog("uplink released: the workers caught up"))
    }

    /// Redis dies and comes back from its AOF while piles publish under a cap: the
    /// review's commands and the uplink are re-sent, nothing acknowledged is lost, and
    /// the cap still holds.
    func testARedisRestartUnderTheCapLosesNothing() throws {
        try group("workers")
        let g = try start("stream_maxlen = 500\nconsumer_groups = [\"workers\"]\n")
        let sender = try Pile(g, "AAAAAAAR")
        let pile = sender.client
        sender.publish(1...200, "a")
        var acked = sender.acks(limit: 200, timeout: 3)
        XCTAssertEqual(acked, 200)
        redis.killHard()
        sender.publish(201...400, "a")
        XCTAssertNil(pile.receive(timeout: 0.5), "nothing acknowledged while Redis is down")
        try redis.start()
        acked += sender.acks(limit: 400 - acked, timeout: 5)
        XCTAssertEqual(acked, 400, "every message acknowledged once Redis is back")
        let seen = try read("workers")
        XCTAssertEqual(Set(seen), Set((1...400).map { "a\($0)" }), "and every one is readable by the group")
        XCTAssertLessThanOrEqual(seen.count, 500, "within the cap (a re-sent XADD may store a message twice)")
    }

    func testTrimmingWaitsForTheSlowestGroup() throws {
        try group("fast")
        try group("slow")
        let g = try start("consumer_groups = [\"fast\", \"slow\"]\n")
        for i in 1...50 { try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(g.port)", "-t", "/xjdy/ops/v1/TCU/X/msg", "-m", "\(i)", "-q", "1"]) }
        XCTAssertEqual(try read("fast").count, 50)
        usleep(500_000)   // several reviews
        XCTAssertEqual(try length(), 50, "slow has read nothing: nothing trimmed")
        XCTAssertEqual(try read("slow", ack: false).count, 50)
        let port = try XCTUnwrap(g.adminPort)
        XCTAssertTrue(try redis.waitUntil(5) {
            metricValue(try http(port, "/metrics").body, "pilegate_stream_group_pending{stream=\"pilegate:up\",group=\"slow\"}") == 50
        })
        XCTAssertEqual(try length(), 50, "read but not acknowledged: still kept")
        let ids = try redis.command(["XRANGE", "pilegate:up", "-", "+"]).items.map { $0.items[0].text ?? "" }
        _ = try redis.command(["XACK", "pilegate:up", "slow"] + ids)
        XCTAssertTrue(try redis.waitUntil(5) { try length() == 0 }, "trimmed once the slowest group acknowledged")
    }

    func testAMissingGroupHoldsNothingAndSaysSo() throws {
        let g = try start("stream_maxlen = 10\nconsumer_groups = [\"ghost\"]\n")
        for i in 1...300 { try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(g.port)", "-t", "/xjdy/ops/v1/TCU/X/msg", "-m", "\(i)", "-q", "1"]) }
        XCTAssertNotNil(g.waitForLog("consumer group ghost does not exist on stream pilegate:up"))
        XCTAssertTrue(try redis.waitUntil(5) { try length() < 300 }, "trimmed by MAXLEN ~ 10, as without consumer_groups")
        XCTAssertNil(g.waitForLog("uplink held", timeout: 0.2), "never held for a group that does not exist")
        try group("ghost")
        XCTAssertNotNil(g.waitForLog("consumer group ghost on stream pilegate:up is present again"))
    }

    func testWithoutGroupsEachXADDTrimsByMaxlen() throws {
        let g = try start("stream_maxlen = 10\n")
        for i in 1...300 { try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(g.port)", "-t", "/xjdy/ops/v1/TCU/X/msg", "-m", "\(i)", "-q", "1"]) }
        XCTAssertLessThan(try length(), 300, "MAXLEN ~ 10 on every XADD (whole nodes of 100 go)")
    }

    func testAnEvictingMaxmemoryPolicyIsWarnedAbout() throws {
        _ = try redis.command(["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"])
        let g = try start("")
        XCTAssertNotNil(g.waitForLog("redis maxmemory-policy is allkeys-lru: under memory pressure Redis may evict the uplink streams"))
    }

    func testAReviewRedisRefusesIsLoggedOnce() throws {
        // A Redis user that may not run XINFO: the review cannot see the groups.
        _ = try redis.command(["ACL", "SETUSER", "gw", "on", ">gw-secret", "~*", "&*", "+@all", "-xinfo"])
        try group("workers")
        let g = try start("username = \"gw\"\npassword = \"gw-secret\"\nconsumer_groups = [\"workers\"]\n")
        XCTAssertNotNil(g.waitForLog("stream review: XINFO GROUPS pilegate:up failed: NOPERM"))
        usleep(500_000)   // five more reviews
        XCTAssertEqual(g.logText.components(separatedBy: "stream review: XINFO GROUPS").count - 1, 1, "logged once")
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(g.port)", "-t", "/xjdy/ops/v1/TCU/X/msg", "-m", "still", "-q", "1"])
        XCTAssertEqual(try length(), 1, "uplink still stored")
    }

    func testStreamIDsOrderAndStep() {
        XCTAssertLessThan(StreamID("1700-5")!, StreamID("1700-6")!)
        XCTAssertLessThan(StreamID("1700-99")!, StreamID("1701-0")!)
        XCTAssertEqual(StreamID("1700-5")!.successor.description, "1700-6")
        XCTAssertEqual(StreamID("1700-18446744073709551615")!.successor.description, "1701-0")
        let last = "18446744073709551615-18446744073709551615"
        XCTAssertEqual(StreamID(last)!.successor.description, last, "the largest id is its own successor")
        XCTAssertEqual(UInt64.max.saturatingAdd(1000), .max)
        XCTAssertNil(StreamID("bad"))
        XCTAssertNil(StreamID("1-2-3"))
    }
}
