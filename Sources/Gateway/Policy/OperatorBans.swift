import PileLoop

/// Bans an operator set (`POST /admin/bans/ID`), kept in Redis (`redis.bans_key`,
/// field = client id, value `UNTIL_MS|REASON`) so that every node of a fleet honours
/// them and they outlive a restart. This is the node's copy: the node that takes
/// the admin call applies it at once; every node reads the hash again every
/// `refreshMs` (shard 0), so a ban or an unban made elsewhere holds here within that.
final class OperatorBans: @unchecked Sendable {
    struct Ban: Sendable, Equatable {
        var untilMs: UInt64
        var reason: String
    }

    static let refreshMs: UInt64 = 2000
    private let lock = Lock()
    private var bans: [String: Ban] = [:]
    /// Bans set or lifted on this node lately (nil: lifted), and when: a refresh
    /// whose read crossed the write in the pipeline must not undo them.
    private var recent: [String: (ban: Ban?, atMs: UInt64)] = [:]

    /// Why a CONNECT with this client id is refused, or nil.
    func refusal(_ clientID: String, nowMs: UInt64) -> String? {
        lock.withLock {
            guard let b = bans[clientID], b.untilMs > nowMs else { return nil }
            return "banned by an operator for \((b.untilMs - nowMs) / 1000 + 1) s more: \(b.reason)"
        }
    }

    func set(_ clientID: String, _ ban: Ban?, nowMs: UInt64) {
        lock.withLock {
            bans[clientID] = ban
            recent[clientID] = (ban, nowMs)
        }
    }

    /// Replace the copy with what Redis holds; returns the client ids banned now that
    /// were not before (a connected one is closed).
    func replace(with fresh: [String: Ban], nowMs: UInt64) -> [String] {
        lock.withLock {
            var next = fresh
            recent = recent.filter { nowMs - $0.value.atMs < 3 * OperatorBans.refreshMs }
            for (id, r) in recent { next[id] = r.ban }
            let added = next.keys.filter { bans[$0] == nil }
            bans = next
            return added
        }
    }

    /// Active bans, for `GET /admin/bans`.
    func list(nowMs: UInt64) -> [(clientID: String, ban: Ban)] {
        lock.withLock { bans.filter { $0.value.untilMs > nowMs }.map { ($0.key, $0.value) }.sorted { $0.clientID < $1.clientID } }
    }

    /// The hash's value for a ban, and back.
    static func encode(_ b: Ban) -> String { "\(b.untilMs)|\(b.reason)" }
    static func decode(_ s: String) -> Ban? {
        guard let bar = s.firstIndex(of: "|"), let until = UInt64(s[..<bar]) else { return nil }
        return Ban(untilMs: until, reason: String(s[s.index(after: bar)...]))
    }
}
