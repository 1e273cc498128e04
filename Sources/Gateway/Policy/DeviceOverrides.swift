import Atomics
import PileLoop

/// One device's exceptions to the send-rate rules (SIM data overruns, a pile that
/// must be quiet for a while), from the Redis hash `rate.overrides_hash`: field =
/// client id, value `key=value;...` with `messages_per_second`, `burst`,
/// `bytes_per_second`, `bytes_burst`, `daily_quota_bytes`, `banned_until` (wall ms)
/// and `note`. Limits replace those of the rule that applies to a PUBLISH (its
/// action stays); the quota replaces `daily_quota_bytes`.
struct DeviceOverride: Sendable, Equatable {
    var messages: GCRA?
    var bytes: GCRA?
    var quota: UInt64?
    var bannedUntilMs: UInt64?
    var note = ""
    /// The value as stored (listing, change detection).
    var text = ""

    static func == (a: DeviceOverride, b: DeviceOverride) -> Bool { a.text == b.text }

    /// Parse a value; nil with a reason when a key or number is wrong.
    static func parse(_ text: String) -> Result<DeviceOverride, Config.Invalid> {
        var o = DeviceOverride(text: text)
        var mps = 0.0, burst = 1, bps = 0.0, bburst = 1
        for part in text.split(separator: ";") where !part.isEmpty {
            let kv = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { return .failure(.init(description: "\"\(part)\" is not key=value")) }
            let (k, v) = (kv[0], kv[1])
            func number<T: LosslessStringConvertible>(_ t: T.Type) -> T? { T(v) }
            switch k {
            case "messages_per_second": guard let x = number(Double.self), x >= 0 else { return bad(k, v) }; mps = x
            case "burst": guard let x = number(Int.self), x >= 1 else { return bad(k, v) }; burst = x
            case "bytes_per_second": guard let x = number(Double.self), x >= 0 else { return bad(k, v) }; bps = x
            case "bytes_burst": guard let x = number(Int.self), x >= 1 else { return bad(k, v) }; bburst = x
            case "daily_quota_bytes": guard let x = number(UInt64.self) else { return bad(k, v) }; o.quota = x
            case "banned_until": guard let x = number(UInt64.self) else { return bad(k, v) }; o.bannedUntilMs = x
            case "note": o.note = v
            default: return .failure(.init(description: "unknown key \(k)"))
            }
        }
        o.messages = GCRA(perSecond: mps, burst: burst)
        o.bytes = GCRA(perSecond: bps, burst: bburst)
        return .success(o)
    }

    private static func bad(_ k: String, _ v: String) -> Result<DeviceOverride, Config.Invalid> {
        .failure(.init(description: "\(k) = \"\(v)\" is not a valid number"))
    }
}

/// The node's copy of the overrides hash: shard 0 reads the hash every
/// `rate.overrides_cache_seconds` (and at once after an admin change) and replaces
/// it; each shard takes a copy when the generation moves, so a PUBLISH looks up a
/// local dictionary (and nothing at all while there are no overrides).
final class DeviceOverrides: @unchecked Sendable {
    private let lock = Lock()
    private var map: [String: DeviceOverride] = [:]
    let generation = ManagedAtomic<UInt64>(0)

    func replace(_ fresh: [String: DeviceOverride]) {
        let changed = lock.withLock { () -> Bool in
            guard fresh != map else { return false }
            map = fresh
            return true
        }
        if changed { generation.wrappingIncrement(ordering: .releasing) }
    }

    var snapshot: [String: DeviceOverride] { lock.withLock { map } }
}
