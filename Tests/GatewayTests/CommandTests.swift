import Foundation
import Glibc
import MQTTCodec
import XCTest

/// Commands end to end (Sources/ARCHITECTURE.md): a worker's entry on the node's
/// downlink stream, the pile (raw sockets, so acknowledgements are sent or withheld
/// exactly), the outcome stream, and the entry pending until the command ends.
class CommandTestCase: RedisGatewayTestCase {
    let key = "pilegate:down:test-node"

    func topic(_ device: String) -> String { "/xjdy/ops/v1/TCU/\(device)/cmd" }

    /// A pile connected and subscribed to its command topic.
    func subscribed(_ g: Gateway, _ id: String, qos: QoS = .atLeastOnce, clean: Bool = true) throws -> RawClient {
        let c = try connected(g, id, clean: clean)
        c.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest(topic(id), qos)])))
        guard case .suback = c.receive() else { throw Failure("no SUBACK for \(id)") }
        return c
    }

    /// XADD a command; returns its entry id.
    @discardableResult
    func command(_ device: String, _ payload: String, _ extra: [String] = []) throws -> String {
        try redis.command(["XADD", key, "*", "device", device, "payload", payload] + extra).text!
    }

    /// Every outcome entry: (id, fields as text).
    func outcomeEntries() throws -> [(id: String, fields: [String: String])] {
        try redis.entries("pilegate:down:outcome").map { e in
            (String(decoding: e.fields["id"]!, as: UTF8.self), e.fields.mapValues { String(decoding: $0, as: UTF8.self) })
        }
    }

    /// The outcomes reported for one command, in order.
    func outcomes(_ id: String) throws -> [String] {
        try outcomeEntries().filter { $0.id == id }.map { $0.fields["outcome"]! }
    }

    /// Wait until the command's outcomes are exactly `expected`.
    func waitOutcomes(_ id: String, _ expected: [String], timeout: TimeInterval = 10) throws -> Bool {
        try redis.waitUntil(timeout) { try outcomes(id) == expected }
    }

    var pending: Int { (try? redis.command(["XPENDING", key, "pilegate"]).items.first?.int) ?? -1 }

    /// The next PUBLISH the pile gets (skipping nothing else: a test expects only these).
    func nextPublish(_ c: RawClient, timeout: Double = 5) -> Publish? {
        if case .publish(let p) = c.receive(timeout: timeout) { return p }
        return nil
    }
}

final class CommandTests: CommandTestCase {
    /// `acked` only once the pile's PUBACK arrives; until then the entry is pending and
    /// the command is in the pile's mailbox. QoS 0 ends `sent`; no pile, `offline`;
    /// connected and subscribed to something else, `not_subscribed`.
    func testOutcomesSayWhatHappened() throws {
        let g = try startGateway()
        let pile = try subscribed(g, "AAAAAAAB")
        let quiet = try connected(g, "AAAAAAAC")
        quiet.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/elsewhere", .atLeastOnce)])))
        guard case .suback = quiet.receive() else { throw Failure("no SUBACK") }
        let cmd = #"{"命令":"日志召唤","reqid":234,"文件名":"BillingGun1.0.log"}"#
        let a = try command("AAAAAAAB", cmd, ["qos", "1"])
        let p = try XCTUnwrap(nextPublish(pile), "the pile got its command")
        XCTAssertEqual(p.payload, Array(cmd.utf8))
        XCTAssertEqual(p.topic, topic("AAAAAAAB"))
        usleep(300_000)
        XCTAssertEqual(try outcomes(a), [], "no outcome before the pile acknowledged")
        XCTAssertEqual(pending, 1, "pending until acknowledged")
        XCTAssertEqual(try redis.command(["HLEN", "pilegate:mail:AAAAAAAB"]).int, 1, "kept in the mailbox meanwhile")
        pile.send(.puback(p.packetID))
        XCTAssertTrue(try waitOutcomes(a, ["acked"]))
        XCTAssertTrue(redis.waitUntil { self.pending == 0 })
        XCTAssertEqual(try redis.command(["EXISTS", "pilegate:mail:AAAAAAAB"]).int, 0)
        let e = try XCTUnwrap(try outcomeEntries().first { $0.id == a })
        XCTAssertEqual(e.fields["device"], "AAAAAAAB")
        XCTAssertEqual(e.fields["node"], "test-node")
        XCTAssertEqual(e.fields["stream"], key)
        XCTAssertLessThan(abs(Double(e.fields["ts"]!)! - Date().timeIntervalSince1970 * 1000), 10_000)

        let zero = try command("AAAAAAAB", "qos0", ["qos", "0"])
        XCTAssertEqual(nextPublish(pile)?.qos, .atMostOnce)
        let b = try command("AAAAAAAZ", "{}")
        let c = try command("AAAAAAAC", "{}")
        XCTAssertTrue(try waitOutcomes(zero, ["sent"]))
        XCTAssertTrue(try waitOutcomes(b, ["offline"]))
        XCTAssertTrue(try waitOutcomes(c, ["not_subscribed"]))
        XCTAssertTrue(redis.waitUntil { self.pending == 0 }, "every entry that ended is XACKed")
        let metrics = try http(try XCTUnwrap(g.adminPort), "/metrics").body
        XCTAssertEqual(metricValue(metrics, #"pilegate_downlink_total{outcome="acked"}"#), 1)
        XCTAssertEqual(metricValue(metrics, #"pilegate_downlink_total{outcome="offline"}"#), 1)
        _ = quiet
    }

    /// A pile that reconnected clean and has not subscribed yet (the moment between
    /// its CONNACK and its SUBSCRIBE) is not `not_subscribed`: the command waits in
    /// its mailbox and goes out at the SUBSCRIBE.
    func testACommandWaitsForAPileThatHasNotSubscribedYet() throws {
        let g = try startGateway()
        let pile = try connected(g, "AAAAAAAD")
        let id = try command("AAAAAAAD", "hello")
        XCTAssertTrue(try redis.waitUntil { try self.redis.command(["HLEN", "pilegate:mail:AAAAAAAD"]).int == 1 }, "in the mailbox")
        usleep(200_000)
        XCTAssertEqual(try outcomes(id), [], "not ended")
        pile.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest(topic("AAAAAAAD"), .atLeastOnce)])))
        var got: Publish?
        for _ in 0..<2 where got == nil {   // the SUBACK and the command, in either order
            if case .publish(let p) = pile.receive(timeout: 5) { got = p }
        }
        let p = try XCTUnwrap(got, "sent at the SUBSCRIBE")
        XCTAssertEqual(p.payload, Array("hello".utf8))
        pile.send(.puback(p.packetID))
        XCTAssertTrue(try waitOutcomes(id, ["acked"]))
        XCTAssertTrue(redis.waitUntil { self.pending == 0 })
    }

    /// QoS 2: PUBREC is not the end, PUBCOMP is.
    func testQoS2CommandIsAckedOnPubcomp() throws {
        let g = try startGateway()
        let pile = try subscribed(g, "AAAAAAQ2", qos: .exactlyOnce)
        let id = try command("AAAAAAQ2", "restart", ["qos", "2"])
        let p = try XCTUnwrap(nextPublish(pile))
        XCTAssertEqual(p.qos, .exactlyOnce)
        pile.send(.pubrec(p.packetID))
        XCTAssertEqual(pile.receive(), .pubrel(p.packetID))
        usleep(300_000)
        XCTAssertEqual(try outcomes(id), [], "PUBREC alone does not end it")
        pile.send(.pubcomp(p.packetID))
        XCTAssertTrue(try waitOutcomes(id, ["acked"]))
        XCTAssertTrue(redis.waitUntil { self.pending == 0 })
    }

    /// Entries a worker got wrong end `rejected` with the reason, and the reader goes on.
    func testBadEntriesAreRejectedAndTheReaderGoesOn() throws {
        let g = try startGateway()
        let pile = try subscribed(g, "AAAAAAAD")
        let bad = [["payload", "{}"],                                        // no device
                   ["device", "AAAAAAAD", "topic", "a/#", "payload", "{}"],  // wildcard in a topic name
                   ["device", "AAAAAAAD", "qos", "7", "payload", "{}"],      // no such QoS
                   ["device", "AAAAAAAD", "qos", "one", "payload", "{}"],
                   ["device", "AAAAAAAD", "ttl", "soon", "payload", "{}"],
                   ["device", "AAAAAAAD", "ttl", "-5", "payload", "{}"],
                   ["device", "AAAAAAAD", "expires", "tomorrow", "payload", "{}"]]
        let ids = try bad.map { try redis.command(["XADD", key, "*"] + $0).text! }
        let good = try command("AAAAAAAD", "ok")
        let p = try XCTUnwrap(nextPublish(pile), "the good entry after them arrived")
        XCTAssertEqual(p.payload, Array("ok".utf8))
        pile.send(.puback(p.packetID))
        for id in ids { XCTAssertTrue(try waitOutcomes(id, ["rejected"]), "bad entry \(id)") }
        XCTAssertTrue(try waitOutcomes(good, ["acked"]))
        let reasons = try outcomeEntries().filter { ids.contains($0.id) }.map { $0.fields["reason"] ?? "" }
        XCTAssertEqual(reasons, ["no device", "bad topic \"a/#\"", "bad qos \"7\"", "bad qos \"one\"", "bad ttl \"soon\"",
                                 "bad ttl \"-5\"", "bad expires \"tomorrow\""])
        XCTAssertTrue(redis.waitUntil { self.pending == 0 }, "every entry XACKed")
        XCTAssertEqual(g.logText.components(separatedBy: "rejected:").count - 1, bad.count)
    }

    /// A worker may choose an entry id up to the end of time: its expiry (id time plus
    /// ttl) saturates instead of trapping, and the command is delivered (bench/fuzz.sh
    /// found the overflow in the RESP target).
    func testAnEntryIdAtTheEndOfTimeIsDelivered() throws {
        let g = try startGateway()
        let pile = try subscribed(g, "AAAAAAAG")
        let id = try redis.command(["XADD", key, "18446744073709551615-0", "device", "AAAAAAAG",
                                    "ttl", "60", "payload", "late"]).text!
        let p = try XCTUnwrap(nextPublish(pile), "delivered, the gateway still up")
        XCTAssertEqual(p.payload, Array("late".utf8))
        pile.send(.puback(p.packetID))
        XCTAssertTrue(try waitOutcomes(id, ["acked"]))
        XCTAssertTrue(g.process.isRunning)
    }

    /// `mqtt.command_topic` is the one command topic pattern: a downlink entry without
    /// `topic` goes there, and the built-in pile role may subscribe to it (and only it).
    func testDefaultTopicFollowsCommandTopic() throws {
        let g = try startGateway("[mqtt]\ncommand_topic = \"/fleet/%c/commands\"\n[auth]\nallow_anonymous = \"true\"\n[acl]\nanonymous_role = \"pile\"")
        let pile = try connected(g, "AAAAAAAF")
        pile.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/fleet/AAAAAAAF/commands", .atLeastOnce),
                                                            TopicRequest(topic("AAAAAAAF"), .atLeastOnce)])))
        guard case .suback(let ack) = pile.receive() else { return XCTFail("no SUBACK") }
        XCTAssertEqual(ack.returnCodes, [1, Suback.failure], "the pile role follows command_topic")
        try command("AAAAAAAF", "reboot")
        let p = try XCTUnwrap(nextPublish(pile), "command not delivered")
        XCTAssertEqual(p.topic, "/fleet/AAAAAAAF/commands")
        XCTAssertEqual(p.payload, Array("reboot".utf8))
    }

    /// The pile's 4G link drops after the command reached it, before its PUBACK: the
    /// command is not `acked`; the pile comes back with a clean session, subscribes,
    /// and gets it again; its PUBACK ends it once.
    func testDroppedBeforePubackIsSentAgainAfterACleanReconnect() throws {
        let g = try startGateway()
        let pile = try subscribed(g, "AAAAADRP")
        let id = try command("AAAAADRP", #"{"命令":"固件下载","reqid":7}"#)
        XCTAssertNotNil(nextPublish(pile))
        pile.closeAbruptly()
        usleep(300_000)
        XCTAssertEqual(try outcomes(id), [])
        XCTAssertEqual(pending, 1)
        let back = try subscribed(g, "AAAAADRP")
        let p = try XCTUnwrap(nextPublish(back), "sent again after the clean reconnect")
        XCTAssertEqual(p.payload, Array(#"{"命令":"固件下载","reqid":7}"#.utf8))
        back.send(.puback(p.packetID))
        XCTAssertTrue(try waitOutcomes(id, ["acked"]))
        XCTAssertTrue(redis.waitUntil { self.pending == 0 })
        XCTAssertNil(back.receive(timeout: 0.5), "and not again")
    }

    /// With `redeliver` off, a clean-session pile that leaves without acknowledging
    /// ends its command `offline` (MQTT's own rule); a persistent one keeps it.
    func testRedeliverOffEndsACleanPilesCommandOffline() throws {
        let g = try startGateway("[downlink]\nredeliver = false")
        let pile = try subscribed(g, "AAAAANRD")
        let id = try command("AAAAANRD", "x")
        XCTAssertNotNil(nextPublish(pile))
        pile.closeAbruptly()
        XCTAssertTrue(try waitOutcomes(id, ["offline"]))
        XCTAssertTrue(redis.waitUntil { self.pending == 0 })
        let back = try subscribed(g, "AAAAANRD")
        XCTAssertNil(back.receive(timeout: 0.5), "not sent again")
    }

    /// A pile has at most `max_pending` commands waiting; the oldest go `expired`,
    /// and the rest arrive in the order they were written.
    func testMaxPendingPushesOutTheOldest() throws {
        let g = try startGateway("[downlink]\nmax_pending = 3")
        let away = try subscribed(g, "AAAAAMAX", clean: false)
        away.send(.disconnect)
        XCTAssertTrue(away.waitClosed())
        let ids = try (0..<5).map { try command("AAAAAMAX", "c\($0)") }
        XCTAssertTrue(try waitOutcomes(ids[0], ["queued", "expired"]))
        XCTAssertTrue(try waitOutcomes(ids[1], ["queued", "expired"]))
        for id in ids[2...] { XCTAssertTrue(try waitOutcomes(id, ["queued"])) }
        XCTAssertEqual(try outcomeEntries().first { $0.id == ids[0] && $0.fields["outcome"] == "expired" }?.fields["reason"],
                       "max_pending")
        let back = try connected(g, "AAAAAMAX", clean: false)
        var got: [String] = []
        while got.count < 3, let p = nextPublish(back) {
            got.append(String(decoding: p.payload, as: UTF8.self))
            back.send(.puback(p.packetID))
        }
        XCTAssertEqual(got, ["c2", "c3", "c4"])
        for id in ids[2...] { XCTAssertTrue(try waitOutcomes(id, ["queued", "acked"])) }
        XCTAssertTrue(redis.waitUntil { self.pending == 0 })
    }

    /// 100 commands to one pile; it acknowledges 40, its link drops, it comes back
    /// clean: it gets the rest in the order they were written, each ends `acked` once.
    func testHundredCommandsArriveInOrderAcrossAReconnect() throws {
        let g = try startGateway()
        let pile = try subscribed(g, "AAAAAORD")
        let ids = try (0..<100).map { try command("AAAAAORD", "c\($0)") }
        // All read before the link drops: one read in the gap, with no pile at all, would
        // end `offline` (as it should; seen under bench/tsan.sh, where reading is slower).
        XCTAssertTrue(redis.waitUntil { self.pending == 100 })
        var firstSeen: [Int] = []
        func take(_ p: Publish) -> Int {
            let n = Int(String(decoding: p.payload.dropFirst(), as: UTF8.self))!
            if !firstSeen.contains(n) { firstSeen.append(n) }
            return n
        }
        var acked = 0
        while acked < 40, let p = nextPublish(pile) {
            _ = take(p)
            pile.send(.puback(p.packetID))
            acked += 1
        }
        pile.closeAbruptly()
        let back = try subscribed(g, "AAAAAORD")
        var second: [Int] = []
        while firstSeen.count < 100, let p = nextPublish(back) {
            second.append(take(p))
            back.send(.puback(p.packetID))
        }
        XCTAssertEqual(firstSeen, Array(0..<100), "first deliveries in the order written")
        XCTAssertEqual(second, second.sorted(), "the second connection's deliveries in order too")
        XCTAssertTrue(try redis.waitUntil { try self.outcomeEntries().filter { $0.fields["outcome"] == "acked" }.count >= 100 })
        usleep(300_000)
        // One final outcome each, `acked`; a command read while the pile was away also
        // has the interim `queued` before it.
        let all = try outcomeEntries()
        let ends = all.filter { $0.fields["outcome"] == "acked" }
        XCTAssertEqual(ends.count, 100, "one final outcome each")
        XCTAssertEqual(Set(ends.map(\.id)), Set(ids))
        XCTAssertTrue(all.allSatisfy { $0.fields["outcome"] == "acked" || $0.fields["outcome"] == "queued" }, "\(all.map(\.fields))")
        XCTAssertTrue(redis.waitUntil { self.pending == 0 })
    }

    /// A pile on paho-mqtt, the client library piles run: its own PUBACK (QoS 1) and
    /// PUBREC/PUBREL/PUBCOMP (QoS 2) end the commands `acked`.
    func testAPahoPileAcknowledgesQoS1AndQoS2Commands() throws {
        let g = try startGateway()
        let script = Bundle.module.url(forResource: "interop/paho_pile", withExtension: "py")!
        let pile = try Background("python3", [script.path, "127.0.0.1", "\(g.port)", "AAAAPAHO", "2", "2", "20"])
        XCTAssertNotNil(pile.out.waitFor("ready", timeout: 10), "paho pile up")
        let one = try command("AAAAPAHO", #"{"命令":"重启","reqid":1}"#, ["qos", "1"])
        let two = try command("AAAAPAHO", #"{"命令":"参数配置","reqid":2}"#, ["qos", "2"])
        XCTAssertTrue(try waitOutcomes(one, ["acked"]))
        XCTAssertTrue(try waitOutcomes(two, ["acked"]))
        let lines = pile.finish(timeout: 20).split(separator: "\n").map(String.init)
        XCTAssertEqual(lines, ["ready", #"{"命令":"重启","reqid":1}"#, #"{"命令":"参数配置","reqid":2}"#])
        XCTAssertTrue(redis.waitUntil { self.pending == 0 })
    }
}
