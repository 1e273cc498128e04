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
        link.enqueue(expect, slot: link.slot(config.mailboxPrefix, c.device)) { b in
            b.respArray(7)
            b.respBulk("EVALSHA"); b.respBulk(Script.mailboxAdd.sha); b.respBulk("1")
            b.respBulk(config.mailboxPrefix, "", c.device)
            b.respBulk(c.tag.text); b.respBulk(value); b.respBulk(number: UInt64(maxPending))
        }
    }

    /// HDEL the command from its pile's mailbox: 1 if this removed it.
    func unmail(_ tag: CommandTag, device: String, expect: RedisExpectation) {
        link.enqueue(expect, slot: link.slot(config.mailboxPrefix, device)) { b in
            b.respArray(3)
            b.respBulk("HDEL"); b.respBulk(config.mailboxPrefix, "", device); b.respBulk(tag.text)
        }
    }

    /// HEXISTS: is the command still in its pile's mailbox (not ended yet)?
    func isMailed(_ tag: CommandTag, device: String, expect: RedisExpectation) {
        link.enqueue(expect, slot: link.slot(config.mailboxPrefix, device)) { $0.respCommand(["HEXISTS", mailbox(device), tag.text]) }
    }

    /// HGETALL of a pile's mailbox.
    func fetchMailbox(_ device: String, expect: RedisExpectation) {
        link.enqueue(expect, slot: link.slot(config.mailboxPrefix, device)) { $0.respCommand(["HGETALL", mailbox(device)]) }
    }

    /// An outcome entry: `id stream device outcome node ts [reason]`, written
    /// straight as RESP (one per command: no argument array).
    func outcome(_ tag: CommandTag, device: String, _ outcome: CommandOutcome, why: String?) {
        let ts = wallMillis()
        link.enqueue(.bookkeeping, slot: outcomeSlot) { b in
            b.respArray(18 + (why == nil ? 0 : 2))
            b.respBulk("XADD"); b.respBulk(config.outcomeStream); b.respBulk("MAXLEN"); b.respBulk("~"); b.respBulk(maxlen)
            b.respBulk("*")
            tag.withParts { id, stream in
                b.respBulk("id"); b.respBulk(id); b.respBulk("stream"); b.respBulk(stream)
            }
            b.respBulk("device"); b.respBulk(device); b.respBulk("outcome"); b.respBulk(outcome.rawValue)
            b.respBulk("node"); b.respBulk(node); b.respBulk("ts"); b.respBulk(number: ts)
            if let why { b.respBulk("reason"); b.respBulk(why) }
        }
    }

    /// XACK one command's entry, with the others ended this turn (`flushAcks`).
    func acknowledge(_ tag: CommandTag) { ended.append(tag) }

    /// End of a turn: one XACK per run of commands from the same stream (one run,
    /// mostly: each node reads one downlink stream).
    func flushAcks() {
        var start = 0
        while start < ended.count {
            var end = start + 1
            while end < ended.count && ended[end].sameStream(as: ended[start]) { end += 1 }
            let run = ended[start..<end]
            let slot = link.cluster ? run.first!.withParts { _, stream in HashSlot.of(stream) } : 0
            link.enqueue(.bookkeeping, slot: slot) { b in
                b.respArray(3 + run.count)
                b.respBulk("XACK"); run.first!.withParts { _, stream in b.respBulk(stream) }; b.respBulk(config.group)
                for t in run { t.withParts { id, _ in b.respBulk(id) } }
            }
            start = end
        }
        ended.removeAll(keepingCapacity: true)
    }

    /// XACK a batch of entries of one stream with one command.
    func acknowledge(stream: String, ids: [String]) {
        guard !ids.isEmpty else { return }
        link.enqueue(.bookkeeping, slot: link.slot(stream)) { $0.respCommand(["XACK", stream, config.group] + ids) }
    }
}
