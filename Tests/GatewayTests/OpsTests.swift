import Foundation
import XCTest

/// The operations kit in ops/ is checked by the tools that consume it, and every
/// metric it names must exist in a live scrape.
final class OpsTests: XCTestCase {
    func path(_ p: String) -> String { repoRoot.appendingPathComponent(p).path }

    /// Runs a command line; its output, which must end in exit status 0.
    func check(_ command: String) throws {
        let out = try shell("sh", ["-c", "\(command) 2>&1; echo rc=$?"])
        XCTAssertTrue(out.hasSuffix("rc=0\n"), "\(command):\n\(out)")
    }

    func testPrometheusHAProxyAndSystemdFilesPassTheirCheckers() throws {
        try check("promtool check rules \(path("ops/prometheus/alerts.yml"))")
        try check("promtool check config \(path("ops/prometheus/prometheus.yml"))")
        try check("/usr/sbin/haproxy -c -f \(path("ops/haproxy.cfg"))")
        // systemd-analyze wants ExecStart to exist: point it at the binary just built.
        let unit = NSTemporaryDirectory() + "pilegate-\(UUID().uuidString).service"
        try String(contentsOfFile: path("ops/pilegate.service"), encoding: .utf8)
            .replacingOccurrences(of: "/usr/bin/pilegate", with: Gateway.binary.path)
            .write(toFile: unit, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: unit) }
        let out = try shell("sh", ["-c", "systemd-analyze verify \(unit) 2>&1; echo rc=$?"])
        XCTAssertEqual(out, "rc=0\n", "no warnings either")
    }

    /// Dashboard and alert expressions parse as PromQL and name only metrics the
    /// gateway exports.
    func testDashboardAndAlertsUseExportedMetrics() throws {
        // With a worker group named, so the worker-lag series exist too.
        let redis = try RedisServer()
        let g = try Gateway(config: "[redis]\naddress = \"\(redis.address)\"\nconsumer_groups = [\"workers\"]\n")
        defer { XCTAssertEqual(g.stop(), 0) }
        let scrape = try http(XCTUnwrap(g.adminPort), "/metrics").body
        var exported: Set<String> = []
        for line in scrape.split(separator: "\n") where line.hasPrefix("# TYPE ") {
            let f = line.split(separator: " ")
            exported.insert(String(f[2]))
            if f[3] == "histogram" { for s in ["_bucket", "_sum", "_count"] { exported.insert(String(f[2]) + s) } }
        }
        let dashboard = try JSONSerialization.jsonObject(with: Data(contentsOf: repoRoot.appendingPathComponent("ops/grafana/pilegate.json")))
        let panels = try XCTUnwrap((dashboard as? [String: Any])?["panels"] as? [[String: Any]])
        let exprs = panels.flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }
        XCTAssertGreaterThan(exprs.count, 20)
        let alerts = try String(contentsOfFile: path("ops/prometheus/alerts.yml"), encoding: .utf8)
        let names = try NSRegularExpression(pattern: "pilegate_[a-z_]+")
        for text in exprs + [alerts] {
            for m in names.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                let name = String(text[Range(m.range, in: text)!])
                XCTAssertTrue(exported.contains(name), "\(name) is not exported")
            }
        }
        // Each panel query as a recording rule, so promtool parses it.
        var rules = "groups:\n  - name: dashboard\n    rules:\n"
        for (i, e) in exprs.enumerated() {
            let q = e.replacingOccurrences(of: "$instance", with: ".*").replacingOccurrences(of: "'", with: "''")
            rules += "      - record: dashboard:query\(i)\n        expr: '\(q)'\n"
        }
        let file = NSTemporaryDirectory() + "dashboard-\(UUID().uuidString).yml"
        try rules.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        try check("promtool check rules \(file)")
    }
}
