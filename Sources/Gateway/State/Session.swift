import Atomics
import MQTTCodec

/// An application message as routed: immutable, shared between shards by
/// reference counting (String and Array storage), never copied per subscriber.
public struct Message: Sendable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: QoS
    public var retain: Bool
    public init(topic: String, payload: [UInt8], qos: QoS, retain: Bool) {
        self.topic = topic; self.payload = payload; self.qos = qos; self.retain = retain
    }
}

/// A QoS 1/2 PUBLISH sent to the client and not yet fully acknowledged.
struct Outgoing {
    var packetID: UInt16
    var message: Message
    var qos: QoS
    var retain: Bool
    /// QoS 2: PUBREC came back and PUBREL went out; waiting for PUBCOMP.
    var released: Bool
}

/// A message waiting for an in-flight slot (or for the client to come back).
struct Queued {
    var message: Message
    var qos: QoS
    var retain: Bool

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

/// What MQTT calls the session state (3.1.2.4): subscriptions, QoS 1/2 flows in both
/// directions, messages queued while offline or past the in-flight window.
///
/// Ownership: exactly one holder at a time. The shard that holds the client's live
/// connection, or, while the client is away (clean session 0), the Broker under its
/// lock. Hand-over happens only through the Broker, hence @unchecked Sendable.
final class Session: @unchecked Sendable {
    // Widest fields first: Swift lays stored properties out in declaration order, and
    // 200k of these are live (176 bytes each with malloc's header).
    let clientID: String
    /// ACL role and user name of the live connection, settled at CONNECT.
    var username: String?
    /// Wall-clock ms of the live connection's CONNACK (the presence entry's "since").
    var connectedAtMs: UInt64 = 0
    var subscriptions = InlineList<TopicRequest>()
    /// Traffic today (daily quota, SIM accounting) and the rate rules' buckets.
    var usage = DailyUsage()
    var rate = RateState()
    var inflight: [Outgoing] = []
    /// Inbound QoS 2 packet ids received but not yet released (PUBREL), so a resent
    /// PUBLISH is not routed twice (4.3.3).
    var awaitingRelease: [UInt16] = []
    private(set) var queue: [Queued] = []
    let handle: UInt32
    /// Wheel tick of the last PUBLISH (or of the CONNACK), and whether the live
    /// connection was reported silent since (Ops/SilentDevices.swift).
    var lastPublish: UInt32 = 0
    private var queueHead: UInt32 = 0
    /// Bytes of the queued messages (`Queued.cost`), counted in `QueueMemory` too.
    private(set) var queuedBytes: UInt32 = 0
    /// Messages dropped for this client since its connection began (or, while it is
    /// away, since it left): the first drop is logged, the total at the end.
    var drops: UInt32 = 0
    var role: UInt16 = 0
    private var lastPacketID: UInt16 = 0
    var persistent: Bool
    var silentReported = false
    /// A rate action was logged and emitted for the live connection.
    var rateReported = false

    init(clientID: String, handle: UInt32, persistent: Bool) {
        self.clientID = clientID; self.handle = handle; self.persistent = persistent
    }

    deinit {
        if queuedBytes > 0 { QueueMemory.give(Int(queuedBytes)) }
    }

    var queuedCount: Int { queue.count - Int(queueHead) }

    /// Queue a message within the role's bounds and the node's budget; nil when
    /// queued, else why not (the caller counts and reports the drop).
    func enqueue(_ q: Queued, _ limits: QueueLimits, budget: Int) -> QueueDrop? {
        if queuedCount >= limits.messages { return .messages }
        let cost = q.cost
        if Int(queuedBytes) + cost > limits.bytes { return .bytes }
        if !QueueMemory.take(cost, budget: budget) { return .budget }
        queuedBytes += UInt32(cost)
        queue.append(q)
        return nil
    }

    func dequeue() -> Queued? {
        let head = Int(queueHead)
        guard head < queue.count else { return nil }
        let q = queue[head]
        queuedBytes -= UInt32(q.cost)
        QueueMemory.give(q.cost)
        queueHead += 1
        if head + 1 == queue.count {
            queue.removeAll()
            queueHead = 0
        } else if head + 1 >= 64 && (head + 1) * 2 >= queue.count {
            queue.removeFirst(head + 1)
            queueHead = 0
        }
        return q
    }

    /// Next packet identifier not in use by an in-flight message (1...65535).
    func nextPacketID() -> UInt16 {
        repeat {
            lastPacketID = lastPacketID == UInt16.max ? 1 : lastPacketID + 1
        } while inflight.contains(where: { $0.packetID == lastPacketID })
        return lastPacketID
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
