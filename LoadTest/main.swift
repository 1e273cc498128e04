import ArgumentParser
import Atomics
import Foundation
import Glibc
import Histogram
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
    /// the traffic mix of real piles (Sources/ARCHITECTURE.md, "Traffic"): run data per gun every
    /// --min/--max-interval, a trade record every --trade-every messages, pings at the
    /// keepalive; with --redis, the echo worker answers each message with a command
    /// (end-to-end latency pile -> Redis -> worker -> node -> pile)
    case pile
    /// all connect, hold --duration, then all drop at once and connect again: the
    /// time until every pile is back, and connect latency
    case storm
    /// all connect and subscribe to their command topic; then one command per pile is
    /// XADDed to the node's downlink stream (--redis) as fast as Redis takes them:
    /// delivery rate and latency from XADD to the pile
    case downlink
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
    @Option(help: "Index of the first pile (its id is pileID(index)): two runs with disjoint piles.") var firstPile = 0
    @Flag(help: "Reconnect after a CONNACK refusal or a close, 100-1000 ms later (as piles do).") var retry = false
    @Option(help: "Worker threads (rings); 0 = enough for the fixed-file tables.") var workers = 0
    @Option(help: "Write the final report as JSON here.") var json: String?
    @Option(help: "Broker process id: sample its RSS and CPU from /proc at phase boundaries.") var brokerPid: Int32?
    @Option(help: "Redis process id: its CPU over the same publishing window (what a message costs Redis).") var redisPid: Int32?
    @Option(help: "pile: guns per pile, each sending its own run data.") var guns = 2
    @Option(help: "pile: least seconds between one gun's messages.") var minInterval = 10.0
    @Option(help: "pile: most seconds between one gun's messages.") var maxInterval = 30.0
    @Option(help: "pile: every Nth message of a pile is a trade record (1-2 KB); 0 = none.") var tradeEvery = 100
    @Option(help: "pile/downlink: the platform's Redis (loopback HOST:PORT): echo worker / command source.") var redis: String?
    @Option(help: "pile: the gateway's uplink stream the echo worker reads.") var uplinkStream = "pilegate:up"
    @Option(help: "pile/downlink: downlink stream prefix (+ node name).") var downlinkPrefix = "pilegate:down:"
    @Option(help: "downlink: the gateway's node name (its [server] node).") var node = PileLoad.hostname()
    @Option(help: "downlink: this many piles drop their link on receiving their command, before acknowledging it, and reconnect 100-500 ms later.") var dropBeforeAck = 0
    @Option(help: "Write a PNG of rates and latency over time here (needs python3-matplotlib).") var plot: String?

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
        guard minInterval >= 0.1, maxInterval >= minInterval, maxInterval <= 3600, (1...8).contains(guns) else {
            throw ValidationError("--min-interval >= 0.1, --max-interval in min...3600, --guns 1...8")
        }
        if let r = redis, SocketAddress(r)?.isLoopback != true || SocketAddress(r)?.family != AF_INET {
            throw ValidationError("--redis must be an IPv4 loopback HOST:PORT")
        }
        if profile == .downlink && redis == nil { throw ValidationError("--profile downlink needs --redis") }
    }

    static func hostname() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, 255)
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    func run() throws {
        Interrupt.install()
        let t = SocketAddress(target)!
        let srcs = (0..<sources).map { SocketAddress(host: "127.0.0.\(2 + $0)", port: 0)! }
        let table = max(64, min(fileLimit() - 256, 32768))
        let total = connections + (profile == .fanin ? 1 : 0)
        let pileWorkers = workers > 0 ? workers : max(1, (connections + table - 1) / table)
        // fanin: the wildcard subscriber gets a thread of its own; sharing one with
        // publishers, it read only what their CPU left it, whichever broker was measured.
        let nWorkers = pileWorkers + (profile == .fanin ? 1 : 0)
        let control = Control()
        var threads: [PileLoop.Thread] = []
        var statsList: [Stats] = []
        var first = firstPile
        for w in 0..<nWorkers {
            let subscriberOnly = profile == .fanin && w == 0
            let p = w - (nWorkers - pileWorkers)   // index among the pile workers
            let share = subscriberOnly ? 1 : connections / pileWorkers + (p < connections % pileWorkers ? 1 : 0)
            let plan = Plan(target: t, sources: srcs, profile: profile, firstIndex: first, connections: share,
                            keepAlive: keepalive, connectRate: max(1, connectRate / pileWorkers),
                            maxPending: max(1, maxPending / pileWorkers), payload: payload, burst: burst,
                            qos: QoS(rawValue: qos)!, rate: rate / pileWorkers, subscribeOwn: subscribe,
                            hostsSubscriber: subscriberOnly, fileTable: table, retry: retry, password: password,
                            guns: guns, minInterval: Int(minInterval * 1000), maxInterval: Int(maxInterval * 1000),
                            tradeEvery: tradeEvery, measureEndToEnd: profile == .downlink || (profile == .pile && redis != nil),
                            dropBeforeAck: subscriberOnly ? 0 : dropBeforeAck / pileWorkers + (p < dropBeforeAck % pileWorkers ? 1 : 0))
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
        var stoppedEarly = false
        func interrupted() -> Bool {
            if !stoppedEarly && Interrupt.requested { stoppedEarly = true; say("interrupted: ending the run early, with its report") }
            return stoppedEarly
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
            if c >= total || (!retry && c + f >= total) || now - t0 > UInt64(connectTimeout) * 1000 || interrupted() { break }
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
        var echo: EchoWorker?
        var helpers: [PileLoop.Thread] = []
        if profile == .pile, let r = redis {
            let e = try EchoWorker(address: r, stream: uplinkStream, downlinkPrefix: downlinkPrefix, stop: control.stop)
            echo = e
            helpers.append(PileLoop.Thread(name: "pileload-echo") { e.run() })
        }
        if profile != .idle {
            let subDeadline = monotonicMillis() + 5000
            let subscribers = profile == .fanin ? 1 : (profile == .downlink || echo != nil) ? connected : 0
            while sum(\.subscribed) < subscribers && monotonicMillis() < subDeadline { usleep(10_000) }
            control.go.store(true, ordering: .relaxed)
            if profile == .fanin || profile == .uplink || profile == .pile { usleep(1_000_000) }   // warm-up
            control.measure.store(true, ordering: .relaxed)
        }
        let commandsSent = ManagedAtomic<Int>(0)
        if profile == .downlink, let r = redis {
            let stream = downlinkPrefix + node, n = total
            helpers.append(PileLoop.Thread(name: "pileload-downlink") {
                do { commandsSent.store(try sendDownlinkBurst(address: r, stream: stream, piles: 0..<n), ordering: .relaxed) } catch {
                    logError("pileload: downlink: \(error)")
                }
            })
        }
        let p0 = sum(\.published), r0 = sum(\.received), a0 = sum(\.acked), s0 = monotonicMillis()
        let redisServer = redisPid.map(ProcSample.init)
        let cpu0 = broker?.cpuSeconds() ?? 0, redisCPU0 = redisServer?.cpuSeconds() ?? 0
        var lp = p0, lr = r0, la = a0
        var series: [Sample] = []
        var stormBackMs: UInt64?
        last = s0
        while monotonicMillis() - s0 < UInt64(duration) * 1000 {
            usleep(100_000)
            let now = monotonicMillis()
            // Back: every worker has dropped its piles (a loaded worker may take a while
            // to) and every pile is connected again.
            if profile == .storm && stormBackMs == nil && statsList.allSatisfy({ $0.stormed.load(ordering: .acquiring) })
                && sum(\.connected) >= total { stormBackMs = now - s0 }
            if profile == .downlink && sum(\.received) - r0 >= total { break }   // every command delivered and acknowledged
            if interrupted() { break }
            if now - last >= 1000 {
                let p = sum(\.published), r = sum(\.received), a = sum(\.acked)
                let dt = Double(now - last) / 1000
                let sample = Sample(t: Double(micros() - control.epoch) / 1e6, published: Double(p - lp) / dt, received: Double(r - lr) / dt,
                                    acked: Double(a - la) / dt, connected: sum(\.connected),
                                    p99: statsList.map { $0.puback.lastP99.load(ordering: .relaxed) }.max() ?? 0,
                                    e2eP99: statsList.map { $0.endToEnd.lastP99.load(ordering: .relaxed) }.max() ?? 0)
                series.append(sample)
                say(sample.line + " closed_by_server=\(sum(\.closedByServer))" + (echo.map { " echoed=\($0.echoed.load(ordering: .relaxed))" } ?? ""))
                lp = p; lr = r; la = a; last = now
            }
        }
        let secs = Double(monotonicMillis() - s0) / 1000
        let published = sum(\.published) - p0, received = sum(\.received) - r0, acked = sum(\.acked) - a0
        let cpu = (broker?.cpuSeconds() ?? 0) - cpu0
        let redisCPU = (redisServer?.cpuSeconds() ?? 0) - redisCPU0
        let rssSteady = broker?.rssKiB() ?? 0
        // QoS 1/2 fan-in: stop publishing and let what is in flight arrive (until every
        // acknowledged message is delivered, or nothing arrives for 2 s; at most 15 s),
        // so "acknowledged but never delivered" counts losses, not the run's cut-off.
        var drained: (acked: Int, received: Int)?
        if profile == .fanin && qos > 0 {
            control.go.store(false, ordering: .relaxed)
            let d0 = monotonicMillis()
            var seen = sum(\.received), quietSince = d0
            while monotonicMillis() - quietSince < 2000 && monotonicMillis() - d0 < 15_000
                    && sum(\.received) - r0 < sum(\.acked) - a0 {
                usleep(50_000)
                if sum(\.received) != seen { seen = sum(\.received); quietSince = monotonicMillis() }
            }
            drained = (sum(\.acked) - a0, sum(\.received) - r0)
        }
        control.measure.store(false, ordering: .relaxed)
        control.stop.store(true, ordering: .relaxed)
        control.go.store(false, ordering: .relaxed)
        helpers.forEach { $0.join() }
        let waitUntil = monotonicMillis() + 5000
        while !statsList.allSatisfy({ $0.finished.load(ordering: .acquiring) }) && monotonicMillis() < waitUntil { usleep(10_000) }
        let complete = statsList.allSatisfy { $0.finished.load(ordering: .acquiring) }
        if complete { threads.forEach { $0.join() } }   // a stuck worker is left to the exit, not waited for
        func merged(_ k: KeyPath<Stats, LatencyRecorder>) -> Histogram<UInt64> {
            var h = LatencyRecorder.make()
            if complete { for s in statsList { s[keyPath: k].closeSecond(); h.add(s[keyPath: k].total) } }
            return h
        }
        let pubackH = merged(\.puback), e2eH = merged(\.endToEnd), connectH = merged(\.connect)
        var report = Report()
        report.add("profile", "\"\(profile.rawValue)\"")
        report.add("target", "\"\(target)\"")
        report.add("connections", total)
        report.add("connected", connected)
        report.add("failed", sum(\.failed))
        report.add("refused", sum(\.refused))
        report.add("retries", sum(\.retries))
        report.add("connect_seconds", Double(connectMs) / 1000)
        report.add("connect_rate", Int(Double(connected) / max(0.001, Double(connectMs) / 1000)))
        report.latency("connect_ms", connectH)
        report.add("steady_seconds", secs)
        report.add("published", published)
        report.add("received", received)
        report.add("published_per_s", Int(Double(published) / secs))
        report.add("received_per_s", Int(Double(received) / secs))
        report.add("closed_by_server", sum(\.closedByServer))
        report.add("acked", acked)
        report.add("acked_per_s", Int(Double(acked) / secs))
        report.latency("puback_ms", pubackH)
        if let drained {
            report.add("acked_after_drain", drained.acked)
            report.add("received_after_drain", drained.received)
            report.add("acked_not_delivered", max(0, drained.acked - drained.received))
        }
        if profile == .pile && echo != nil || profile == .downlink { report.latency("end_to_end_ms", e2eH) }
        if let echo { report.add("echoed", echo.echoed.load(ordering: .relaxed)) }
        if profile == .downlink {
            report.add("commands_sent", commandsSent.load(ordering: .relaxed))
            report.add("dropped_before_ack", sum(\.droppedBeforeAck))
        }
        if profile == .storm { report.add("storm_reconnect_seconds", stormBackMs.map { Double($0) / 1000 }) }
        if broker != nil {
            report.add("broker_rss_before_kib", rssBefore)
            report.add("broker_cpu_connect_seconds", connectCPU)
            report.add("connects_per_broker_cpu_second", Int(Double(connected) / max(0.001, connectCPU)))
            report.add("broker_rss_connected_kib", rssConnected)
            report.add("broker_rss_end_kib", rssSteady)
            report.add("rss_per_connection_bytes", Int(Double(rssConnected - rssBefore) * 1024 / Double(max(1, connected))))
            report.add("broker_cpu_seconds", cpu)
            report.add("broker_cpu_s_per_million_delivered", received > 0 ? cpu / Double(received) * 1e6 : 0)
        }
        if redisServer != nil { report.add("redis_cpu_seconds", redisCPU) }
        say("")
        say(report.table(latencies: [("connect", connectH), ("PUBACK", pubackH), ("end to end", e2eH)]))
        if let path = json { try report.json().write(toFile: path, atomically: true, encoding: .utf8) }
        if let plot {
            let latencySeries = complete ? statsList.map { ($0.puback.series, $0.endToEnd.series) } : []
            try writePlot(plot, series: series, latency: latencySeries, title: "pileload \(profile.rawValue), \(total) piles")
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
