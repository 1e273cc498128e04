import Foundation
import MQTTCodec
import XCTest

/// What arrives before a CONNECT: bytes that cannot start one are refused at once
/// (3.1.0-1), a packet too large is refused as soon as its length is read, and the
/// CONNECT deadline closes silent and half-sent connections on time. (ProtocolTests'
/// gateway: connect_timeout = 1, max_packet_size = 4096.)
extension ProtocolTests {
    /// Send `bytes` on a new connection; seconds until the server closed it.
    func secondsToClose(_ bytes: [UInt8]) throws -> Double {
        let c = try RawClient(port: gw.port)
        let start = Date()
        if !bytes.isEmpty { c.send(bytes) }
        XCTAssertTrue(c.waitClosed(), "closed by the server")
        return Date().timeIntervalSince(start)
    }

    func testAnHTTPRequestIsClosedAtOnce() throws {
        // 'G' reads as a PUBACK header announcing 69 bytes: without the first-byte
        // check the gateway waited for them, or for the CONNECT deadline.
        let t = try secondsToClose(Array("GET / HTTP/1.1\r\nHost: pilegate\r\n\r\n".utf8))
        XCTAssertLessThan(t, 0.1, "closed within 100 ms")
        XCTAssertNotNil(gw.waitForLog("protocol violation: first packet is puback, not CONNECT (first byte 0x47)"))
        XCTAssertGreaterThanOrEqual(try gw.waitForCounter("protocolViolations", atLeast: 1), 1)
    }

    func testOneBadFirstByteIsEnough() throws {
        XCTAssertLessThan(try secondsToClose([0x20]), 0.1, "a lone CONNACK type byte")
        XCTAssertNotNil(gw.waitForLog("first packet is connack, not CONNECT (first byte 0x20)"))
        XCTAssertLessThan(try secondsToClose([0x12]), 0.1, "CONNECT type with flags set (2.2.2)")
        XCTAssertNotNil(gw.waitForLog("malformed packet: invalid fixed-header flags 0x2 on connect"))
        XCTAssertLessThan(try secondsToClose([0x00]), 0.1, "reserved type 0")
        XCTAssertNotNil(gw.waitForLog("malformed packet: reserved packet type 0"))
        XCTAssertGreaterThanOrEqual(try gw.waitForCounter("malformedPackets", atLeast: 2), 2)
    }

    func testARemainingLengthOverTheLimitIsRefusedBeforeTheBody() throws {
        // CONNECT announcing 1,000,000 bytes (0xC0 0x84 0x3D), and nothing more.
        XCTAssertLessThan(try secondsToClose([0x10, 0xC0, 0x84, 0x3D]), 0.1)
        XCTAssertNotNil(gw.waitForLog("exceeds the limit of 4096"))
        // A bad length encoding (a fifth continuation byte) likewise.
        XCTAssertLessThan(try secondsToClose([0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), 0.1)
    }

    func testTheConnectDeadlineClosesSilentAndHalfSentConnectionsOnTime() throws {
        // connect_timeout = 1: never early, at most about a wheel tick (100 ms) late.
        let silent = try secondsToClose([])
        let half = try secondsToClose(Array(Encoder.encode(.connect(Connect(clientID: "half-sent"))).prefix(9)))
        for t in [silent, half] {
            XCTAssertGreaterThanOrEqual(t, 0.99)
            XCTAssertLessThan(t, 1.3)
        }
        XCTAssertNotNil(gw.waitForLog("closing connection: no CONNECT within 1 s"))
        XCTAssertGreaterThanOrEqual(try gw.waitForCounter("connectTimeouts", atLeast: 2), 2)
    }

    func testAGoodClientIsServedAfterAllThat() throws {
        _ = try secondsToClose(Array("GET / HTTP/1.0\r\n\r\n".utf8))
        let c = try RawClient(port: gw.port)
        XCTAssertEqual(c.connect(Connect(clientID: "after-garbage"))?.returnCode, .accepted)
        c.send(.pingreq)
        XCTAssertEqual(c.receive(), .pingresp)
    }

    /// `listener.defer_accept`: the kernel hands a connection over with its CONNECT;
    /// one that sends nothing is still handed over once the period passes, and the
    /// CONNECT deadline closes it.
    func testDeferredAcceptServesAndStillClosesTheSilent() throws {
        let g = try Gateway(config: "[listener]\ndefer_accept = 1\n[mqtt]\nconnect_timeout = 1\n")
        defer { XCTAssertEqual(g.stop(), 0) }
        let c = try RawClient(port: g.port)
        XCTAssertEqual(c.connect(Connect(clientID: "deferred"))?.returnCode, .accepted)
        c.send(.pingreq)
        XCTAssertEqual(c.receive(), .pingresp)
        let silent = try RawClient(port: g.port)
        let start = Date()
        XCTAssertTrue(silent.waitClosed(timeout: 15), "closed by the server")
        let t = Date().timeIntervalSince(start)
        XCTAssertGreaterThanOrEqual(t, 0.99, "never before the CONNECT deadline")
        XCTAssertNotNil(g.waitForLog("closing connection: no CONNECT within 1 s"))
    }
}
