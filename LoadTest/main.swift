import ArgumentParser
import Atomics
import Foundation
import Glibc
import MQTTCodec
import PileLoop

enum Profile: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// connect and hold (pinging at the keepalive), optionally subscribed to the own cmd topic
    case idle
    /// every pile publishes as fast as allowed; one wildcard subscriber counts deliveries
    case fanin
    /// every pile publishes (QoS 1: one window of --burst at a time), no subscriber:
    /// measures acknowledged messages/s and PUBACK latency (into Redis, with the bridge on)
    case uplink
}

/// pileload: simulated charging piles against an MQTT broker on loopback.
/// Bounded: every run ends after --duration (plus the connect phase, itself bounded
/// by --connect-timeout) and only loopback targets and sources are accepted.
struct PileLoad: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pileload",
        abstract: "Simulated charging piles on io_uring (loopback only).")

    @Option(help: "Broker address (must be loopback).") var target = "127.0.0.1:1883"
    @Option(help: "Profile: \(Profile.allCases.map(\.rawValue).joined(separator: ", ")).") var profile = Profile.idle
    @Option(help: "Simulated piles.") var connections = 1000
    @Option(help: "Client source addresses 127.0.0.2 ... (spreads the ephemeral port space).") var sources = 16
    @Option(help: "New connections per second (all workers).") var connectRate = 20_000
    @Option(help: "Connects in flight at once (all workers).") var maxPending = 4000
    @Option(help: "Seconds allowed for the connect phase.") var connectTimeout = 120
    @Option(help: "Seconds to hold (idle) or publish (fanin) after everyone is connected.") var duration = 10
    @Option(help: "MQTT keepalive seconds.") var keepalive: UInt16 = 120
    @Option(help: "fanin: payload bytes.") var payload = 400
    @Option(help: "fanin: PUBLISH packets per write.") var burst = 8
    @Option(help: "fanin: QoS of publishes and of the subscription.") var qos: UInt8 = 0
    @Option(help: "fanin: total messages per second, 0 = as fast as possible.") var rate = 0
    @Flag(help: "idle: each pile subscribes to its own /xjdy/ops/v1/TCU/{id}/cmd.") var subscribe = false
    @Option(help: "Piles log in with user name = client id and this password.") var password: String?
    @Flag(help: "Reconnect after a CONNACK refusal or a close, 100-1000 ms later (as piles do).") var retry = false
    @Option(help: "Worker threads (rings); 0 = enough for the fixed-file tables.") var workers = 0
    @Option(help: "Write the final report as JSON here.") var json: String?
    @Option(help: "Broker process id: sample its RSS and CPU from /proc at phase boundaries.") var brokerPid: Int32?

    func validate() throws {
        guard let t = SocketAddress(target), t.isLoopback else {
            throw ValidationError("--target must be a loopback HOST:PORT (127.0.0.0/8 or [::1])")
        }
        guard t.family == AF_INET else { throw ValidationError("--target: IPv4 loopback only") }
        guard (1...253).contains(sources) else { throw ValidationError("--sources: 1...253") }
        guard (1...10_000_000).contains(connections), (1...86_400).contains(duration) else {
            throw ValidationError("--connections 1...10M, --duration 1...86400")
        }
        guard qos <= 2 else { throw ValidationError("--qos 0, 1 or 2") }
    }

    func run() throws {
        let t = SocketAddress(target)!
        let srcs = (0..<sources).map { SocketAddress(host: "127.0.0.\(2 + $0)", port: 0)! }
        let table = max(64, min(fileLimit() - 256, 32768))
        let total = connections + (profile == .fanin ? 1 : 0)
        let nWorkers = workers > 0 ? workers : max(1, (total + table - 1) / table)
        let control = Control()
        var threads: [PileLoop.Thread] = []
        var statsList: [Stats] = []
        var first = 0
        for w in 0..<nWorkers {
            let share = total / nWorkers + (w < total % nWorkers ? 1 : 0)
            let plan = Plan(target: t, sources: srcs, profile: profile, firstIndex: first, connections: share,
                            keepAlive: keepalive, connectRate: max(1, connectRate / nWorkers),
                            maxPending: max(1, maxPending / nWorkers), payload: payload, burst: burst,
                            qos: QoS(rawValue: qos)!, rate: rate / nWorkers, subscribeOwn: subscribe,
                            hostsSubscriber: profile == .fanin && w == 0, fileTable: table, retry: retry, password: password)
            first += share
            let stats = Stats()
            statsList.append(stats)
            threads.append(PileLoop.Thread(name: "pileload-\(w)") {
                do { try Worker(plan: plan, stats: stats, control: control).run() } catch {
                    logError("pileload: worker \(w): \(error)")
                    stats.finished.store(true, ordering: .relaxed)
                }
            })
        }
        func sum(_ k: KeyPath<Stats, ManagedAtomic<Int>>) -> Int { statsList.reduce(0) { $0 + $1[keyPath: k].load(ordering: .relaxed) } }

        let broker = brokerPid.map(ProcSample.init)
        let rssBefore = broker?.rssKiB() ?? 0

        // Connect phase
        let connectCPU0 = broker?.cpuSeconds() ?? 0
        let t0 = monotonicMillis()
        var last = t0
        while true {
            usleep(100_000)
            let c = sum(\.connected), f = sum(\.failed)
            let now = monotonicMillis()
            if now - last >= 1000 {
                last = now
                say("connecting t=\(String(format: "%.1f", Double(now - t0) / 1000))s connected=\(c)/\(total) failed=\(f) refused=\(sum(\.refused))")
            }
            if c >= total || (!retry && c + f >= total) || now - t0 > UInt64(connectTimeout) * 1000 { break }
        }
        let connectMs = monotonicMillis() - t0
        let connectCPU = (broker?.cpuSeconds() ?? 0) - connectCPU0
        let connected = sum(\.connected)
        say("ALL CONNECTED connected=\(connected) failed=\(sum(\.failed)) seconds=\(String(format: "%.2f", Double(connectMs) / 1000)) rate=\(Int(Double(connected) / max(0.001, Double(connectMs) / 1000)))/s")

        var rssConnected = 0
        if let b = broker {
            usleep(2_000_000)   // let the broker settle (SUBACKs, first pings) before sampling
            rssConnected = b.rssKiB()
        }

        // Steady phase
        if profile != .idle {
            let subDeadline = monotonicMillis() + 5000
            while profile == .fanin && statsList[0].subscribed.load(ordering: .relaxed) == 0 && monotonicMillis() < subDeadline { usleep(10_000) }
            control.go.store(true, ordering: .relaxed)
            usleep(1_000_000)   // warm-up
            control.measure.store(true, ordering: .relaxed)
        }
        let p0 = sum(\.published), r0 = sum(\.received), a0 = sum(\.acked), s0 = monotonicMillis()
        let cpu0 = broker?.cpuSeconds() ?? 0
        var lp = p0, lr = r0
        last = s0
        while monotonicMillis() - s0 < UInt64(duration) * 1000 {
            usleep(200_000)
            let now = monotonicMillis()
            if now - last >= 1000 {
                let p = sum(\.published), r = sum(\.received)
                let dt = Double(now - last) / 1000
                say("steady t=\(String(format: "%.1f", Double(now - s0) / 1000))s connected=\(sum(\.connected)) pub/s=\(Int(Double(p - lp) / dt)) recv/s=\(Int(Double(r - lr) / dt)) closed_by_server=\(sum(\.closedByServer))")
                lp = p; lr = r; last = now
            }
        }
        let secs = Double(monotonicMillis() - s0) / 1000
        let published = sum(\.published) - p0, received = sum(\.received) - r0, acked = sum(\.acked) - a0
        let cpu = (broker?.cpuSeconds() ?? 0) - cpu0
        let rssSteady = broker?.rssKiB() ?? 0
        control.measure.store(false, ordering: .relaxed)
        control.stop.store(true, ordering: .relaxed)
        control.go.store(false, ordering: .relaxed)
        let waitUntil = monotonicMillis() + 5000
        while !statsList.allSatisfy({ $0.finished.load(ordering: .acquiring) }) && monotonicMillis() < waitUntil { usleep(10_000) }
        var lat = statsList.allSatisfy { $0.finished.load(ordering: .acquiring) } ? statsList.flatMap(\.latencies) : []
        lat.sort()
        func pct(_ p: Double) -> String {
            lat.isEmpty ? "null" : String(format: "%.3f", Double(lat[min(lat.count - 1, Int(Double(lat.count) * p))]) / 1000)
        }
        var report: [(String, String)] = [
            ("profile", "\"\(profile.rawValue)\""), ("target", "\"\(target)\""),
            ("connections", "\(total)"), ("connected", "\(connected)"), ("failed", "\(sum(\.failed))"),
            ("refused", "\(sum(\.refused))"), ("retries", "\(sum(\.retries))"),
            ("connect_seconds", String(format: "%.3f", Double(connectMs) / 1000)),
            ("connect_rate", "\(Int(Double(connected) / max(0.001, Double(connectMs) / 1000)))"),
            ("steady_seconds", String(format: "%.3f", secs)),
            ("published", "\(published)"), ("received", "\(received)"),
            ("published_per_s", "\(Int(Double(published) / secs))"),
            ("received_per_s", "\(Int(Double(received) / secs))"),
            ("closed_by_server", "\(sum(\.closedByServer))"),
            ("acked", "\(acked)"), ("acked_per_s", "\(Int(Double(acked) / secs))"),
            ("puback_ms_p50", pct(0.50)), ("puback_ms_p90", pct(0.90)), ("puback_ms_p99", pct(0.99)),
            ("puback_ms_p999", pct(0.999)), ("puback_ms_max", lat.isEmpty ? "null" : String(format: "%.3f", Double(lat.last!) / 1000)),
            ("latency_samples", "\(lat.count)"),
        ]
        if broker != nil {
            report += [
                ("broker_rss_before_kib", "\(rssBefore)"),
                ("broker_cpu_connect_seconds", String(format: "%.2f", connectCPU)),
                ("connects_per_broker_cpu_second", String(format: "%.0f", Double(connected) / max(0.001, connectCPU))),
                ("broker_rss_connected_kib", "\(rssConnected)"),
                ("broker_rss_end_kib", "\(rssSteady)"),
                ("rss_per_connection_bytes", String(format: "%.0f", Double(rssConnected - rssBefore) * 1024 / Double(max(1, connected)))),
                ("broker_cpu_seconds", String(format: "%.2f", cpu)),
                ("broker_cpu_s_per_million_delivered", String(format: "%.3f", received > 0 ? cpu / Double(received) * 1e6 : 0)),
            ]
        }
        say("\nresult")
        for (k, v) in report { say("  \(k.padding(toLength: 36, withPad: " ", startingAt: 0)) \(v)") }
        if let path = json {
            let body = "{" + report.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}\n"
            try body.write(toFile: path, atomically: true, encoding: .utf8)
        }
        // Sockets close with the process; workers need not unwind 200k connections one by one.
        Glibc.exit(0)
    }
}

PileLoad.main()

/// One line to stderr (Glibc's `stderr` global is not concurrency-safe in Swift 6).
func logError(_ line: String) {
    let text = line + "\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
}

/// One line to stdout, unbuffered, so a driving script sees progress as it happens.
func say(_ line: String) {
    let text = line + "\n"
    _ = text.withCString { write(1, $0, strlen($0)) }
}

/// Another process's resident memory and CPU time, read from /proc.
struct ProcSample {
    let pid: Int32

    func rssKiB() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        return 0
    }

    /// utime + stime in seconds.
    func cpuSeconds() -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // after the command name: state is field 3, utime 14, stime 15 (1-based in proc(5))
        let utime = Double(fields[11]) ?? 0, stime = Double(fields[12]) ?? 0
        return (utime + stime) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
