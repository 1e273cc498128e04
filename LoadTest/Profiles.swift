import Atomics
import Glibc
import MQTTCodec
import PileLoop

/// The traffic of the pile and storm profiles, driven from the worker's 1 ms tick.
extension Worker {
    // MARK: the pile profile

    /// Put gun `entry` (client * guns + gun) on the wheel: a first message at a random
    /// point of the interval (so piles do not send in step), then every min...max.
    func schedulePile(_ entry: Int, first: Bool) {
        let ms = first ? Int.random(in: 0...plan.maxInterval) : Int.random(in: plan.minInterval...plan.maxInterval)
        let slot = (scheduleCursor + UInt64(max(1, ms))) % UInt64(schedule.count)
        schedule[Int(slot)].append(Int32(entry))
    }

    /// Each 1 ms slot that came due: every gun in it sends its run data (or a
    /// trade record), QoS `--qos`, and goes back on the wheel.
    func pileTraffic(_ now: UInt64) {
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

    /// Run data is 300-600 bytes, a trade record 1-2 KB (what piles in the field send);
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
    func sentTime(_ payload: UnsafeRawBufferPointer) -> UInt64? {
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
    func dropEveryone() {
        stormed = true
        var dropped = 0
        for i in 0..<started where clients[i].state != .unused {
            if clients[i].state == .connected { dropped += 1 }
            closeSocket(i)
            clients[i].attempt &+= 1   // completions of the old socket are ignored
            clients[i].state = .unused
        }
        stats.connected.wrappingDecrement(by: dropped, ordering: .relaxed)
        stats.stormed.store(true, ordering: .releasing)
        pending = 0
        started = 0   // startConnections brings them back from the next tick
        connectBudget = 0
    }

    /// Close a pile's socket now. Its armed receive is cancelled first: a request in
    /// the ring holds the socket open, so a bare close sent no FIN and the server kept
    /// the connection (a storm's old connections then filled max_connections).
    func closeSocket(_ i: Int) {
        ring.cancel(tag: tag(LOp.recv, i), tag: tag(LOp.close, i), hardLink: true)
        ring.closeDirect(UInt32(i), tag: tag(LOp.close, i))
    }

    /// PINGREQ so each connection is heard from twice per keepalive period; spread
    /// over ticks so 200k piles do not ping in the same instant.
    func pings(_ elapsed: Double) {
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
