/// Operation codes in the user_data tag (`Tag.op`): what a completion is for.
/// `Shard.complete` switches on them.
enum Op {
    static let accept: UInt8 = 1
    static let recv: UInt8 = 2
    static let send: UInt8 = 3
    static let cancel: UInt8 = 4
    static let close: UInt8 = 5
    static let timer: UInt8 = 6
    static let inbox: UInt8 = 7
    // Redis connections: the tag's slot is the connection id, its generation the
    // connection attempt, so completions for an abandoned socket are ignored.
    static let redisConnect: UInt8 = 8
    static let redisSend: UInt8 = 9
    static let redisRecv: UInt8 = 10
    /// An uplink writer's Redis pipeline held back (`redis.write_interval_us`) is due.
    static let redisLinger: UInt8 = 11
}
