import Foundation
import MQTTCodec
import XCTest

/// /metrics, /healthz and /readyz with real tools: curl, `promtool check metrics`,
/// and a real Prometheus server scraping the gateway.
final class MetricsTests: XCTestCase {
    var gw: Gateway?
    var redis: RedisServer?

    override func tearDown() {
        if let gw { XCTAssertEqual(gw.stop(), 0) }
        redis = nil
    }

    func start() throws -> (Gateway, UInt16) {
        let r = try RedisServer()
        redis = r
        let g = try Gateway(config: "[redis]\naddress = \"\(r.address)\"\n")
        gw = g
        XCTAssertNotNil(g.waitForLog("connected to redis"))
        guard let port = g.adminPort else { throw Failure("no admin HTTP line in the log") }
        return (g, port)
    }

    func get(_ port: UInt16, _ path: String, method: String = "GET") throws -> (status: Int, body: String) {
        try http(port, path, method: method)
    }

    func value(_ metrics: String, _ series: String) -> Double? { metricValue(metrics, series) }

    func testScrapePassesPromtoolAndCountersMove() throws {
        let (g, port) = try start()
        let piles = try (0..<3).map { i -> RawClient in
            let c = try RawClient(port: g.port)
            XCTAssertEqual(c.connect(Connect(clientID: "AAAAAAA\(i)"))?.returnCode, .accepted)
            return c
        }
        for (i, c) in piles.enumerated() {
            c.send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAAA\(i)/msg", payload: [1], qos: .atLeastOnce, packetID: 1)))
            XCTAssertEqual(c.receive(), .puback(1))
        }
        let (status, body) = try get(port, "/metrics")
        XCTAssertEqual(status, 200)
        XCTAssertEqual(value(body, "pilegate_connections"), 3)
        XCTAssertEqual(value(body, "pilegate_publishes_total{direction=\"in\"}"), 3)
        XCTAssertEqual(value(body, "pilegate_uplink_stored_total"), 3)
        XCTAssertEqual(value(body, "pilegate_packets_total{direction=\"in\",type=\"publish\"}"), 3)
        XCTAssertEqual(value(body, "pilegate_packets_total{direction=\"in\",type=\"connect\"}"), 3)
        XCTAssertEqual(value(body, "pilegate_packets_total{direction=\"out\",type=\"puback\"}"), 3)
        XCTAssertEqual(value(body, "pilegate_packet_bytes_total{direction=\"out\",type=\"puback\"}"), 12, "4 bytes each")
        XCTAssertEqual(value(body, "pilegate_packet_bytes_total{direction=\"in\",type=\"publish\"}"),
                       Double(3 * Encoder.size(of: .publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAAA0/msg", payload: [1],
                                                                    qos: .atLeastOnce, packetID: 1)))))
        XCTAssertEqual(value(body, "pilegate_uplink_routed_total{stream=\"pilegate:up\"}"), 3)
        XCTAssertEqual(value(body, "pilegate_redis_xadd_latency_seconds_count"), 3)
        XCTAssertEqual(value(body, "pilegate_redis_xadd_latency_seconds_bucket{le=\"+Inf\"}"), 3)
        XCTAssertGreaterThan(value(body, "pilegate_redis_xadd_latency_seconds_sum") ?? 0, 0)
        XCTAssertGreaterThan(value(body, "pilegate_ring_completions_per_turn_count") ?? 0, 0)
        XCTAssertGreaterThan(value(body, "pilegate_ring_submissions_per_turn_sum") ?? 0, 0)
        XCTAssertGreaterThan(value(body, "pilegate_process_resident_memory_bytes") ?? 0, 1_000_000)
        XCTAssertNotNil(value(body, "pilegate_connections_closed_by_reason_total{reason=\"keepalive\"}"))
        XCTAssertFalse(body.contains("AAAAAAA"), "no per-device label, ever")
        // promtool lints the live scrape (names, types, _total suffixes, help)
        let file = NSTemporaryDirectory() + "scrape-\(UUID().uuidString).txt"
        try body.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let lint = try shell("sh", ["-c", "promtool check metrics < \(file) 2>&1; echo rc=$?"])
        XCTAssertTrue(lint.hasSuffix("rc=0\n"), lint)
        // counters move: a closed connection and more publishes
        piles[0].send(.disconnect)
        XCTAssertTrue(piles[0].waitClosed())
        piles[1].send(.publish(Publish(topic: "/xjdy/ops/v1/TCU/AAAAAAA1/msg", payload: [2], qos: .atLeastOnce, packetID: 2)))
        XCTAssertEqual(piles[1].receive(), .puback(2))
        let after = try get(port, "/metrics").body
        XCTAssertEqual(value(after, "pilegate_connections"), 2)
        XCTAssertEqual(value(after, "pilegate_publishes_total{direction=\"in\"}"), 4)
        XCTAssertEqual(value(after, "pilegate_connections_closed_by_reason_total{reason=\"client\"}"), 1)
    }

    func testHealthReadinessAndBadRequests() throws {
        let (g, port) = try start()
        XCTAssertEqual(try get(port, "/healthz").status, 200)
        XCTAssertTrue(try redis!.waitUntil { try get(port, "/readyz").status == 200 })
        XCTAssertEqual(try get(port, "/nope").status, 404)
        XCTAssertEqual(try get(port, "/metrics", method: "DELETE").status, 405)
        let garbage = try shell("sh", ["-c", "printf 'garbage\\r\\n\\r\\n' | curl -s -o /dev/null -w '%{http_code}' telnet://127.0.0.1:\(port) --max-time 2; true"])
        _ = garbage   // whatever curl makes of it, the endpoint must still answer:
        XCTAssertEqual(try get(port, "/healthz").status, 200)
        redis?.stop()
        var ready = 200
        for _ in 0..<40 where ready == 200 {
            usleep(100_000)
            ready = try get(port, "/readyz").status
        }
        XCTAssertEqual(ready, 503, "not ready while Redis is unreachable")
        XCTAssertEqual(try get(port, "/healthz").status, 200, "but alive")
        _ = g
    }

    /// Ready means Redis on every shard: one shard's uplink kept out (Redis at
    /// `maxclients`) is enough for 503, since piles accepted there would be held.
    func testNotReadyWhileOneShardHasNoRedis() throws {
        let (g, port) = try start()
        XCTAssertTrue(try redis!.waitUntil { try get(port, "/readyz").status == 200 }, g.logText)
        try redis!.session { command in
            func run(_ args: String...) throws -> RedisServer.Value { try command(args.map { Array($0.utf8) }) }
            let clients = try run("CLIENT", "LIST").text ?? ""
            let shard1 = try XCTUnwrap(clients.split(separator: "\n").first { $0.contains("name=pilegate-test-node-1 ") })
            let id = try XCTUnwrap(shard1.split(separator: " ").first { $0.hasPrefix("id=") }?.dropFirst(3))
            // Everyone connected now, this session included, less the one killed: full.
            let connected = clients.split(separator: "\n").count
            _ = try run("CONFIG", "SET", "maxclients", String(connected - 1))
            _ = try run("CLIENT", "KILL", "ID", String(id))
            var ready = (status: 200, body: "")
            for _ in 0..<50 where ready.status == 200 { usleep(100_000); ready = try get(port, "/readyz") }
            XCTAssertEqual(ready.status, 503, g.logText.suffix(2000).description)
            XCTAssertEqual(ready.body, "not ready: redis connected on 3 of 4 shards\n")
            XCTAssertEqual(value(try get(port, "/metrics").body, "pilegate_redis_up_shards"), 3)
            _ = try run("CONFIG", "SET", "maxclients", "10000")
        }
        XCTAssertTrue(try redis!.waitUntil { try get(port, "/readyz").status == 200 }, "ready again once it reconnects")
    }

    /// A real Prometheus (Debian package) scrapes the gateway; its query API returns
    /// the connection count.
    func testPrometheusScrapesTheGateway() throws {
        let (g, port) = try start()
        let dir = NSTemporaryDirectory() + "prom-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try """
        global:
          scrape_interval: 1s
        scrape_configs:
          - job_name: pilegate
            static_configs:
              - targets: ["127.0.0.1:\(port)"]
        """.write(toFile: "\(dir)/prometheus.yml", atomically: true, encoding: .utf8)
        let promPort = freeLoopbackPort()   // not a guess: after the load tests the ephemeral range starts at 1024
        let prom = Process()
        prom.executableURL = URL(fileURLWithPath: "/usr/bin/prometheus")
        prom.arguments = ["--config.file=\(dir)/prometheus.yml", "--storage.tsdb.path=\(dir)/data",
                          "--web.listen-address=127.0.0.1:\(promPort)"]
        prom.standardOutput = FileHandle.nullDevice
        prom.standardError = FileHandle.nullDevice
        try prom.run()
        defer { prom.terminate(); prom.waitUntilExit() }
        let piles = try (0..<4).map { i -> RawClient in
            let c = try RawClient(port: g.port)
            XCTAssertEqual(c.connect(Connect(clientID: "PROMPIL\(i)"))?.returnCode, .accepted)
            return c
        }
        var seen = ""
        for _ in 0..<60 {
            usleep(500_000)
            seen = (try? shell("curl", ["-s", "http://127.0.0.1:\(promPort)/api/v1/query?query=pilegate_connections"])) ?? ""
            if seen.contains("\"4\"") { break }
        }
        XCTAssertTrue(seen.contains("\"value\":[") && seen.contains("\"4\"]"), seen)
        _ = piles
    }
}
