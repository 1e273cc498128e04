import Foundation
import MQTTCodec
import XCTest
@testable import Gateway

/// PROXY protocol v2: the parser on its own, then the listener behind raw headers
/// and behind a real HAProxy (`send-proxy-v2`).
final class ProxyProtocolTests: XCTestCase {
    var gw: Gateway?
    var haproxy: Background?

    override func tearDown() {
        haproxy?.process.terminate()
        haproxy?.process.waitUntilExit()
        if let gw { XCTAssertEqual(gw.stop(), 0) }
    }

    /// A v2 header: command PROXY (or LOCAL), TCP over IPv4 (or IPv6), optional TLV bytes.
    static func header(v4 source: [UInt8] = [10, 1, 2, 3], port: UInt16 = 4567, local: Bool = false,
                       v6: [UInt8]? = nil, tlv: [UInt8] = []) -> [UInt8] {
        var body: [UInt8]
        if let v6 {
            body = v6 + [UInt8](repeating: 0, count: 15) + [1] + [UInt8(port >> 8), UInt8(port & 0xFF), 0x07, 0x5B]
        } else {
            body = source + [127, 0, 0, 1] + [UInt8(port >> 8), UInt8(port & 0xFF), 0x07, 0x5B]
        }
        body += tlv
        return ProxyHeader.signature + [local ? 0x20 : 0x21, v6 == nil ? 0x11 : 0x21,
                                         UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
    }

    func parse(_ b: [UInt8]) -> ProxyHeader.Result { b.withUnsafeBytes { ProxyHeader.parse($0) } }

    func testParser() {
        let h = Self.header()
        XCTAssertEqual(parse(h), .header(length: 28, source: Peer(v4: (10, 1, 2, 3), port: 4567)))
        XCTAssertEqual(parse(h + [0x10, 0x00]), .header(length: 28, source: Peer(v4: (10, 1, 2, 3), port: 4567)),
                       "bytes after the header are the client's")
        for n in 0..<h.count { XCTAssertEqual(parse(Array(h.prefix(n))), .incomplete, "prefix of \(n) bytes") }
        XCTAssertEqual(parse(Self.header(tlv: [0x04, 0x00, 0x03, 1, 2, 3])),
                       .header(length: 34, source: Peer(v4: (10, 1, 2, 3), port: 4567)), "TLVs skipped")
        XCTAssertEqual(parse(Self.header(local: true)), .header(length: 28, source: nil), "LOCAL keeps the socket's peer")
        let v6 = [UInt8](repeating: 0, count: 15) + [1]
        guard case .header(52, let p?) = parse(Self.header(v6: v6)) else { return XCTFail("v6") }
        XCTAssertTrue(p.isV6 && p.isLoopback && p.port == 4567)
        XCTAssertEqual(Peer(v4: (127, 0, 0, 9), port: 1).description, "127.0.0.9:1")
        XCTAssertTrue(Peer(v4: (127, 0, 0, 9), port: 1).isLoopback)
        XCTAssertFalse(Peer(v4: (10, 0, 0, 9), port: 1).isLoopback)

        func invalid(_ b: [UInt8], _ why: String) {
            guard case .invalid = parse(b) else { return XCTFail("accepted: \(why)") }
        }
        invalid(Encoder.encode(.connect(Connect(clientID: "x"))), "plain MQTT, no header")
        invalid([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0B], "signature")
        invalid(Array("PROXY TCP4 10.1.2.3 127.0.0.1 4567 1883\r\n".utf8), "version 1 (text) is not spoken")
        var bad = h; bad[12] = 0x11; invalid(bad, "version 1 in a v2 header")
        bad = h; bad[12] = 0x22; invalid(bad, "command 2")
        bad = h; bad[13] = 0x12; invalid(bad, "UDP")
        bad = h; bad[13] = 0x41; invalid(bad, "family 4")
        bad = h; bad[15] = 8; invalid(Array(bad.prefix(24)), "INET with 8 address bytes")
        bad = h; bad[14] = 0xFF; invalid(bad, "65 KB header")
    }

    func start(_ extra: String = "") throws -> Gateway {
        let g = try Gateway(config: """
        [redis]
        enabled = false
        [listener]
        proxy_protocol = true
        \(extra)
        """)
        gw = g
        return g
    }

    /// The header's address is the one the ACL (anonymous only from loopback), the
    /// per-IP limit and the log lines see; bad headers close only their connection.
    func testHeaderCarriesTheAddressIntoACLLimitsAndLogs() throws {
        let g = try start("[limits]\nmax_connections_per_ip = 1")
        // From 10.1.2.3 (not loopback): anonymous is refused, and the log names that address.
        let remote = try RawClient(port: g.port)
        remote.send(Self.header() + Encoder.encode(.connect(Connect(clientID: "AAAAAJQX"))))
        XCTAssertEqual(remote.receive(), .connack(Connack(sessionPresent: false, returnCode: .notAuthorized)))
        XCTAssertNotNil(g.waitForLog("peer=10.1.2.3:4567"), g.logText)
        // From 127.0.0.9, the header arriving a byte at a time: accepted as loopback.
        let local = try RawClient(port: g.port)
        for b in Self.header(v4: [127, 0, 0, 9], port: 999) {
            local.send([b])
            usleep(2000)
        }
        XCTAssertEqual(local.connect(Connect(clientID: "AAAAAAAB"))?.returnCode, .accepted)
        XCTAssertNotNil(g.waitForLog("peer=127.0.0.9:999"), g.logText)
        // A second connection from the same real address is over max_connections_per_ip = 1.
        let again = try RawClient(port: g.port)
        again.send(Self.header(v4: [127, 0, 0, 9], port: 1000))
        XCTAssertTrue(again.waitClosed(), "per-IP limit applies to the header's address")
        // No header, a wrong one: each closes only its own connection.
        let bare = try RawClient(port: g.port)
        bare.send(.connect(Connect(clientID: "BBBBBBBB")))
        XCTAssertTrue(bare.waitClosed())
        XCTAssertNotNil(g.waitForLog("bad PROXY protocol header: no PROXY protocol v2 signature"))
        let wrong = try RawClient(port: g.port)
        var h = Self.header(v4: [127, 0, 0, 10])
        h[12] = 0x2F
        wrong.send(h)
        XCTAssertTrue(wrong.waitClosed())
        XCTAssertNotNil(g.waitForLog("bad PROXY protocol header: unknown command 15"))
        // LOCAL (a balancer's health check) keeps the socket's own address.
        let check = try RawClient(port: g.port)
        check.send(Self.header(local: true))
        XCTAssertEqual(check.connect(Connect(clientID: "CCCCCCCC"))?.returnCode, .accepted, "127.0.0.1 from the socket")
        local.send(.pingreq)
        XCTAssertEqual(local.receive(), .pingresp, "the good connection carries on")
        let metrics = try http(XCTUnwrap(g.adminPort), "/metrics").body
        XCTAssertEqual(metricValue(metrics, "pilegate_proxy_header_errors_total"), 2)
        XCTAssertEqual(metricValue(metrics, "pilegate_connections_closed_by_reason_total{reason=\"proxy_header\"}"), 2)
    }

    /// A real HAProxy in front (`send-proxy-v2`): the pile's own source address,
    /// 127.0.0.7, reaches the gateway's log instead of HAProxy's 127.0.0.1.
    func testBehindRealHAProxy() throws {
        let g = try start()
        let front = freeLoopbackPort()
        let cfg = NSTemporaryDirectory() + "haproxy-\(UUID().uuidString).cfg"
        try """
        global
            maxconn 100
        defaults
            mode tcp
            timeout connect 2s
            timeout client 60s
            timeout server 60s
        frontend mqtt
            bind 127.0.0.1:\(front)
            default_backend pilegate
        backend pilegate
            server node1 127.0.0.1:\(g.port) send-proxy-v2

        """.write(toFile: cfg, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: cfg) }
        let check = try shell("sh", ["-c", "/usr/sbin/haproxy -c -f \(cfg) 2>&1; echo rc=$?"])
        XCTAssertTrue(check.hasSuffix("rc=0\n"), check)
        haproxy = try Background("/usr/sbin/haproxy", ["-db", "-f", cfg])
        var pile: RawClient?
        for _ in 0..<50 where pile == nil {   // until HAProxy listens
            pile = try? RawClient(port: front, source: "127.0.0.7")
            if pile == nil { usleep(100_000) }
        }
        let c = try XCTUnwrap(pile)
        XCTAssertEqual(c.connect(Connect(clientID: "AAAAAJQX"))?.returnCode, .accepted)
        c.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/AAAAAJQX/cmd", .atLeastOnce)])))
        XCTAssertEqual(c.receive(), .suback(Suback(packetID: 1, returnCodes: [1])))
        XCTAssertNotNil(g.waitForLog("peer=127.0.0.7:"), g.logText)
    }
}
