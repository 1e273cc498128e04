import PileLoop
import MQTTCodec

/// A worker's command on the shard that holds its pile's connection: delivered
/// once per connection, in order, held back while the pile's mailbox is being
/// read, and ended (`acked`, `sent`, `expired`, ...) by removing it from the
/// mailbox. Sources/ARCHITECTURE.md, "Commands end to end", has the whole path.
extension Shard {
    /// A command for the pile on `slot` (from the reader on shard 0, or its
    /// mailbox). A pile that is gone or not subscribed to the topic leaves it in
    /// the mailbox: its next SUBSCRIBE (or the review) brings it.
    func deliverCommand(_ slot: UInt32, _ m: Message, _ c: CommandRef) {
        guard slab[Int(slot)].state == .connected, let s = slab[Int(slot)].session,
              let granted = subscribedQoS(s, m.topic), !s.has(c.tag) else { return }
        guard policy.acl.mayReceive(s, topic: m.topic) else {
            counters.add(.deliveriesDenied)
            return finishCommand(c.tag, device: s.clientID, .notSubscribed, why: "deny_subscribe covers the topic")
        }
        if c.isExpired(nowMs: wallMillis()) { return finishCommand(c.tag, device: s.clientID, .expired) }
        let qos = min(granted, m.qos)
        if qos == .atMostOnce {
            // Subscribed at QoS 0: nothing will acknowledge it.
            deliver(slot, m, qos: .atMostOnce, retain: false)
            return finishCommand(c.tag, device: s.clientID, .sent)
        }
        let q = Queued(message: m, qos: qos, retain: false, command: c)
        if s.mailFetches == 0 && s.queuedCount == 0 && s.inflight.count < config.mqtt.maxInflight {
            return fly(slot, s, q)
        }
        // Behind the window, or behind what the mailbox fetch will return. Past the
        // queue's bounds it stays in the mailbox (and the review brings it later).
        let limits = policy.acl.queueLimits(s.role)
        if let why = s.enqueue(q, limits, budget: config.mqtt.queueMemoryBudget) { queueDropped(slot, s, why, limits) }
    }

    /// The highest QoS of this session's subscriptions that match `topic`, or nil.
    private func subscribedQoS(_ s: Session, _ topic: String) -> QoS? {
        var best: QoS?
        for r in s.subscriptions where r.filter.isEmpty ? broker.ownTopic.isOwn(topic, clientID: s.clientID)
            : Topic.matches(filter: r.filter, topic: topic) { best = max(best ?? r.qos, r.qos) }
        return best
    }

    /// The pile acknowledged a command: PUBACK (QoS 1) or PUBCOMP (QoS 2).
    func commandAcked(_ s: Session, _ c: CommandRef) {
        s.ackedDuringFetch(c.tag)
        finishCommand(c.tag, device: s.clientID, .acked)
    }

    /// A command reached a final state here. It is removed from its pile's mailbox
    /// first; only the one HDEL that removes it reports the outcome and XACKs the
    /// entry (`removedReplied`), so two paths racing to end one command (an ack
    /// and the per-pile bound, two nodes) report it once.
    func finishCommand(_ tag: CommandTag, device: String, _ outcome: CommandOutcome, why: String? = nil) {
        redis?.unmail(tag, device: device, expect: .command(.removed(Ending(tag: tag, device: device, outcome: outcome,
                                                                             why: why))))
    }

    func removedReplied(_ e: Ending, _ r: RedisReply) {
        if r.isError {
            // Still in the mailbox and pending: a later ack, the review or a restart ends it.
            counters.add(.redisErrors)
            return logger.warning("downlink: could not end command \(e.tag.text) (\(e.outcome.rawValue)): \(r.text)")
        }
        guard r.integer == 1, let redis else { return }
        report(e.tag, device: e.device, e.outcome, why: e.why)
        redis.acknowledge(e.tag)
    }

    /// The outcome entry and its counter.
    func report(_ tag: CommandTag, device: String, _ outcome: CommandOutcome, why: String? = nil) {
        counters.add(outcome.counter)
        redis?.outcome(tag, device: device, outcome, why: why)
    }

    /// Read the pile's mailbox: after a CONNECT that found its session, and after
    /// each SUBSCRIBE. With `downlink.redeliver` off only a persistent session
    /// looks (its `queued` commands); a clean one ended its commands when it left.
    func fetchMail(_ slot: UInt32) {
        guard let redis, let s = slab[Int(slot)].session, config.downlink.redeliver || s.persistent else { return }
        s.mailFetches &+= 1
        redis.fetchMailbox(s.clientID, expect: .command(.mailbox(slot: slot, generation: slab[Int(slot)].generation)))
    }

    /// The mailbox came back: what this connection does not have yet, and is
    /// subscribed to, goes out first, oldest first, ahead of commands that
    /// arrived meanwhile; expired ones end here.
    func mailboxReplied(_ slot: UInt32, _ r: RedisReply) {
        guard let s = slab[Int(slot)].session else { return }
        defer { s.fetchAnswered(); pump(slot) }
        if r.isError {
            counters.add(.redisErrors)
            return logger.warning("downlink: mailbox read failed: \(r.text)", metadata: who(slot))
        }
        var bad: [CommandTag] = [], ready: [Queued] = []
        let now = wallMillis()
        for c in Command.mailbox(r, device: s.clientID, bad: &bad) {
            if c.isExpired(nowMs: now) {
                finishCommand(c.tag, device: s.clientID, .expired)
                continue
            }
            guard !s.has(c.tag), !s.wasAckedDuringFetch(c.tag), let granted = subscribedQoS(s, c.topic),
                  policy.acl.mayReceive(s, topic: c.topic) else { continue }
            if min(granted, c.qos) == .atMostOnce {
                deliver(slot, c.message, qos: .atMostOnce, retain: false)
                finishCommand(c.tag, device: s.clientID, .sent)
            } else {
                ready.append(Queued(message: c.message, qos: min(granted, c.qos), retain: false, command: c.ref))
            }
        }
        for tag in bad {
            // Not written by pilegate (or damaged): it can never be delivered.
            counters.add(.mailboxBadEntries)
            logger.warning("downlink: mailbox entry \(tag.text) does not parse; it ends rejected", metadata: who(slot))
            finishCommand(tag, device: s.clientID, .rejected, why: "mailbox entry does not parse")
        }
        if !ready.isEmpty {
            logger.debug("downlink: \(ready.count) commands from the mailbox", metadata: who(slot))
            s.prepend(ready)
        }
    }

    /// A pile's connection ended. With `redeliver` off, a clean session's commands
    /// end `offline` with it (a persistent one keeps them, as MQTT does).
    func connectionLeft(_ s: Session) {
        guard !config.downlink.redeliver, !s.persistent else { return }
        for o in s.inflight { if let c = o.command { finishCommand(c.tag, device: s.clientID, .offline) } }
        while let q = s.dequeue() { if let c = q.command { finishCommand(c.tag, device: s.clientID, .offline) } }
    }
}

/// A command ending: what `removedReplied` reports once the HDEL confirms.
final class Ending: Sendable {
    let tag: CommandTag
    let device: String
    let outcome: CommandOutcome
    let why: String?
    init(tag: CommandTag, device: String, outcome: CommandOutcome, why: String?) {
        self.tag = tag; self.device = device; self.outcome = outcome; self.why = why
    }
}
