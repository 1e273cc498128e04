import MQTTCodec

/// Per-client topic rules by role. A client's role is settled once at CONNECT (a
/// small index kept in its Session); each check walks that role's few patterns
/// level by level, substituting `%c`/`%u` in place, so it costs the same with 10
/// or 200,000 devices and allocates nothing. Deny patterns win over allow patterns
/// (as Mosquitto's `topic deny` and EMQX's deny rules do). A role also carries the
/// bounds on what may wait for one of its clients.
struct ACL: Sendable {
    enum Level: Sendable, Equatable {
        case literal([UInt8]), plus, hash, clientID, username
    }

    struct Role: Sendable {
        var name: String
        var publish: [[Level]]
        var subscribe: [[Level]]
        var denyPublish: [[Level]]
        var denySubscribe: [[Level]]
        /// `bind_client_id` is on and some pattern of the role uses `%c`.
        var bindsClientID: Bool
        var queue: QueueLimits
    }

    let enabled: Bool
    private let roles: [Role]
    /// Per role, read per delivered message: flat, so the hot path copies no Role.
    private let filters: [Bool]
    private let limits: [QueueLimits]
    private let defaultRole: UInt16
    private let anonymousRole: UInt16
    private let users: [String: UInt16]

    /// `mqtt`: the queue bounds of roles that set none of their own. `keeping`: the
    /// ACL this one replaces (a reload). Its roles keep their indices, so the role a
    /// connected client holds (an index in its Session) names the same role after
    /// the reload, with the new rules; a role the new config drops stays as a role
    /// with no grants (its clients may do nothing until they reconnect), new roles
    /// come after.
    init(_ c: Config.ACL, mqtt: Config.MQTT = Config.MQTT(), keeping previous: ACL? = nil) {
        enabled = c.enabled
        let kept = previous?.roles.map(\.name) ?? []
        let names = kept + c.roles.keys.filter { !kept.contains($0) }.sorted()
        roles = names.map { n in
            let r = c.roles[n] ?? Config.Role(publish: [], subscribe: [])
            let all = (r.publish + r.subscribe + r.denyPublish + r.denySubscribe).map(ACL.compile)
            return Role(name: n, publish: r.publish.map(ACL.compile), subscribe: r.subscribe.map(ACL.compile),
                        denyPublish: r.denyPublish.map(ACL.compile), denySubscribe: r.denySubscribe.map(ACL.compile),
                        bindsClientID: r.bindClientID && all.contains { $0.contains(.clientID) },
                        queue: QueueLimits(messages: r.maxQueuedMessages ?? mqtt.maxQueuedMessages,
                                           bytes: r.maxQueuedBytes ?? mqtt.maxQueuedBytes,
                                           sendBuffer: r.maxSendBuffer ?? mqtt.maxSendBuffer))
        }
        filters = roles.map { c.enabled && !$0.denySubscribe.isEmpty }
        limits = roles.map(\.queue)
        let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, UInt16($0)) })
        defaultRole = index[c.defaultRole] ?? 0
        anonymousRole = index[c.anonymousRole] ?? 0
        users = c.users.compactMapValues { index[$0] }
    }

    static func compile(_ pattern: String) -> [Level] {
        pattern.split(separator: "/", omittingEmptySubsequences: false).map {
            switch $0 {
            case "+": .plus
            case "#": .hash
            case "%c": .clientID
            case "%u": .username
            default: .literal(Array($0.utf8))
            }
        }
    }

    func role(username: String?, authenticated: Bool) -> UInt16 {
        guard authenticated, let username else { return anonymousRole }
        return users[username] ?? defaultRole
    }

    func roleName(_ r: UInt16) -> String { roles[Int(r)].name }

    /// Roles the config no longer names (kept, with no grants, for connected clients).
    func removedRoles(_ c: Config.ACL) -> [String] { roles.map(\.name).filter { c.roles[$0] == nil } }

    /// An authenticated client of this role must use its user name as client id.
    func bindsClientID(_ r: UInt16) -> Bool { enabled && roles[Int(r)].bindsClientID }

    func queueLimits(_ r: UInt16) -> QueueLimits { limits[Int(r)] }

    /// Allowed by a publish pattern and by no deny_publish pattern.
    func mayPublish(_ role: UInt16, topic: String, clientID: String, username: String?) -> Bool {
        !enabled || (roles[Int(role)].publish.contains { ACL.matches($0, topic, clientID, username, subset: false) }
            && !roles[Int(role)].denyPublish.contains { ACL.matches($0, topic, clientID, username, subset: false) })
    }

    /// A subscription is allowed when every topic it can match is allowed.
    func maySubscribe(_ role: UInt16, filter: String, clientID: String, username: String?) -> Bool {
        !enabled || roles[Int(role)].subscribe.contains { ACL.matches($0, filter, clientID, username, subset: true) }
    }

    /// The filter lies wholly inside a deny_subscribe pattern: refused (0x80). A
    /// filter that only overlaps one is granted; `mayReceive` then keeps the denied
    /// topics from it.
    func deniesSubscribe(_ role: UInt16, filter: String, clientID: String, username: String?) -> Bool {
        enabled && roles[Int(role)].denySubscribe.contains { ACL.matches($0, filter, clientID, username, subset: true) }
    }

    /// The role has deny_subscribe patterns, so each message delivered to it is checked.
    func filtersDeliveries(_ role: UInt16) -> Bool { filters[Int(role)] }

    /// A message on `topic` may reach this session's client: its role denies nothing,
    /// or no deny_subscribe pattern covers the topic. One flag load on the usual path.
    func mayReceive(_ s: Session, topic: String) -> Bool {
        !filtersDeliveries(s.role) || mayReceive(s.role, topic: topic, clientID: s.clientID, username: s.username)
    }

    /// A message on `topic` may reach a client of this role (no deny_subscribe covers it).
    func mayReceive(_ role: UInt16, topic: String, clientID: String, username: String?) -> Bool {
        !roles[Int(role)].denySubscribe.contains { ACL.matches($0, topic, clientID, username, subset: false) }
    }

    /// Does the pattern cover `subject` (a topic, or with `subset` a filter whose
    /// wildcards must fall within the pattern's)? Topics starting with `$` are only
    /// covered by patterns that name the `$` level (as in topic matching, 4.7.2).
    private static func matches(_ pattern: [Level], _ subject: String, _ clientID: String, _ username: String?,
                                subset: Bool) -> Bool {
        var s = subject, c = clientID, u = username ?? ""
        return s.withUTF8 { sb in
            c.withUTF8 { cb in
                u.withUTF8 { ub in matches(pattern, sb, cb, username == nil ? nil : ub, subset: subset) }
            }
        }
    }

    /// The walk itself, over contiguous UTF-8 (byte compares, no Unicode work).
    private static func matches(_ pattern: [Level], _ subject: UnsafeBufferPointer<UInt8>,
                                _ clientID: UnsafeBufferPointer<UInt8>, _ username: UnsafeBufferPointer<UInt8>?,
                                subset: Bool) -> Bool {
        var levels = Topic.Levels(subject)
        var first = true
        for p in pattern {
            if p == .hash {
                return !(first && subject.first == UInt8(ascii: "$"))
            }
            guard let l = levels.next() else { return false }
            let wild = subset && (l.isLevel("+") || l.isLevel("#"))
            switch p {
            case .plus:
                if first && l.first == UInt8(ascii: "$") { return false }
                if subset && l.isLevel("#") { return false }
            case .literal(let s):
                if wild { return false }
                if !s.withUnsafeBufferPointer({ l.sameBytes($0) }) { return false }
            case .clientID:
                if wild || !l.sameBytes(clientID) { return false }
            case .username:
                guard let username, !wild, l.sameBytes(username) else { return false }
            case .hash:
                break
            }
            first = false
        }
        return levels.next() == nil
    }
}

/// What may wait for one client: QoS 1/2 messages past the in-flight window (count
/// and bytes), and bytes of QoS 0 in its send buffer.
struct QueueLimits: Sendable {
    var messages: Int
    var bytes: Int
    var sendBuffer: Int
}
