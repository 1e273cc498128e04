import Foundation
import Glibc
import MQTTCodec
import XCTest

/// Resource bounds under abuse: connections that dribble a CONNECT byte by byte,
/// and one client retaining more topics than the store may hold. (A remaining length
/// announced past max_packet_size is EarlyRefusalTests'.)
final class AbuseTests: RedisGatewayTestCase {
    func metric(_ g: Gateway, _ name: String) throws -> Double {
        metricValue(try http(XCTUnwrap(g.adminPort), "/metrics").body, name) ?? -1
    }

    /// The gateway's own retained $SYS topics (sys_interval = 1 in the tests), which the bounds never refuse.
    func sysTopics(_ g: Gateway) throws -> Double {
        let c = try connected(g, "SYSREADER")
        c.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("$SYS/#", .atMostOnce)])))
        var n = 0
        while let p = c.receive(timeout: 1) { if case .publish(let m) = p, m.retain { n += 1 } }
        return Double(n)
    }

    /// 2,000 connections each send one byte of a CONNECT every second: every one is
    /// closed at the CONNECT deadline (counted), and memory comes back.
    func testDribbledConnectsAreClosedAtTheDeadline() throws {
        let g = try startGateway("[mqtt]\nconnect_timeout = 2")
        let baseline = try metric(g, "pilegate_process_resident_memory_bytes")
        let connect = Encoder.encode(.connect(Connect(cleanSession: true, keepAlive: 30, clientID: "SLOW")))
        var socks: [RawClient] = []
        for i in 0..<2000 { socks.append(try RawClient(port: g.port, timeout: 10, source: "127.0.0.\(2 + i % 50)")) }
        let started = Date()
        var sent = 0
        while Date().timeIntervalSince(started) < 4 && sent < connect.count - 1 {
            for s in socks { _ = s.sendNonBlocking([connect[sent]]) }
            sent += 1
            sleep(1)
        }
        XCTAssertTrue(redis.waitUntil(5) { (try? self.metric(g, "pilegate_connect_timeouts_total")) == 2000 }, g.logText.suffix(1000).description)
        let closed = socks.filter { $0.receive(timeout: 2) == nil && $0.lastReadWasEOF }.count
        XCTAssertEqual(closed, 2000, "every dribbling connection was closed by the gateway")
        XCTAssertEqual(try metric(g, "pilegate_connections"), 0)
        socks.removeAll()
        sleep(1)
        let after = try metric(g, "pilegate_process_resident_memory_bytes")
        print("dribbled CONNECTs: 2000 closed at the 2 s deadline; RSS \(Int(baseline) / 1024) KiB before, \(Int(after) / 1024) KiB after")
        XCTAssertLessThan(after - baseline, Double(8 << 20), "memory comes back (no per-connection state left)")
    }

    /// One client retains 3,000 topics against a bound of 1,000: 1,000 are kept, the
    /// rest delivered but not retained (counted, logged); replacing and deleting work
    /// at the bound.
    func testTheRetainedStoreIsBounded() throws {
        let g = try startGateway("[mqtt]\nmax_retained_messages = 1000\nmax_retained_bytes = 1000000")
        let c = try connected(g, "RETAINER")
        for i in 0..<3000 {
            c.send(.publish(Publish(topic: "/r/\(i)", payload: Array("v\(i)".utf8), retain: true)))
        }
        c.send(.pingreq)
        XCTAssertEqual(c.receive(timeout: 10), .pingresp)
        XCTAssertEqual(try metric(g, "pilegate_retained_messages"), 1000)
        XCTAssertEqual(try metric(g, "pilegate_retained_refused_total"), 2000)
        XCTAssertNotNil(g.waitForLog("retained store full"))
        // Replace one, delete one, and a new topic takes the freed place.
        c.send(.publish(Publish(topic: "/r/0", payload: Array("new".utf8), retain: true)))
        c.send(.publish(Publish(topic: "/r/1", payload: [], retain: true)))
        c.send(.publish(Publish(topic: "/r/2999", payload: Array("late".utf8), retain: true)))
        c.send(.pingreq)
        XCTAssertEqual(c.receive(timeout: 5), .pingresp)
        let sub = try connected(g, "READER")
        sub.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/r/#", .atMostOnce)])))
        var retained: [String: [UInt8]] = [:]
        while let p = sub.receive(timeout: 2) { if case .publish(let m) = p { retained[m.topic] = m.payload } }
        XCTAssertEqual(retained.count, 1000, "the gateway's $SYS topics are not in the count")
        XCTAssertEqual(retained["/r/0"], Array("new".utf8))
        XCTAssertNil(retained["/r/1"])
        XCTAssertEqual(retained["/r/2999"], Array("late".utf8))
        XCTAssertEqual(try metric(g, "pilegate_retained_bytes"), Double(retained.reduce(0) { $0 + $1.key.utf8.count + $1.value.count }))
        XCTAssertGreaterThan(try sysTopics(g), 0, "$SYS is retained whatever the bounds")
    }
}
