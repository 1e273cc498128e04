import Foundation
import Glibc
import XCTest

/// The Debian package as an operator gets it: built by ops/package.sh, checked by
/// lintian, installed with dpkg, and run as the pilegate user with the installed
/// config and the Swift toolchain hidden, so a host without Swift runs it.
final class PackageTests: XCTestCase {
    func testPackageInstallsAndRunsWithoutTheToolchain() throws {
        guard getuid() == 0 else { throw XCTSkip("installing a package needs root") }   // CI runs as root
        let out = NSTemporaryDirectory() + "pkg-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let deb = try XCTUnwrap(shell(repoRoot.appendingPathComponent("ops/package.sh").path, [out], timeout: 1800)
            .split(separator: "\n").last.map(String.init))
        XCTAssertTrue(deb.hasSuffix("_amd64.deb"), deb)

        // What it holds, and that the binary needs no Swift library nor a run path.
        let contents = try shell("dpkg-deb", ["-c", deb])
        for path in ["./usr/bin/pilegate", "./lib/systemd/system/pilegate.service", "./etc/pilegate/pilegate.toml",
                     "./etc/sysctl.d/60-pilegate.conf", "./usr/share/doc/pilegate/INSTALL.md",
                     "./usr/share/doc/pilegate/REDIS-CONTRACT.md", "./usr/share/doc/pilegate/copyright",
                     "./usr/share/man/man1/pilegate.1.gz", "./usr/share/pilegate/examples/worker.py"] {
            XCTAssertTrue(contents.contains(" \(path)\n"), "\(path) missing:\n\(contents)")
        }
        try shell("dpkg-deb", ["-x", deb, out + "/root"])
        let dynamic = try shell("objdump", ["-p", out + "/root/usr/bin/pilegate"])
        XCTAssertFalse(dynamic.contains("libswift"), dynamic)
        XCTAssertFalse(dynamic.contains("libFoundation"), dynamic)
        XCTAssertFalse(dynamic.contains("RUNPATH") || dynamic.contains("RPATH"), dynamic)
        let lint = try shell("sh", ["-c", "lintian --tag-display-limit 0 '\(deb)' 2>&1 | grep -E '^[EW]: ' || true"])
        XCTAssertEqual(lint, "", "lintian errors or warnings")

        // Installed: the user, and a config the service can read and only root can change.
        try shell("dpkg", ["-i", deb], timeout: 120)
        defer { _ = try? shell("dpkg", ["--purge", "pilegate"], timeout: 120) }
        XCTAssertEqual(try shell("stat", ["-c", "%U:%G %a", "/etc/pilegate/pilegate.toml", "/etc/pilegate/passwd", "/etc/pilegate"]),
                       "root:pilegate 640\nroot:pilegate 640\nroot:pilegate 750\n")

        // Set up as INSTALL.md says: the Redis address and a pile, on test ports.
        let redis = try RedisServer()
        let port = freeLoopbackPort(), health = freeLoopbackPort()
        let config = try String(contentsOfFile: "/etc/pilegate/pilegate.toml", encoding: .utf8)
            .replacingOccurrences(of: "address = \"127.0.0.1:6379\"", with: "address = \"\(redis.address)\"")
            .replacingOccurrences(of: "bind = \"0.0.0.0:1883\"", with: "bind = \"127.0.0.1:\(port)\"")
            .replacingOccurrences(of: "bind = \"127.0.0.1:9883\"", with: "bind = \"127.0.0.1:0\"")
            .replacingOccurrences(of: "health_bind = \"0.0.0.0:9884\"", with: "health_bind = \"127.0.0.1:\(health)\"")
            .replacingOccurrences(of: "# node = \"pg-1\"", with: "ring_entries = 1024")
        try config.write(toFile: "/etc/pilegate/pilegate.toml", atomically: false, encoding: .utf8)
        try shell("/usr/bin/pilegate", ["passwd", "/etc/pilegate/passwd", "AAAAAJQX", "--password", "pile-secret"])

        // As the pilegate user, in a mount namespace where the toolchain folder is empty.
        let swift = try shell("sh", ["-c", "realpath \"$(command -v swift)\""]).trimmingCharacters(in: .whitespacesAndNewlines)
        let toolchain = URL(fileURLWithPath: swift).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        // The unit raises LimitNOFILE and LimitMEMLOCK; this test machine's hard limits
        // (20,000 fds, 8 MiB locked) cannot be raised without CAP_SYS_RESOURCE, so the
        // binary runs at those, with rings small enough for 11 of them to fit in 8 MiB.
        let asService = "ulimit -n $(ulimit -Hn) && ulimit -l $(ulimit -Hl) && "
            + "mount -t tmpfs tmpfs '\(toolchain)' && test -z \"$(ls -A '\(toolchain)')\" && exec setpriv --reuid=pilegate --regid=pilegate --init-groups"
        XCTAssertTrue(try shell("unshare", ["-m", "sh", "-c", "\(asService) /usr/bin/pilegate check-config /etc/pilegate/pilegate.toml"])
            .contains(": 0 error(s)"))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        p.arguments = ["-m", "sh", "-c", "\(asService) /usr/bin/pilegate --config /etc/pilegate/pilegate.toml"]
        let pipe = Pipe(), log = LogCapture()
        p.standardError = pipe
        log.attach(pipe)
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        XCTAssertNotNil(log.waitFor("listening on 127.0.0.1:\(port)", timeout: 15), log.text)
        guard p.isRunning else { throw Failure("the installed pilegate exited: \(log.text)") }
        let status = try String(contentsOfFile: "/proc/\(p.processIdentifier)/status", encoding: .utf8)
        let uid = try shell("id", ["-u", "pilegate"]).trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(status.contains("\nUid:\t\(uid)\t"), status)
        let maps = try String(contentsOfFile: "/proc/\(p.processIdentifier)/maps", encoding: .utf8)
        XCTAssertFalse(maps.contains(toolchain), "nothing mapped from the toolchain")
        XCTAssertTrue(try redis.waitUntil { try http(health, "/readyz").status == 200 })

        // A pile with its password is stored; without one it is refused.
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(port)", "-i", "AAAAAJQX", "-u", "AAAAAJQX", "-P", "pile-secret",
                                    "-q", "1", "-t", "/xjdy/ops/v1/TCU/AAAAAJQX/msg", "-m", "{\"命令\":\"运行数据\"}"])
        XCTAssertEqual(try redis.entries("pilegate:up").map { String(decoding: $0.fields["device"] ?? [], as: UTF8.self) }, ["AAAAAJQX"])
        XCTAssertThrowsError(try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(port)", "-i", "anon", "-q", "1",
                                                         "-t", "/xjdy/ops/v1/TCU/anon/msg", "-m", "x"]))
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, log.text)
    }
}
