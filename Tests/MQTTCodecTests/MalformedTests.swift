import XCTest
@testable import MQTTCodec

/// Every way a packet can break a MUST of the spec's wire format is rejected with
/// its own error (section numbers from MQTT 3.1.1).
final class MalformedTests: XCTestCase {
    func decode(_ bytes: [UInt8], max: Int = Decoder.maxRemainingLength + 5) -> DecodeResult {
        bytes.withUnsafeBytes { Decoder.decode($0, maxPacketSize: max) }
    }

    func expect(_ bytes: [UInt8], _ error: DecodeError, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(decode(bytes), .failure(error), file: file, line: line)
    }

    /// A CONNECT built by hand so each field can be broken.
    func connect(name: String = "MQTT", level: UInt8 = 4, flags: UInt8 = 0x02, keepAlive: UInt16 = 60,
                 payload: [UInt8] = [0, 1, 0x61]) -> [UInt8] {
        var body: [UInt8] = [0, UInt8(name.utf8.count)] + Array(name.utf8) + [level, flags, UInt8(keepAlive >> 8), UInt8(keepAlive & 0xFF)]
        body += payload
        return [0x10, UInt8(body.count)] + body
    }

    func testReservedPacketTypes() {
        expect([0x00, 0x00], .reservedPacketType(0))   // 2.2.1
        expect([0xF0, 0x00], .reservedPacketType(15))
    }

    func testFixedHeaderFlags() {
        expect([0x63, 0x02, 0, 1], .invalidFlags(.pubrel, 3))                   // 3.6.1-1
        expect([0x60, 0x02, 0, 1], .invalidFlags(.pubrel, 0))
        expect([0x80, 0x06, 0, 1, 0, 1, 0x61, 0], .invalidFlags(.subscribe, 0))  // 3.8.1-1
        expect([0xA0, 0x05, 0, 1, 0, 1, 0x61], .invalidFlags(.unsubscribe, 0))  // 3.10.1-1
        expect([0xC1, 0x00], .invalidFlags(.pingreq, 1))                         // 2.2.2
        expect([0xE2, 0x00], .invalidFlags(.disconnect, 2))
        expect([0x41, 0x02, 0, 1], .invalidFlags(.puback, 1))
        var c = connect(); c[0] = 0x11
        expect(c, .invalidFlags(.connect, 1))
    }

    func testRemainingLength() {
        expect([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], .malformedRemainingLength)  // 2.2.3: at most 4 bytes
        XCTAssertEqual(decode([0x30, 0xFF, 0xFF]), .incomplete(needed: nil))
        XCTAssertEqual(decode([0x30, 0x80, 0x80, 0x01], max: 1000), .failure(.packetTooLarge(length: 16388, limit: 1000)))
    }

    func testTrailingAndTruncatedFixedSizePackets() {
        expect([0x40, 0x03, 0, 1, 9], .trailingBytes(.puback))
        expect([0x40, 0x01, 0], .truncated("packet identifier"))
        expect([0xC0, 0x01, 0], .trailingBytes(.pingreq))
        expect([0xE0, 0x01, 0], .trailingBytes(.disconnect))
    }

    func testZeroPacketIdentifiers() {   // 2.3.1-1
        expect([0x40, 0x02, 0, 0], .zeroPacketID(.puback))
        expect([0x50, 0x02, 0, 0], .zeroPacketID(.pubrec))
        expect([0x62, 0x02, 0, 0], .zeroPacketID(.pubrel))
        expect([0x70, 0x02, 0, 0], .zeroPacketID(.pubcomp))
        expect([0x32, 0x05, 0, 1, 0x74, 0, 0], .zeroPacketID(.publish))
        expect([0x82, 0x06, 0, 0, 0, 1, 0x61, 0], .zeroPacketID(.subscribe))
        expect([0xA2, 0x05, 0, 0, 0, 1, 0x61], .zeroPacketID(.unsubscribe))
    }

    func testConnectProtocolNameAndLevel() {
        expect(connect(name: "MQTX"), .invalidProtocolName("MQTX"))             // 3.1.2-1
        expect(connect(level: 5), .unacceptableProtocolLevel(5))                 // 3.1.2-2
        expect(connect(name: "MQIsdp", level: 4), .unacceptableProtocolLevel(4))
        if case .packet = decode(connect(name: "MQIsdp", level: 3)) {} else { XCTFail("3.1 accepted") }
    }

    func testConnectFlags() {
        expect(connect(flags: 0x03), .reservedConnectFlag)                       // 3.1.2-3
        expect(connect(flags: 0x02 | 0x08), .invalidWillFlags)                   // will QoS without will: 3.1.2-13
        expect(connect(flags: 0x02 | 0x20), .invalidWillFlags)                   // will retain without will: 3.1.2-15
        expect(connect(flags: 0x02 | 0x04 | 0x18, payload: [0, 1, 0x61, 0, 1, 0x74, 0, 0]), .invalidWillFlags) // will QoS 3: 3.1.2-14
        expect(connect(flags: 0x02 | 0x40, payload: [0, 1, 0x61, 0, 1, 0x70]), .passwordWithoutUsername) // 3.1.2-22
    }

    func testConnectPayloadFields() {
        expect(connect(payload: [0, 5, 0x61]), .truncated("client identifier"))
        expect(connect(flags: 0x06, payload: [0, 1, 0x61]), .truncated("will topic"))
        expect(connect(flags: 0x06, payload: [0, 1, 0x61, 0, 1, 0x74]), .truncated("will message"))
        expect(connect(flags: 0x06, payload: [0, 1, 0x61, 0, 1, 0x23, 0, 0]), .invalidTopicName("#"))
        expect(connect(flags: 0x82, payload: [0, 1, 0x61]), .truncated("user name"))
        expect(connect(flags: 0xC2, payload: [0, 1, 0x61, 0, 1, 0x75]), .truncated("password"))
        expect(connect(payload: [0, 1, 0x61, 9]), .trailingBytes(.connect))
        var short = connect(); short.removeLast(4); short[1] = UInt8(short.count - 2)
        expect(short, .truncated("keep alive"))
    }

    func testUTF8Rules() {   // 1.5.3
        expect(connect(payload: [0, 2, 0x61, 0x00]), .invalidUTF8("client identifier"))            // U+0000
        expect(connect(payload: [0, 2, 0xC3, 0x28]), .invalidUTF8("client identifier"))            // bad continuation
        expect(connect(payload: [0, 3, 0xED, 0xA0, 0x80]), .invalidUTF8("client identifier"))      // surrogate D800
        expect(connect(payload: [0, 2, 0xC0, 0x80]), .invalidUTF8("client identifier"))            // overlong NUL
        expect([0x30, 0x04, 0, 2, 0xFF, 0x61], .invalidUTF8("topic name"))
        expect([0x82, 0x06, 0, 1, 0, 1, 0x00, 0], .invalidUTF8("topic filter"))
        // U+FEFF must not be stripped and is legal
        if case .packet(.connect(let c), _) = decode(connect(payload: [0, 3, 0xEF, 0xBB, 0xBF])) {
            XCTAssertEqual(c.clientID, "\u{FEFF}")
        } else { XCTFail("BOM client id") }
    }

    func testPublishRules() {
        expect([0x36, 0x05, 0, 1, 0x74, 0, 1], .invalidQoS(3))                   // 3.3.1-4
        expect([0x38, 0x03, 0, 1, 0x74], .dupOnQoS0)                             // 3.3.1-2
        expect([0x30, 0x03, 0, 1, 0x2B], .invalidTopicName("+"))                 // 3.3.2-2
        expect([0x30, 0x05, 0, 3, 0x61, 0x2F, 0x23], .invalidTopicName("a/#"))
        expect([0x30, 0x02, 0, 0], .invalidTopicName(""))                        // 4.7.3-1
        expect([0x30, 0x02, 0, 5], .truncated("topic name"))
        expect([0x32, 0x04, 0, 1, 0x74, 0], .truncated("packet identifier"))
    }

    func testSubscribeRules() {
        expect([0x82, 0x02, 0, 1], .noTopics(.subscribe))                        // 3.8.3-3
        expect([0x82, 0x06, 0, 1, 0, 1, 0x61, 3], .invalidQoS(3))                // 3.8.3-4
        expect([0x82, 0x06, 0, 1, 0, 1, 0x61, 0x40], .reservedSubscribeBits(0x40))
        expect([0x82, 0x05, 0, 1, 0, 1, 0x61], .truncated("requested QoS"))
        expect([0x82, 0x05, 0, 1, 0, 0, 0], .invalidTopicFilter(""))             // 4.7.3-1
        for bad in ["a#", "a/#/b", "a+", "+a/b", "a/b+", "##"] {
            var body: [UInt8] = [0, 1, 0, UInt8(bad.utf8.count)] + Array(bad.utf8) + [0]
            body = [0x82, UInt8(body.count)] + body
            expect(body, .invalidTopicFilter(bad))
        }
    }

    func testUnsubscribeRules() {
        expect([0xA2, 0x02, 0, 1], .noTopics(.unsubscribe))                      // 3.10.3-2
        expect([0xA2, 0x06, 0, 1, 0, 2, 0x2B, 0x2B], .invalidTopicFilter("++"))
        expect([0xA2, 0x05, 0, 1, 0, 2, 0x61], .truncated("topic filter"))
        XCTAssertEqual(decode([0xA2, 0x05, 0, 1, 0, 1, 0x23]),
                       .packet(.unsubscribe(Unsubscribe(packetID: 1, filters: ["#"])), consumed: 7))
    }

    func testServerToClientPacketRules() {
        expect([0x20, 0x02, 0x02, 0], .invalidFlags(.connack, 2))
        expect([0x20, 0x02, 0, 9], .truncated("CONNACK return code 9"))
        expect([0x90, 0x03, 0, 1, 3], .invalidQoS(3))
        expect([0x90, 0x02, 0, 1], .noTopics(.suback))
    }
}
