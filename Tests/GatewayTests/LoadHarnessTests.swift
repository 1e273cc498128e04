import Foundation
import XCTest

/// pileload itself, small and short, against the real gateway and Redis: the pile
/// profile with the echo worker (end-to-end latency, JSON report, --plot PNG), the
/// downlink burst and the reconnect storm. The numbers are not judged here (that is
/// bench/'s job); that every message and command made the trip is.
final class LoadHarnessTests: XCTestCase {
    var redis: RedisServer!
    var gw: Gateway?
    let dir = NSTemporaryDirectory() + "pileload-\(UUID().uuidString)"

    override func setUpWithError() throws {
        redis = try RedisServer()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        if let gw { XCTAssertEqual(gw.stop(), 0) }
        redis = nil
        try? FileManager.default.removeItem(atPath: dir)
    }

    func start() throws -> Gateway {
        let g = try Gateway(config: "[redis]\naddress = \"\(redis.address)\"")   // node "test-node"
        gw = g
        XCTAssertNotNil(g.waitForLog("connected to redis"))
        return g
    }

    /// Runs pileload with `args`; its JSON report.
    func pileload(_ g: Gateway, _ args: [String]) throws -> [String: Any] {
        let exe = Gateway.binary.deletingLastPathComponent().appendingPathComponent("pileload").path
        let json = dir + "/report.json"
        let out = try shell(exe, ["--target", "127.0.0.1:\(g.port)", "--sources", "4", "--json", json] + args, timeout: 60)
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
        return try XCTUnwrap(report, out)
    }

    func int(_ r: [String: Any], _ k: String) -> Int { (r[k] as? NSNumber)?.intValue ?? -1 }

    func testPileProfileWithEchoWorker() throws {
        let g = try start()
        let png = dir + "/pile.png"
        let r = try pileload(g, ["--profile", "pile", "--qos", "1", "--connections", "100", "--min-interval", "0.2",
                                 "--max-interval", "0.5", "--trade-every", "5", "--duration", "3",
                                 "--redis", redis.address, "--plot", png])
        XCTAssertEqual(int(r, "connected"), 100)
        XCTAssertEqual(int(r, "failed"), 0)
        XCTAssertGreaterThan(int(r, "published"), 300, "about 100 piles x 2 guns x 3 s / 0.35 s")
        XCTAssertGreaterThan(int(r, "puback_samples"), 100)
        XCTAssertGreaterThan(int(r, "echoed"), 100, "the echo worker answered")
        XCTAssertGreaterThan(int(r, "end_to_end_samples"), 100, "commands came back to their piles")
        XCTAssertNotNil(r["end_to_end_ms_p99"] as? NSNumber)
        let trades = try redis.entries("pilegate:up").filter { String(decoding: $0.fields["payload"] ?? [], as: UTF8.self).contains("交易记录") }
        XCTAssertFalse(trades.isEmpty, "trade records in the mix")
        let head = try XCTUnwrap(FileManager.default.contents(atPath: png)).prefix(4)
        XCTAssertEqual(Array(head), [0x89, 0x50, 0x4E, 0x47], "a PNG")
    }

    func testDownlinkBurstReachesEveryPile() throws {
        let g = try start()
        let r = try pileload(g, ["--profile", "downlink", "--connections", "500", "--duration", "10",
                                 "--redis", redis.address, "--node", "test-node"])
        XCTAssertEqual(int(r, "commands_sent"), 500)
        XCTAssertEqual(int(r, "received"), 500, "one command delivered to each pile")
        XCTAssertEqual(int(r, "end_to_end_samples"), 500)
    }

    /// 10,000 commands to 10,000 piles; 1,000 piles drop their link on their command,
    /// before the PUBACK, and come back with a clean session. Every command ends
    /// `acked`, none twice, and nothing stays pending.
    func testTenThousandCommandsWithAThousandDroppedLinksEndAckedOnce() throws {
        let g = try start()
        let r = try pileload(g, ["--profile", "downlink", "--connections", "10000", "--duration", "30",
                                 "--drop-before-ack", "1000", "--redis", redis.address, "--node", "test-node"])
        XCTAssertEqual(int(r, "commands_sent"), 10_000)
        XCTAssertEqual(int(r, "dropped_before_ack"), 1000)
        XCTAssertEqual(int(r, "received"), 10_000, "every pile acknowledged its command, the 1,000 on their second link")
        var outcomes: [(id: String, fields: [String: [UInt8]])] = []
        XCTAssertTrue(try redis.waitUntil(15) {
            outcomes = try redis.entries("pilegate:down:outcome")
            return outcomes.count >= 10_000
        }, "\(outcomes.count) outcomes")
        usleep(500_000)
        outcomes = try redis.entries("pilegate:down:outcome")
        let ids = outcomes.map { String(decoding: $0.fields["id"]!, as: UTF8.self) }
        XCTAssertEqual(outcomes.count, 10_000, "one outcome per command")
        XCTAssertEqual(Set(ids).count, 10_000, "none twice")
        XCTAssertTrue(outcomes.allSatisfy { $0.fields["outcome"] == Array("acked".utf8) })
        XCTAssertEqual(try redis.command(["XPENDING", "pilegate:down:test-node", "pilegate"]).items.first?.int, 0)
    }

    func testReconnectStormComesBack() throws {
        let g = try start()
        let r = try pileload(g, ["--profile", "storm", "--connections", "500", "--duration", "3"])
        XCTAssertEqual(int(r, "connected"), 500)
        XCTAssertNotNil(r["storm_reconnect_seconds"] as? NSNumber, "every pile came back")
        XCTAssertEqual(int(r, "connect_samples"), 1000, "500 connects, then 500 reconnects")
        XCTAssertNotNil(g.waitForLog("disconnected: connection closed by peer"))
    }

    /// SIGINT (as from Ctrl-C or a bench script's `kill -INT`) ends a two-minute run
    /// early, with its report; without the handler the signal would kill it with none.
    func testAnInterruptEndsTheRunWithItsReport() throws {
        let g = try start()
        let exe = Gateway.binary.deletingLastPathComponent().appendingPathComponent("pileload").path
        let json = dir + "/interrupted.json"
        let run = try Background(exe, ["--target", "127.0.0.1:\(g.port)", "--sources", "2", "--connections", "50",
                                       "--duration", "120", "--json", json])
        let deadline = Date().addingTimeInterval(20)
        while !run.out.text.contains("ALL CONNECTED") && Date() < deadline { usleep(50_000) }
        usleep(2_500_000)   // into the steady phase
        let t0 = Date()
        kill(run.process.processIdentifier, SIGINT)
        let out = run.finish(timeout: 15)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 10, out)
        XCTAssertEqual(run.process.terminationReason, .exit, out)
        XCTAssertEqual(run.process.terminationStatus, 0, out)
        XCTAssertTrue(out.contains("interrupted: ending the run early"), out)
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
        XCTAssertEqual(int(try XCTUnwrap(report), "connected"), 50)
    }
}
