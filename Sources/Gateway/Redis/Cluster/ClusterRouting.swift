import PileLoop

/// What a link saw of its cluster, for the metrics.
struct ClusterStats {
    var moved = 0
    var asks = 0
    /// TRYAGAIN and CLUSTERDOWN replies, and commands for a slot no master served:
    /// parked and sent again.
    var retried = 0
    /// Masters that left the slot map while holding slots (a failover or a removal).
    var failovers = 0
}

/// Redis Cluster for a `RedisLink`: the slot map from `CLUSTER SLOTS` (asked at
/// start, after a MOVED, while a master is down, and every 10 s), redirects, and
/// failover. A master that leaves the map gives up its connection's unanswered
/// commands (`takeUnanswered`), which go, byte for byte and in order, to the new
/// masters of their slots: the journal's at-least-once, across a failover.
extension RedisLink {
    static var refreshEveryMs: UInt64 { 10_000 }

    /// The connection of the master serving `slot`, if the map names one.
    func owner(of slot: UInt16) -> RedisConnection<Routed>? {
        guard let map else { return nil }
        let i = map.owner[Int(slot)]
        return i == SlotMap.unserved ? nil : owner(master: Int(i))
    }

    /// The connection to the i-th master of the map, made on first use.
    func owner(master i: Int) -> RedisConnection<Routed> {
        if let c = masterConn[i], let conn = conns[c] { return conn }
        let conn = connection(to: SocketAddress(map!.masters[i])!)
        masterConn[i] = index(of: conn)
        return conn
    }

    var firstServedSlot: UInt16 {
        UInt16(map?.owner.firstIndex { $0 != SlotMap.unserved } ?? 0)
    }

    /// Masters in the slot map, and its age.
    var mastersKnown: Int { map?.masters.count ?? 0 }
    func mapAge(nowMs: UInt64) -> UInt64 { map == nil ? 0 : nowMs - mapAtMs }

    func clusterTick(nowMs: UInt64) {
        if !parked.isEmpty && map != nil {
            let again = parked
            parked.removeAll()
            for p in again { send(p.bytes, at: p.at, slot: p.slot, p.expectation) }
        }
        if asking && nowMs - askedAtMs > 2 * connectTimeoutMs { asking = false }   // its connection went
        if refreshWanted || nowMs - mapAtMs > Self.refreshEveryMs { refreshWanted = true; askForSlots() }
    }

    /// CLUSTER SLOTS on a connection that is up: a master's, else a seed's.
    func askForSlots() {
        guard !asking else { return }
        let up = conns.compactMap { $0 }.filter { $0.state == .up }
        guard let c = up.first(where: { c in masterConn.contains { $0 != nil && conns[$0!] === c } }) ?? up.first else { return }
        asking = true
        askedAtMs = monotonicMillis()
        c.enqueue(.slots(asked: String(c.addressText.prefix { $0 != ":" }))) { $0.respCommand(["CLUSTER", "SLOTS"]) }
    }

    func slotsReplied(_ r: RedisReply, asked: String) {
        asking = false
        let (parsed, problem) = SlotMap.parse(r, askedHost: asked)
        guard let new = parsed else {
            logger.error("redis cluster: CLUSTER SLOTS at \(asked) failed: \(problem ?? "")")
            return
        }
        let before = map
        map = new
        mapAtMs = monotonicMillis()
        refreshWanted = false
        masterConn = new.masters.map { a in conns.firstIndex { $0?.addressText == a } }
        if homeSlots == nil { for i in masterConn.indices { _ = owner(master: i) } }
        for s in homeSlots ?? [] { _ = owner(of: s) }
        if let before, before.masters != new.masters || before.unservedSlots != new.unservedSlots {
            logger.notice("redis cluster: slot map now \(new.masters.joined(separator: ", "))",
                          metadata: ["unserved_slots": "\(new.unservedSlots)"])
        } else if before == nil {
            logger.info("redis cluster (\(name)): \(new.masters.count) masters: \(new.masters.joined(separator: ", "))")
        }
        // Connections to nodes that serve no slot now: what they held goes to the slots' masters.
        for (i, c) in conns.enumerated() {
            guard let c, !masterConn.contains(i) else { continue }
            let held = c.takeUnanswered()
            conns[i] = nil
            if before?.masters.contains(c.addressText) == true {
                stats.failovers += 1
                logger.warning("redis cluster: \(c.addressText) is no longer a master; \(held.count) unanswered commands go to the new masters")
            }
            // A reader that starts over when its link is up again (downlink, fleet) drops them.
            for h in held where resendOnReconnect {
                if case .command(let slot, let e) = h.expectation { send(h.bytes, at: h.at, slot: slot, e) }
            }
        }
        connectionChanged()
    }

    /// An error reply a cluster answers instead of a result: MOVED (the slot has
    /// another master: note it, send there, refresh the map), ASK (this command only:
    /// ASKING, then the command, at the named node), TRYAGAIN and CLUSTERDOWN
    /// (parked, sent again from the tick). True when the command was taken care of.
    func redirected(_ routed: Routed, _ bytes: UnsafeRawBufferPointer, _ r: RedisReply) -> Bool {
        guard case .command(let slot, let e) = routed else { return false }
        let text = r.text
        let words = text.split(separator: " ")
        if (words.first == "MOVED" || words.first == "ASK") && words.count == 3, let address = SocketAddress(String(words[2])) {
            let to = connection(to: address)
            if words[0] == "MOVED" {
                stats.moved += 1
                map?.assign(slot, to: to.addressText)
                while masterConn.count < map?.masters.count ?? 0 { masterConn.append(nil) }
                if let m = map?.masters.firstIndex(of: to.addressText) { masterConn[m] = index(of: to) }
                refreshWanted = true
            } else {
                stats.asks += 1
                to.enqueue(.asking) { $0.respCommand(["ASKING"]) }
            }
            to.enqueue(.command(slot: slot, e), bytes: bytes, at: clock)
            return true
        }
        if text.hasPrefix("TRYAGAIN") || text.hasPrefix("CLUSTERDOWN") {
            stats.retried += 1
            if text.hasPrefix("CLUSTERDOWN") { refreshWanted = true }
            parked.append((Array(bytes), clock, slot, e))
            return true
        }
        return false
    }

    /// A command already written, to its slot's master (parked while there is none).
    private func send(_ bytes: [UInt8], at: UInt64, slot: UInt16, _ e: Expectation) {
        guard let c = owner(of: slot) else { return parked.append((bytes, at, slot, e)) }
        bytes.withUnsafeBytes { c.enqueue(.command(slot: slot, e), bytes: $0, at: at) }
    }

    private func index(of c: RedisConnection<Routed>) -> Int { conns.firstIndex { $0 === c }! }
}
