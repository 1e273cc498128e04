import Atomics
import CURing
import Glibc
import MQTTCodec
import PileLoop

/// What one worker (thread + ring) does: its share of the simulated piles.
struct Plan: Sendable {
    var target: SocketAddress
    var sources: [SocketAddress]
    var profile: Profile
    var firstIndex: Int
    var connections: Int
    var keepAlive: UInt16
    var connectRate: Int          // new connections per second, this worker
    var maxPending: Int           // connects in flight at once
    var payload: Int
    var burst: Int                // PUBLISH packets per send
    var qos: QoS
    var rate: Int                 // messages per second from this worker; 0 = as fast as possible
    var subscribeOwn: Bool        // piles subscribe to their own cmd topic
    var hostsSubscriber: Bool     // fanin: this worker owns the wildcard subscriber (connection 0)
    var fileTable: Int
    /// Reconnect after a refusal or a close, after 100-1000 ms (a pile's own backoff).
    var retry: Bool
    /// Piles log in as user = client id with this password (the fan-in subscriber stays anonymous).
    var password: String?
    /// pile: each gun sends run data every `minInterval...maxInterval` ms; every
    /// `tradeEvery`-th message of a pile is a trade record (1-2 KB).
    var guns: Int
    var minInterval: Int
    var maxInterval: Int
    var tradeEvery: Int
    /// Commands coming back carry their send time (`"t":µs`): record end-to-end latency.
    var measureEndToEnd: Bool
}

/// Counters the main thread reads for progress and the report.
final class Stats: @unchecked Sendable {
    /// Latencies in the measured window (PUBACK, command delivery end to end) and of
    /// every connect (socket to CONNACK). Written by the worker only; read by the
    /// main thread after `finished` (release/acquire).
    let puback = LatencyRecorder()
    let endToEnd = LatencyRecorder()
    let connect = LatencyRecorder()
    let connected = ManagedAtomic<Int>(0)
    let failed = ManagedAtomic<Int>(0)
    let closedByServer = ManagedAtomic<Int>(0)
    let published = ManagedAtomic<Int>(0)
    let acked = ManagedAtomic<Int>(0)
    let received = ManagedAtomic<Int>(0)
    let subscribed = ManagedAtomic<Int>(0)
    /// CONNACKs with a non-zero return code, and reconnect attempts (--retry).
    let refused = ManagedAtomic<Int>(0)
    let retries = ManagedAtomic<Int>(0)
    let finished = ManagedAtomic<Bool>(false)
}

/// Shared switches from the main thread.
final class Control: Sendable {
    let go = ManagedAtomic<Bool>(false)      // start publishing (storm: drop everyone)
    /// µs (monotonic) the run started: latency series count seconds from here.
    let epoch = micros()
    let measure = ManagedAtomic<Bool>(false) // record latencies (after warm-up)
    let stop = ManagedAtomic<Bool>(false)    // end the run
}

/// pile id: 8 upper-case letters from an index (AAAAAAAA, AAAAAAAB, ...).
func pileID(_ n: Int) -> String {
    var x = n
    var chars = [UInt8](repeating: UInt8(ascii: "A"), count: 8)
    for i in (0..<8).reversed() {
        chars[i] = UInt8(ascii: "A") + UInt8(x % 26)
        x /= 26
    }
    return String(decoding: chars, as: UTF8.self)
}

private enum LOp {
    static let socket: UInt8 = 1, sockopt: UInt8 = 2, bind: UInt8 = 3, connect: UInt8 = 4
    static let recv: UInt8 = 5, send: UInt8 = 6, timer: UInt8 = 7, close: UInt8 = 8
}

/// One client connection's state; slot index = fixed-file index.
private struct Client {
    enum State { case unused, connecting, awaitingConnack, connected, failed }
    var state = State.unused
    /// Connection attempt, in every tag: completions of an abandoned socket are ignored.
    var attempt: UInt32 = 0
    var sending = false
    var failedOnce = false
    var out = ByteBuffer()        // control packets (CONNECT, SUBSCRIBE, PINGREQ)
    var inFlight = ByteBuffer()
    var burst = ByteBuffer()      // prebuilt PUBLISH packets (publishers)
    var burstInFlight = false
    var burstSent = 0             // bytes of the current burst already written
    var awaitingAcks = 0          // QoS 1/2: acknowledgements still owed for the last burst
    var burstStarted: UInt64 = 0  // µs, when the last burst went out
    var rx: [UInt8] = []
    var dirty = false
    var nextID: UInt16 = 0
    var connectStarted: UInt64 = 0   // µs
    /// pile: the one QoS 1 PUBLISH whose PUBACK is being timed, and messages sent.
    var timedID: UInt16 = 0
    var timedAt: UInt64 = 0
    var messages: UInt32 = 0
}

final class Worker {
    private let plan: Plan
    private let stats: Stats
    private let control: Control
    private let ring: Ring
    private let buffers: BufferRing
    private var clients: [Client]
    private var started = 0
    private var pending = 0
    private var connectBudget = 0.0
    private var msgBudget = 0.0
    /// 1 ms ticks: rate budgets and connect pacing refill in small steps (by the time
    /// that really passed), so a rate-limited run does not send in clumps that would
    /// show up as latency.
    private var timeout = __kernel_timespec(tv_sec: 0, tv_nsec: 1_000_000)
    private var lastTick = micros()
    private var pingBudget = 0.0
    private let sockaddrs: UnsafeMutablePointer<sockaddr_storage>
    private let targetAddr: UnsafeMutablePointer<sockaddr_storage>
    private let one: UnsafeMutablePointer<Int32>
    private var pingCursor = 0
    private var publishing = false
    /// Clients with something to send this turn, and publishers waiting for rate budget.
    private var dirty: [Int] = []
    private var starved: [Int] = []
    /// Clients waiting to reconnect (--retry): (due µs, client).
    private var retryAt: [(UInt64, Int)] = []
    /// pile: when each gun sends next, on a wheel of 1 ms slots (client * guns + gun).
    /// (100 ms slots made the load arrive in clumps of a tenth of a second's
    /// messages, which the PUBACK latency then measured: p50 27 ms at 200k piles.)
    private var schedule: [[Int32]] = []
    private var scheduleCursor: UInt64 = 0
    /// storm: everyone was dropped (once, at go).
    private var stormed = false

    init(plan: Plan, stats: Stats, control: Control) throws {
        self.plan = plan
        self.stats = stats
        self.control = control
        ring = try Ring(entries: 4096)
        try ring.registerSparseFiles(UInt32(plan.fileTable))
        buffers = try BufferRing(ring: ring, group: 1, count: 1024, size: 16384)
        clients = Array(repeating: Client(), count: plan.connections)
        sockaddrs = .allocate(capacity: plan.sources.count)
        for (i, s) in plan.sources.enumerated() { sockaddrs[i] = s.storage }
        targetAddr = .allocate(capacity: 1)
        targetAddr.pointee = plan.target.storage
        one = .allocate(capacity: 1)
        one.pointee = 1
        if plan.profile == .pile {
            schedule = Array(repeating: [], count: plan.maxInterval + 2)
            scheduleCursor = micros() / 1000
        }
    }

    func run() {
        ring.timeout(&timeout, tag: Tag(op: LOp.timer, slot: 0, generation: 0).raw)
        startConnections(initial: true)
        while !(control.stop.load(ordering: .relaxed) && pending == 0) {
            ring.submitAndWait(1)
            _ = ring.drainCompletions { c in self.complete(c) }
            startConnections(initial: false)   // refill the connects that completed
            buffers.publish()
            flushAll()
        }
        stats.finished.store(true, ordering: .releasing)
    }

    // MARK: connecting

    private func startConnections(initial: Bool) {
        if control.stop.load(ordering: .relaxed) { return }
        while started < plan.connections && pending < plan.maxPending && (connectBudget >= 1 || initial && started == 0) {
            connectBudget -= 1
            started += 1
            startConnect(started - 1)
        }
    }

    private func tag(_ op: UInt8, _ i: Int) -> UInt64 {
        Tag(op: op, slot: UInt32(i), generation: clients[i].attempt & 0xFF_FFFF).raw
    }

    /// socket -> setsockopt x2 -> bind -> connect, linked, into fixed file `i`.
    private func startConnect(_ i: Int) {
        pending += 1
        clients[i].state = .connecting
        clients[i].failedOnce = false
        clients[i].sending = false
        clients[i].burstInFlight = false
        clients[i].awaitingAcks = 0
        clients[i].rx.removeAll()
        clients[i].out.clear()
        clients[i].inFlight.clear()
        clients[i].timedID = 0
        clients[i].connectStarted = micros()
        let slot = UInt32(i)
        ring.reserve(5)
        let src = (plan.firstIndex + i) % plan.sources.count
        ring.socketDirect(file: slot, tag: tag(LOp.socket, i), link: true)
        ring.setsockopt(fixed: Int32(slot), level: Int32(IPPROTO_IP), name: IP_BIND_ADDRESS_NO_PORT,
                        one, 4, tag: tag(LOp.sockopt, i), link: true)
        ring.setsockopt(fixed: Int32(slot), level: Int32(IPPROTO_TCP), name: TCP_NODELAY,
                        one, 4, tag: tag(LOp.sockopt, i), link: true)
        sockaddrs.advanced(by: src).withMemoryRebound(to: sockaddr.self, capacity: 1) {
            ring.bind(fixed: Int32(slot), $0, socklen_t(MemoryLayout<sockaddr_in>.size), tag: tag(LOp.bind, i), link: true)
        }
        targetAddr.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            ring.connect(fixed: Int32(slot), $0, plan.target.length, tag: tag(LOp.connect, i))
        }
    }

    private func fail(_ i: Int, _ why: Int32, _ op: String = "") {
        guard !clients[i].failedOnce else { return }
        clients[i].failedOnce = true
        if clients[i].state == .connecting || clients[i].state == .awaitingConnack { pending -= 1 }
        if clients[i].state == .connected { stats.connected.wrappingDecrement(ordering: .relaxed) }
        clients[i].state = .failed
        stats.failed.wrappingIncrement(ordering: .relaxed)
        if stats.failed.load(ordering: .relaxed) <= 5 && !plan.retry {
            logError("pileload: connection \(plan.firstIndex + i) failed in \(op) (state \(clients[i].state)): \(why == 0 ? "closed by server" : String(cString: strerror(-why)))")
        }
        if plan.retry && !control.stop.load(ordering: .relaxed) {
            closeSocket(i)
            clients[i].attempt &+= 1
            retryAt.append((micros() + UInt64.random(in: 100_000...1_000_000), i))
        }
    }

    private func complete(_ c: Completion) {
        let tag = Tag(c.userData)
        let i = Int(tag.slot)
        if tag.op != LOp.timer && tag.generation != clients[i].attempt & 0xFF_FFFF { return }   // an abandoned attempt
        switch tag.op {
        case LOp.socket, LOp.sockopt, LOp.bind:
            if c.res < 0 && c.res != -ECANCELED { fail(i, c.res, tag.op == LOp.socket ? "socket" : tag.op == LOp.bind ? "bind" : "setsockopt") }
        case LOp.connect:
            if c.res < 0 { fail(i, c.res, "connect"); return }
            clients[i].state = .awaitingConnack
            let sub = plan.hostsSubscriber && i == 0
            let id = sub ? "pileload-sub-\(plan.firstIndex)" : pileID(plan.firstIndex + i)
            let login = sub ? nil : plan.password
            queue(i, .connect(Connect(cleanSession: true, keepAlive: plan.keepAlive, clientID: id,
                                      username: login == nil ? nil : id, password: login.map { Array($0.utf8) })))
            ring.recvMultishot(fixed: Int32(i), bufferGroup: 1, tag: self.tag(LOp.recv, i))
        case LOp.recv:
            if c.res > 0, let id = c.bufferID {
                received(i, buffers.bytes(id, Int(c.res)))
                buffers.recycle(id)
            } else if c.res == 0 || (c.res < 0 && c.res != -ENOBUFS) {
                if clients[i].state == .connected { stats.closedByServer.wrappingIncrement(ordering: .relaxed) }
                fail(i, c.res, "recv")
                return
            }
            if !c.more && clients[i].state != .failed {
                ring.recvMultishot(fixed: Int32(i), bufferGroup: 1, tag: c.userData)
            }
        case LOp.send:
            onSend(i, c)
        case LOp.timer:
            onTick()
        default: break
        }
    }

    // MARK: receiving

    private func received(_ i: Int, _ bytes: UnsafeRawBufferPointer) {
        if clients[i].rx.isEmpty {
            let used = scan(i, bytes)
            if used < bytes.count { clients[i].rx.append(contentsOf: bytes[used...]) }
        } else {
            clients[i].rx.append(contentsOf: bytes)
            let rx = clients[i].rx
            let used = rx.withUnsafeBytes { scan(i, $0) }
            clients[i].rx.removeFirst(used)
        }
    }

    /// Walk packets by their fixed headers: counting needs no full decode.
    private func scan(_ i: Int, _ bytes: UnsafeRawBufferPointer) -> Int {
        var off = 0
        var publishes = 0
        while off < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[off...])
            guard let (first, len, hdr) = try? Decoder.fixedHeader(rest), hdr + len <= rest.count else { break }
            switch first >> 4 {
            case PacketType.connack.rawValue:
                if len == 2 && rest[hdr + 1] == 0 { connack(i) } else {
                    stats.refused.wrappingIncrement(ordering: .relaxed)
                    fail(i, -ECONNREFUSED, "CONNACK")
                    return bytes.count
                }
            case PacketType.publish.rawValue:
                publishes += 1
                let qos = (first >> 1) & 3
                let tlen = Int(rest[hdr]) << 8 | Int(rest[hdr + 1])
                if qos > 0 {
                    let id = UInt16(rest[hdr + 2 + tlen]) << 8 | UInt16(rest[hdr + 3 + tlen])
                    queue(i, qos == 1 ? .puback(id) : .pubrec(id))
                }
                if plan.measureEndToEnd && control.measure.load(ordering: .relaxed),
                   let sent = sentTime(UnsafeRawBufferPointer(rebasing: rest[(hdr + 2 + tlen + (qos > 0 ? 2 : 0))..<(hdr + len)])) {
                    let now = micros()
                    stats.endToEnd.record(now &- sent, now: now, epoch: control.epoch)
                }
            case PacketType.pubrel.rawValue:
                queue(i, .pubcomp(UInt16(rest[hdr]) << 8 | UInt16(rest[hdr + 1])))
            case PacketType.puback.rawValue, PacketType.pubcomp.rawValue:
                stats.acked.wrappingIncrement(ordering: .relaxed)
                let now = micros()
                if plan.profile == .pile {
                    let id = UInt16(rest[hdr]) << 8 | UInt16(rest[hdr + 1])
                    if id == clients[i].timedID {
                        clients[i].timedID = 0
                        if control.measure.load(ordering: .relaxed) {
                            stats.puback.record(now - clients[i].timedAt, now: now, epoch: control.epoch)
                        }
                    }
                } else if clients[i].awaitingAcks > 0 {
                    clients[i].awaitingAcks -= 1
                    if control.measure.load(ordering: .relaxed) {
                        stats.puback.record(now - clients[i].burstStarted, now: now, epoch: control.epoch)
                    }
                    if clients[i].awaitingAcks == 0 && publishing { markDirty(i) }
                }
            case PacketType.pubrec.rawValue:
                queue(i, .pubrel(UInt16(rest[hdr]) << 8 | UInt16(rest[hdr + 1])))
            case PacketType.suback.rawValue:
                stats.subscribed.wrappingIncrement(ordering: .relaxed)
            default: break
            }
            off += hdr + len
        }
        if publishes > 0 { stats.received.wrappingIncrement(by: publishes, ordering: .relaxed) }
        return off
    }

    private func connack(_ i: Int) {
        guard clients[i].state == .awaitingConnack else { return }
        clients[i].state = .connected
        pending -= 1
        stats.connected.wrappingIncrement(ordering: .relaxed)
        let now = micros()
        stats.connect.record(now - clients[i].connectStarted, now: now, epoch: control.epoch)
        if plan.hostsSubscriber && i == 0 {
            queue(i, .subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/+/#", plan.qos)])))
        } else if plan.subscribeOwn || plan.measureEndToEnd {
            queue(i, .subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/\(pileID(plan.firstIndex + i))/cmd", .atLeastOnce)])))
        }
        if plan.profile == .pile {
            for gun in 0..<plan.guns { schedulePile(i * plan.guns + gun, first: true) }
        } else if plan.profile == .fanin || plan.profile == .uplink, !(plan.hostsSubscriber && i == 0) {
            buildBurst(i)
        }
    }

    // MARK: sending

    private func queue(_ i: Int, _ p: Packet) {
        clients[i].out.append(Encoder.encode(p))   // control packets: rare, an array copy is fine
        markDirty(i)
    }

    private func markDirty(_ i: Int) {
        if !clients[i].dirty {
            clients[i].dirty = true
            dirty.append(i)
        }
    }

    private func buildBurst(_ i: Int) {
        let topic = "/xjdy/ops/v1/TCU/\(pileID(plan.firstIndex + i))/msg"
        // run-data shaped payload padded to the requested size
        var payload = Array(#"{"命令":"运行数据","reqid":1,"数据分区":"1枪数据","状态数据":[{"名称":"电压_V","值":"239.977"}],"pad":""#.utf8)
        while payload.count < plan.payload - 2 { payload.append(UInt8(ascii: "x")) }
        payload += Array(#""}"#.utf8)
        for _ in 0..<plan.burst {
            clients[i].nextID = clients[i].nextID == UInt16.max ? 1 : clients[i].nextID + 1
            let p = Packet.publish(Publish(topic: topic, payload: payload, qos: plan.qos,
                                           packetID: plan.qos == .atMostOnce ? 0 : clients[i].nextID))
            clients[i].burst.append(Encoder.encode(p))
        }
    }

    private func flushAll() {
        for i in dirty {
            clients[i].dirty = false
            guard clients[i].state == .connected || clients[i].state == .awaitingConnack, !clients[i].sending else { continue }
            if !clients[i].out.isEmpty {
                let q = clients[i].out
                clients[i].out = clients[i].inFlight
                clients[i].inFlight = q
                sendNow(i, clients[i].inFlight)
            } else if publishing && !clients[i].burst.isEmpty && clients[i].state == .connected
                        && clients[i].awaitingAcks == 0 {
                if takeBudget() {
                    clients[i].burstInFlight = true
                    clients[i].burstSent = 0
                    clients[i].burstStarted = micros()
                    // QoS 1/2: the next burst only when this one is acknowledged (a window)
                    if plan.qos != .atMostOnce { clients[i].awaitingAcks = plan.burst }
                    sendNow(i, clients[i].burst)
                } else {
                    starved.append(i)
                }
            }
        }
        dirty.removeAll(keepingCapacity: true)
    }

    private func takeBudget() -> Bool {
        if plan.rate == 0 { return true }
        if msgBudget >= Double(plan.burst) { msgBudget -= Double(plan.burst); return true }
        return false
    }

    private func sendNow(_ i: Int, _ b: ByteBuffer, from offset: Int = 0) {
        clients[i].sending = true
        ring.send(fixed: Int32(i), b.base! + offset, b.count - offset, tag: tag(LOp.send, i))
    }

    private func onSend(_ i: Int, _ c: Completion) {
        clients[i].sending = false
        if c.res < 0 { fail(i, c.res, "send"); return }
        if clients[i].burstInFlight {
            clients[i].burstSent += Int(c.res)
            if clients[i].burstSent < clients[i].burst.count {   // short write: send the rest
                sendNow(i, clients[i].burst, from: clients[i].burstSent)
                return
            }
            clients[i].burstInFlight = false
            stats.published.wrappingIncrement(by: plan.burst, ordering: .relaxed)
        } else {
            if Int(c.res) < clients[i].inFlight.count {
                clients[i].inFlight.consume(Int(c.res))
                sendNow(i, clients[i].inFlight)
                return
            }
            clients[i].inFlight.clear()
        }
        if !clients[i].out.isEmpty || (publishing && !clients[i].burst.isEmpty && clients[i].awaitingAcks == 0) { markDirty(i) }
    }

    // MARK: time

    private func onTick() {
        if !control.stop.load(ordering: .relaxed) {
            ring.timeout(&timeout, tag: Tag(op: LOp.timer, slot: 0, generation: 0).raw)
        }
        // Budget per 100 ms tick (at most two ticks' worth banked); `maxPending` bounds
        // connects in flight separately.
        let now = micros()
        let elapsed = Double(now - lastTick) / 1e6
        lastTick = now
        // Refill by elapsed time; bank at most 10 ms worth, so a late tick does not burst.
        connectBudget = min(connectBudget + Double(plan.connectRate) * elapsed, Double(plan.connectRate) / 100)
        startConnections(initial: false)
        if !retryAt.isEmpty && !control.stop.load(ordering: .relaxed) {
            var later: [(UInt64, Int)] = []
            for (due, i) in retryAt {
                if due <= now && pending < plan.maxPending {
                    stats.retries.wrappingIncrement(ordering: .relaxed)
                    startConnect(i)
                } else {
                    later.append((due, i))
                }
            }
            retryAt = later
        }
        let wasPublishing = publishing
        publishing = control.go.load(ordering: .relaxed) && !control.stop.load(ordering: .relaxed)
        if publishing && !wasPublishing {
            for i in 0..<started where !clients[i].burst.isEmpty { markDirty(i) }
        }
        if plan.rate > 0 {
            msgBudget = min(msgBudget + Double(plan.rate) * elapsed, max(Double(plan.burst), Double(plan.rate) / 100))
        }
        for i in starved { markDirty(i) }
        starved.removeAll(keepingCapacity: true)
        if plan.profile == .pile { pileTraffic(now) }
        if plan.profile == .storm && publishing && !stormed { dropEveryone() }
        pings(elapsed)
        if control.stop.load(ordering: .relaxed) { pending = 0 }
    }

    // MARK: the pile profile

    /// Put gun `entry` (client * guns + gun) on the wheel: a first message at a random
    /// point of the interval (so piles do not send in step), then every min...max.
    private func schedulePile(_ entry: Int, first: Bool) {
        let ms = first ? Int.random(in: 0...plan.maxInterval) : Int.random(in: plan.minInterval...plan.maxInterval)
        let slot = (scheduleCursor + UInt64(max(1, ms))) % UInt64(schedule.count)
        schedule[Int(slot)].append(Int32(entry))
    }

    /// Each 1 ms slot that came due: every gun in it sends its run data (or a
    /// trade record), QoS `--qos`, and goes back on the wheel.
    private func pileTraffic(_ now: UInt64) {
        while scheduleCursor < now / 1000 {
            scheduleCursor += 1
            let slot = Int(scheduleCursor % UInt64(schedule.count))
            let due = schedule[slot]
            schedule[slot].removeAll(keepingCapacity: true)
            for entry in due {
                let i = Int(entry) / plan.guns
                guard clients[i].state == .connected else { continue }   // rescheduled at its next CONNACK
                if publishing { sendPileMessage(i, gun: Int(entry) % plan.guns, now: now) }
                schedulePile(Int(entry), first: false)
            }
        }
    }

    /// Run data is 300-600 bytes, a trade record 1-2 KB (../shared/pile-protocol.md);
    /// `"t"` is the send time, which an echoed command brings back.
    private func sendPileMessage(_ i: Int, gun: Int, now: UInt64) {
        clients[i].messages &+= 1
        let trade = plan.tradeEvery > 0 && clients[i].messages % UInt32(plan.tradeEvery) == 0
        let head = trade ? #"{"命令":"交易记录","数据分区":"\#(gun + 1)枪数据","t":\#(now),"交易流水号":"\#(clients[i].messages)","pad":""#
                         : #"{"命令":"运行数据","数据分区":"\#(gun + 1)枪数据","t":\#(now),"reqid":\#(clients[i].messages),"pad":""#
        var payload = Array(head.utf8)
        let size = trade ? Int.random(in: 1024...2048) : Int.random(in: 300...600)
        while payload.count < size - 2 { payload.append(UInt8(ascii: "x")) }
        payload += Array(#""}"#.utf8)
        var id: UInt16 = 0
        if plan.qos != .atMostOnce {
            clients[i].nextID = clients[i].nextID == UInt16.max ? 1 : clients[i].nextID + 1
            id = clients[i].nextID
            if clients[i].timedID == 0 {   // one timed message per pile at a time
                clients[i].timedID = id
                clients[i].timedAt = now
            }
        }
        queue(i, .publish(Publish(topic: "/xjdy/ops/v1/TCU/\(pileID(plan.firstIndex + i))/msg", payload: payload,
                                  qos: plan.qos, packetID: id)))
        stats.published.wrappingIncrement(ordering: .relaxed)
    }

    /// The `"t":` value of a payload this harness wrote (µs), if there is one.
    private func sentTime(_ payload: UnsafeRawBufferPointer) -> UInt64? {
        let key: [UInt8] = Array(#""t":"#.utf8)
        guard payload.count > key.count else { return nil }
        for start in 0...(payload.count - key.count) where payload[start] == key[0] {
            guard (0..<key.count).allSatisfy({ payload[start + $0] == key[$0] }) else { continue }
            var v: UInt64 = 0, j = start + key.count
            while j < payload.count, payload[j] >= 0x30, payload[j] <= 0x39 { v = v * 10 + UInt64(payload[j] - 0x30); j += 1 }
            return j > start + key.count ? v : nil
        }
        return nil
    }

    // MARK: the storm profile

    /// Every pile of this worker drops at once (the cell tower came back) and all
    /// connect again as fast as --connect-rate lets them.
    private func dropEveryone() {
        stormed = true
        var dropped = 0
        for i in 0..<started where clients[i].state != .unused {
            if clients[i].state == .connected { dropped += 1 }
            closeSocket(i)
            clients[i].attempt &+= 1   // completions of the old socket are ignored
            clients[i].state = .unused
        }
        stats.connected.wrappingDecrement(by: dropped, ordering: .relaxed)
        pending = 0
        started = 0   // startConnections brings them back from the next tick
        connectBudget = 0
    }

    /// Close a pile's socket now. Its armed receive is cancelled first: a request in
    /// the ring holds the socket open, so a bare close sent no FIN and the server kept
    /// the connection (a storm's old connections then filled max_connections).
    private func closeSocket(_ i: Int) {
        ring.cancel(tag: tag(LOp.recv, i), tag: tag(LOp.close, i), hardLink: true)
        ring.closeDirect(UInt32(i), tag: tag(LOp.close, i))
    }

    /// PINGREQ so each connection is heard from twice per keepalive period; spread
    /// over ticks so 200k piles do not ping in the same instant.
    private func pings(_ elapsed: Double) {
        guard plan.keepAlive > 0, started > 0 else { return }
        pingBudget += Double(started * 2) * elapsed / Double(plan.keepAlive)
        let due = min(Int(pingBudget), started)
        pingBudget -= Double(due)
        for _ in 0..<due {
            let i = pingCursor
            pingCursor = (pingCursor + 1) % started
            if clients[i].state == .connected { queue(i, .pingreq) }
        }
    }
}

/// Monotonic microseconds.
func micros() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
}
