import PileLoop

/// Messages between shards (and from the main thread), through each shard's inbox.
enum ShardMessage: Sendable {
    case deliver(Delivery)
    /// Close this connection (its client id was taken over, or a newer CONNECT won).
    case kick(slot: UInt32, generation: UInt32, reason: CloseReason)
    /// Its client id connected to another node at `since` (wall ms): close this
    /// connection if it is older, and let its session go.
    case movedAway(slot: UInt32, generation: UInt32, since: UInt64)
    /// The previous holder of this connection's client id is gone: finish CONNECT.
    case resumeConnect(slot: UInt32, generation: UInt32)
    /// Admin API: describe one connection; list this shard's top clients by bytes today.
    case inspect(slot: UInt32, generation: UInt32, reply: Inbox<ClientInfo>)
    case top(Int, reply: Inbox<[ClientInfo]>)
    /// Shard 0, for the console: the fleet's nodes as they last said; nil: Redis is away.
    case nodes(reply: Inbox<[[String: String]]?>)
    /// Shard 0, for the console: the newest events (of one device); nil: Redis is away.
    case events(limit: Int, device: String?, reply: Inbox<[[String: String]]?>)
    /// Close connected piles, `perTick` each 100 ms tick, so they reconnect elsewhere.
    case drain(perTick: Int)
    /// Shard 0: write an operator's ban (nil: unban) to Redis, with its event.
    case operatorBan(clientID: String, OperatorBans.Ban?)
    /// Shard 0: write a device override (nil: clear it) to Redis, with its event.
    case override(clientID: String, String?)
    /// A reload (Server.reload): use this config and policy from now on; say so.
    case reload(PolicySet, done: Inbox<Int>)
    /// To a writer shard: another shard's uplink commands of one turn.
    case relay(RelayBatch)
    /// From a writer shard: the answers to relayed commands.
    case relayAnswers([RelayAnswer])
    case shutdown
}

