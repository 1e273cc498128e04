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
    /// A worker's command: acknowledging it ends the command `acked`.
    var command: CommandRef?
}

/// What MQTT calls the session state (3.1.2.4): subscriptions, QoS 1/2 flows in both
/// directions, messages queued while offline or past the in-flight window.
///
/// Ownership: exactly one holder at a time. The shard that holds the client's live
/// connection, or, while the client is away (clean session 0), the Broker under its
/// lock. Hand-over happens only through the Broker, hence @unchecked Sendable.
final class Session: @unchecked Sendable {
    // Widest fields first: Swift lays stored properties out in declaration order, and
    // 200k of these are live; malloc rounds each to 16 bytes, so 1 more byte can cost
    // 16 per pile (bench/README.md, "ab.sh"). 109 bytes, a 128-byte malloc chunk
    // (LayoutTests); what an idle pile does not have lives in `Rare`, flags in one byte.
    let clientID: String
    /// Wall-clock ms of the live connection's CONNACK (the presence entry's "since").
    var connectedAtMs: UInt64 = 0
    var rate = RateState()
    /// Allocated when the session first needs one of its fields, dropped when all
    /// are back to empty (`settle`).
    private var rare: Rare?
    /// Traffic today (daily quota, SIM accounting).
    var usage = DailyUsage()
    let handle: UInt32
    /// Wheel tick of the last PUBLISH (or of the CONNACK), and whether the live
    /// connection was reported silent since (Ops/SilentDevices.swift).
    var lastPublish: UInt32 = 0
    /// When (RedisBridge.dedupNow) the client's dedup key on uplink stream
    /// `dedupStream` last got its PEXPIRE (RedisBridge.xadd).
    var dedupRefreshed: UInt32 = 0
    /// ACL role of the live connection, settled at CONNECT.
    var role: UInt16 = 0
    var dedupStream: UInt16 = .max
    private var flags: Flags

    /// The session state an idle pile does not have: QoS 1/2 flows in both directions,
    /// queued messages, subscriptions other than its own command topic, a user name
    /// other than its client id. A pile's user name is its client id (or it has none),
    /// so an idle pile's Session is 32 bytes smaller without these (bench/README.md,
    /// "scale.sh").
    private final class Rare {
        var inflight: [Outgoing] = []
        var awaitingRelease: [UInt16] = []
        var waiting: MessageQueue?
        var otherSubscriptions: [TopicRequest] = []
        var username: String?
        var lastPacketID: UInt16 = 0
        var mailFetches: UInt8 = 0

        var isEmpty: Bool {
            inflight.isEmpty && awaitingRelease.isEmpty && waiting == nil && otherSubscriptions.isEmpty
                && username == nil && mailFetches == 0
        }
    }

    private var ensureRare: Rare {
        if let r = rare { return r }
        let r = Rare()
        rare = r
        return r
    }

    /// Drop an empty queue, then `rare` once nothing in it is in use (packet ids then
    /// start over at 1, which 2.3.1 allows once every earlier one is acknowledged).
    private func settle() {
        guard let r = rare else { return }
        if r.waiting?.isEmpty == true { r.waiting = nil }
        if r.isEmpty { rare = nil }
    }

    /// Nothing but the always-present fields: what an idle pile costs (LayoutTests).
    var isIdle: Bool { rare == nil }

    /// QoS 1/2 PUBLISHes sent to the client and not yet fully acknowledged.
    var inflight: [Outgoing] {
        get { rare?.inflight ?? [] }
        _modify { defer { settle() }; yield &ensureRare.inflight }
    }
    /// Inbound QoS 2 packet ids received but not yet released (PUBREL), so a resent
    /// PUBLISH is not routed twice (4.3.3).
    var awaitingRelease: [UInt16] {
        get { rare?.awaitingRelease ?? [] }
        _modify { defer { settle() }; yield &ensureRare.awaitingRelease }
    }
    /// Mailbox fetches (HGETALL) not yet answered: while one is out, commands for
    /// this client queue behind what the mailbox returns (CommandReceipts.swift).
    var mailFetches: UInt8 {
        get { rare?.mailFetches ?? 0 }
        _modify { defer { settle() }; yield &ensureRare.mailFetches }
    }
    /// User name of the live connection, settled at CONNECT (ACL `%u`).
    var username: String? {
        get { flags.contains(.usernameIsClientID) ? clientID : rare?.username }
        set {
            set(.usernameIsClientID, newValue == clientID)
            if newValue != nil && newValue != clientID { ensureRare.username = newValue } else { rare?.username = nil }
            settle()
        }
    }

    private struct Flags: OptionSet {
        let rawValue: UInt8
        static let persistent = Flags(rawValue: 1)
        static let silentReported = Flags(rawValue: 2)
        static let rateReported = Flags(rawValue: 4)
        /// Bits 3-4: the own command topic's QoS + 1 (0: not subscribed).
        static let ownQoSShift: UInt8 = 3
        static let ownQoS = Flags(rawValue: 3 << ownQoSShift)
        static let usernameIsClientID = Flags(rawValue: 1 << 5)
    }

    init(clientID: String, handle: UInt32, persistent: Bool) {
        self.clientID = clientID; self.handle = handle
        flags = persistent ? .persistent : []
    }

    var persistent: Bool {
        get { flags.contains(.persistent) }
        set { set(.persistent, newValue) }
    }
    var silentReported: Bool {
        get { flags.contains(.silentReported) }
        set { set(.silentReported, newValue) }
    }
    /// A rate action was logged and emitted for the live connection.
    var rateReported: Bool {
        get { flags.contains(.rateReported) }
        set { set(.rateReported, newValue) }
    }

    private func set(_ f: Flags, _ on: Bool) {
        if on { flags.insert(f) } else { flags.remove(f) }
    }

    /// Its subscriptions as stored: the own command topic as an empty filter
    /// (OwnTopic.swift), first; no allocation.
    var subscriptions: Subscriptions { Subscriptions(own: ownQoS, others: rare?.otherSubscriptions ?? []) }

    private var ownQoS: QoS? {
        get {
            let bits = (flags.rawValue & Flags.ownQoS.rawValue) >> Flags.ownQoSShift
            return bits == 0 ? nil : QoS(rawValue: bits - 1)
        }
        set {
            let bits = newValue.map { ($0.rawValue + 1) << Flags.ownQoSShift } ?? 0
            flags = Flags(rawValue: flags.rawValue & ~Flags.ownQoS.rawValue | bits)
        }
    }

    /// Add or replace (3.8.4-3) a subscription as stored.
    func subscribe(_ stored: TopicRequest) {
        if stored.filter.isEmpty { ownQoS = stored.qos } else { ensureRare.otherSubscriptions.upsert(stored) { $0.filter == stored.filter } }
    }

    /// Remove a subscription as stored; false if there was none.
    func unsubscribe(_ stored: String) -> Bool {
        if stored.isEmpty {
            defer { ownQoS = nil }
            return ownQoS != nil
        }
        guard let r = rare, let i = r.otherSubscriptions.firstIndex(where: { $0.filter == stored }) else { return false }
        r.otherSubscriptions.remove(at: i)
        settle()
        return true
    }

    func unsubscribeAll() {
        ownQoS = nil
        rare?.otherSubscriptions = []
        settle()
    }

    var queuedCount: Int { rare?.waiting?.count ?? 0 }

    private var queue: MessageQueue {
        let r = ensureRare
        if r.waiting == nil { r.waiting = MessageQueue() }
        return r.waiting!
    }

    /// Queue a message within the role's bounds and the node's budget; nil when
    /// queued, else why not (the caller counts and reports the drop).
    func enqueue(_ q: Queued, _ limits: QueueLimits, budget: Int) -> QueueDrop? {
        defer { settle() }
        return queue.enqueue(q, limits, budget: budget)
    }

    /// Put messages (from the mailbox) ahead of everything queued.
    func prepend(_ qs: [Queued]) { queue.prepend(qs); settle() }

    /// Does this connection already have this command (in flight or queued)?
    func has(_ tag: CommandTag) -> Bool {
        inflight.contains { $0.command?.tag == tag } || rare?.waiting?.has(tag) == true
    }

    /// Commands acknowledged while a mailbox fetch is out: the fetch may still list
    /// them (Redis answered it before their removal), and they must not go out again.
    func ackedDuringFetch(_ tag: CommandTag) {
        guard mailFetches > 0 else { return }
        queue.ackedDuringFetch.append(tag)
    }

    func wasAckedDuringFetch(_ tag: CommandTag) -> Bool { rare?.waiting?.ackedDuringFetch.contains(tag) == true }

    /// The last fetch was answered: forget what was acknowledged meanwhile.
    func fetchAnswered() {
        mailFetches -= 1
        if mailFetches == 0, let w = rare?.waiting { w.ackedDuringFetch.removeAll(); settle() }
    }

    func dequeue() -> Queued? {
        guard let w = rare?.waiting else { return nil }
        defer { settle() }
        return w.dequeue()
    }

    /// Messages dropped for this client since its connection began (or, while it is
    /// away, since it left): the first drop is logged, the total at the end.
    var drops: UInt32 {
        get { rare?.waiting?.drops ?? 0 }
        set {
            queue.drops = newValue
            settle()
        }
    }

    /// Next packet identifier not in use by an in-flight message (1...65535).
    func nextPacketID() -> UInt16 {
        let r = ensureRare
        repeat {
            r.lastPacketID = r.lastPacketID == UInt16.max ? 1 : r.lastPacketID + 1
        } while r.inflight.contains(where: { $0.packetID == r.lastPacketID })
        return r.lastPacketID
    }
}

/// A session's subscriptions, read: the own command topic's (an empty filter) first.
struct Subscriptions: Sequence {
    let own: QoS?
    let others: [TopicRequest]

    var count: Int { (own == nil ? 0 : 1) + others.count }

    func makeIterator() -> Iterator { Iterator(own: own, rest: others.makeIterator()) }

    struct Iterator: IteratorProtocol {
        var own: QoS?
        var rest: IndexingIterator<[TopicRequest]>
        mutating func next() -> TopicRequest? {
            if let q = own { own = nil; return TopicRequest("", q) }
            return rest.next()
        }
    }
}
