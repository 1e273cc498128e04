import Foundation
import Histogram

/// One second of the steady phase, as the main thread saw it.
struct Sample {
    var t: Double
    var published: Double
    var received: Double
    var acked: Double
    var connected: Int
    /// The last completed second's p99 over workers (the largest), µs.
    var p99: UInt64
    var e2eP99: UInt64

    var line: String {
        "t=\(String(format: "%.1f", t))s connected=\(connected) pub/s=\(Int(published)) recv/s=\(Int(received))"
            + " acked/s=\(Int(acked))" + (p99 > 0 ? " puback_p99=\(String(format: "%.2f", Double(p99) / 1000))ms" : "")
            + (e2eP99 > 0 ? " e2e_p99=\(String(format: "%.2f", Double(e2eP99) / 1000))ms" : "")
    }
}

/// The final report: ordered key/values for the JSON file, and a readable table.
struct Report {
    private var fields: [(String, String)] = []

    mutating func add(_ key: String, _ value: Int) { fields.append((key, "\(value)")) }
    mutating func add(_ key: String, _ value: Double?) { fields.append((key, value.map { String(format: "%.3f", $0) } ?? "null")) }
    mutating func add(_ key: String, _ json: String) { fields.append((key, json)) }

    /// `PREFIX_p50` ... `PREFIX_max` in ms (null when nothing was recorded), and the sample count.
    mutating func latency(_ prefix: String, _ h: Histogram<UInt64>) {
        for (name, v) in h.summary { add("\(prefix)_\(name)", v) }
        add(prefix.replacingOccurrences(of: "_ms", with: "_samples"), Int(h.totalCount))
    }

    func json() -> String { "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}\n" }

    func table(latencies: [(String, Histogram<UInt64>)]) -> String {
        var out = "result\n"
        for (k, v) in fields where !k.contains("_ms_") && !k.hasSuffix("_samples") {
            out += "  \(k.padding(toLength: 36, withPad: " ", startingAt: 0)) \(v)\n"
        }
        out += "\n  latency (ms)     p50      p90      p99    p99.9      max    samples\n"
        for (name, h) in latencies where h.totalCount > 0 {
            let cols = h.summary.map { String(format: "%8.3f", $0.1 ?? 0) }.joined(separator: " ")
            out += "  \(name.padding(toLength: 12, withPad: " ", startingAt: 0)) \(cols) \(String(format: "%10d", h.totalCount))\n"
        }
        return out
    }
}

/// `--plot`: the per-second samples (and the workers' per-second latency
/// percentiles, merged: count-weighted p50, largest p99) as CSV next to the PNG,
/// drawn by matplotlib (Debian's python3-matplotlib, see ops/install-deps.sh).
func writePlot(_ png: String, series: [Sample],
               latency: [([(second: Int, count: UInt64, p50: UInt64, p99: UInt64, max: UInt64)],
                          [(second: Int, count: UInt64, p50: UInt64, p99: UInt64, max: UInt64)])],
               title: String) throws {
    var bySecond: [Int: (n: UInt64, p50: Double, p99: UInt64, e2e: UInt64)] = [:]
    for (puback, e2e) in latency {
        for s in puback {
            var e = bySecond[s.second] ?? (0, 0, 0, 0)
            e.p50 = (e.p50 * Double(e.n) + Double(s.p50) * Double(s.count)) / Double(e.n + s.count)
            e.n += s.count
            e.p99 = max(e.p99, s.p99)
            bySecond[s.second] = e
        }
        for s in e2e {
            var e = bySecond[s.second] ?? (0, 0, 0, 0)
            e.e2e = max(e.e2e, s.p99)
            bySecond[s.second] = e
        }
    }
    let latencyCSV = png + ".latency.csv", rateCSV = png + ".rates.csv"
    try (["second,puback_p50_ms,puback_p99_ms,e2e_p99_ms"] + bySecond.keys.sorted().map { k in
        let e = bySecond[k]!
        return "\(k),\(e.p50 / 1000),\(Double(e.p99) / 1000),\(Double(e.e2e) / 1000)"
    }).joined(separator: "\n").write(toFile: latencyCSV, atomically: true, encoding: .utf8)
    try (["t,published,received,acked,connected"] + series.map { "\($0.t),\($0.published),\($0.received),\($0.acked),\($0.connected)" })
        .joined(separator: "\n").write(toFile: rateCSV, atomically: true, encoding: .utf8)
    let script = """
    import csv, sys
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    png, rates, lat, title = sys.argv[1:5]
    r = list(csv.DictReader(open(rates))); l = list(csv.DictReader(open(lat)))
    fig, (a, b) = plt.subplots(2, 1, figsize=(10, 7), sharex=False)
    t = [float(x["t"]) for x in r]
    for k in ("published", "received", "acked"):
        if any(float(x[k]) for x in r): a.plot(t, [float(x[k]) for x in r], label=k + "/s")
    a.set_ylabel("messages/s"); a.set_title(title); a.legend(); a.grid(alpha=.3)
    s = [int(x["second"]) for x in l]
    for k, name in (("puback_p50_ms", "PUBACK p50"), ("puback_p99_ms", "PUBACK p99"), ("e2e_p99_ms", "end-to-end p99")):
        if any(float(x[k]) for x in l): b.plot(s, [float(x[k]) for x in l], label=name)
    b.set_xlabel("seconds since pileload started"); b.set_ylabel("ms"); b.legend(); b.grid(alpha=.3)
    fig.tight_layout(); fig.savefig(png, dpi=90)
    """
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")   // Debian's, where python3-matplotlib installs
    p.arguments = ["-c", script, png, rateCSV, latencyCSV, title]
    try p.run()
    p.waitUntilExit()
    if p.terminationStatus != 0 { throw PileLoadError("--plot: python3 with matplotlib failed (apt-get install python3-matplotlib)") }
    say("plot: \(png) (data: \(rateCSV), \(latencyCSV))")
}
