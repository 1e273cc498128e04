import Atomics
import MQTTCodec

/// A message waiting for an in-flight slot (or for the client to come back).
struct Queued {
    var message: Message
    var qos: QoS
    var retain: Bool
    var command: CommandRef? = nil

    /// What it counts against the queue bounds: topic and payload bytes. (Shared
    /// with other subscribers' queues by reference; counted per queue all the same,
    /// so one subscriber's bound does not depend on who else is subscribed.)
    var cost: Int { message.payload.count + message.topic.utf8.count }
}

/// Why a message for a subscriber was dropped (`pilegate_queue_drops_total{reason}`,
/// the `queue_drop` event).
enum QueueDrop: String, Sendable, CaseIterable {
    /// The queue holds its role's `max_queued_messages`.
    case messages = "queue_messages"
    /// The queue holds its role's `max_queued_bytes`.
    case bytes = "queue_bytes"
    /// All queues on the node hold `mqtt.queue_memory_budget`.
    case budget = "queue_budget"
    /// QoS 0: the send buffer holds the role's `max_send_buffer` (the client does not read).
    case sendBuffer = "send_buffer"
}

/// Bytes queued in every session on this node, against `mqtt.queue_memory_budget`.
/// Process-wide: a session moves between shards and the Broker, its bytes stay counted.
enum QueueMemory {
    static let used = ManagedAtomic<Int>(0)

    /// Reserve `n` bytes; false (nothing reserved) when the budget would be exceeded.
    static func take(_ n: Int, budget: Int) -> Bool {
        if used.wrappingIncrementThenLoad(by: n, ordering: .relaxed) <= budget { return true }
        used.wrappingDecrement(by: n, ordering: .relaxed)
        return false
    }

    static func give(_ n: Int) { used.wrappingDecrement(by: n, ordering: .relaxed) }
}

/// The messages waiting for one client past its in-flight window (QoS 1/2), with
/// their bytes counted against the role's bound and the node's budget.
final class MessageQueue {
    private var items: [Queued] = []
    private var head = 0
    /// Bytes of the queued messages (`Queued.cost`), counted in `QueueMemory` too.
    private(set) var bytes = 0
    /// Messages dropped for this client (see `Session.drops`).
    var drops: UInt32 = 0
    /// See `Session.ackedDuringFetch` (kept here: rare state, one pointer per session).
    var ackedDuringFetch: [CommandTag] = []

    deinit {
        if bytes > 0 { QueueMemory.give(bytes) }
    }

    var count: Int { items.count - head }
    /// Nothing queued, dropped or remembered: the session can let go of it.
    var isEmpty: Bool { count == 0 && drops == 0 && ackedDuringFetch.isEmpty }

    func has(_ tag: CommandTag) -> Bool { items[head...].contains { $0.command?.tag == tag } }

    /// Mailbox commands go ahead of what is queued: they were written before it.
    /// Counted in the node's queue memory but not refused by any bound: they are
    /// bounded by `downlink.max_pending` already, and dropping one here would only
    /// delay it.
    func prepend(_ qs: [Queued]) {
        let cost = qs.reduce(0) { $0 + $1.cost }
        _ = QueueMemory.take(cost, budget: .max)
        bytes += cost
        items.replaceSubrange(0..<head, with: qs)
        head = 0
    }

    func enqueue(_ q: Queued, _ limits: QueueLimits, budget: Int) -> QueueDrop? {
        if count >= limits.messages { return .messages }
        let cost = q.cost
        if bytes + cost > limits.bytes { return .bytes }
        if !QueueMemory.take(cost, budget: budget) { return .budget }
        bytes += cost
        items.append(q)
        return nil
    }

    func dequeue() -> Queued? {
        guard head < items.count else { return nil }
        let q = items[head]
        bytes -= q.cost
        QueueMemory.give(q.cost)
        head += 1
        if head == items.count {
            items.removeAll()
            head = 0
        } else if head >= 64 && head * 2 >= items.count {
            items.removeFirst(head)   // compact once the consumed front is half the array
            head = 0
        }
        return q
    }
}

extension QueueDrop {
    var counter: Counter {
        switch self {
        case .messages: .queueDropsMessages
        case .bytes: .queueDropsBytes
        case .budget: .queueDropsBudget
        case .sendBuffer: .queueDropsSendBuffer
        }
    }
}
