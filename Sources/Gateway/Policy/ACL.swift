import MQTTCodec

/// Per-client topic rules by role. A client's role is settled once at CONNECT (a
/// small index kept in its Session); each check walks that role's few patterns
/// level by level, substituting `%c`/`%u` in place, so it costs the same with 10
/// or 200,000 devices and allocates nothing.
struct ACL: Sendable {
    enum Level: Sendable, Equatable {
        case literal([UInt8]), plus, hash, clientID, username
    }

    struct Role: Sendable {
        var name: String
        var publish: [[Level]]
        var subscribe: [[Level]]
    }

    let enabled: Bool
    private let roles: [Role]
    private let defaultRole: UInt16
    private let anonymousRole: UInt16
    private let users: [String: UInt16]

    init(_ c: Config.ACL) {
        enabled = c.enabled
        let names = c.roles.keys.sorted()
        roles = names.map { n in
            Role(name: n, publish: c.roles[n]!.publish.map(ACL.compile), subscribe: c.roles[n]!.subscribe.map(ACL.compile))
        }
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

    func mayPublish(_ role: UInt16, topic: String, clientID: String, username: String?) -> Bool {
        !enabled || roles[Int(role)].publish.contains { ACL.matches($0, topic, clientID, username, subset: false) }
    }

    /// A subscription is allowed when every topic it can match is allowed.
    func maySubscribe(_ role: UInt16, filter: String, clientID: String, username: String?) -> Bool {
        !enabled || roles[Int(role)].subscribe.contains { ACL.matches($0, filter, clientID, username, subset: true) }
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
