import XCTest
@testable import MQTTCodec

/// Every packet type encodes to the bytes the spec describes and decodes back.
final class RoundTripTests: XCTestCase {
    static let samples: [Packet] = [
        .connect(Connect(clientID: "AAAAAJQX")),
        .connect(Connect(protocolName: "MQIsdp", protocolLevel: 3, cleanSession: false, keepAlive: 120,
                         clientID: "AAAAAJQX",
                         will: Will(topic: "/xjdy/ops/v1/TCU/AAAAAJQX/msg", payload: Array("离线".utf8), qos: .atLeastOnce, retain: true),
                         username: "pile", password: [0, 1, 2, 255])),
        .connect(Connect(cleanSession: true, keepAlive: 0, clientID: "")),
        .connack(Connack(sessionPresent: true, returnCode: .accepted)),
        .connack(Connack(sessionPresent: false, returnCode: .notAuthorized)),
        .publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAJQX/msg", payload: Array(#"{"命令":"运行数据","reqid":3}"#.utf8))),
        .publish(Publish(topic: "a", payload: [], qos: .atLeastOnce, retain: true, dup: true, packetID: 7)),
        .publish(Publish(topic: "a/b", payload: Array(repeating: 0xFF, count: 70_000), qos: .exactlyOnce, packetID: 65535)),
        .puback(1), .pubrec(2), .pubrel(3), .pubcomp(4),
        .subscribe(Subscribe(packetID: 9, topics: [TopicRequest("/xjdy/ops/v1/TCU/+/#", .atLeastOnce), TopicRequest("a", .exactlyOnce)])),
        .suback(Suback(packetID: 9, returnCodes: [1, 2, 0x80, 0])),
        .unsubscribe(Unsubscribe(packetID: 10, filters: ["a", "b/#"])),
        .unsuback(10),
        .pingreq, .pingresp, .disconnect,
    ]

    func testEveryPacketTypeRoundTrips() {
        var seen = Set<UInt8>()
        for p in Self.samples {
            let bytes = Encoder.encode(p)
            XCTAssertEqual(bytes.count, Encoder.size(of: p), "size of \(p.type)")
            let r = bytes.withUnsafeBytes { Decoder.decode($0) }
            XCTAssertEqual(r, .packet(p, consumed: bytes.count), "\(p.type)")
            seen.insert(p.type.rawValue)
        }
        XCTAssertEqual(seen.count, PacketType.allCases.count, "a sample for every packet type")
    }

    func testKnownWireBytes() {
        // 3.12 / 3.13 / 3.14: two-byte packets
        XCTAssertEqual(Encoder.encode(.pingreq), [0xC0, 0x00])
        XCTAssertEqual(Encoder.encode(.pingresp), [0xD0, 0x00])
        XCTAssertEqual(Encoder.encode(.disconnect), [0xE0, 0x00])
        XCTAssertEqual(Encoder.encode(.pubrel(0x0102)), [0x62, 0x02, 0x01, 0x02])
        XCTAssertEqual(Encoder.encode(.connack(Connack(sessionPresent: true, returnCode: .accepted))), [0x20, 0x02, 0x01, 0x00])
        // CONNECT, clean session, keepalive 10, id "a"
        XCTAssertEqual(Encoder.encode(.connect(Connect(keepAlive: 10, clientID: "a"))),
                       [0x10, 13, 0, 4, 0x4D, 0x51, 0x54, 0x54, 4, 0x02, 0, 10, 0, 1, 0x61])
        // QoS 1 retained PUBLISH "t" id 5 payload "x"
        XCTAssertEqual(Encoder.encode(.publish(Publish(topic: "t", payload: [0x78], qos: .atLeastOnce, retain: true, packetID: 5))),
                       [0x33, 6, 0, 1, 0x74, 0, 5, 0x78])
    }

    func testRemainingLengthBoundaries() {
        // 2.2.3: 127 | 128 | 16383 | 16384 | 2097151 | 2097152 use 1..4 bytes
        for (len, bytes) in [(127, 1), (128, 2), (16_383, 2), (16_384, 3), (2_097_151, 3), (2_097_152, 4)] {
            let payload = [UInt8](repeating: 1, count: len - 3)   // topic "t" costs 3
            let p = Packet.publish(Publish(topic: "t", payload: payload))
            let enc = Encoder.encode(p)
            XCTAssertEqual(enc.count, 1 + bytes + len, "remaining length \(len)")
            XCTAssertEqual(enc.withUnsafeBytes { Decoder.decode($0) }, .packet(p, consumed: enc.count))
        }
    }

    func testIncompleteInputAsksForMore() {
        let bytes = Encoder.encode(.publish(Publish(topic: "a/b", payload: Array(repeating: 7, count: 300), qos: .atLeastOnce, packetID: 1)))
        for cut in 0..<bytes.count {
            let r = bytes.withUnsafeBytes { Decoder.decode(UnsafeRawBufferPointer(rebasing: $0[0..<cut])) }
            switch r {
            case .incomplete(let needed):
                if cut >= 3 { XCTAssertEqual(needed, bytes.count) }
            default: XCTFail("cut at \(cut): \(r)")
            }
        }
    }

    func testTwoPacketsBackToBack() {
        let bytes = Encoder.encode(.pingreq) + Encoder.encode(.puback(3))
        bytes.withUnsafeBytes { raw in
            XCTAssertEqual(Decoder.decode(raw), .packet(.pingreq, consumed: 2))
            XCTAssertEqual(Decoder.decode(UnsafeRawBufferPointer(rebasing: raw[2...])), .packet(.puback(3), consumed: 4))
        }
    }

    func testMalformedJSONAndInvalidUTF8PayloadsAreCarried() {
        // Payloads are bytes: duplicate keys, a VIN with garbage bytes (pile-protocol.md).
        var payload = Array(#"{"命令":"交易记录","车辆VIN码":""#.utf8)
        payload += [0xC3, 0x28, 0xFF, 0x00]
        payload += Array(#"","命令":"x"}"#.utf8)
        let p = Packet.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAJQX/msg", payload: payload, qos: .atLeastOnce, packetID: 1))
        let enc = Encoder.encode(p)
        XCTAssertEqual(enc.withUnsafeBytes { Decoder.decode($0) }, .packet(p, consumed: enc.count))
    }
}
