import CHiredis
import Glibc
import Logging
import PileLoop

typealias RedisReply = UnsafeMutablePointer<redisReply>

/// One Redis connection on a shard's ring: pipelined, flushed once per loop turn,
/// reconnecting with backoff. hiredis only parses replies.
///
/// Every command waiting for its reply stays in `journal`, in order, next to what
/// its reply means (`commands`). Replies come back in command order, so the
/// front of the journal is always the oldest unanswered command; after a reconnect
/// everything unanswered is simply sent again, byte for byte. That is what makes an
/// uplink XADD "at least once": a PUBACK waits for its reply, and a lost connection
/// re-sends it rather than losing it.
final class RedisConnection<Expectation> {
    enum State { case down, connecting, handshaking, up }

    let id: UInt32
    private let name: String
    private let address: SocketAddress
    private let handshake: [[String]]
    private let connectTimeoutMs: UInt64
    /// Re-send unanswered commands after a reconnect (uplink). A reader that restarts
    /// its own sequence on reconnect (downlink) turns this off.
    private let resendOnReconnect: Bool
    private var logger: Logger
    private let ring: Ring
    private(set) var state = State.down
    private var fd: Int32 = -1
    private var epoch: UInt32 = 0
    private var journal = ByteBuffer()
    private var acked = 0            // journal bytes whose replies have arrived
    private var sent = 0             // journal bytes handed to the kernel
    /// Each unanswered command: its journal bytes, the `clock` it was enqueued at,
    /// and what its reply means. Answered ones are dropped from the front by `compact`.
    private var commands: [(length: Int, at: UInt64, expectation: Expectation)] = []
    private var head = 0
    private var inFlight = ByteBuffer()
    private var sending = false
    private var handshakeLeft = 0
    private let readBuf: UnsafeMutableRawPointer
    private static var readSize: Int { 65536 }
    private static var keptBytes: Int { 65536 }
    private static var keptCommands: Int { 2048 }
    private var reader: UnsafeMutablePointer<redisReader>
    private var nextAttempt: UInt64 = 0
    private var backoffMs: UInt64 = 100
    private var attemptStarted: UInt64 = 0
    private var wasUp = false
    private var addr: sockaddr_storage
    /// Called for each reply to an enqueued command, in order.
    /// A reply, with the nanoseconds of `clock` since its command was enqueued.
    var onReply: (Expectation, RedisReply, UInt64) -> Void = { _, _, _ in }
    /// The owner's monotonic time in nanoseconds, set once per loop turn: commands
    /// are stamped with it, so measuring Redis latency costs no clock read per command.
    var clock: UInt64 = 0
    /// Called on every transition to up or down.
    var onState: (State) -> Void = { _ in }

    init(id: UInt32, name: String, address: SocketAddress, handshake: [[String]], connectTimeoutMs: UInt64,
         resendOnReconnect: Bool = true, ring: Ring, logger: Logger) {
        self.resendOnReconnect = resendOnReconnect
        self.id = id
        self.name = name
        self.address = address
        self.addr = address.storage
        self.handshake = handshake
        self.connectTimeoutMs = connectTimeoutMs
        self.ring = ring
        self.logger = logger
        self.logger[metadataKey: "redis"] = "\(name)"
        readBuf = .allocate(byteCount: Self.readSize, alignment: 16)
        reader = redisReaderCreate()
    }

    deinit {
        if fd >= 0 { Glibc.close(fd) }
        redisReaderFree(reader)
        readBuf.deallocate()
        journal.release()
        inFlight.release()
    }

    /// Commands sent and not yet answered.
    var unanswered: Int { commands.count - head }

    /// Append one command (written by `write`) and what its reply means.
    func enqueue(_ expectation: Expectation, _ write: (inout ByteBuffer) -> Void) {
        let before = journal.count
        write(&journal)
        commands.append((journal.count - before, clock, expectation))
    }

    // MARK: Driving (called by the shard)

    /// Each timer tick: connect when due, give up on a connect that hangs.
    func tick(nowMs: UInt64) {
        switch state {
        case .down where nowMs >= nextAttempt:
            connect(nowMs: nowMs)
        case .connecting, .handshaking:
            if nowMs - attemptStarted > connectTimeoutMs { fail("connect timed out after \(connectTimeoutMs) ms", nowMs: nowMs) }
        default: break
        }
    }

    /// End of a loop turn: send what was enqueued.
    func flush() {
        guard state == .up, !sending, sent < journal.count else { return }
        inFlight.clear()
        inFlight.append(UnsafeRawBufferPointer(rebasing: journal.bytes[sent...]))
        sent = journal.count
        submitSend()
    }

    func complete(op: UInt8, generation: UInt32, res: Int32, nowMs: UInt64) {
        guard generation == epoch & 0xFF_FFFF, fd >= 0 else { return }   // an earlier socket's
        switch op {
        case Op.redisConnect: onConnect(res, nowMs: nowMs)
        case Op.redisSend: onSend(res, nowMs: nowMs)
        case Op.redisRecv: onRecv(res, nowMs: nowMs)
        default: break
        }
    }

    // MARK: Internals

    private func tag(_ op: UInt8) -> UInt64 { Tag(op: op, slot: id, generation: epoch).raw }

    private func connect(nowMs: UInt64) {
        fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return fail("socket: \(String(cString: strerror(errno)))", nowMs: nowMs) }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
        epoch &+= 1
        state = .connecting
        attemptStarted = nowMs
        withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { ring.connect(fd: fd, $0, address.length, tag: tag(Op.redisConnect)) }
        }
    }

    private func onConnect(_ res: Int32, nowMs: UInt64) {
        guard res == 0 else { return fail("connect: \(String(cString: strerror(-res)))", nowMs: nowMs) }
        state = .handshaking
        armRecv()
        handshakeLeft = handshake.count
        if handshake.isEmpty { return becomeUp() }
        inFlight.clear()
        for c in handshake { inFlight.respCommand(c) }
        submitSend()
    }

    private func becomeUp() {
        state = .up
        backoffMs = 100
        wasUp = true
        logger.info("connected to redis at \(address)", metadata: ["unanswered_resent": "\(unanswered)"])
        sent = acked   // whatever was never answered goes again
        onState(.up)
        flush()
    }

    private func submitSend() {
        sending = true
        ring.send(fd: fd, inFlight.base!, inFlight.count, tag: tag(Op.redisSend))
    }

    private func onSend(_ res: Int32, nowMs: UInt64) {
        sending = false
        guard res >= 0 else { return fail("send: \(String(cString: strerror(-res)))", nowMs: nowMs) }
        if Int(res) < inFlight.count {
            inFlight.consume(Int(res))
            return submitSend()
        }
        inFlight.clear()
        if inFlight.capacity > Self.keptBytes { inFlight.release() }
        flush()
    }

    private func armRecv() {
        ring.recv(fd: fd, readBuf, Self.readSize, tag: tag(Op.redisRecv))
    }

    private func onRecv(_ res: Int32, nowMs: UInt64) {
        guard res > 0 else {
            return fail(res == 0 ? "connection closed by redis" : "recv: \(String(cString: strerror(-res)))", nowMs: nowMs)
        }
        redisReaderFeed(reader, readBuf.assumingMemoryBound(to: CChar.self), Int(res))
        var raw: UnsafeMutableRawPointer?
        while true {
            raw = nil
            if redisReaderGetReply(reader, &raw) != CHR_OK {
                return fail("protocol error from redis", nowMs: nowMs)
            }
            guard let r = raw?.assumingMemoryBound(to: redisReply.self) else { break }
            defer { freeReplyObject(raw) }
            if state == .handshaking {
                if r.pointee.type == CHR_REPLY_ERROR {
                    let why = r.text
                    return fail("handshake refused: \(why)", nowMs: nowMs)
                }
                handshakeLeft -= 1
                if handshakeLeft == 0 { becomeUp() }
                continue
            }
            guard head < commands.count else { return fail("reply without a command", nowMs: nowMs) }
            let c = commands[head]
            acked += c.length
            head += 1
            onReply(c.expectation, r, clock &- c.at)
        }
        compact()
        if state != .down { armRecv() }
    }

    /// Drop answered commands from the front of the journal now and then. Once all
    /// is answered, what a burst grew (a connect storm's events: megabytes) is given
    /// back; a steady flow keeps reusing up to `keptBytes` / `keptCommands`.
    private func compact() {
        if head == commands.count {
            commands.removeAll(keepingCapacity: commands.capacity <= RedisConnection.keptCommands)
            head = 0
        } else if head > 4096 && head * 2 > commands.count {
            commands.removeFirst(head)
            head = 0
        }
        if acked == journal.count && sent == journal.count {
            journal.clear()
            if journal.capacity > RedisConnection.keptBytes { journal.release() }
            acked = 0; sent = 0
        } else if acked > 1 << 20 && acked * 2 > journal.count {
            journal.consume(acked)
            sent -= acked
            acked = 0
        }
    }

    private func fail(_ why: String, nowMs: UInt64) {
        if state == .up || wasUp || backoffMs <= 100 {
            logger.warning("redis connection lost: \(why); retrying in \(backoffMs) ms",
                           metadata: ["unanswered": "\(unanswered)"])
        }
        wasUp = false
        if fd >= 0 {
            // shutdown first: a recv still pending in the ring holds the socket open
            Glibc.shutdown(fd, Int32(SHUT_RDWR))
            Glibc.close(fd)
            fd = -1
        }
        epoch &+= 1
        sending = false
        state = .down
        sent = acked
        if !resendOnReconnect {
            journal.clear(); acked = 0; sent = 0
            commands.removeAll(); head = 0
        }
        redisReaderFree(reader)
        reader = redisReaderCreate()
        nextAttempt = nowMs + backoffMs
        backoffMs = min(backoffMs * 2, 5000)
        onState(.down)
    }
}

extension UnsafeMutablePointer where Pointee == redisReply {
    var isError: Bool { pointee.type == CHR_REPLY_ERROR }
    var isNil: Bool { pointee.type == CHR_REPLY_NIL }
    /// String, status or error text.
    var text: String {
        guard let s = pointee.str else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: s, count: pointee.len), as: UTF8.self)
    }
    var integer: Int64? { pointee.type == CHR_REPLY_INTEGER ? pointee.integer : nil }
    var bytes: [UInt8] {
        guard let s = pointee.str else { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: s, count: pointee.len))
    }
    var elements: [RedisReply] {
        guard pointee.type == CHR_REPLY_ARRAY, let e = pointee.element else { return [] }
        return (0..<pointee.elements).compactMap { e[$0] }
    }
    /// An HGETALL reply (or a stream entry's fields) as (field, value) pairs.
    var pairs: [(field: String, value: RedisReply)] {
        let kv = elements
        return stride(from: 0, to: kv.count - 1, by: 2).map { (kv[$0].text, kv[$0 + 1]) }
    }
}
