import PileLoop
import MQTTCodec

/// Application messages out to subscribers: `fanOut` hands an accepted message
/// to every match; `deliver` sends it to one subscriber, QoS 0 straight out,
/// QoS 1/2 through the in-flight window, then the session's bounded queue.
extension Shard {
    /// The one place an accepted message is handed on: retained store, then every
    /// matching subscriber (this shard now, other shards at the end of the turn),
    /// `except` the pile a command is for (it gets the command by `sendCommand`);
    /// returns where that pile's connection is.
    @discardableResult
    /// `wildcardOnly`: a message another node stored (FleetFeed), for this node's
    /// wildcard subscribers.
    func fanOut(_ m: Message, except: String? = nil, wildcardOnly: Bool = false) -> Owner? {
        // `$` topics are the gateway's own $SYS set (clients may not publish there): not
        // counted against the bounds, so a full store does not blind operators.
        let limits = m.topic.hasPrefix("$") ? nil : (config.mqtt.maxRetainedMessages, config.mqtt.maxRetainedBytes)
        if m.retain && config.mqtt.retainAvailable && !broker.retain(m, limits: limits) { retainRefused(m) }
        let owner = broker.route(m, into: &remote, except: except, wildcardOnly: wildcardOnly)
        if !remote[index].isEmpty {
            // Swap, not copy: a copy alive during removeAll would make it reallocate
            // the list on every publish.
            swap(&remote[index], &local)
            for d in local where isCurrent(d.slot, d.generation) { deliver(d) }
            local.removeAll(keepingCapacity: true)
        }
        return owner
    }

    /// The retained store is at its bounds: the message goes to its subscribers and
    /// (from a pile) to Redis, but is not kept for later subscribers. Said once a
    /// minute per shard, counted each time.
    func retainRefused(_ m: Message) {
        counters.add(.retainedRefused)
        let now = monotonicMillis()
        guard now >= nextRetainWarning else { return }
        nextRetainWarning = now + 60_000
        let usage = broker.retainedUsage
        logger.warning("retained store full (\(usage.messages) messages, \(usage.bytes) bytes; mqtt.max_retained_messages \(config.mqtt.maxRetainedMessages), max_retained_bytes \(config.mqtt.maxRetainedBytes)): a retained PUBLISH to \(m.topic) was delivered but not retained; counted in pilegate_retained_refused_total")
    }

    /// One delivery from the Broker or a shard's inbox.
    func deliver(_ d: Delivery) {
        if let c = d.command {
            deliverCommand(d.slot, d.message, c)
        } else {
            deliver(d.slot, d.message, qos: d.qos, retain: d.retain)
        }
    }

    func deliver(_ slot: UInt32, _ m: Message, qos: QoS, retain: Bool) {
        guard slab[Int(slot)].state == .connected, let s = slab[Int(slot)].session else { return }
        guard policy.acl.mayReceive(s, topic: m.topic) else {
            return counters.add(.deliveriesDenied)   // a wider filter overlapping a deny_subscribe
        }
        if qos == .atMostOnce {
            // A subscriber that does not read must not grow our memory without bound.
            let limits = policy.acl.queueLimits(s.role)
            if buffered(slot).unsent > limits.sendBuffer {
                return queueDropped(slot, s, .sendBuffer, limits)
            }
            return writePublish(slot, m, qos: .atMostOnce, retain: retain, dup: false, id: 0)
        }
        if s.inflight.count < config.mqtt.maxInflight {
            fly(slot, s, Queued(message: m, qos: qos, retain: retain))
        } else {
            let limits = policy.acl.queueLimits(s.role)
            if let why = s.enqueue(Queued(message: m, qos: qos, retain: retain), limits, budget: config.mqtt.queueMemoryBudget) {
                queueDropped(slot, s, why, limits)
            }
        }
    }

    /// A QoS 1/2 message into the in-flight window, and out.
    func fly(_ slot: UInt32, _ s: Session, _ q: Queued) {
        let id = s.nextPacketID()
        s.inflight.append(Outgoing(packetID: id, message: q.message, qos: q.qos, retain: q.retain, released: false,
                                   command: q.command))
        writePublish(slot, q.message, qos: q.qos, retain: q.retain, dup: false, id: id)
    }

    /// A message for this subscriber was dropped: counted by reason; the first drop
    /// of a connection is logged and emitted as a `queue_drop` event, and the total
    /// is logged when the connection ends (`reportDrops`). Redis stays the durable
    /// path: an uplink acknowledged to its publisher was stored there regardless.
    func queueDropped(_ slot: UInt32, _ s: Session, _ why: QueueDrop, _ limits: QueueLimits) {
        counters.add(why.counter)
        s.drops &+= 1
        guard s.drops == 1 else { return }
        let limit = switch why {
        case .messages: "max_queued_messages = \(limits.messages)"
        case .bytes: "max_queued_bytes = \(limits.bytes)"
        case .budget: "queue_memory_budget = \(config.mqtt.queueMemoryBudget)"
        case .sendBuffer: "max_send_buffer = \(limits.sendBuffer)"
        }
        logger.warning("dropping messages for this subscriber (\(why.rawValue)): \(limit) reached; \(s.queuedCount) queued",
                       metadata: who(slot))
        redis?.event("queue_drop", device: s.clientID, [("reason", why.rawValue), ("limit", limit)])
    }

    /// Log how many messages were dropped for this client over its connection (or,
    /// `away`, while its persistent session waited), then count afresh.
    func reportDrops(_ slot: UInt32, _ s: Session, away: Bool) {
        guard s.drops > 0 else { return }
        logger.warning(away ? "\(s.drops) messages were dropped for this client while it was away (queue bounds)"
                            : "\(s.drops) messages were dropped for this client over its connection",
                       metadata: who(slot))
        if away { redis?.event("queue_drop", device: s.clientID, [("reason", "while_away"), ("count", String(s.drops))]) }
        s.drops = 0
    }

    /// Move queued messages into the in-flight window as it opens (they passed the
    /// deny rules when they were queued); a command that expired meanwhile ends here.
    func pump(_ slot: UInt32) {
        guard let s = slab[Int(slot)].session, s.mailFetches == 0 else { return }
        while s.inflight.count < config.mqtt.maxInflight, let q = s.dequeue() {
            if let c = q.command, c.isExpired(nowMs: wallMillis()) {
                finishCommand(c.tag, device: s.clientID, .expired)
            } else {
                fly(slot, s, q)
            }
        }
    }

    /// A persistent session came back (4.4): resend unacknowledged PUBLISHes with
    /// DUP set and PUBRELs, in their original order and ids, then drain the queue.
    /// A command past its expiry is not sent again (as MQTT 5's message expiry
    /// would): it ends `expired`, and a firmware command is not run days late.
    func resumeSession(_ slot: UInt32) {
        guard let s = slab[Int(slot)].session else { return }
        let now = wallMillis()
        s.inflight.removeAll { o in
            guard let c = o.command, !o.released, c.isExpired(nowMs: now) else { return false }
            finishCommand(c.tag, device: s.clientID, .expired)
            return true
        }
        for o in s.inflight {
            if o.released {
                send(slot, .pubrel(o.packetID))
            } else {
                writePublish(slot, o.message, qos: o.qos, retain: o.retain, dup: true, id: o.packetID)
            }
        }
        pump(slot)
    }

    /// Encode a PUBLISH header and append the shared payload: no per-subscriber copy
    /// of the message, one copy into the send buffer.
    private func writePublish(_ slot: UInt32, _ m: Message, qos: QoS, retain: Bool, dup: Bool, id: UInt16) {
        let size = Encoder.publishSize(topic: m.topic, payloadCount: m.payload.count, qos: qos)
        let b = buffers(slot)
        io[b].outbound.reserve(size)
        Encoder.publishHeader(topic: m.topic, payloadCount: m.payload.count, qos: qos, retain: retain,
                              dup: dup, packetID: id, into: &io[b].outbound)
        m.payload.withUnsafeBytes { io[b].outbound.append($0) }
        counters.packet(.out, .publish, bytes: size)
        slab[Int(slot)].session?.countOut(size, overhead: overhead(slot), today: today)
        markDirty(slot)
    }
}
