import Foundation
import XCTest

/// The fleet as ops/fleet.sh starts it (Redis, three nodes, HAProxy with PROXY v2)
/// restarted node by node with ops/rolling-restart.sh while 3,000 pileload piles
/// publish QoS 1 through the balancer and workers send them commands: every PUBLISH
/// acknowledged is stored, every pile is back, every command ends once.
final class FleetRollingTests: XCTestCase {
    func testRollingRestartUnderLoadLosesNothing() throws {
        let dir = NSTemporaryDirectory() + "fleet-\(UUID().uuidString)"
        // Node ports BASE+11..BASE+33 and Redis BASE: a block nobody holds now.
        let base = try XCTUnwrap((0..<200).lazy.map { 22_000 + 150 * $0 }.first { b in
            [0, 11, 12, 13, 21, 22, 23, 31, 32, 33].allSatisfy { portIsFree(UInt16(b + $0)) }
        })
        let front = freeLoopbackPort()
        let env = ["FLEET_DIR": dir, "FLEET_BASE": "\(base)", "FLEET_TOKEN": "t", "PILEGATE": Gateway.binary.path,
                   "FLEET_DRAIN_RATE": "1500"]
        let fleet = repoRoot.appendingPathComponent("ops/fleet.sh").path
        try shell("env", env.map { "\($0.key)=\($0.value)" } + [fleet, "start", "3", "\(front)"], timeout: 120)
        defer {
            _ = try? shell("env", env.map { "\($0.key)=\($0.value)" } + [fleet, "stop"], timeout: 120)
            try? FileManager.default.removeItem(atPath: dir)
        }
        let redis = RedisServer(attachedTo: UInt16(base))
        let admins = (1...3).map { "http://127.0.0.1:\(base + 10 * $0 + 2)" }
        func connections() throws -> [Int] {
            try admins.map { Int(metricValue(try http(UInt16($0.split(separator: ":").last!)!, "/metrics").body, "pilegate_connections") ?? -1) }
        }

        let report = dir + "/pileload.json"
        let load = try Background(Gateway.binary.deletingLastPathComponent().appendingPathComponent("pileload").path, [
            "--target", "127.0.0.1:\(front)", "--profile", "pile", "--connections", "3000", "--qos", "1", "--subscribe", "--retry",
            "--min-interval", "2", "--max-interval", "4", "--trade-every", "0", "--connect-rate", "3000",
            "--duration", "45", "--json", report])
        XCTAssertTrue(try redis.waitUntil(30) { try connections().reduce(0, +) == 3000 }, "\((try? connections()) ?? [])")

        // Commands while the nodes restart: to where presence says each pile is.
        let commands = Thread {
            let redis = RedisServer(attachedTo: UInt16(base))
            for i in 0..<300 {
                let pile = pileName(i * 10)
                if let at = try? redis.command(["HGET", "pilegate:presence", pile]).text, let node = at.split(separator: "|").first {
                    _ = try? redis.command(["XADD", "pilegate:down:\(node)", "*", "device", pile, "payload", "cmd \(i)", "qos", "1"])
                }
                usleep(50_000)
            }
        }
        commands.start()
        let out = try shell(repoRoot.appendingPathComponent("ops/rolling-restart.sh").path,
                            ["--token", "t", "--timeout", "120", "--restart", "env " + env.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                                + " \(fleet) restart {n}"] + admins, timeout: 400)
        XCTAssertTrue(out.contains("rolling restart: 3 nodes done"), out)
        XCTAssertTrue(try redis.waitUntil(30) { try connections().reduce(0, +) == 3000 }, "every pile is back: \((try? connections()) ?? [])")
        // Presence is right: one entry per pile, naming the node that holds it.
        let held = try connections()
        XCTAssertTrue(try redis.waitUntil(10) {
            let nodes = try redis.command(["HVALS", "pilegate:presence"]).items.compactMap { $0.text?.split(separator: "|").first }
            return (1...3).map { n in nodes.filter { $0 == "node-\(n)" }.count } == held
        }, "presence per node \(held)")
        _ = load.finish(timeout: 120)
        let r = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any])
        let acked = try XCTUnwrap(r["acked"] as? Int)
        XCTAssertGreaterThan(acked, 10_000)
        let stored = try XCTUnwrap(redis.command(["XLEN", "pilegate:up"]).int)
        XCTAssertGreaterThanOrEqual(stored, acked, "every acknowledged PUBLISH is stored")

        // Each command ends once (the pile had moved on: offline; else acked).
        let sent = try redis.command(["KEYS", "pilegate:down:node-*"]).items.compactMap(\.text)
            .reduce(0) { $0 + (try redis.command(["XLEN", $1]).int ?? 0) }
        XCTAssertTrue(try redis.waitUntil(60) {
            try redis.entries("pilegate:down:outcome").filter { String(decoding: $0.fields["outcome"] ?? [], as: UTF8.self) != "queued" }.count >= sent
        })
        let finals = try redis.entries("pilegate:down:outcome").filter { String(decoding: $0.fields["outcome"] ?? [], as: UTF8.self) != "queued" }
        XCTAssertEqual(finals.count, sent, "one final outcome per command")
        XCTAssertEqual(Set(finals.map { String(decoding: $0.fields["id"] ?? [], as: UTF8.self) }).count, sent)
        print("rolling restart: \(acked) acknowledged, \(stored) stored, \(sent) commands: "
              + Dictionary(grouping: finals, by: { String(decoding: $0.fields["outcome"] ?? [], as: UTF8.self) }).mapValues(\.count).description)
    }
}

/// pileload's pile id for index `n` (8 letters, base 26 from AAAAAAAA).
func pileName(_ n: Int) -> String {
    String(decoding: (0..<8).reversed().map { UInt8(ascii: "A") + UInt8(n / Int(pow(26.0, Double($0))) % 26) }, as: UTF8.self)
}
