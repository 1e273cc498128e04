import PileLoop
/// What a shard writes to Redis for commands (Sources/ARCHITECTURE.md, "The Redis
/// contract"): the pile's mailbox, the outcome stream, XACKs on the downlink
/// stream the command came from. Not subject to the bookkeeping bound: these are
/// the command's state, not statistics, and each is bounded by the commands
/// outstanding (`downlink.max_pending` per pile).
extension RedisBridge {
    func mailbox(_ device: String) -> String { config.mailboxPrefix + device }

    /// Store a command in its pile's mailbox unless it is there (`Script.mailboxAdd`),
    /// pushing out the oldest past `maxPending`.
    func store(_ c: Command, maxPending: Int, expect: RedisExpectation) {
        let value = c.mailboxValue
        connection.enqueue(expect) { b in
            b.respArray(7)
            b.respBulk("EVALSHA"); b.respBulk(Script.mailboxAdd.sha); b.respBulk("1"); b.respBulk(mailbox(c.device))
            b.respBulk(c.tag.text); b.respBulk(value); b.respBulk(number: UInt64(maxPending))
        }
    }

    /// HDEL the command from its pile's mailbox: 1 if this removed it.
    func unmail(_ tag: CommandTag, device: String, expect: RedisExpectation) {
        connection.enqueue(expect) { $0.respCommand(["HDEL", mailbox(device), tag.text]) }
    }

    /// HEXISTS: is the command still in its pile's mailbox (not ended yet)?
    func isMailed(_ tag: CommandTag, device: String, expect: RedisExpectation) {
        connection.enqueue(expect) { $0.respCommand(["HEXISTS", mailbox(device), tag.text]) }
    }

    /// HGETALL of a pile's mailbox.
    func fetchMailbox(_ device: String, expect: RedisExpectation) {
        connection.enqueue(expect) { $0.respCommand(["HGETALL", mailbox(device)]) }
    }

    /// An outcome entry: `id stream device outcome node ts [reason]`.
    func outcome(_ tag: CommandTag, device: String, _ outcome: CommandOutcome, why: String?) {
        var args = ["XADD", config.outcomeStream, "MAXLEN", "~", maxlen, "*", "id", tag.entryID, "stream", tag.stream,
                    "device", device, "outcome", outcome.rawValue, "node", node, "ts", String(wallMillis())]
        if let why { args += ["reason", why] }
        connection.enqueue(.bookkeeping) { $0.respCommand(args) }
    }

    /// XACK one command's entry on the stream it came from.
    func acknowledge(_ tag: CommandTag) {
        connection.enqueue(.bookkeeping) { $0.respCommand(["XACK", tag.stream, config.group, tag.entryID]) }
    }

    /// XACK a batch of entries of one stream with one command.
    func acknowledge(stream: String, ids: [String]) {
        guard !ids.isEmpty else { return }
        connection.enqueue(.bookkeeping) { $0.respCommand(["XACK", stream, config.group] + ids) }
    }
}
