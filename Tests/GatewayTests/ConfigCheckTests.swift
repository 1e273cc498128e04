import Foundation
import Gateway
import XCTest

/// `pilegate check-config`, the health-only listener and the embedded-Redis warning:
/// the ops kit's answers to a config that cannot run or should not run like this.
final class ConfigCheckTests: XCTestCase {
    func file(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "check-\(UUID().uuidString).toml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// Runs `pilegate check-config FILE`: its output and exit status.
    func checkConfig(_ path: String) throws -> (out: String, status: String) {
        let out = try shell("sh", ["-c", "'\(Gateway.binary.path)' check-config '\(path)' 2>&1; echo rc=$?"])
        return (out, String(out.split(separator: "\n").last ?? ""))
    }

    func testEveryProblemIsListedNotJustTheFirst() throws {
        let (_, problems) = Config.check(toml: """
            [listener]
            bind = "nohost"
            backlog = 0
            [mqtt]
            max_inflight = "x"
            bogus = 1
            [acl]
            default_role = "nope"
            [tls]
            enabled = true
            [[route]]
            stream = "s"
            """)
        XCTAssertEqual(problems, [
            "config: listener.bind \"nohost\" is not HOST:PORT",
            "config: listener.backlog must be an integer in 1...65535",
            "config: mqtt.max_inflight must be an integer in 1...65535",
            "config: unknown key mqtt.bogus",
            "config: acl role \"nope\" is not defined under [acl.roles]",
            "config: tls.enabled needs tls.certificate and tls.private_key",
            "config: every [[route]] needs a valid filter and a stream",
        ])
        XCTAssertThrowsError(try Config(toml: "[mqtt]\nmax_inflight = 0\nbogus = 1\n")) {
            XCTAssertEqual(($0 as? Config.Invalid)?.problems.count, 2)
        }
    }

    func testCheckConfigExitsOneWithEveryErrorAndZeroWithWarnings() throws {
        let bad = try checkConfig(try file("[mqtt]\nmax_inflight = 0\n[auth]\npassword_file = \"/nonexistent/passwd\"\n[redis]\naddress = \"x\"\n"))
        XCTAssertEqual(bad.status, "rc=1", bad.out)
        XCTAssertTrue(bad.out.contains("error: config: mqtt.max_inflight must be an integer in 1...65535"), bad.out)
        XCTAssertTrue(bad.out.contains("error: config: redis.address \"x\" is not HOST:PORT"), bad.out)
        XCTAssertTrue(bad.out.contains("error: auth.password_file: cannot read password file /nonexistent/passwd: No such file or directory"), bad.out)
        XCTAssertTrue(bad.out.contains(": 3 error(s)"), bad.out)

        // The trial config runs, with the production risks named.
        let example = try checkConfig(repoRoot.appendingPathComponent("ops/pilegate.example.toml").path)
        XCTAssertEqual(example.status, "rc=0", example.out)
        XCTAssertTrue(example.out.contains("warning: redis.address is empty"), example.out)
        XCTAssertTrue(example.out.contains("warning: no credential source"), example.out)

        // The production config, with its password file present: clean but for the
        // worker groups it leaves to the operator.
        let dir = NSTemporaryDirectory() + "etc-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeTestPasswords(dir + "/passwd")
        let production = try String(contentsOf: repoRoot.appendingPathComponent("ops/pilegate.production.toml"), encoding: .utf8)
            .replacingOccurrences(of: "/etc/pilegate/passwd", with: dir + "/passwd")
        let prod = try checkConfig(try file(production))
        XCTAssertEqual(prod.status, "rc=0", prod.out)
        XCTAssertEqual(prod.out.components(separatedBy: "warning:").count - 1, 1, prod.out)
        XCTAssertTrue(prod.out.contains("warning: redis.consumer_groups is empty"), prod.out)

        // The same on a cluster: the seeds and keys are checked, and acknowledging
        // before a replica has the message is named.
        let onCluster = production.replacingOccurrences(of: "[redis]", with: "[redis]\ncluster = true")
            .replacingOccurrences(of: "address = \"", with: "address = \"10.0.0.1:7000,")
        let clustered = try checkConfig(try file(onCluster))
        XCTAssertEqual(clustered.status, "rc=0", clustered.out)
        XCTAssertTrue(clustered.out.contains("warning: redis.cluster without redis.wait_replicas"), clustered.out)
        let tagless = try checkConfig(try file(onCluster.replacingOccurrences(of: "[redis]", with: "[redis]\npresence_key = \"presence\"")))
        XCTAssertEqual(tagless.status, "rc=1", tagless.out)
        XCTAssertTrue(tagless.out.contains("must share a hash tag"), tagless.out)
    }

    func testBadTLSFilesAreProblems() throws {
        let key = try file("not a key")
        let out = try checkConfig(try file("[tls]\nenabled = true\ncertificate = \"\(key)\"\nprivate_key = \"\(key)\"\n"))
        XCTAssertEqual(out.status, "rc=1", out.out)
        XCTAssertTrue(out.out.contains("error: TLS:"), out.out)
    }

    /// A balancer on another host reaches /healthz and /readyz on `health_bind`, and
    /// nothing else there; /metrics and the admin API stay on `bind`.
    func testHealthListenerAnswersHealthOnly() throws {
        let redis = try RedisServer()
        let g = try Gateway(config: "health_bind = \"127.0.0.1:0\"\ntoken = \"t\"\n[redis]\naddress = \"\(redis.address)\"\n")
        defer { XCTAssertEqual(g.stop(), 0) }
        let health = try XCTUnwrap(g.healthPort, g.logText)
        XCTAssertNotNil(g.waitForLog("connected to redis"))
        XCTAssertEqual(try http(health, "/healthz").status, 200)
        XCTAssertTrue(try redis.waitUntil { try http(health, "/readyz").status == 200 })
        XCTAssertEqual(try http(health, "/metrics").status, 404)
        XCTAssertEqual(try http(health, "/admin/bans", token: "t").status, 404)
        XCTAssertEqual(try http(health, "/drain", method: "POST", token: "t").status, 404)
        let admin = try XCTUnwrap(g.adminPort)
        XCTAssertEqual(try http(admin, "/metrics").status, 200)
        // Draining (on the admin endpoint) is what the balancer sees on the health one.
        XCTAssertEqual(try http(admin, "/drain", method: "POST", token: "t").status, 202)
        let ready = try http(health, "/readyz")
        XCTAssertEqual(ready.status, 503)
        XCTAssertEqual(ready.body, "not ready: draining\n")
    }

    /// The embedded redis-server keeps nothing on disk: serving piles on a network
    /// address with it is said at startup.
    func testEmbeddedRedisOnANetworkListenerIsWarned() throws {
        let p = Process()
        p.executableURL = Gateway.binary
        p.arguments = ["--listen", "0.0.0.0:\(freeLoopbackPort())", "--config", try file("[admin]\nbind = \"127.0.0.1:0\"\n")]
        let pipe = Pipe(), log = LogCapture()
        p.standardError = pipe
        log.attach(pipe)
        try p.run()
        defer { kill(p.processIdentifier, SIGTERM); p.waitUntilExit() }
        XCTAssertNotNil(log.waitFor("the embedded redis-server keeps nothing on disk", timeout: 10), log.text)
        XCTAssertNotNil(log.waitFor("listening on 0.0.0.0:", timeout: 10), log.text)
    }
}
