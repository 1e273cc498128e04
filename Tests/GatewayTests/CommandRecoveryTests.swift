import Foundation
import Glibc
import MQTTCodec
import XCTest

/// Commands across restarts, expiry and a Redis outage: what was not acknowledged
/// by the pile stays pending in Redis and reaches the pile later, or ends `expired`.
final class CommandRecoveryTests: CommandTestCase {
    /// A command queued for an absent persistent pile lives in Redis, not in the
    /// gateway: after a restart the pile (whose session the old process took with
    /// it) subscribes again and gets it.
    func testQueuedCommandSurvivesAGatewayRestart() throws {
        let g = try startGateway()
        let away = try subscribed(g, "AAAAARST", clean: false)
        away.send(.disconnect)
        XCTAssertTrue(away.waitClosed())
        let id = try command("AAAAARST", "restart")
        XCTAssertTrue(try waitOutcomes(id, ["queued"]))
        XCTAssertEqual(g.stop(), 0)

        let g2 = try startGateway()
        let back = try connected(g2, "AAAAARST", clean: false)
        XCTAssertNil(back.receive(timeout: 0.3), "nothing before it subscribes (its session did not survive)")
        back.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest(topic("AAAAARST"), .atLeastOnce)])))
        guard case .suback = back.receive() else { return XCTFail("no SUBACK") }
        let p = try XCTUnwrap(nextPublish(back))
        XCTAssertEqual(p.payload, Array("restart".utf8))
        back.send(.puback(p.packetID))
        XCTAssertTrue(try waitOutcomes(id, ["queued", "acked"]))
        XCTAssertTrue(redis.waitUntil { self.pending == 0 })
    }

    /// The gateway is killed (SIGKILL) with a command sent and not acknowledged: the
    /// next run takes the entry up again and the pile gets it when it is back.
    func testCommandInFlightSurvivesAKilledGateway() throws {
        let g = try startGateway()
        let pile = try subscribed(g, "AAAAAKIL")
        let id = try command("AAAAAKIL", "log upload")
        XCTAssertNotNil(nextPublish(pile))
        kill(g.process.processIdentifier, SIGKILL)
        g.process.waitUntilExit()
        gw = nil
        XCTAssertEqual(pending, 1)

        let g2 = try startGateway()
        XCTAssertNotNil(g2.waitForLog("taking up 1 commands left pending"))
        let back = try subscribed(g2, "AAAAAKIL")
        let p = try XCTUnwrap(nextPublish(back))
        XCTAssertEqual(p.payload, Array("log upload".utf8))
        back.send(.puback(p.packetID))
        XCTAssertTrue(try waitOutcomes(id, ["acked"]), "one final outcome (no interim: it was stored before)")
        XCTAssertTrue(redis.waitUntil { self.pending == 0 })
    }

    /// The pile drops before its PUBACK and comes back through another node (same
    /// Redis): that node reads the mailbox, sends the command, and its PUBACK ends the
    /// entry that is pending on the first node's stream.
    func testAnotherNodeDeliversAndEndsIt() throws {
        let a = try startGateway()
        let b = try Gateway(config: "[redis]\naddress = \"\(redis.address)\"", node: "node-b")
        defer { XCTAssertEqual(b.stop(), 0) }
        XCTAssertNotNil(b.waitForLog("connected to redis"))
        let pile = try subscribed(a, "AAAAAMOV")
        let id = try command("AAAAAMOV", "switch master")
        XCTAssertNotNil(nextPublish(pile))
        pile.closeAbruptly()
        let moved = try subscribed(b, "AAAAAMOV")
        let p = try XCTUnwrap(nextPublish(moved), "node-b sends it")
        XCTAssertEqual(p.payload, Array("switch master".utf8))
        moved.send(.puback(p.packetID))
        XCTAssertTrue(try waitOutcomes(id, ["acked"]))
        XCTAssertEqual(try outcomeEntries().first { $0.id == id }?.fields["node"], "node-b")
        XCTAssertTrue(redis.waitUntil { self.pending == 0 }, "XACKed on test-node's stream")
    }

    /// An entry a crashed run read and never stored: the next run stores it and
    /// says `queued`, then delivers it when the pile subscribes.
    func testEntriesAnEarlierRunReadAreTakenUp() throws {
        try redis.command(["XGROUP", "CREATE", key, "pilegate", "$", "MKSTREAM"])
        let id = try command("AAAAACLM", "{}")
        try redis.command(["XREADGROUP", "GROUP", "pilegate", "crashed-run", "COUNT", "10", "STREAMS", key, ">"])
        let g = try startGateway()
        XCTAssertTrue(try waitOutcomes(id, ["queued"]))
        let pile = try subscribed(g, "AAAAACLM")
        let p = try XCTUnwrap(nextPublish(pile))
        pile.send(.puback(p.packetID))
        XCTAssertTrue(try waitOutcomes(id, ["queued", "acked"]))
        XCTAssertTrue(redis.waitUntil { self.pending == 0 })
    }

    /// A command a worker wrote before this node ever started (no group yet) is read
    /// all the same: the group starts at the stream's beginning.
    func testACommandWrittenBeforeTheFirstStartIsRead() throws {
        let id = try command("AAAAAFST", "{}")
        _ = try startGateway()
        XCTAssertTrue(try waitOutcomes(id, ["offline"]))
        XCTAssertTrue(redis.waitUntil { self.pending == 0 })
    }

    /// Past `expires` or `ttl` a command is not delivered: at once when it is already
    /// late, when its pile comes back, and, for a pile that never does, by the review.
    func testExpiredCommandsAreNotDelivered() throws {
        let g = try startGateway("[downlink]\nreview_idle_ms = 1000")
        let here = try subscribed(g, "AAAAAEXP")
        let late = try command("AAAAAEXP", "late", ["expires", String(UInt64(Date().timeIntervalSince1970 * 1000) - 1)])
        XCTAssertTrue(try waitOutcomes(late, ["expired"]))
        XCTAssertNil(here.receive(timeout: 0.3), "never sent")

        let away = try subscribed(g, "AAAAAEX2", clean: false)
        away.send(.disconnect)
        XCTAssertTrue(away.waitClosed())
        let short = try command("AAAAAEX2", "firmware", ["ttl", "1"])
        XCTAssertTrue(try waitOutcomes(short, ["queued"]))

        let gone = try subscribed(g, "AAAAAEX3", clean: false)
        gone.send(.disconnect)
        XCTAssertTrue(gone.waitClosed())
        let never = try command("AAAAAEX3", "firmware", ["ttl", "1"])
        usleep(1_200_000)
        let back = try connected(g, "AAAAAEX2", clean: false)
        XCTAssertNil(back.receive(timeout: 0.5), "an expired command is not sent to the returning pile")
        XCTAssertTrue(try waitOutcomes(short, ["queued", "expired"]))
        XCTAssertTrue(try waitOutcomes(never, ["queued", "expired"], timeout: 8), "the review ends it without the pile")
        XCTAssertTrue(redis.waitUntil { self.pending == 0 })
        XCTAssertEqual(try redis.command(["EXISTS", "pilegate:mail:AAAAAEX3"]).int, 0)
    }

    /// Redis dies while a command is with the pile; the pile's PUBACK arrives during
    /// the outage. Redis comes back from its AOF: the command ends `acked`, once.
    func testRedisOutageLosesNoCommand() throws {
        let g = try startGateway()
        let pile = try subscribed(g, "AAAAAOUT")
        let id = try command("AAAAAOUT", "switch master")
        let p = try XCTUnwrap(nextPublish(pile))
        redis.killHard()
        pile.send(.puback(p.packetID))
        usleep(500_000)
        try redis.start()
        XCTAssertTrue(try waitOutcomes(id, ["acked"], timeout: 15))
        XCTAssertTrue(redis.waitUntil { self.pending == 0 })
        // and the reader is back: a new command goes through
        let next = try command("AAAAAOUT", "next")
        let q = try XCTUnwrap(nextPublish(pile, timeout: 10))
        XCTAssertEqual(q.payload, Array("next".utf8), "the acknowledged command did not come back")
        pile.send(.puback(q.packetID))
        let ok = try waitOutcomes(next, ["acked"])
        let seen = try outcomes(next)
        XCTAssertTrue(ok, "\(seen) \(g.logText)")
    }

    /// A mailbox field someone wrote by hand that is not ours: removed, counted and
    /// ended `rejected`; the good command beside it delivered.
    func testABadMailboxEntryEndsRejected() throws {
        let g = try startGateway()
        try redis.command(["HSET", "pilegate:mail:AAAAABAD", "1-1@" + key, "garbage"])
        let away = try subscribed(g, "AAAAABAD", clean: false)
        away.send(.disconnect)
        XCTAssertTrue(away.waitClosed())
        let id = try command("AAAAABAD", "ok")
        XCTAssertTrue(try waitOutcomes(id, ["queued"]))
        let back = try connected(g, "AAAAABAD", clean: false)
        let p = try XCTUnwrap(nextPublish(back))
        XCTAssertEqual(p.payload, Array("ok".utf8))
        XCTAssertNotNil(g.waitForLog("mailbox entry 1-1@\(key) does not parse"))
        XCTAssertTrue(try waitOutcomes("1-1", ["rejected"]))
        XCTAssertEqual(try redis.command(["HEXISTS", "pilegate:mail:AAAAABAD", "1-1@" + key]).int, 0)
        let metrics = try http(try XCTUnwrap(g.adminPort), "/metrics").body
        XCTAssertEqual(metricValue(metrics, "pilegate_mailbox_bad_entries_total"), 1)
    }
}
