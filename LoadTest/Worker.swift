import Atomics
import Glibc
import MQTTCodec
import PileLoop

final class Worker {
    let plan: Plan
    let stats: Stats
    private let control: Control
    let ring: Ring
    private let buffers: BufferRing
    var clients: [Client]
    var started = 0
    var pending = 0
    var connectBudget = 0.0
    private var msgBudget = 0.0
    /// 1 ms ticks: rate budgets and connect pacing refill in small steps (by the time
    /// that really passed), so a rate-limited run does not send in clumps that would
    /// show up as latency.
    private let timeout = Ring.Interval(nanoseconds: 1_000_000)
    private var lastTick = micros()
    var pingBudget = 0.0
    private let sockaddrs: UnsafeMutablePointer<sockaddr_storage>
    private let targetAddr: UnsafeMutablePointer<sockaddr_storage>
    let one: UnsafeMutablePointer<Int32>
    var pingCursor = 0
    var publishing = false
    /// Clients with something to send this turn, and publishers waiting for rate budget.
    private var dirty: [Int] = []
    private var starved: [Int] = []
    /// Clients waiting to reconnect (--retry): (due µs, client).
    var retryAt: [(UInt64, Int)] = []
    /// pile: when each gun sends next, on a wheel of 1 ms slots (client * guns + gun).
    /// (100 ms slots made the load arrive in clumps of a tenth of a second's
    /// messages, which the PUBACK latency then measured: p50 27 ms at 200k piles.)
    var schedule: [[Int32]] = []
    var scheduleCursor: UInt64 = 0
    /// storm: everyone was dropped (once, at go).
    var stormed = false
    /// downlink: piles still to drop before acknowledging their command.
    private var dropsLeft: Int

    init(plan: Plan, stats: Stats, control: Control) throws {
        self.plan = plan
        self.stats = stats
        self.control = control
        dropsLeft = plan.dropBeforeAck
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
        ring.timeout(timeout, tag: Tag(op: LOp.timer, slot: 0, generation: 0).raw)
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

    func startConnections(initial: Bool) {
        if control.stop.load(ordering: .relaxed) { return }
        while started < plan.connections && pending < plan.maxPending && (connectBudget >= 1 || initial && started == 0) {
            connectBudget -= 1
            started += 1
            startConnect(started - 1)
        }
    }

    func tag(_ op: UInt8, _ i: Int) -> UInt64 {
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
                let qos = (first >> 1) & 3
                if qos > 0 && dropsLeft > 0 && !clients[i].dropped {
                    if publishes > 0 { stats.received.wrappingIncrement(by: publishes, ordering: .relaxed) }
                    dropBeforeAck(i)
                    return bytes.count
                }
                publishes += 1
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

    /// The pile's link drops with its command unacknowledged; it is back 100-500 ms later.
    private func dropBeforeAck(_ i: Int) {
        dropsLeft -= 1
        clients[i].dropped = true
        stats.droppedBeforeAck.wrappingIncrement(ordering: .relaxed)
        stats.connected.wrappingDecrement(ordering: .relaxed)
        clients[i].state = .failed
        closeSocket(i)
        clients[i].attempt &+= 1
        retryAt.append((micros() + UInt64.random(in: 100_000...500_000), i))
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

    func queue(_ i: Int, _ p: Packet) {
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
            ring.timeout(timeout, tag: Tag(op: LOp.timer, slot: 0, generation: 0).raw)
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
}
