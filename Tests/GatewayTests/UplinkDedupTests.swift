import Foundation
import Glibc
import MQTTCodec
import XCTest

/// Uplink without duplicates: a pile's resend (DUP=1, same packet id and payload)
/// and a repeated record (a route's `dedup_json_key`) are acknowledged and stored
/// once, also when the resend arrives at another node.
final class UplinkDedupTests: RedisGatewayTestCase {
    let up = "/xjdy/ops/v1/TCU/AAAAADUP/msg"

    func publish(_ c: RawClient, _ payload: String, id: UInt16, dup: Bool = false, qos: QoS = .atLeastOnce,
                 topic: String? = nil) {
        c.send(.publish(Publish(topic: topic ?? up, payload: Array(payload.utf8), qos: qos, dup: dup, packetID: id)))
    }

    /// Publish QoS 1 through `first`, lose the link after the PUBACK, reconnect to
    /// `then` and resend with DUP=1 (acknowledged too); the new connection.
    func resendAfterADrop(_ first: Gateway, _ then: Gateway, _ payload: String, id: UInt16) throws -> RawClient {
        let pile = try connected(first, "AAAAADUP")
        publish(pile, payload, id: id)
        XCTAssertEqual(pile.receive(), .puback(id))
        pile.closeAbruptly()
        let back = try connected(then, "AAAAADUP")
        publish(back, payload, id: id, dup: true)
        XCTAssertEqual(back.receive(), .puback(id), "the resend is acknowledged")
        return back
    }

    func stored(_ stream: String = "pilegate:up") throws -> [String] {
        try redis.entries(stream).map { String(decoding: $0.fields["payload"]!, as: UTF8.self) }
    }

    /// The PUBACK is lost with the link; the pile resends with DUP=1 after a clean
    /// reconnect: acknowledged, not stored again. DUP=1 with another payload, or
    /// DUP=0 with the same id and payload, are new messages.
    func testAResendIsStoredOnce() throws {
        let g = try startGateway()
        let back = try resendAfterADrop(g, g, "m1", id: 7)
        XCTAssertEqual(try stored(), ["m1"], "and not stored again")
        publish(back, "m2", id: 7, dup: true)
        XCTAssertEqual(back.receive(), .puback(7))
        publish(back, "m2", id: 7)
        XCTAssertEqual(back.receive(), .puback(7))
        XCTAssertEqual(try stored(), ["m1", "m2", "m2"], "another payload, or DUP=0, is a new message")
        let metrics = try http(try XCTUnwrap(g.adminPort), "/metrics").body
        XCTAssertEqual(metricValue(metrics, #"pilegate_uplink_duplicates_total{kind="resend"}"#), 1)
    }

    /// QoS 2 across a clean reconnect: the PUBREC was lost, the session with it; the
    /// resend is acknowledged with PUBREC and stored once.
    func testAQoS2ResendIsStoredOnce() throws {
        let g = try startGateway()
        let pile = try connected(g, "AAAAADUP")
        publish(pile, "q2", id: 9, qos: .exactlyOnce)
        XCTAssertEqual(pile.receive(), .pubrec(9))
        pile.closeAbruptly()
        let back = try connected(g, "AAAAADUP")
        publish(back, "q2", id: 9, dup: true, qos: .exactlyOnce)
        XCTAssertEqual(back.receive(), .pubrec(9))
        back.send(.pubrel(9))
        XCTAssertEqual(back.receive(), .pubcomp(9))
        XCTAssertEqual(try stored(), ["q2"])
    }

    /// The pile reconnects to another node (same Redis) and resends there.
    func testAResendToAnotherNodeIsStoredOnce() throws {
        let a = try startGateway()
        let b = try Gateway(config: "[redis]\naddress = \"\(redis.address)\"", node: "node-b")
        defer { XCTAssertEqual(b.stop(), 0) }
        XCTAssertNotNil(b.waitForLog("connected to redis"))
        _ = try resendAfterADrop(a, b, "trade 1", id: 3)
        XCTAssertEqual(try stored(), ["trade 1"])
    }

    /// A route naming `dedup_json_key`: the same device and trade serial is stored
    /// once whatever the packet id (and QoS); another device's same serial is its own.
    func testATradeRecordUploadedAgainIsStoredOnce() throws {
        let g = try startGateway("""
        [[route]]
        filter = "/xjdy/ops/v1/TCU/+/msg"
        json_key = "命令"
        json_value = "交易记录"
        stream = "pilegate:trade"
        dedup_json_key = "交易流水号"
        """)
        func trade(_ serial: String, _ amount: Int) -> String { #"{"命令":"交易记录","交易流水号":"\#(serial)","金额":\#(amount)}"# }
        let pile = try connected(g, "AAAAADUP")
        publish(pile, trade("0000000000000000250618190619040", 1), id: 1)
        XCTAssertEqual(pile.receive(), .puback(1))
        publish(pile, trade("0000000000000000250618190619040", 1), id: 2)
        XCTAssertEqual(pile.receive(), .puback(2), "acknowledged")
        publish(pile, trade("0000000000000000250618190619040", 1), id: 0, qos: .atMostOnce)
        publish(pile, trade("0000000000000000250618190619041", 2), id: 3)
        XCTAssertEqual(pile.receive(), .puback(3))
        let other = try connected(g, "AAAAADU2")
        publish(other, trade("0000000000000000250618190619040", 1), id: 1, topic: "/xjdy/ops/v1/TCU/AAAAADU2/msg")
        XCTAssertEqual(other.receive(), .puback(1))
        let records = try stored("pilegate:trade")
        XCTAssertEqual(records.count, 3, "\(records)")
        XCTAssertEqual(Set(records).count, 2)
        let metrics = try http(try XCTUnwrap(g.adminPort), "/metrics").body
        XCTAssertEqual(metricValue(metrics, #"pilegate_uplink_duplicates_total{kind="record"}"#), 2)
    }

    /// `dedup_window_ms = 0` turns it off: the resend is stored again.
    func testTheWindowCanBeTurnedOff() throws {
        let g = try startGateway("dedup_window_ms = 0")
        let pile = try connected(g, "AAAAADUP")
        publish(pile, "m1", id: 7)
        XCTAssertEqual(pile.receive(), .puback(7))
        publish(pile, "m1", id: 7, dup: true)
        XCTAssertEqual(pile.receive(), .puback(7))
        XCTAssertEqual(try stored(), ["m1", "m1"])
    }

    /// The dedup key's TTL is set with the first record and then only every quarter
    /// window (one PEXPIRE, not one per message), long enough that the newest record
    /// still lives a full window; a Redis that lost the key gets it back with a TTL.
    func testTheDedupKeyTTLIsSetOncePerQuarterWindow() throws {
        let g = try startGateway("dedup_window_ms = 8000")
        let key = "pilegate:up:dd:AAAAADUP"
        func pexpires() throws -> Int {
            let info = try redis.command(["INFO", "commandstats"]).text ?? ""
            let line = info.split(separator: "\r\n").first { $0.hasPrefix("cmdstat_pexpire:") } ?? ""
            return Int(line.split(separator: ",").first?.split(separator: "=").last ?? "0") ?? 0
        }
        let pile = try connected(g, "AAAAADUP")
        for id: UInt16 in 1...10 {
            publish(pile, "m\(id)", id: id)
            XCTAssertEqual(pile.receive(), .puback(id))
        }
        XCTAssertEqual(try pexpires(), 1, "one PEXPIRE for ten records")
        let ttl = try XCTUnwrap(try redis.command(["PTTL", key]).int)
        XCTAssertGreaterThan(ttl, 8000, "the last record lives a full window")
        XCTAssertLessThanOrEqual(ttl, 10_100)
        usleep(2_100_000)   // past a quarter window: the next record refreshes the TTL
        publish(pile, "m11", id: 11)
        XCTAssertEqual(pile.receive(), .puback(11))
        XCTAssertEqual(try pexpires(), 2)
        XCTAssertGreaterThan(try XCTUnwrap(try redis.command(["PTTL", key]).int), 8000)
        // The key is lost and the gateway reconnects (a Redis restarted empty): it comes
        // back with the next record, with a TTL.
        _ = try redis.command(["DEL", key])
        let connects = g.logText.components(separatedBy: "connected to redis").count
        _ = try redis.command(["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
        let deadline = Date().addingTimeInterval(10)
        while g.logText.components(separatedBy: "connected to redis").count < connects + 2 && Date() < deadline { usleep(50_000) }
        publish(pile, "m12", id: 12)
        XCTAssertEqual(pile.receive(), .puback(12))
        XCTAssertGreaterThan(try XCTUnwrap(try redis.command(["PTTL", key]).int), 8000, "not a key without a TTL")
    }
}
