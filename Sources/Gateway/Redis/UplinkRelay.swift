import MQTTCodec
import PileLoop

/// An uplink command (a pile's PUBLISH or will as an XADD, and the dedup record
/// behind it): what its reply means to the shard whose pile sent it.
enum Uplink: Sendable, Equatable {
    /// A QoS 1/2 PUBLISH: acknowledge the pile once stored.
    case publish(slot: UInt32, generation: UInt32, packetID: UInt16, qos: QoS)
    /// A QoS 0 PUBLISH: nobody waits for it, its latency is measured.
    case qos0
    /// A will: bookkeeping, counted like a PUBLISH against the stream cap.
    case will
    /// The SETRANGE / PEXPIRE of a first transmission's dedup record: only an error matters.
    case record

    /// An XADD (or the dedup script around one), as opposed to its record.
    var isMessage: Bool { self != .record }
}

/// How Redis answered an uplink command, as a value that can cross to another shard.
enum UplinkOutcome: Sendable {
    /// Stored (`.uplinkStored`), or recognised by `Script.dedupAdd` as a resend or a
    /// repeated record: acknowledged all the same.
    case stored(Counter)
    /// An error reply: not stored.
    case refused(String)

    init(_ r: RedisReply) {
        if r.isError { self = .refused(r.text); return }
        switch r.integer {
        case 0: self = .stored(.uplinkResends)
        case -1: self = .stored(.uplinkRepeatedRecords)
        default: self = .stored(.uplinkStored)
        }
    }
}

/// One turn's uplink commands from a shard that does not write to Redis itself,
/// for its writer shard (Sources/ARCHITECTURE.md, "Uplink writers"): the RESP bytes
/// back to back, and per command its length, key slot, enqueue time and meaning.
struct RelayBatch: Sendable {
    typealias Command = (length: Int, slot: UInt16, at: UInt64, uplink: Uplink)
    var origin: Int
    var bytes: [UInt8]
    var commands: [Command]
}

/// A relayed command's answer, back to the shard that relayed it.
struct RelayAnswer: Sendable {
    var uplink: Uplink
    /// The origin's clock when it enqueued the command (the XADD latency histogram).
    var at: UInt64
    var outcome: UplinkOutcome
}

/// The uplink side of a shard's Redis bridge when the shard is not one of the node's
/// uplink writers: commands are gathered for the turn and handed to the writer in
/// one inbox post, so Redis gets a few deep pipelines instead of one shallow one per
/// shard. What it costs Redis per message is measured in bench/redis-cost.sh.
struct RelayOut {
    let writer: Int
    private var bytes = ByteBuffer()
    private var commands: [RelayBatch.Command] = []

    init(writer: Int) { self.writer = writer }

    mutating func add(_ u: Uplink, slot: UInt16, at: UInt64, _ write: (inout ByteBuffer) -> Void) {
        let before = bytes.count
        write(&bytes)
        commands.append((bytes.count - before, slot, at, u))
    }

    /// The turn's batch (nil: nothing this turn); the buffer is kept for the next.
    mutating func take(origin: Int) -> RelayBatch? {
        guard !commands.isEmpty else { return nil }
        let batch = RelayBatch(origin: origin, bytes: Array(bytes.bytes), commands: commands)
        commands = Self.successor(of: commands)
        bytes.clear()
        return batch
    }

    mutating func release() { bytes.release() }

    /// A new list for the next turn, the size of this one's: the old one went to
    /// another shard, so `removeAll(keepingCapacity:)` would allocate the largest
    /// turn's size on every turn (at full speed, hundreds of KiB a turn for a handful
    /// of commands).
    static func successor<T>(of handedOver: [T]) -> [T] {
        var next: [T] = []
        next.reserveCapacity(handedOver.count)
        return next
    }
}

extension RedisBridge {
    /// Writer side: another shard's batch joins this shard's pipeline, in its order.
    func carry(_ batch: RelayBatch) {
        batch.bytes.withUnsafeBytes { all in
            var offset = 0
            for c in batch.commands {
                let bytes = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + c.length)])
                link.enqueue(.relayed(c.uplink, origin: UInt16(batch.origin), at: c.at), slot: c.slot) { $0.append(bytes) }
                offset += c.length
            }
        }
        carried += batch.commands.count
    }

    /// Writer side: a relayed command was answered; the answer goes back at the end of the turn.
    func relayedReplied(_ u: Uplink, origin: Int, at: UInt64, _ r: RedisReply) {
        carried -= 1
        answers[origin].append(RelayAnswer(uplink: u, at: at, outcome: UplinkOutcome(r)))
    }

    /// End of a turn: relayed commands to the writer, answers to their shards.
    func postRelays(from shard: Int, to inboxes: [Inbox<ShardMessage>]) {
        if let batch = relay?.take(origin: shard) {
            inboxes[relay!.writer].post(.relay(batch))
        }
        for s in answers.indices where !answers[s].isEmpty {
            inboxes[s].post(.relayAnswers(answers[s]))
            answers[s] = RelayOut.successor(of: answers[s])
        }
    }
}
