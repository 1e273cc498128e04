import MQTTCodec
import CHiredis
import Foundation
import Glibc
import XCTest

/// A real redis-server for one test: free loopback port, its own directory, AOF with
/// fsync on every write (so SIGKILL loses nothing Redis acknowledged), stopped at the end.
final class RedisServer {
    let port: UInt16
    let dir: String
    let password: String?
    private let extra: [String]
    private var process: Process?

    /// `extra`: more redis-server arguments (e.g. `--cluster-enabled yes`).
    init(password: String? = nil, extra: [String] = [], port: UInt16? = nil) throws {
        self.password = password
        self.extra = extra
        self.port = port ?? freeLoopbackPort()
        dir = NSTemporaryDirectory() + "pilegate-redis-test-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try start()
    }

    /// A client of a redis-server started by someone else (ops/fleet.sh): nothing to stop.
    init(attachedTo port: UInt16) {
        self.port = port
        dir = ""
        password = nil
        extra = []
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    var address: String { "127.0.0.1:\(port)" }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["redis-server", "--port", "\(port)", "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "yes", "--appendfsync", "always", "--dir", dir, "--daemonize", "no"]
            + (password.map { ["--requirepass", $0] } ?? []) + extra
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if let r = try? command(["PING"]), case .status("PONG") = r { return }
            usleep(20_000)
        }
        throw Failure("redis-server did not start on \(port)")
    }

    func stop() {
        guard let p = process, p.isRunning else { return }
        kill(p.processIdentifier, SIGCONT)
        p.terminate()
        p.waitUntilExit()
    }

    func signal(_ s: Int32) { if let p = process { kill(p.processIdentifier, s) } }

    func killHard() {
        guard let p = process else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    enum Value: Equatable {
        case string([UInt8]), status(String), error(String), integer(Int), array([Value]), null
        var text: String? {
            switch self {
            case .string(let b): String(decoding: b, as: UTF8.self)
            case .status(let s), .error(let s): s
            case .integer(let i): String(i)
            default: nil
            }
        }
        var items: [Value] { if case .array(let a) = self { a } else { [] } }
        var int: Int? { if case .integer(let i) = self { i } else { nil } }
    }

    /// One command on a fresh connection (hiredis' blocking API; binary safe).
    @discardableResult
    func command(_ args: [String]) throws -> Value { try command(args.map { Array($0.utf8) }) }

    @discardableResult
    func command(_ args: [[UInt8]]) throws -> Value { try session { try $0(args) } }

    /// Several commands on one connection, held open for the whole of `body`
    /// (to keep a way in while `maxclients` turns everyone else away).
    func session<T>(_ body: (_ command: ([[UInt8]]) throws -> Value) throws -> T) throws -> T {
        guard let c = redisConnect("127.0.0.1", Int32(port)), c.pointee.err == 0 else { throw Failure("redis connect failed") }
        defer { redisFree(c) }
        if let password { _ = try Self.run(c, [Array("AUTH".utf8), Array(password.utf8)]) }
        return try body { try Self.run(c, $0) }
    }

    private static func run(_ c: UnsafeMutablePointer<redisContext>, _ args: [[UInt8]]) throws -> Value {
        guard let raw = withArgv(args, { redisCommandArgv(c, Int32(args.count), $0, $1) }) else {
            throw Failure("redis command failed")
        }
        defer { freeReplyObject(raw) }
        return value(raw.assumingMemoryBound(to: redisReply.self))
    }

    /// Binary-safe arguments as hiredis' argv and argvlen.
    static func withArgv<T>(_ args: [[UInt8]], _ body: (UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> T) -> T {
        var ptrs = args.map { a -> UnsafePointer<CChar>? in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, a.count))
            a.withUnsafeBytes { UnsafeMutableRawPointer(p).copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(p), byteCount: a.count) }
            return UnsafePointer(p)
        }
        defer { ptrs.forEach { UnsafeMutablePointer(mutating: $0)?.deallocate() } }
        let lens = args.map { $0.count }
        return lens.withUnsafeBufferPointer { body(&ptrs, $0.baseAddress!) }
    }

    private static func value(_ r: UnsafeMutablePointer<redisReply>) -> Value {
        let bytes = { r.pointee.str.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: r.pointee.len)) } ?? [] }
        switch r.pointee.type {
        case CHR_REPLY_STRING: return .string(bytes())
        case CHR_REPLY_STATUS: return .status(String(decoding: bytes(), as: UTF8.self))
        case CHR_REPLY_ERROR: return .error(String(decoding: bytes(), as: UTF8.self))
        case CHR_REPLY_INTEGER: return .integer(Int(r.pointee.integer))
        case CHR_REPLY_ARRAY: return .array((0..<r.pointee.elements).map { value(r.pointee.element[$0]!) })
        default: return .null
        }
    }

    /// Stream entries as (id, fields).
    func entries(_ key: String) throws -> [(id: String, fields: [String: [UInt8]])] {
        try command(["XRANGE", key, "-", "+"]).items.map { e in
            let kv = e.items[1].items
            var f: [String: [UInt8]] = [:]
            for i in stride(from: 0, to: kv.count, by: 2) {
                if case .string(let v) = kv[i + 1] { f[kv[i].text!] = v }
            }
            return (e.items[0].text!, f)
        }
    }

    /// Poll until `body` is true (bounded).
    func waitUntil(_ timeout: TimeInterval = 10, _ body: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if try body() { return true }
            usleep(50_000)
        } while Date() < deadline
        return false
    }
}

/// A test case with a fresh redis-server per test and the gateway it started (if
/// any), stopped cleanly at the end.
class RedisGatewayTestCase: XCTestCase {
    var redis: RedisServer!
    var gw: Gateway?

    override func setUpWithError() throws { redis = try RedisServer() }

    override func tearDown() {
        if let gw { XCTAssertEqual(gw.stop(), 0, "clean exit on SIGTERM") }
        redis = nil
    }

    /// A gateway on this test's Redis (node "test-node" unless `extra` says otherwise).
    func startGateway(_ extra: String = "") throws -> Gateway {
        let g = try Gateway(config: """
        [redis]
        address = "\(redis.address)"
        max_inflight = 50
        \(extra)
        """)
        gw = g
        XCTAssertNotNil(g.waitForLog("connected to redis"), g.logText)
        return g
    }

    func connected(_ g: Gateway, _ id: String, keepAlive: UInt16 = 30, clean: Bool = true) throws -> RawClient {
        let c = try RawClient(port: g.port)
        XCTAssertEqual(c.connect(Connect(cleanSession: clean, keepAlive: keepAlive, clientID: id))?.returnCode, .accepted)
        return c
    }
}
