import CHiredis
import Glibc
import Logging
import PileLoop

/// One Redis connection on a shard's ring: pipelined, flushed once per loop turn,
/// reconnecting with backoff. hiredis only parses replies.
///
/// Every command waiting for its reply stays in `journal`, in order, next to what
/// its reply means (`commands`). Replies come back in command order, so the
/// front of the journal is always the oldest unanswered command; after a reconnect
/// everything unanswered is simply sent again, byte for byte. That is what makes an
/// uplink XADD "at least once": a PUBACK waits for its reply, and a lost connection
/// re-sends it rather than losing it.
///
/// With `replicaWait` (`redis.wait_replicas`), each flushed batch ends with a
/// `WAIT N TIMEOUT` (a barrier in the journal): the batch's replies are held, and
/// still count as unanswered, until a WAIT confirms N replicas have them. A WAIT
/// that falls short is sent again after the next batch; a connection lost meanwhile
/// re-sends the whole held batch. So a reply is only ever acted on (a PUBACK sent)
/// for a write the replicas have. Every command, held or not, is followed by a
/// barrier at the end of its turn: without one, nothing after the last barrier is ever
/// released (a connection carrying only presence or events grew its journal for good,
/// and a failover left PUBACKs behind such commands waiting).
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
    private let replicaWait: (replicas: Int, timeoutMs: Int)?
    private var logger: Logger
    private let ring: Ring
    private(set) var state = State.down
    private var fd: Int32 = -1
    private var epoch: UInt32 = 0
    private var journal = ByteBuffer()
    private var acked = 0            // journal bytes of released commands
    private var sent = 0             // journal bytes handed to the kernel
    /// Each unanswered command: its journal bytes, the `clock` it was enqueued at,
    /// and what its reply means (nil: a WAIT barrier). Released ones are dropped
    /// from the front by `compact`.
    private var commands: [(length: Int, at: UInt64, expectation: Expectation?)] = []
    /// Commands before `released` are done with; replies have been read up to `head`.
    /// They differ only with `replicaWait`: `held` keeps the replies in between.
    private var released = 0
    private var head = 0
    private var held: [RedisReply?] = []
    /// The last barrier fell short: send another with the next flush.
    private var needsBarrier = false
    /// Which replies wait for the replicas (the others are acted on at once, though
    /// they stay in the journal until the next WAIT like the rest).
    var heldUntilReplicated: (Expectation) -> Bool = { _ in true }
    private var inFlight = ByteBuffer()
    private var sending = false
    private var handshakeLeft = 0
    private let readBuf: UnsafeMutableRawPointer
    private static var readSize: Int { 65536 }
    private static var keptBytes: Int { 65536 }
    private static var keptCommands: Int { 2048 }
    /// One send's copy of the journal stays under `MemoryTrim.largeBlock`, so it
    /// comes from the heap; what is left goes when the send completes. Copies of the
    /// multi-MiB flushes of full speed were mapped anew and faulted in page by page
    /// (10k piles at full speed: 129 mappings and 85,408 page faults in 10 s, against
    /// 6,711 faults with glibc's default threshold; bench/README.md "scale.sh").
    private static var maxSendBytes: Int { 512 * 1024 }
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
    /// At most one write per this many ns of `clock` (0: one per turn): a writer's
    /// pipeline collects more commands per write, and Redis's cost per command falls
    /// with the depth (bench/README.md, "redis-cost.sh"). A connection that has
    /// not written for this long writes at once, so a quiet one adds no delay.
    var lingerNs: UInt64 = 0
    private var lastWrite: UInt64 = 0
    /// Past this many unsent bytes a lingering connection writes anyway.
    private static var lingerBytes: Int { 65536 }
    /// Called on every transition to up or down.
    var onState: (State) -> Void = { _ in }
    /// Offered each error reply first, with its command's bytes; true takes it over
    /// (a cluster redirect: the command was sent elsewhere) and `onReply` is not called.
    var onError: ((Expectation, UnsafeRawBufferPointer, RedisReply) -> Bool)?
    /// Each WAIT reply: the replicas it confirmed, and whether that was enough.
    var onWait: (Int, Bool) -> Void = { _, _ in }

    init(id: UInt32, name: String, address: SocketAddress, handshake: [[String]], connectTimeoutMs: UInt64,
         resendOnReconnect: Bool = true, replicaWait: (replicas: Int, timeoutMs: Int)? = nil, ring: Ring, logger: Logger) {
        self.resendOnReconnect = resendOnReconnect
        self.replicaWait = replicaWait
        self.id = id
        self.name = name
        self.address = address
        addressText = address.description
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
        for r in held { if let r { freeReplyObject(r) } }
        redisReaderFree(reader)
        readBuf.deallocate()
        journal.release()
        inFlight.release()
    }

    let addressText: String

    /// Commands sent and not yet answered (or answered and held for their WAIT).
    var unanswered: Int { commands.count - released }
    /// When (`clock`) the oldest of them was enqueued.
    var oldestUnanswered: UInt64? { released < commands.count ? commands[released].at : nil }

    /// Append one command (written by `write`) and what its reply means.
    func enqueue(_ expectation: Expectation, _ write: (inout ByteBuffer) -> Void) {
        let before = journal.count
        write(&journal)
        commands.append((journal.count - before, clock, expectation))
    }

    /// Append a command already written (one another connection gave up), keeping
    /// the time it was first enqueued at.
    func enqueue(_ expectation: Expectation, bytes: UnsafeRawBufferPointer, at: UInt64) {
        journal.append(bytes)
        commands.append((bytes.count, at, expectation))
    }

    /// Give up this connection: every command not released, with its bytes, in order
    /// (a cluster master that is no longer one: they go to the slot's new master).
    func takeUnanswered() -> [(bytes: [UInt8], at: UInt64, expectation: Expectation)] {
        var out: [(bytes: [UInt8], at: UInt64, expectation: Expectation)] = []
        var offset = acked
        for c in commands[released...] {
            if let e = c.expectation {
                out.append((Array(UnsafeRawBufferPointer(rebasing: journal.bytes[offset..<(offset + c.length)])), c.at, e))
            }
            offset += c.length
        }
        closeSocket()
        state = .down
        dropHeld()
        journal.clear(); acked = 0; sent = 0
        commands.removeAll(); head = 0; released = 0; needsBarrier = false
        return out
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

    /// Unsent commands held back by `lingerNs`: the owner flushes again by then.
    var lingering: Bool {
        lingerNs > 0 && state == .up && !sending && sent < journal.count && clock &- lastWrite < lingerNs
            && journal.count - sent < Self.lingerBytes
    }

    /// End of a loop turn: send what was enqueued (behind a WAIT when replicas must
    /// confirm), unless `lingering`.
    func flush() {
        guard !lingering else { return }
        let unbarred = released < commands.count && commands.last.map { $0.expectation != nil } == true
        if let w = replicaWait, needsBarrier || unbarred {
            let before = journal.count
            journal.respCommand(["WAIT", String(w.replicas), String(w.timeoutMs)])
            commands.append((journal.count - before, clock, nil))
            needsBarrier = false
        }
        guard state == .up, !sending, sent < journal.count else { return }
        let end = min(journal.count, sent + Self.maxSendBytes)
        inFlight.clear()
        inFlight.append(UnsafeRawBufferPointer(rebasing: journal.bytes[sent..<end]))
        sent = end
        lastWrite = clock
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
            defer { if raw != nil { freeReplyObject(raw) } }
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
            raw = nil   // this reply is ours now: `replied` frees or holds it
            replied(r)
            if state == .down { return }
        }
        compact()
        if state != .down { armRecv() }
    }

    /// The reply to `commands[head]`. Without `replicaWait` it is acted on at once;
    /// with it, held until the next WAIT confirms the replicas.
    private func replied(_ r: RedisReply) {
        let c = commands[head]
        head += 1
        guard let e = c.expectation else {   // a WAIT barrier
            defer { freeReplyObject(r) }
            let confirmed = Int(r.integer ?? -1)
            let enough = confirmed >= replicaWait?.replicas ?? 0
            onWait(confirmed, enough)
            if enough { release() } else { held.append(nil); needsBarrier = true }   // another WAIT with the next flush
            return
        }
        if r.isError, let onError {
            let offset = acked + commands[released..<(head - 1)].reduce(0) { $0 + $1.length }
            if onError(e, UnsafeRawBufferPointer(rebasing: journal.bytes[offset..<(offset + c.length)]), r) {
                freeReplyObject(r)
                return replicaWait == nil ? release() : held.append(nil)
            }
        }
        guard replicaWait != nil, heldUntilReplicated(e) else {
            defer { freeReplyObject(r) }
            if replicaWait == nil { release() } else { held.append(nil) }
            return onReply(e, r, clock &- c.at)
        }
        held.append(r)
    }

    /// Commands up to `head` are done: hand their held replies on, in order.
    private func release() {
        var i = 0
        while released < head {
            let c = commands[released]
            acked += c.length
            released += 1
            guard replicaWait != nil, i < held.count else { continue }
            if let r = held[i], let e = c.expectation {
                onReply(e, r, clock &- c.at)
                freeReplyObject(r)
            }
            i += 1
        }
        held.removeAll(keepingCapacity: true)
    }

    private func dropHeld() {
        for r in held { if let r { freeReplyObject(r) } }
        held.removeAll()
        head = released
    }

    /// Drop answered commands from the front of the journal now and then. Once all
    /// is answered, what a burst grew (a connect storm's events: megabytes) is given
    /// back; a steady flow keeps reusing up to `keptBytes` / `keptCommands`.
    private func compact() {
        if released == commands.count {
            commands.removeAll(keepingCapacity: commands.capacity <= RedisConnection.keptCommands)
            head = 0; released = 0
        } else if released > 4096 && released * 2 > commands.count {
            commands.removeFirst(released)
            head -= released; released = 0
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

    private func closeSocket() {
        if fd >= 0 {
            // shutdown first: a recv still pending in the ring holds the socket open
            Glibc.shutdown(fd, Int32(SHUT_RDWR))
            Glibc.close(fd)
            fd = -1
        }
        epoch &+= 1
        sending = false
        redisReaderFree(reader)
        reader = redisReaderCreate()
    }

    private func fail(_ why: String, nowMs: UInt64) {
        if state == .up || wasUp || backoffMs <= 100 {
            logger.warning("redis connection lost: \(why); retrying in \(backoffMs) ms",
                           metadata: ["unanswered": "\(unanswered)"])
        }
        wasUp = false
        closeSocket()
        state = .down
        dropHeld()
        sent = acked
        if !resendOnReconnect {
            journal.clear(); acked = 0; sent = 0
            commands.removeAll(); head = 0; released = 0; needsBarrier = false
        }
        nextAttempt = nowMs + backoffMs
        backoffMs = min(backoffMs * 2, 5000)
        onState(.down)
    }
}
