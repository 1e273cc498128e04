import PileLoop
import MQTTCodec

/// Commands from workers on the node's downlink stream, on shard 0: the reader's
/// steps, then each entry's first decision. A QoS 1/2 command for a pile that is
/// here (or away with a session) is stored in the pile's mailbox before it is
/// sent, and its entry stays pending until the command ends
/// (Handlers/CommandReceipts.swift); anything else ends at once, XACKed per batch.
extension Shard {
    /// Replies on the downlink connection drive its little state machine.
    func downlinkReplied(_ step: Downlink.Step, _ r: RedisReply) {
        guard let downlink else { return }
        switch step {
        case .createGroup:
            if r.isError && !r.text.hasPrefix("BUSYGROUP") {
                logger.error("downlink: XGROUP CREATE failed: \(r.text)")
            }
        case .claim, .review:
            let parts = r.elements
            guard !r.isError, parts.count >= 2 else {
                logger.error("downlink: XAUTOCLAIM failed: \(r.text)")
                return step == .claim ? downlink.read() : downlink.reviewed(cursor: "0-0")
            }
            let count = parts[1].elements.count
            if step == .claim && count > 0 { logger.info("downlink: taking up \(count) commands left pending") }
            arrived(parts[1], step == .claim ? .claimed : .reviewed, stream: downlink.key, seen: downlink.lastRead)
            let next = parts[0].text
            if step == .review { return downlink.reviewed(cursor: next) }
            if next == "0-0" || count == 0 { downlink.read() } else { downlink.claim(from: next) }
        case .read:
            if r.isError {
                logger.error("downlink: XREADGROUP failed: \(r.text)")
            } else if !r.isNil {
                for stream in r.elements {
                    let parts = stream.elements
                    guard parts.count == 2 else { continue }
                    arrived(parts[1], .new, stream: downlink.key, seen: nil)
                    if let last = parts[1].elements.last?.elements.first.flatMap({ StreamID($0.text) }) {
                        downlink.lastRead = last
                    }
                }
            }
            downlink.read(answered: true)
        }
    }

    /// A batch of entries: read, decided, and those that end now XACKed together.
    /// A claimed entry this process has read before (`seen`) is looked at as the
    /// review does: storing it again could bring back a command that has ended
    /// and whose XACK is still on its way (after a Redis restart, say).
    private func arrived(_ entries: RedisReply, _ how: Arrival.How, stream: String, seen: StreamID?) {
        guard let redis else { return }
        var ended: [String] = []
        let now = wallMillis()
        for e in entries.elements {
            switch Command.read(e, stream: stream, commandTopic: config.mqtt.commandTopic(for:),
                                defaultTTL: config.downlink.defaultTTL) {
            case nil:
                continue   // deleted by a worker (XAUTOCLAIM drops it from the pending list)
            case .rejected(let tag, let device, let why)?:
                logger.warning("downlink: entry \(tag.entryID) rejected: \(why)")
                report(tag, device: device, .rejected, why: why)
                ended.append(tag.entryID)
            case .takeover(let tag, let device, let since)?:
                movedAway(device, since: since)
                ended.append(tag.entryID)
            case .command(let c)?:
                let known = how == .claimed && seen.map { !($0 < c.tag.order) } == true
                if decide(c, known ? .reviewed : how, nowMs: now, redis) { ended.append(c.tag.entryID) }
            }
        }
        redis.acknowledge(stream: stream, ids: ended)
    }

    /// `device` connected to another node at `since`: its older connection here ends
    /// (will published, reason `takeover_remote`), and a session kept here goes.
    func movedAway(_ device: String, since: UInt64) {
        if let o = broker.owner(of: device) {
            ctx.inboxes[o.shard].post(.movedAway(slot: o.slot, generation: o.generation, since: since))
        } else {
            broker.dropParked(device)
        }
    }

    /// What to do with one command; true when it ended here (XACK it).
    private func decide(_ c: Command, _ how: Arrival.How, nowMs: UInt64, _ redis: RedisBridge) -> Bool {
        let box = Arrival(c, how)
        switch how {
        case .reviewed:
            // Still in the mailbox? (If not, it ended and only its XACK was lost.)
            redis.isMailed(c.tag, device: c.device, expect: .command(.reviewed(box)))
            return false
        case .claimed:
            // An earlier run read it: it may be stored, sent, or neither yet.
            redis.store(c, maxPending: config.downlink.maxPending, expect: .command(.stored(box)))
            return false
        case .new:
            break
        }
        if c.isExpired(nowMs: nowMs) {
            report(c.tag, device: c.device, .expired)
            return true
        }
        switch broker.commandTarget(c.device, topic: c.topic, qos: c.qos) {
        case .offline:
            report(c.tag, device: c.device, .offline)
            return true
        case .notSubscribed:
            report(c.tag, device: c.device, .notSubscribed)
            return true
        case .connected(let qos) where qos == .atMostOnce:
            fanOut(c.message)
            report(c.tag, device: c.device, .sent)
            return true
        case .away where c.qos == .atMostOnce:
            report(c.tag, device: c.device, .offline)   // QoS 0 is not kept for an absent pile
            return true
        case .connected, .away:
            redis.store(c, maxPending: config.downlink.maxPending, expect: .command(.stored(box)))
            return false
        }
    }

    /// The mailbox has the command (`Script.mailboxAdd` answered): send it, or it
    /// waits there (`queued`, said once, when it was first stored).
    func storedReplied(_ a: Arrival, _ r: RedisReply) {
        let c = a.command
        let parts = r.elements
        guard !r.isError, let added = parts.first?.integer else {
            // Left pending: the review or the next restart tries again.
            counters.add(.redisErrors)
            return logger.warning("downlink: could not store command \(c.tag.text): \(r.text)")
        }
        var pushedOut = false
        for f in parts.dropFirst() {
            let old = CommandTag(field: f.text)
            pushedOut = pushedOut || old == c.tag
            report(old, device: c.device, .expired, why: "max_pending")
            redis?.acknowledge(old)
        }
        if pushedOut { return }
        if c.isExpired(nowMs: wallMillis()) { return finishCommand(c.tag, device: c.device, .expired) }
        // New: to operators watching the topic too (one routing pass finds the pile as well).
        let owner = a.how == .new ? fanOut(c.message, except: c.device) : broker.owner(of: c.device)
        if let owner { sendCommand(c, to: owner) } else if added == 1 { report(c.tag, device: c.device, .queued) }
    }

    /// The review found a pending command: ended already (only the XACK is left),
    /// expired, or sent again if its pile is here and does not have it.
    func reviewedReplied(_ a: Arrival, _ r: RedisReply) {
        let c = a.command
        guard !r.isError else { return counters.add(.redisErrors) }
        if r.integer == 0 {
            redis?.acknowledge(c.tag)
            return
        }
        if c.isExpired(nowMs: wallMillis()) { return finishCommand(c.tag, device: c.device, .expired) }
        if let owner = broker.owner(of: c.device) { sendCommand(c, to: owner) }
    }

    /// Hand a stored command to its pile's connection, on whichever shard holds it.
    private func sendCommand(_ c: Command, to o: Owner) {
        let d = Delivery(slot: o.slot, generation: o.generation, qos: c.qos, retain: false, message: c.message,
                         command: c.ref)
        if o.shard == index {
            if isCurrent(d.slot, d.generation) { deliver(d) }
        } else {
            remote[o.shard].append(d)
        }
    }
}

/// A command read from the downlink stream, on its way through Redis replies.
final class Arrival: Sendable {
    enum How { case new, claimed, reviewed }
    let command: Command
    let how: How
    init(_ command: Command, _ how: How) { self.command = command; self.how = how }
}

extension CommandOutcome {
    var counter: Counter {
        switch self {
        case .acked: .downlinkAcked
        case .sent: .downlinkSent
        case .queued: .downlinkQueued
        case .offline: .downlinkOffline
        case .notSubscribed: .downlinkNotSubscribed
        case .expired: .downlinkExpired
        case .rejected: .downlinkRejected
        }
    }
}
