import Glibc
import Logging
import PileLoop

/// A redis-server that pilegate starts itself when `[redis] address` is empty, so
/// the gateway does its whole job out of the box: on a free loopback port, in a
/// scratch directory, without persistence (a place to try pilegate, not a store
/// for production data: point `address` at the platform's Redis for that).
final class EmbeddedRedis {
    let address: SocketAddress
    private let pid: pid_t
    private let logger: Logger

    init(binary: String, logger: Logger) throws {
        self.logger = logger
        let port = try EmbeddedRedis.freePort()
        address = SocketAddress(host: "127.0.0.1", port: port)!
        let dir = "/tmp/pilegate-redis-\(getpid())"
        mkdir(dir, 0o700)
        let args = [binary, "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", dir, "--logfile", "\(dir)/redis.log", "--daemonize", "no"]
        let argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // The server blocks SIGTERM/SIGINT for sigwait; the child must not inherit that.
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK))
        var child: pid_t = 0
        let rc = posix_spawnp(&child, binary, nil, &attr, argv, environ)
        guard rc == 0 else {
            throw Config.Invalid(description: "cannot start \(binary) (\(String(cString: strerror(rc)))): install redis-server or set [redis] address")
        }
        pid = child
        // Ready when it accepts connections.
        let deadline = monotonicMillis() + 5000
        while !EmbeddedRedis.accepts(address) {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid || monotonicMillis() > deadline {
                kill(pid, SIGKILL)
                throw Config.Invalid(description: "embedded \(binary) did not start; see \(dir)/redis.log")
            }
            usleep(20_000)
        }
        logger.info("started embedded redis-server at \(address) (no persistence; set [redis] address for production)")
    }

    func stop() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }

    private static func freePort() throws -> UInt16 {
        let fd = try makeListener(SocketAddress(host: "127.0.0.1", port: 0)!, backlog: 1)
        defer { close(fd) }
        return boundPort(fd)
    }

    private static func accepts(_ a: SocketAddress) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        return a.withSockaddr { connect(fd, $0, $1) } == 0
    }
}
