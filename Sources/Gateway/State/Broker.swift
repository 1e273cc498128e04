import MQTTCodec
import PileLoop

/// Where a live connection is: shard, slab slot and that slot's generation,
/// packed in 64 bits (one per registered client, 200k of them).
struct Owner: Equatable, Sendable {
    private let bits: UInt64
    init(shard: Int, slot: UInt32, generation: UInt32) {
        bits = UInt64(shard & 0xFF) << 56 | UInt64(generation & 0xFF_FFFF) << 32 | UInt64(slot)
    }
    private init(bits: UInt64) { self.bits = bits }
    /// No owner (a shard index of 255 never occurs): lets `Broker.Client` store
    /// owners in 8 bytes instead of an Optional's 9 (padded to 16).
    static let none = Owner(bits: .max)
    var shard: Int { Int(bits >> 56) }
    var slot: UInt32 { UInt32(truncatingIfNeeded: bits) }
    var generation: UInt32 { UInt32(truncatingIfNeeded: bits >> 32) & 0xFF_FFFF }
}

/// One subscription in the index: which client (by registry handle) at which QoS.
struct Subscriber {
    var handle: UInt32
    var qos: QoS
}

/// A message bound for one connection on one shard.
struct Delivery: Sendable {
    var slot: UInt32
    var generation: UInt32
    var qos: QoS
    var retain: Bool
    var message: Message
    /// Set on the delivery to the pile a worker's command is for.
    var command: CommandRef? = nil
}

/// Where the pile a command is for stands, as the subscription index sees it.
enum CommandTarget {
    /// Connected and subscribed to the command's topic (at this QoS).
    case connected(QoS)
    /// Away with a persistent session that is subscribed, or connected and not yet
    /// subscribed to anything: stored, it goes out at the pile's next SUBSCRIBE.
    case away
    /// Connected or away with a session, subscribed but not to the command's topic.
    case notSubscribed
    /// No connection, no session.
    case offline
}

enum ConnectOutcome {
    /// Go ahead: the session to use, and whether it existed before (CONNACK flag).
    case ready(Session, present: Bool)
    /// Another connection holds the client id; it has been told to go. The shard
    /// gets `.resumeConnect` when it has.
    case waitForTakeover
}

/// The state every shard shares: who is connected where, the subscription index,
/// sessions of absent clients and retained messages. One lock; each critical
/// section is a map lookup or a tree walk, never I/O.
///
/// Subscriptions are indexed by client handle, not by connection, so a persistent
/// session keeps receiving (queued) while its client is away and after it moves
/// to another shard.
final class Broker: @unchecked Sendable {
    private struct Client {
        var clientID: String
        /// The session of a clean-session-0 client that is away.
        var parked: Session?
        private var ownerBits = Owner.none
        private var waitingBits = Owner.none
        /// Stamp of the last routing pass that matched this client (dedupe).
        var stamp: UInt32 = 0
        var stampQoS: QoS = .atMostOnce
        /// Has subscribed since its session began: until then a command for it waits
        /// in its mailbox (a pile reconnecting clean subscribes a moment after CONNACK).
        var subscribed = false
        /// The QoS of its subscription to its own command topic (OwnTopic), if any.
        var ownQoS: QoS?

        init(clientID: String, owner: Owner) {
            self.clientID = clientID
            ownerBits = owner
        }

        var owner: Owner? {
            get { ownerBits == .none ? nil : ownerBits }
            set { ownerBits = newValue ?? .none }
        }
        /// A CONNECT with this id waiting for the current owner to leave.
        var waiting: Owner? {
            get { waitingBits == .none ? nil : waitingBits }
            set { waitingBits = newValue ?? .none }
        }
    }

    /// A filter without wildcards and its subscribers.
    private struct ExactTopic {
        var filter: String
        var subscribers: InlineList<Subscriber>
    }

    private let lock = Lock()
    private var clients = SlotTable<Client>()
    /// Client id -> handle in `clients`.
    private var byID = HandleIndex()
    /// Filters without wildcards (a pile's own command topic): one hash lookup.
    private var topics = SlotTable<ExactTopic>()
    private var exact = HandleIndex()
    /// Filters with `+` or `#` (operators): a level tree.
    private let wildcard = TopicTree<Subscriber>()
    private let retained = TopicTree<Message>()
    private var retainedCount = 0
    private var retainedBytes = 0
    private var stamp: UInt32 = 0
    private var matched: [UInt32] = []
    /// Today's traffic of devices whose clean session ended, so reconnecting does
    /// not reset a daily quota. Only kept when a quota is configured.
    private var usage: [String: DailyUsage] = [:]
    private let keepUsage: Bool
    /// Queue bounds and deny rules for the sessions parked here (by their role).
    private var acl: ACL
    private let queueBudget: Int
    let inboxes: [Inbox<ShardMessage>]
    let counters: Counters

    /// The command topic pattern at start: subscriptions to a pile's own are interned.
    let ownTopic: OwnTopic

    init(acl: ACL, queueBudget: Int, keepUsage: Bool, ownTopic: OwnTopic, inboxes: [Inbox<ShardMessage>],
         counters: Counters) {
        self.acl = acl
        self.ownTopic = ownTopic
        self.queueBudget = queueBudget
        self.keepUsage = keepUsage
        self.inboxes = inboxes
        self.counters = counters
    }

    /// Size the client and exact-topic tables for the expected client count (about
    /// one command topic each). The hash indexes are left to grow: zero-filled
    /// buckets would make every page resident at any client count.
    func reserve(clients n: Int) {
        lock.withLock { clients.reserve(n); topics.reserve(n) }
    }

    // MARK: Connect, takeover, leave

    func beginConnect(clientID: String, owner: Owner, cleanSession: Bool) -> ConnectOutcome {
        lock.withLock {
            guard let h = handle(of: clientID) else {
                let h = allocateHandle(Client(clientID: clientID, owner: owner))
                return .ready(newSession(clientID, h, cleanSession), present: false)
            }
            var c = clients[h]!
            if let previous = c.waiting, previous != owner {
                // A third connection overtakes one still waiting: that one goes.
                inboxes[previous.shard].post(.kick(slot: previous.slot, generation: previous.generation,
                                                   reason: .takeover))
            }
            if let current = c.owner {
                c.waiting = owner
                clients[h] = c
                inboxes[current.shard].post(.kick(slot: current.slot, generation: current.generation,
                                                  reason: .takeover))
                return .waitForTakeover
            }
            c.waiting = nil
            c.owner = owner
            let parked = c.parked
            c.parked = nil
            if parked == nil || cleanSession { c.subscribed = false }
            clients[h] = c
            if let s = parked, !cleanSession {
                return .ready(s, present: true)
            }
            if let s = parked { dropSubscriptions(s) }
            let s = newSession(clientID, h, cleanSession)
            if let parked { s.usage = parked.usage }
            return .ready(s, present: false)
        }
    }

    /// The connection holding `session` is gone. A persistent session is parked
    /// (and keeps collecting QoS 1/2 messages); a clean one is discarded.
    func detach(_ session: Session, owner: Owner) {
        lock.withLock {
            guard var c = clients[session.handle], c.owner == owner else { return }
            c.owner = nil
            if session.persistent {
                c.parked = session
            } else {
                dropSubscriptions(session)
                if keepUsage { usage[c.clientID] = session.usage }
            }
            if let w = c.waiting {
                clients[session.handle] = c
                inboxes[w.shard].post(.resumeConnect(slot: w.slot, generation: w.generation))
            } else if c.parked == nil {
                freeHandle(session.handle, clientID: c.clientID)
            } else {
                clients[session.handle] = c
            }
        }
    }

    private func newSession(_ clientID: String, _ h: UInt32, _ cleanSession: Bool) -> Session {
        let s = Session(clientID: clientID, handle: h, persistent: !cleanSession)
        if keepUsage, let u = usage.removeValue(forKey: clientID) { s.usage = u }
        return s
    }

    /// Drop carried usage from days before `today` (called when the day turns).
    func forgetUsage(before today: UInt32) {
        lock.withLock { usage = usage.filter { $0.value.day >= today } }
    }

    /// Someone here subscribes with a wildcard (the fleet feed reads for them).
    var hasWildcardSubscribers: Bool { lock.withLock { !wildcard.root.isEmpty } }

    /// Whether the client is connected here, or away with a session kept here.
    func holds(_ clientID: String) -> Bool {
        lock.withLock { handle(of: clientID).map { clients[$0]!.owner != nil || clients[$0]!.parked != nil } ?? false }
    }

    /// The pile connected to another node: a session of it parked here is dropped
    /// (what it needs of it there, its undelivered commands, is in Redis).
    func dropParked(_ clientID: String) {
        lock.withLock {
            guard let h = handle(of: clientID), var c = clients[h], c.owner == nil, c.waiting == nil,
                  let s = c.parked else { return }
            dropSubscriptions(s)
            c.parked = nil
            clients[h] = c
            freeHandle(h, clientID: clientID)
        }
    }

    /// A connection that was waiting for a takeover closed before it finished.
    func abandonConnect(clientID: String, owner: Owner) {
        lock.withLock {
            guard let h = handle(of: clientID), var c = clients[h], c.waiting == owner else { return }
            c.waiting = nil
            if c.owner == nil && c.parked == nil {
                freeHandle(h, clientID: clientID)
            } else {
                clients[h] = c
            }
        }
    }

    private func allocateHandle(_ c: Client) -> UInt32 {
        let h = clients.insert(c)
        byID.insert(c.clientID, h, keyOf: clientID)
        return h
    }

    private func freeHandle(_ h: UInt32, clientID id: String) {
        byID.remove(id, h, keyOf: clientID)
        clients.remove(h)
    }

    private func handle(of id: String) -> UInt32? { byID.find(id, keyOf: clientID) }
    private func clientID(_ h: UInt32) -> String { clients[h]!.clientID }
    private func exactTopic(_ filter: String) -> UInt32? { exact.find(filter, keyOf: topicFilter) }
    private func topicFilter(_ t: UInt32) -> String { topics[t]!.filter }

    // MARK: Subscriptions

    /// Add or replace (3.8.4-3) a subscription.
    func subscribe(_ session: Session, _ request: TopicRequest) {
        let sub = Subscriber(handle: session.handle, qos: request.qos)
        let own = ownTopic.isOwn(request.filter, clientID: session.clientID)
        lock.withLock {
            clients[session.handle]?.subscribed = true
            if own {
                clients[session.handle]?.ownQoS = request.qos
            } else if Topic.hasWildcard(request.filter.utf8) {
                wildcard.node(for: request.filter).values.upsert(sub) { $0.handle == sub.handle }
            } else {
                if let t = exactTopic(request.filter) {
                    topics[t]!.subscribers.upsert(sub) { $0.handle == sub.handle }
                } else {
                    exact.insert(request.filter, topics.insert(ExactTopic(filter: request.filter, subscribers: [sub])),
                                 keyOf: topicFilter)
                }
            }
        }
        let stored = own ? TopicRequest("", request.qos) : request
        session.subscribe(stored)
    }

    func unsubscribe(_ session: Session, _ filter: String) {
        let stored = ownTopic.stored(filter, clientID: session.clientID)
        guard session.unsubscribe(stored) else { return }
        lock.withLock { removeIndex(stored, session.handle) }
    }

    private func dropSubscriptions(_ session: Session) {
        for s in session.subscriptions { removeIndex(s.filter, session.handle) }
        session.unsubscribeAll()
    }

    private func removeIndex(_ filter: String, _ handle: UInt32) {
        if filter.isEmpty {
            clients[handle]?.ownQoS = nil
        } else if Topic.hasWildcard(filter.utf8) {
            wildcard.edit(filter) { $0.removeAll { $0.handle == handle } }
        } else if let t = exactTopic(filter), topics[t]!.subscribers.remove(where: { $0.handle == handle }),
                  topics[t]!.subscribers.isEmpty {
            exact.remove(filter, t, keyOf: topicFilter)
            topics.remove(t)
        }
    }

    // MARK: Routing

    /// Find every client subscribed to `message.topic`, once each at the highest
    /// matching QoS (3.3.5), capped by the message's QoS. Live clients' deliveries
    /// are appended to `out[shard]`; absent persistent clients get it queued.
    /// `except`: the pile a worker's command is for, which gets it on its own path
    /// (`Shard.sendCommand`), not as a copy; where its connection is, if it has one.
    @discardableResult
    func route(_ message: Message, into out: inout [[Delivery]], except: String? = nil,
               wildcardOnly: Bool = false) -> Owner? {
        lock.withLock {
            let skip = except.flatMap(handle(of:))
            match(message.topic, wildcardOnly: wildcardOnly)
            for h in matched where h != skip {
                let c = clients[h]!
                let qos = min(c.stampQoS, message.qos)
                if let o = c.owner {
                    out[o.shard].append(Delivery(slot: o.slot, generation: o.generation, qos: qos,
                                                 retain: false, message: message))
                } else if let s = c.parked, qos != .atMostOnce {
                    // As `Shard.deliver` does for a live client; drops are reported when it returns.
                    if !acl.mayReceive(s, topic: message.topic) {
                        counters.add(.deliveriesDenied)
                    } else if let why = s.enqueue(Queued(message: message, qos: qos, retain: false),
                                                  acl.queueLimits(s.role), budget: queueBudget) {
                        counters.add(why.counter)
                        s.drops &+= 1
                    }
                }
            }
            return skip.flatMap { clients[$0]?.owner }
        }
    }

    /// Where the pile `clientID` stands for a command on `topic`, without routing it.
    func commandTarget(_ clientID: String, topic: String, qos: QoS) -> CommandTarget {
        lock.withLock {
            guard let h = handle(of: clientID), clients[h]!.owner != nil || clients[h]!.parked != nil else {
                return .offline
            }
            match(topic)
            let c = clients[h]!
            if c.stamp != stamp { return c.owner != nil && !c.subscribed ? .away : .notSubscribed }
            return c.owner != nil ? .connected(min(c.stampQoS, qos)) : .away
        }
    }


    /// Stamp every client subscribed to `topic` and list them in `matched` (under the lock).
    private func match(_ topic: String, wildcardOnly: Bool = false) {
        stamp &+= 1
        matched.removeAll(keepingCapacity: true)
        // Closure literals at the call sites stay non-escaping: no allocation per publish.
        if !wildcardOnly, let t = exactTopic(topic) { topics[t]!.subscribers.forEach { mark($0) } }
        if !wildcardOnly, let id = ownTopic.clientID(of: topic), let h = handle(of: id), let q = clients[h]?.ownQoS {
            mark(Subscriber(handle: h, qos: q))
        }
        wildcard.match(topic: topic) { mark($0) }
    }

    private func mark(_ s: Subscriber) {
        guard var c = clients[s.handle] else { return }
        if c.stamp != stamp {
            c.stamp = stamp
            c.stampQoS = s.qos
            matched.append(s.handle)
        } else if s.qos > c.stampQoS {
            c.stampQoS = s.qos
        }
        clients[s.handle] = c
    }

    // MARK: Retained messages

    /// Store (or with an empty payload, delete: 3.3.1-10/11) the retained message;
    /// false when it would take the store past `limits` (it is then not retained,
    /// and one already there for the topic stays). Nil `limits`: neither bounded nor
    /// counted (the gateway's own $SYS topics, a fixed set).
    func retain(_ message: Message, limits: (messages: Int, bytes: Int)?) -> Bool {
        let size = message.topic.utf8.count + message.payload.count
        return lock.withLock {
            guard let limits else {
                if message.payload.isEmpty { retained.edit(message.topic) { $0.removeAll() } }
                else { retained.node(for: message.topic).values = [message] }
                return true
            }
            var old: Message?
            retained.edit(message.topic) { values in
                old = values.first
                if message.payload.isEmpty { values.removeAll() }
            }
            let oldSize = old.map { $0.topic.utf8.count + $0.payload.count } ?? 0
            if message.payload.isEmpty {
                if old != nil { retainedCount -= 1; retainedBytes -= oldSize }
                return true
            }
            guard (old != nil || retainedCount < limits.messages) && retainedBytes - oldSize + size <= limits.bytes else {
                return false
            }
            retained.node(for: message.topic).values = [message]
            if old == nil { retainedCount += 1 }
            retainedBytes += size - oldSize
            return true
        }
    }

    /// Retained messages and their topic and payload bytes.
    var retainedUsage: (messages: Int, bytes: Int) { lock.withLock { (retainedCount, retainedBytes) } }

    func retainedMessages(matching filter: String) -> [Message] {
        var found: [Message] = []
        lock.withLock { retained.collect(filter: filter) { found.append($0) } }
        return found
    }

    /// Where a client's live connection is, if it has one (admin API).
    func owner(of clientID: String) -> Owner? {
        lock.withLock { handle(of: clientID).flatMap { clients[$0]?.owner } }
    }

    /// A reload's ACL, for the sessions parked here.
    func reload(acl: ACL) { lock.withLock { self.acl = acl } }

    // MARK: Figures

    var clientCount: Int { lock.withLock { byID.count } }
}

