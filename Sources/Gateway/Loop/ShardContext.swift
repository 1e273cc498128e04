import Atomics
import PileLoop

struct ShardContext: Sendable {
    /// The config and policy at start; each shard keeps its own current one
    /// (`Shard.policy`), replaced by a reload.
    let policy: PolicySet
    let broker: Broker
    let inboxes: [Inbox<ShardMessage>]
    let counters: [Counters]
    let listenFD: Int32
    /// The TLS listener (nil: none); its context is in the policy.
    let tlsListenFD: Int32?
    /// Redis for the bridge (nil: bridge off).
    let redisAddress: SocketAddress?
    let connectGuard: ConnectGuard
    let operatorBans: OperatorBans
    let overrides: DeviceOverrides
    /// The uplink streams as the stream review last saw them (worker lag).
    let streams: StreamWatch
    let fileTableSize: Int
    /// Live connections over all shards, for the max_connections limit.
    let live: LiveCount
    /// Open connections per shard, for the spill rule in `Shard.wantsConnections`.
    let occupancy: [LiveCount]
    /// Shards that always accept: one per core. The rest exist only for fixed-file
    /// capacity and take connections once the shards before them are full.
    let primaryShards: Int
    /// Shards that write uplink commands to Redis themselves; every other shard hands
    /// them to shard `index % uplinkWriters` (Redis/UplinkRelay.swift).
    let uplinkWriters: Int
    /// Shards that relay and have not stopped yet: a writer outlives them at shutdown.
    let relayers: LiveCount
    let startedAt: UInt64
}

/// Live connections over all shards.
final class LiveCount: Sendable {
    private let value = ManagedAtomic<Int>(0)
    /// Count one more; returns the new total.
    @discardableResult func add() -> Int { value.wrappingIncrementThenLoad(ordering: .relaxed) }
    func remove() { value.wrappingDecrement(ordering: .relaxed) }
    var current: Int { value.load(ordering: .relaxed) }
}
