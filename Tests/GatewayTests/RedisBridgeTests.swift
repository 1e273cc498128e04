import Foundation
import MQTTCodec
import XCTest

/// The Redis contract (Sources/ARCHITECTURE.md, "The Redis contract") against a real redis-server.
final class RedisBridgeTests: RedisGatewayTestCase {

    /// Payload i: run-data JSON with bytes that are not UTF-8, carried exactly.
    func payload(_ i: Int) -> [UInt8] {
        Array(#"{"命令":"运行数据","reqid":\#(i),"VIN":""#.utf8) + [0xC3, 0x28, 0xFF, UInt8(i & 0xFF)] + Array(#""}"#.utf8)
    }

    /// Denials and rate actions reach the events stream with kind and reason.
    func testDenialsAreEvents() throws {
        let g = try startGateway("""
        [rate]
        messages_per_second = 1
        burst = 1
        action = "drop"
        """)
        let pile = try connected(g, "AAAAAJQX")
        pile.send(.publish(Publish(topic: "$SYS/forged", payload: [1], qos: .atLeastOnce, packetID: 1)))
        XCTAssertEqual(pile.receive(), .puback(1))
        for i in 2...3 {
            pile.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAJQX/msg", payload: [1], qos: .atLeastOnce, packetID: UInt16(i))))
            XCTAssertEqual(pile.receive(), .puback(UInt16(i)))
        }
        var denied: [[String: [UInt8]]] = []
        XCTAssertTrue(try redis.waitUntil {
            denied = try redis.entries("pilegate:events").map(\.fields).filter { $0["type"] == Array("denied".utf8) }
            return denied.count == 2
        })
        XCTAssertEqual(denied.map { String(decoding: $0["kind"] ?? [], as: UTF8.self) }, ["publish_acl", "rate"])
        XCTAssertEqual(denied[0]["device"], Array("AAAAAJQX".utf8))
        XCTAssertEqual(denied[1]["rule"], Array("device".utf8))
        XCTAssertEqual(denied[1]["action"], Array("drop".utf8))
        XCTAssertNotNil(denied[0]["reason"])
    }

    func testEachAcknowledgedQoS1PublishIsOneByteExactStreamEntry() throws {
        let g = try startGateway()
        let pile = try connected(g, "AAAAAJQX")
        let n = 300
        for i in 1...n {
            pile.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAJQX/msg", payload: payload(i), qos: .atLeastOnce, packetID: UInt16(i))))
        }
        var acked = Set<UInt16>()
        while acked.count < n, case .puback(let id) = pile.receive() { acked.insert(id) }
        XCTAssertEqual(acked.count, n, "every QoS 1 PUBLISH acknowledged")
        let entries = try redis.entries("pilegate:up")
        XCTAssertEqual(entries.count, n, "exactly N entries")
        XCTAssertEqual(Set(entries.map { $0.fields["payload"]! }), Set((1...n).map(payload)), "payloads byte-exact")
        let e = entries[0].fields
        XCTAssertEqual(e["device"], Array("AAAAAJQX".utf8))
        XCTAssertEqual(e["topic"], Array("/xjdy/ops/v1/TCU/AAAAAJQX/msg".utf8))
        XCTAssertEqual(e["qos"], Array("1".utf8))
        XCTAssertEqual(e["node"], Array("test-node".utf8))
        XCTAssertNotNil(e["ts"].flatMap { UInt64(String(decoding: $0, as: UTF8.self)) })
        XCTAssertEqual(Set(entries.compactMap { $0.fields["msgid"] }).count, n, "msgid unique per message")
    }

    /// Three messages of 900 KiB in one turn: the pipeline goes to Redis in sends of
    /// at most 512 KiB (RedisConnection.maxSendBytes), and each is stored whole.
    func testAPipelineLongerThanOneSendIsStoredWhole() throws {
        let g = try startGateway()
        let pile = try connected(g, "BIGPAYLD")
        let big = (1...3).map { i in (0..<(900 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ i) } }
        for (i, payload) in big.enumerated() {
            pile.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/BIGPAYLD/msg", payload: payload, qos: .atLeastOnce,
                                       packetID: UInt16(i + 1))))
        }
        var acked = Set<UInt16>()
        while acked.count < 3, case .puback(let id) = pile.receive(timeout: 10) { acked.insert(id) }
        XCTAssertEqual(acked, [1, 2, 3], g.logText.suffix(2000).description)
        XCTAssertEqual(try redis.entries("pilegate:up").map { $0.fields["payload"]! }, big)
    }

    /// One uplink writer (`uplink_writers = 1`, the default): the piles on the other
    /// shards hand their XADDs to it, and every one is stored once, in each pile's
    /// order, and acknowledged. Then with a writer per shard: nothing is relayed.
    func testShardsHandTheirUplinkToTheWriter() throws {
        for (writers, relays) in [(1, true), (4, false)] {
            let g = try startGateway("uplink_writers = \(writers)")
            // More piles than one shard keeps accepts armed for (Acceptor.depth): some
            // land on the second shard.
            let piles = try (0..<48).map { try connected(g, String(format: "AAAAR%03d", $0)) }
            for (p, pile) in piles.enumerated() {
                for i in 1...5 {
                    pile.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/\(String(format: "AAAAR%03d", p))/msg",
                                               payload: Array("\(p)-\(i)".utf8), qos: .atLeastOnce, packetID: UInt16(i))))
                }
            }
            for pile in piles {
                var acked: [UInt16] = []
                while acked.count < 5, case .puback(let id) = pile.receive() { acked.append(id) }
                XCTAssertEqual(acked, Array(1...5), "each pile's PUBACKs, in its order")
            }
            let entries = try redis.entries("pilegate:up")
            XCTAssertEqual(entries.count, 48 * 5, "every message stored once")
            for p in 0..<48 {
                let mine = entries.filter { $0.fields["device"] == Array(String(format: "AAAAR%03d", p).utf8) }
                XCTAssertEqual(mine.map { String(decoding: $0.fields["payload"]!, as: UTF8.self) }, (1...5).map { "\(p)-\($0)" },
                               "in the order the pile sent them")
            }
            let metrics = try http(try XCTUnwrap(g.adminPort), "/metrics").body
            let relayed = metricValue(metrics, "pilegate_redis_relayed_total") ?? -1
            if relays { XCTAssertGreaterThan(relayed, 0, "piles on the second shard go through the writer") }
            else { XCTAssertEqual(relayed, 0) }
            XCTAssertEqual(g.stop(), 0)
            _ = try redis.command(["FLUSHALL"])
        }
    }

    func testRoutingRulesPickTheStream() throws {
        let g = try startGateway("""
        [[route]]
        filter = "/xjdy/ops/v1/TCU/+/msg"
        json_key = "命令"
        json_value = "交易记录"
        stream = "pilegate:up:trade"
        [[route]]
        filter = "/xjdy/ops/v1/TCU/+/msg"
        json_key = "命令"
        json_value = "启动失败原因"
        stream = "pilegate:up:bootfail"
        """)
        let pile = try connected(g, "AAAAALFW")
        let msgs = [#"{"命令":"交易记录","交易流水号":"1"}"#, #"{"命令":"启动失败原因"}"#, #"{"命令":"运行数据"}"#, "not json"]
        for (i, m) in msgs.enumerated() {
            pile.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAALFW/msg", payload: Array(m.utf8), qos: .atLeastOnce, packetID: UInt16(i + 1))))
            XCTAssertEqual(pile.receive(), .puback(UInt16(i + 1)))
        }
        XCTAssertEqual(try redis.entries("pilegate:up:trade").map { $0.fields["payload"]! }, [Array(msgs[0].utf8)])
        XCTAssertEqual(try redis.entries("pilegate:up:bootfail").map { $0.fields["payload"]! }, [Array(msgs[1].utf8)])
        XCTAssertEqual(try redis.entries("pilegate:up").map { $0.fields["payload"]! }, [Array(msgs[2].utf8), Array(msgs[3].utf8)])
    }

    func testRedisOutageLosesNothingAcknowledgedAndHoldsMemory() throws {
        let g = try startGateway()
        let pile = try connected(g, "AAAAAOUT")
        var id: UInt16 = 0
        func publish(_ tag: String) -> [UInt8] {
            id &+= 1; if id == 0 { id = 1 }
            return Encoder.encode(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAOUT/msg",
                                                   payload: Array("\(tag)-\(id)".utf8) + Array(repeating: 0x20, count: 200),
                                                   qos: .atLeastOnce, packetID: id)))
        }
        // 1. Healthy: 100 acknowledged.
        for _ in 0..<100 { pile.send(publish("before")) }
        var acked = 0
        while acked < 100, case .puback = pile.receive() { acked += 1 }
        XCTAssertEqual(acked, 100)

        // 2. Redis frozen: the pile pushes as much as TCP takes; nothing is acknowledged,
        //    the gateway stops reading (max_inflight 50) and its memory stays flat.
        let rss0 = g.rssKiB
        redis.signal(SIGSTOP)
        var offered = 0, bytes = 0
        var tail: [UInt8] = []   // the rest of a packet the kernel took only part of
        while offered < 20_000 {
            let b = publish("during")
            let n = pile.sendNonBlocking(b)
            if n == 0 { id &-= 1; break }
            offered += 1; bytes += n
            if n < b.count { tail = Array(b[n...]); break }
        }
        let blocked = Gateway.readUntilQuiet(pile, seconds: 1.5)
        XCTAssertEqual(blocked, 0, "no PUBACK while Redis cannot store")
        XCTAssertGreaterThan(offered, 1000, "TCP took a good amount before pushing back")
        let grew = g.rssKiB - rss0
        print("outage: the pile offered \(offered) messages (\(bytes) bytes) while Redis was stopped; gateway RSS grew \(grew) KiB")
        XCTAssertLessThan(grew, 8 * 1024, "gateway RSS grew \(grew) KiB while \(bytes) bytes were offered")
        XCTAssertGreaterThanOrEqual(try g.waitForCounter("backpressurePauses", atLeast: 1), 1, "reading was paused")

        // 3. Redis dies and comes back from its AOF; the gateway reconnects, re-sends
        //    what was never answered, and everything offered gets acknowledged.
        redis.killHard()
        try redis.start()
        pile.send(tail)
        var ackedAfter = 0
        let deadline = Date().addingTimeInterval(30)
        while ackedAfter < offered && Date() < deadline {
            if case .puback = pile.receive() { ackedAfter += 1 }
        }
        XCTAssertEqual(ackedAfter, offered, "all offered messages acknowledged after recovery")
        let stored = Set(try redis.entries("pilegate:up").map { String(decoding: $0.fields["payload"]!.prefix(while: { $0 != 0x20 }), as: UTF8.self) })
        XCTAssertEqual(stored.filter { $0.hasPrefix("before-") }.count, 100)
        XCTAssertEqual(stored.filter { $0.hasPrefix("during-") }.count, offered, "every acknowledged message is in the stream")

        // 4. Throughput is back.
        for _ in 0..<100 { pile.send(publish("after")) }
        var after = 0
        while after < 100, case .puback = pile.receive() { after += 1 }
        XCTAssertEqual(after, 100)
    }

    func testRedisPasswordIsUsedAndAWrongOneHoldsAcknowledgements() throws {
        redis = try RedisServer(password: "s3cret")
        let g = try startGateway("password = \"s3cret\"")
        let pile = try connected(g, "AAAAAAUT")
        pile.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAAUT/msg", payload: [1], qos: .atLeastOnce, packetID: 1)))
        XCTAssertEqual(pile.receive(), .puback(1))
        XCTAssertEqual(try redis.command(["XLEN", "pilegate:up"]).int, 1)
        XCTAssertEqual(g.stop(), 0)

        let wrong = try Gateway(config: """
        [redis]
        address = "\(redis.address)"
        password = "wrong"
        """)
        gw = wrong
        XCTAssertNotNil(wrong.waitForLog("handshake refused"), wrong.logText)
        let p2 = try connected(wrong, "AAAAAAUU")
        p2.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAAUU/msg", payload: [2], qos: .atLeastOnce, packetID: 1)))
        XCTAssertNil(p2.receive(timeout: 1.0), "nothing acknowledged without a store")
        XCTAssertEqual(try redis.command(["XLEN", "pilegate:up"]).int, 1)
    }

    func testPresenceAndEventsAcrossTakeoverAndKeepalive() throws {
        let g = try startGateway()
        func presence(_ d: String) throws -> String? { try redis.command(["HGET", "pilegate:presence", d]).text }
        let first = try connected(g, "AAAAAPRS")
        XCTAssertTrue(try redis.waitUntil { try presence("AAAAAPRS")?.hasPrefix("test-node|") == true })
        let before = try presence("AAAAAPRS")
        usleep(20_000)
        let second = try connected(g, "AAAAAPRS")   // takes over
        XCTAssertTrue(first.waitClosed())
        XCTAssertTrue(try redis.waitUntil { try presence("AAAAAPRS") != before && presence("AAAAAPRS") != nil },
                      "presence now names the new connection, and the old one's exit did not delete it")
        // keepalive expiry
        let sleepy = try connected(g, "AAAAASLP", keepAlive: 1)
        XCTAssertTrue(sleepy.waitClosed())
        XCTAssertTrue(try redis.waitUntil { try presence("AAAAASLP") == nil }, "presence removed")
        func events() throws -> [(type: String, device: String, reason: String?)] {
            try redis.entries("pilegate:events").map { ($0.fields["type"].map { String(decoding: $0, as: UTF8.self) } ?? "",
                                                        $0.fields["device"].map { String(decoding: $0, as: UTF8.self) } ?? "",
                                                        $0.fields["reason"].map { String(decoding: $0, as: UTF8.self) }) }
        }
        XCTAssertTrue(try redis.waitUntil {
            let e = try events()
            return e.contains { $0.type == "disconnect" && $0.device == "AAAAAPRS" && $0.reason == "takeover" }
                && e.contains { $0.type == "disconnect" && $0.device == "AAAAASLP" && $0.reason == "keepalive" }
                && e.filter { $0.type == "connect" && $0.device == "AAAAAPRS" }.count == 2
        }, "\((try? events()).map { "\($0)" } ?? "")")
        _ = second
    }

    /// The server is checked at connect: its version in the log, and a Redis in
    /// cluster mode (which this pilegate cannot use) is an error line.
    func testTheServerIsCheckedAtConnect() throws {
        let g = try startGateway()
        XCTAssertNotNil(g.waitForLog("redis 7.", timeout: 5), g.logText)
        XCTAssertEqual(g.stop(), 0)
        gw = nil
        // The cluster bus port defaults to port + 10000, past 65535 for a high free
        // port: name a free one.
        redis = try RedisServer(extra: ["--cluster-enabled", "yes", "--cluster-config-file", "nodes-\(UUID().uuidString).conf",
                                        "--cluster-port", "\(freeLoopbackPort())"])
        let c = try Gateway(config: "[redis]\naddress = \"\(redis.address)\"")
        gw = c
        XCTAssertNotNil(c.waitForLog("runs in cluster mode", timeout: 5), c.logText)
    }
}

extension Gateway {
    /// Count PUBACKs arriving within `seconds` of quiet.
    static func readUntilQuiet(_ c: RawClient, seconds: Double) -> Int {
        var n = 0
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            guard let p = c.receive(timeout: 0.2) else { continue }
            if case .puback = p { n += 1 }
        }
        return n
    }

}
