import Foundation
import Glibc
import MQTTCodec
import XCTest

/// The real pilegate binary, started on a free loopback port with a config written
/// for the test, its log captured, stopped with SIGTERM.
final class Gateway {
    let process = Process()
    let port: UInt16
    private let log = LogCapture()
    let configPath: String
    /// The config every test gateway starts from (ends with `[admin]`).
    private let base: String

    static var binary: URL {
        // The test binary sits next to the package's executables in .build/<triple>/<config>/.
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("pilegate")
    }

    /// `config` is appended to a base config that ends with the `[admin]` table, so
    /// keys before its first table header are admin keys; `server` lines go into its
    /// `[server]` table.
    init(config: String = "", listen: String = "127.0.0.1:0", node: String = "test-node", server: String = "") throws {
        configPath = NSTemporaryDirectory() + "pilegate-test-\(UUID().uuidString).toml"
        base = """
        [server]
        node = "\(node)"
        shards = 4
        sys_interval = 1
        \(server)
        [log]
        level = "debug"
        [admin]
        bind = "127.0.0.1:0"

        """
        try (base + config).write(toFile: configPath, atomically: true, encoding: .utf8)
        process.executableURL = Gateway.binary
        process.arguments = ["--listen", listen, "--config", configPath]
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = FileHandle.nullDevice
        log.attach(pipe)
        try process.run()
        guard let line = log.waitFor("listening on 127.0.0.1:", timeout: 10),
              let p = line.split(separator: ":").last.flatMap({ UInt16($0.trimmingCharacters(in: .whitespaces)) })
        else {
            process.terminate()
            throw Failure("pilegate did not start: \(log.text)")   // a failure, never a skip
        }
        port = p
    }

    /// SIGTERM, then wait; returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: configPath)
        return process.terminationStatus
    }

    deinit { if process.isRunning { stop() } }

    /// Write a new config (`config` after the same base) to the file the gateway
    /// reads, for a reload.
    func rewriteConfig(_ config: String) throws {
        try (base + config).write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// SIGHUP, then wait for the reload's log line (applied or refused).
    @discardableResult
    func sighup(expect needle: String = "reloaded ") -> String? {
        let before = logText.components(separatedBy: needle).count
        kill(process.processIdentifier, SIGHUP)
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            if logText.components(separatedBy: needle).count > before { return needle }
            usleep(20_000)
        }
        return nil
    }

    var logText: String { log.text }

    /// Port of the admin HTTP endpoint (/metrics, /healthz, /readyz).
    var adminPort: UInt16? { loggedPort("admin HTTP on 127.0.0.1:") }
    /// Port of the health-only listener (`[admin] health_bind = "127.0.0.1:0"`).
    var healthPort: UInt16? { loggedPort("health HTTP on 127.0.0.1:") }
    /// Port of the TLS listener (config `[tls] bind = "127.0.0.1:0"`).
    var tlsPort: UInt16? { loggedPort("TLS listener on 127.0.0.1:") }

    /// The port a log line names right after `prefix`.
    private func loggedPort(_ prefix: String) -> UInt16? {
        guard let line = log.waitFor(prefix, timeout: 5) else { return nil }
        return UInt16(line.components(separatedBy: prefix)[1].prefix { $0.isNumber })
    }

    /// Resident memory of the gateway process, KiB.
    var rssKiB: Int {
        let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }

    @discardableResult
    func waitForLog(_ needle: String, timeout: TimeInterval = 5) -> String? { log.waitFor(needle, timeout: timeout) }

    /// Wait for the debug log line of a SUBSCRIBE to `filter`.
    @discardableResult
    func waitSubscribed(_ filter: String, timeout: TimeInterval = 5) -> String? {
        log.waitFor("filter=\(filter) ", timeout: timeout)
    }

    /// Read one $SYS counter through a real subscriber.
    func counter(_ name: String) throws -> UInt64 {
        let out = try shell("mosquitto_sub", ["-p", "\(port)", "-h", "127.0.0.1", "-t", "$SYS/broker/counters/\(name)", "-C", "1", "-W", "5"])
        return UInt64(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? UInt64.max
    }

    /// Wait until a $SYS counter reaches `value` (it is published every second).
    func waitForCounter(_ name: String, atLeast value: UInt64, timeout: TimeInterval = 8) throws -> UInt64 {
        let deadline = Date().addingTimeInterval(timeout)
        var v: UInt64 = 0
        repeat {
            v = try counter(name)
            if v != UInt64.max && v >= value { return v }
            usleep(300_000)
        } while Date() < deadline
        return v
    }
}

/// Collects a pipe's output on a background queue.
final class LogCapture: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private var ended = false

    func attach(_ pipe: Pipe) {
        pipe.fileHandleForReading.readabilityHandler = { [weak self] h in
            let d = h.availableData
            guard let self else { return }
            self.lock.lock(); defer { self.lock.unlock() }
            if d.isEmpty {   // end of file: the writer is gone and everything was read
                self.ended = true
                h.readabilityHandler = nil
            } else {
                self.data.append(d)
            }
        }
    }

    /// Wait until the writer closed its end and all its output is in (a fixed sleep
    /// lost the end of a 14 KB /metrics body on a loaded machine).
    func waitEnded(timeout: TimeInterval) {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            lock.lock(); let done = ended; lock.unlock()
            if done { return }
            usleep(5_000)
        }
    }

    var text: String {
        lock.lock(); defer { lock.unlock() }
        return String(decoding: data, as: UTF8.self)
    }

    func waitFor(_ needle: String, timeout: TimeInterval) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if let line = text.split(separator: "\n").first(where: { $0.contains(needle) }) { return String(line) }
            usleep(20_000)
        } while Date() < deadline
        return nil
    }
}

/// An HTTP request to the admin endpoint with curl: (status, body).
func http(_ port: UInt16, _ path: String, method: String = "GET", token: String? = nil) throws -> (status: Int, body: String) {
    // The body goes to a file, read once curl has exited: whole, however loaded the machine.
    let file = NSTemporaryDirectory() + "http-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: file) }
    let status = try shell("curl", ["-s", "-X", method, "-o", file, "-w", "%{http_code}"]
                           + (token.map { ["-H", "Authorization: Bearer \($0)"] } ?? []) + ["http://127.0.0.1:\(port)\(path)"])
    let body = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
    return (Int(status.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, body)
}

/// The value of one series (name with its labels, as written) in a /metrics scrape.
func metricValue(_ metrics: String, _ series: String) -> Double? {
    metrics.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last!) }
}

/// Run a command to completion (bounded), returning stdout; throws on non-zero exit.
@discardableResult
func shell(_ tool: String, _ args: [String], timeout: TimeInterval = 20) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = [tool] + args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let o = LogCapture(), e = LogCapture()
    o.attach(out); e.attach(err)
    try p.run()
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(10_000) }
    if p.isRunning { p.terminate(); p.waitUntilExit(); throw Failure("\(tool) timed out: \(e.text)") }
    p.waitUntilExit()
    o.waitEnded(timeout: 1); e.waitEnded(timeout: 1)
    if p.terminationStatus != 0 {
        throw Failure("\(tool) \(args.joined(separator: " ")) exited \(p.terminationStatus): \(o.text) \(e.text)")
    }
    return o.text
}

/// A password file with two piles and an operator: one entry from Mosquitto's own
/// tool, two from pilegate's (the formats agree).
func writeTestPasswords(_ path: String) throws {
    try shell("mosquitto_passwd", ["-c", "-b", path, "AAAAAJQX", "pile-secret"])
    try shell(Gateway.binary.path, ["passwd", path, "AAAAAAAB", "--password", "other-secret"])
    try shell(Gateway.binary.path, ["passwd", path, "op1", "--password", "op secret"])
}

/// The repository's top directory (for the files under ops/).
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A loopback TCP port nobody is bound to right now.
func freeLoopbackPort() -> UInt16 { bindLoopback(0)! }

/// Nobody is bound to this loopback port now.
func portIsFree(_ port: UInt16) -> Bool { bindLoopback(port) != nil }

/// Bind a TCP socket to 127.0.0.1:`port` (0: any) and let it go: the port bound, or
/// nil when it is taken.
private func bindLoopback(_ port: UInt16) -> UInt16? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = port.bigEndian
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &a) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { return nil }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return UInt16(bigEndian: a.sin_port)
}

/// Start a command in the background (a subscriber); read its output later.
final class Background {
    let process = Process()
    let out = LogCapture()
    init(_ tool: String, _ args: [String]) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [tool] + args
        let o = Pipe()
        process.standardOutput = o
        process.standardError = FileHandle.nullDevice
        out.attach(o)
        try process.run()
    }
    /// SIGTERM, and wait for the exit.
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        process.waitUntilExit()
        out.waitEnded(timeout: 2)
    }

    /// Wait for exit (bounded) and return the output.
    func finish(timeout: TimeInterval = 10) -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        usleep(30_000)
        return out.text
    }
}

struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A blocking MQTT client over a plain socket, for byte-exact tests: it can send
/// anything, including what no real client library would.
final class RawClient: @unchecked Sendable {   // one thread sends while another receives: the socket allows it
    let fd: Int32
    private var buffer: [UInt8] = []

    /// `source`: a loopback address to connect from (per-IP limits), e.g. "127.0.0.9".
    init(port: UInt16, timeout: TimeInterval = 5, source: String? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let rc = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if rc != 0 { Glibc.close(fd); throw Failure("bind \(source): \(errno)") }
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 { Glibc.close(fd); throw Failure("connect: \(errno)") }
    }

    deinit { Glibc.close(fd) }

    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    func send(_ p: Packet) { send(Encoder.encode(p)) }

    /// Send without blocking; returns the bytes the kernel took (0 when its buffers are full).
    func sendNonBlocking(_ bytes: [UInt8]) -> Int {
        max(0, bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) })
    }

    /// Next packet, or nil when the server closed the connection (or on timeout,
    /// which `closed` tells apart).
    func receive() -> Packet? {
        while true {
            let r = buffer.withUnsafeBytes { Decoder.decode($0) }
            if case .packet(let p, let n) = r {
                buffer.removeFirst(n)
                return p
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = recv(fd, &chunk, chunk.count, 0)
            if n <= 0 { lastReadWasEOF = n == 0; return nil }
            buffer += chunk[0..<n]
        }
    }

    private(set) var lastReadWasEOF = false

    /// Next packet within `timeout` seconds, or nil.
    func receive(timeout: Double) -> Packet? {
        var old = timeval(), len = socklen_t(MemoryLayout<timeval>.size)
        getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &old, &len)
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, len)
        defer { setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &old, len) }
        return receive()
    }

    /// True once the server has closed the socket (reads EOF within the timeout).
    func waitClosed() -> Bool {
        while let _ = receive() {}
        return lastReadWasEOF
    }

    /// The same, waiting up to `timeout` seconds (beyond one read's timeout).
    func waitClosed(timeout: Double) -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if receive(timeout: 1) == nil && lastReadWasEOF { return true }
        }
        return false
    }

    func connect(_ c: Connect) -> Connack? {
        send(.connect(c))
        if case .connack(let a) = receive() { return a }
        return nil
    }

    func closeAbruptly() {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        shutdown(fd, Int32(SHUT_RDWR))
    }
}
