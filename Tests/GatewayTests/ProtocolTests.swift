import Foundation
import MQTTCodec
import XCTest

/// Byte-exact protocol behaviour with a raw socket client: every MUST-close case,
/// bad input closing only its own connection, keepalive, takeover, QoS 2 dedupe.
final class ProtocolTests: XCTestCase {
    var gw: Gateway!

    override func setUpWithError() throws {
        gw = try Gateway(config: """
        [mqtt]
        connect_timeout = 1
        max_packet_size = 4096
        max_subscriptions_per_client = 3

        """)
    }

    override func tearDown() {
        if let gw { XCTAssertEqual(gw.stop(), 0, "clean exit on SIGTERM") }
    }

    func connected(_ id: String, clean: Bool = true, keepAlive: UInt16 = 30, will: Will? = nil) throws -> RawClient {
        let c = try RawClient(port: gw.port)
        let ack = c.connect(Connect(cleanSession: clean, keepAlive: keepAlive, clientID: id, will: will))
        XCTAssertEqual(ack?.returnCode, .accepted)
        return c
    }

    /// After a bad client, a good one still gets served end to end.
    func assertStillServing(file: StaticString = #filePath, line: UInt = #line) throws {
        let a = try connected("probe-sub")
        a.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("probe", .atLeastOnce)])))
        XCTAssertEqual(a.receive(), .suback(Suback(packetID: 1, returnCodes: [1])), file: file, line: line)
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(gw.port)", "-t", "probe", "-m", "alive", "-q", "1"])
        guard case .publish(let p) = a.receive() else { return XCTFail("no delivery after bad input", file: file, line: line) }
        XCTAssertEqual(p.payload, Array("alive".utf8), file: file, line: line)
    }

    func testGarbageClosesOnlyThatConnection() throws {
        let bystander = try connected("bystander")
        let bad = try RawClient(port: gw.port)
        bad.send([0xF0, 0x00])   // reserved packet type 15
        XCTAssertTrue(bad.waitClosed(), "server closes the bad connection")
        XCTAssertNotNil(gw.waitForLog("malformed packet: reserved packet type 15"))
        XCTAssertGreaterThanOrEqual(try gw.waitForCounter("malformedPackets", atLeast: 1), 1)
        bystander.send(.pingreq)
        XCTAssertEqual(bystander.receive(), .pingresp, "other connections are untouched")
        try assertStillServing()
    }

    func testMalformedAfterConnect() throws {
        let c = try connected("pile-bad-utf8")
        c.send([0x30, 0x04, 0, 2, 0xFF, 0x61])   // topic name not UTF-8
        XCTAssertTrue(c.waitClosed())
        XCTAssertNotNil(gw.waitForLog("topic name is not well-formed UTF-8"))
        try assertStillServing()
    }

    func testOversizedPacketIsRefused() throws {
        let c = try connected("pile-big")
        c.send(.publish(Publish(topic: "t", payload: Array(repeating: 1, count: 5000))))
        XCTAssertTrue(c.waitClosed())
        XCTAssertNotNil(gw.waitForLog("exceeds the limit of 4096"))
        try assertStillServing()
    }

    func testFirstPacketMustBeConnect() throws {   // 3.1.0-1
        let c = try RawClient(port: gw.port)
        c.send(.pingreq)
        XCTAssertTrue(c.waitClosed())
        XCTAssertNotNil(gw.waitForLog("first packet is pingreq, not CONNECT"))
        XCTAssertGreaterThanOrEqual(try gw.waitForCounter("protocolViolations", atLeast: 1), 1)
    }

    func testSecondConnectCloses() throws {   // 3.1.0-2
        let c = try connected("twice")
        c.send(.connect(Connect(clientID: "twice")))
        XCTAssertTrue(c.waitClosed())
        XCTAssertNotNil(gw.waitForLog("second CONNECT"))
    }

    func testServerToClientPacketFromClientCloses() throws {
        let c = try connected("confused")
        c.send(.connack(Connack(sessionPresent: false, returnCode: .accepted)))
        XCTAssertTrue(c.waitClosed())
    }

    func testUnsupportedProtocolLevelGetsConnack1() throws {   // 3.1.2-2
        let c = try RawClient(port: gw.port)
        c.send([0x10, 0x0D, 0, 4, 0x4D, 0x51, 0x54, 0x54, 5, 0x02, 0, 10, 0, 1, 0x61])
        XCTAssertEqual(c.receive(), .connack(Connack(sessionPresent: false, returnCode: .unacceptableProtocolVersion)))
        XCTAssertTrue(c.waitClosed())
    }

    func testMQTT31ClientsAreAccepted() throws {
        let c = try RawClient(port: gw.port)
        XCTAssertEqual(c.connect(Connect(protocolName: "MQIsdp", protocolLevel: 3, clientID: "old-firmware"))?.returnCode, .accepted)
    }

    func testEmptyClientIDRules() throws {   // 3.1.3-7, 3.1.3-8
        let a = try RawClient(port: gw.port)
        XCTAssertEqual(a.connect(Connect(cleanSession: false, clientID: ""))?.returnCode, .identifierRejected)
        XCTAssertTrue(a.waitClosed())
        let b = try RawClient(port: gw.port)
        XCTAssertEqual(b.connect(Connect(cleanSession: true, clientID: ""))?.returnCode, .accepted)
    }

    func testConnectTimeout() throws {
        let c = try RawClient(port: gw.port)
        let t0 = Date()
        XCTAssertTrue(c.waitClosed(), "closed without CONNECT")
        XCTAssertLessThan(Date().timeIntervalSince(t0), 4.5)
        XCTAssertNotNil(gw.waitForLog("no CONNECT within 1 s"))
    }

    func testKeepaliveExpiryPublishesWill() throws {   // 3.1.2-24
        let watcher = try connected("watcher")
        watcher.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("wills/#", .atLeastOnce)])))
        XCTAssertNotNil(watcher.receive())
        let t0 = Date()   // before the CONNECT: the server's 1.5 s start when it reads it
        let quiet = try connected("quiet", keepAlive: 1,
                                  will: Will(topic: "wills/quiet", payload: Array("离线".utf8), qos: .atLeastOnce, retain: false))
        XCTAssertTrue(quiet.waitClosed(), "closed after 1.5 x keepalive")
        let waited = Date().timeIntervalSince(t0)
        XCTAssertGreaterThanOrEqual(waited, 1.3)
        XCTAssertLessThan(waited, 4.0)
        guard case .publish(let p) = watcher.receive() else { return XCTFail("no will") }
        XCTAssertEqual(p.topic, "wills/quiet")
        XCTAssertEqual(p.payload, Array("离线".utf8))
    }

    func testDisconnectSuppressesWill() throws {   // 3.14.4-3
        let watcher = try connected("watcher2")
        watcher.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("wills/#", .atLeastOnce)])))
        XCTAssertNotNil(watcher.receive())
        let polite = try connected("polite", will: Will(topic: "wills/polite", payload: [1], qos: .atMostOnce, retain: false))
        polite.send(.disconnect)
        XCTAssertTrue(polite.waitClosed())
        let rude = try connected("rude", will: Will(topic: "wills/rude", payload: [2], qos: .atMostOnce, retain: false))
        rude.closeAbruptly()
        guard case .publish(let p) = watcher.receive() else { return XCTFail("no will from the abrupt client") }
        XCTAssertEqual(p.topic, "wills/rude", "only the abrupt client's will is sent")
    }

    func testTakeoverAcrossShards() throws {   // 3.1.4-2
        // Connections land on whichever of the 4 shards accepts first: repeat so the
        // same-shard and cross-shard paths both run.
        for round in 0..<8 {
            let old = try connected("pile-AAAAAJQX", clean: false)
            old.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/AAAAAJQX/cmd", .atLeastOnce)])))
            XCTAssertNotNil(old.receive())
            let new = try RawClient(port: gw.port)
            let ack = new.connect(Connect(cleanSession: false, clientID: "pile-AAAAAJQX"))
            XCTAssertEqual(ack, Connack(sessionPresent: true, returnCode: .accepted), "round \(round)")
            XCTAssertTrue(old.waitClosed(), "old connection closed, round \(round)")
            // the taken-over session's subscription now delivers to the new connection
            try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(gw.port)", "-t", "/xjdy/ops/v1/TCU/AAAAAJQX/cmd", "-m", "r\(round)", "-q", "1"])
            guard case .publish(let p) = new.receive() else { return XCTFail("no delivery after takeover, round \(round)") }
            XCTAssertEqual(p.payload, Array("r\(round)".utf8))
            new.send(.puback(p.packetID))
            new.send(.disconnect)
            XCTAssertTrue(new.waitClosed())
        }
        XCTAssertGreaterThanOrEqual(try gw.waitForCounter("takeovers", atLeast: 8), 8)
    }

    func testQoS2DuplicateIsRoutedOnce() throws {   // 4.3.3
        let sub = try connected("q2-sub")
        sub.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("q2", .atMostOnce)])))
        XCTAssertNotNil(sub.receive())
        let pub = try connected("q2-pub")
        let p = Publish(topic: "q2", payload: [7], qos: .exactlyOnce, packetID: 42)
        pub.send(.publish(p))
        XCTAssertEqual(pub.receive(), .pubrec(42))
        var dup = p; dup.dup = true
        pub.send(.publish(dup))   // resent before PUBREL: acknowledged, not routed again
        XCTAssertEqual(pub.receive(), .pubrec(42))
        pub.send(.pubrel(42))
        XCTAssertEqual(pub.receive(), .pubcomp(42))
        pub.send(.pingreq)
        XCTAssertEqual(pub.receive(), .pingresp)
        sub.send(.pingreq)
        XCTAssertEqual(sub.receive(), .publish(Publish(topic: "q2", payload: [7])))
        XCTAssertEqual(sub.receive(), .pingresp, "exactly one copy delivered")
    }

    func testOutgoingQoS2Flow() throws {
        let sub = try connected("q2-out")
        sub.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("o", .exactlyOnce)])))
        XCTAssertNotNil(sub.receive())
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(gw.port)", "-t", "o", "-m", "x", "-q", "2"])
        guard case .publish(let p) = sub.receive() else { return XCTFail("no publish") }
        XCTAssertEqual(p.qos, .exactlyOnce)
        sub.send(.pubrec(p.packetID))
        XCTAssertEqual(sub.receive(), .pubrel(p.packetID))
        sub.send(.pubcomp(p.packetID))
        sub.send(.pingreq)
        XCTAssertEqual(sub.receive(), .pingresp)
    }

    func testUnackedQoS1IsResentWithDupOnReconnect() throws {   // 4.4.0-1
        let a = try connected("dup-pile", clean: false)
        a.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("d", .atLeastOnce)])))
        XCTAssertNotNil(a.receive())
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(gw.port)", "-t", "d", "-m", "once", "-q", "1"])
        guard case .publish(let first) = a.receive() else { return XCTFail("no publish") }
        XCTAssertFalse(first.dup)
        a.closeAbruptly()   // never PUBACKed
        usleep(200_000)
        let b = try RawClient(port: gw.port)
        XCTAssertEqual(b.connect(Connect(cleanSession: false, clientID: "dup-pile"))?.sessionPresent, true)
        guard case .publish(let again) = b.receive() else { return XCTFail("not resent") }
        XCTAssertTrue(again.dup)
        XCTAssertEqual(again.packetID, first.packetID)
        XCTAssertEqual(again.payload, Array("once".utf8))
    }

    /// A pile's own command topic is kept interned (OwnTopic.swift): delivered at the
    /// subscription's QoS, replaced by a new SUBSCRIBE (3.8.4-3), gone after UNSUBSCRIBE,
    /// counted against the limit like any filter, and another client's subscription
    /// to it is an ordinary exact filter; both get a message published to it.
    func testOwnCommandTopicSubscription() throws {
        let own = "/xjdy/ops/v1/TCU/OWNPILE1/cmd"
        let pile = try connected("OWNPILE1")
        pile.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest(own, .atLeastOnce)])))
        XCTAssertEqual(pile.receive(), .suback(Suback(packetID: 1, returnCodes: [1])))
        let watcher = try connected("watcher")
        watcher.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest(own, .atMostOnce)])))
        XCTAssertEqual(watcher.receive(), .suback(Suback(packetID: 1, returnCodes: [0])))
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(gw.port)", "-t", own, "-m", "c1", "-q", "1"])
        guard case .publish(let p1) = pile.receive() else { return XCTFail("no command") }
        XCTAssertEqual(p1.qos, .atLeastOnce)
        XCTAssertEqual(p1.topic, own)
        pile.send(.puback(p1.packetID))
        guard case .publish(let w1) = watcher.receive() else { return XCTFail("the other subscriber got nothing") }
        XCTAssertEqual(w1.payload, Array("c1".utf8))
        // Subscribing again replaces it (QoS 0 now), and it still counts as one of three.
        pile.send(.subscribe(Subscribe(packetID: 2, topics: [own, "x", "y", "z"].map { TopicRequest($0, .atMostOnce) })))
        XCTAssertEqual(pile.receive(), .suback(Suback(packetID: 2, returnCodes: [0, 0, 0, 0x80])))
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(gw.port)", "-t", own, "-m", "c2", "-q", "1"])
        guard case .publish(let p2) = pile.receive() else { return XCTFail("no command after resubscribing") }
        XCTAssertEqual(p2.qos, .atMostOnce)
        XCTAssertNotNil(watcher.receive())
        pile.send(.unsubscribe(Unsubscribe(packetID: 3, filters: [own])))
        XCTAssertEqual(pile.receive(), .unsuback(3))
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(gw.port)", "-t", own, "-m", "c3", "-q", "1"])
        XCTAssertNotNil(watcher.receive(), "the other subscriber still gets it")
        pile.send(.pingreq)
        XCTAssertEqual(pile.receive(), .pingresp, "and the pile no longer does")
    }

    func testSubscriptionLimitAndSysTopicRules() throws {
        let c = try connected("limited")
        c.send(.subscribe(Subscribe(packetID: 1, topics: ["a", "b", "c", "d"].map { TopicRequest($0, .atLeastOnce) })))
        XCTAssertEqual(c.receive(), .suback(Suback(packetID: 1, returnCodes: [1, 1, 1, 0x80])))
        // clients may not write $ topics; the SUBACK for $SYS reads still works
        let watcher = try connected("sys-watch")
        watcher.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("$SYS/broker/version", .atMostOnce)])))
        XCTAssertEqual(watcher.receive(), .suback(Suback(packetID: 1, returnCodes: [0])))
        guard case .publish(let v) = watcher.receive() else { return XCTFail("no $SYS version") }
        XCTAssertTrue(String(decoding: v.payload, as: UTF8.self).hasPrefix("pilegate "))
        c.send(.publish(Publish(topic: "$SYS/broker/version", payload: [1], qos: .atLeastOnce, packetID: 9)))
        XCTAssertEqual(c.receive(), .puback(9), "denied PUBLISH is still acknowledged")
        XCTAssertNotNil(gw.waitForLog("denied (publish_acl): PUBLISH to $SYS/broker/version: topics starting with $ are reserved"))
    }

    func testRestartRebindsThePortAtOnce() throws {
        // Stop with clients connected, then start again on the same port at once (as
        // systemd's Restart= would).
        let port = gw.port
        let clients = try (0..<50).map { try connected("r\($0)") }
        XCTAssertEqual(gw.stop(), 0)
        for c in clients { XCTAssertTrue(c.waitClosed()) }
        gw = try Gateway(listen: "127.0.0.1:\(port)")
        XCTAssertNotNil(try connected("after-restart"))
    }

    func testPipelinedPacketsSplitAcrossWrites() throws {
        // CONNECT + SUBSCRIBE + PINGREQ in one write, then a PUBLISH dribbled byte by byte
        let c = try RawClient(port: gw.port)
        c.send(Encoder.encode(.connect(Connect(clientID: "dribble"))) +
               Encoder.encode(.subscribe(Subscribe(packetID: 3, topics: [TopicRequest("self", .atMostOnce)]))) +
               Encoder.encode(.pingreq))
        XCTAssertEqual(c.receive(), .connack(Connack(sessionPresent: false, returnCode: .accepted)))
        XCTAssertEqual(c.receive(), .suback(Suback(packetID: 3, returnCodes: [0])))
        XCTAssertEqual(c.receive(), .pingresp)
        for b in Encoder.encode(.publish(Publish(topic: "self", payload: Array(repeating: 9, count: 300)))) {
            c.send([b])
        }
        XCTAssertEqual(c.receive(), .publish(Publish(topic: "self", payload: Array(repeating: 9, count: 300))))
    }
}
