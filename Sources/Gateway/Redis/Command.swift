import MQTTCodec

/// What became of one command: the outcome stream's `outcome` field. Every command
/// gets exactly one final outcome; `queued` is the one interim outcome.
enum CommandOutcome: String, CaseIterable, Sendable {
    /// The pile acknowledged it: PUBACK (QoS 1) or PUBCOMP (QoS 2).
    case acked
    /// QoS 0 (or a pile subscribed at QoS 0): written to the pile's connection.
    case sent
    /// Interim: kept in the pile's mailbox until it is back and subscribed.
    case queued
    /// Not connected and no session that could hold it (or, with `redeliver` off,
    /// the pile left before acknowledging).
    case offline
    /// Connected (or away with a session), not subscribed to the command's topic.
    case notSubscribed = "not_subscribed"
    /// Past its `ttl`/`expires`, or pushed out by `downlink.max_pending` newer ones.
    case expired
    /// A bad entry (no device, bad topic, qos, ttl or expires).
    case rejected
}

/// A command's identity: its downlink entry as `ENTRYID@STREAM`, which is also its
/// field in the pile's mailbox. One String, so a tag costs 16 bytes where it rides
/// along (a Delivery, a queued or in-flight message).
struct CommandTag: Hashable, Sendable {
    let text: String
    init(id: String, stream: String) { text = id + "@" + stream }
    init(field: String) { text = field }

    /// The entry id's and the stream's bytes, without building Strings (outcome
    /// entries and XACKs are written from these, once per command).
    func withParts<R>(_ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> R) -> R {
        var t = text
        return t.withUTF8 { u in
            let raw = UnsafeRawBufferPointer(u)
            let at = raw.firstIndex(of: UInt8(ascii: "@")) ?? raw.count
            return body(UnsafeRawBufferPointer(rebasing: raw[..<at]),
                        UnsafeRawBufferPointer(rebasing: raw[min(at + 1, raw.count)...]))
        }
    }

    func sameStream(as other: CommandTag) -> Bool {
        withParts { _, a in other.withParts { _, b in a.elementsEqual(b) } }
    }

    var entryID: String { withParts { id, _ in String(decoding: id, as: UTF8.self) } }
    var stream: String { withParts { _, s in String(decoding: s, as: UTF8.self) } }

    /// Commands to one pile go out in the order their entries were written.
    var order: StreamID {
        withParts { id, _ in
            var ms: UInt64 = 0, seq: UInt64 = 0, dash = false
            for b in id {
                if b == UInt8(ascii: "-") { dash = true; continue }
                guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") else { return StreamID(ms: .max, seq: .max) }
                if dash { seq = seq &* 10 &+ UInt64(b - 48) } else { ms = ms &* 10 &+ UInt64(b - 48) }
            }
            return dash ? StreamID(ms: ms, seq: seq) : StreamID(ms: .max, seq: .max)
        }
    }
}

/// What travels with a command's message to its pile's connection (a Delivery, a
/// queued or in-flight message): which command it is and when it expires.
struct CommandRef: Sendable {
    var tag: CommandTag
    var expiresAtMs: UInt64
    func isExpired(nowMs: UInt64) -> Bool { expiresAtMs != 0 && nowMs >= expiresAtMs }
}

/// A command from a worker: a downlink entry, or the same read back from a mailbox.
struct Command: Sendable {
    var tag: CommandTag
    var device: String
    var topic: String
    var qos: QoS
    var payload: [UInt8]
    /// Wall-clock ms past which it is not delivered; 0: never.
    var expiresAtMs: UInt64

    var message: Message { Message(topic: topic, payload: payload, qos: qos, retain: false) }
    var ref: CommandRef { CommandRef(tag: tag, expiresAtMs: expiresAtMs) }
    func isExpired(nowMs: UInt64) -> Bool { ref.isExpired(nowMs: nowMs) }

    /// A downlink stream entry, as XREADGROUP or XAUTOCLAIM return it.
    enum Read {
        case command(Command)
        /// A bad entry: its id, device (maybe empty) and what is wrong with it.
        case rejected(CommandTag, device: String, why: String)
        /// Not a command: `device` connected to node `by` at `since` (wall ms), so a
        /// connection of it here that is older ends (`Script.claimPresence` wrote it).
        case takeover(CommandTag, device: String, since: UInt64)
    }

    /// Read one entry: `device` (required), `payload`, optional `topic` (default the
    /// device's command topic), `qos` (default 1), `ttl` (seconds from when the entry
    /// was written) or `expires` (wall-clock ms). Nil for an entry XAUTOCLAIM reports
    /// as deleted.
    static func read(_ entry: RedisReply, stream: String, commandTopic: (String) -> String,
                     defaultTTL: Int) -> Read? {
        let parts = entry.elements
        guard parts.count == 2, !parts[1].isNil else { return nil }
        let tag = CommandTag(id: parts[0].text, stream: stream)
        var device = "", payload: [UInt8] = []
        var topic: String?, qos: String?, ttl: String?, expires: String?, control: String?, since: String?
        for (field, value) in parts[1].pairs {
            switch field {
            case "control": control = value.text
            case "since": since = value.text
            case "device": device = value.text
            case "topic": topic = value.text
            case "qos": qos = value.text
            case "payload": payload = value.bytes
            case "ttl": ttl = value.text
            case "expires": expires = value.text
            default: break
            }
        }
        func bad(_ why: String) -> Read { .rejected(tag, device: device, why: why) }
        guard !device.isEmpty else { return bad("no device") }
        if let control {
            guard control == "takeover", let at = since.flatMap({ UInt64($0) }) else { return bad("bad control entry") }
            return .takeover(tag, device: device, since: at)
        }
        let name = topic ?? commandTopic(device)
        guard Topic.isValidName(name.utf8) else { return bad("bad topic \"\(name)\"") }
        guard let q = UInt8(qos ?? "1").flatMap(QoS.init) else { return bad("bad qos \"\(qos ?? "")\"") }
        var expiresAt: UInt64 = 0
        if let expires {
            guard let ms = UInt64(expires), ms > 0 else { return bad("bad expires \"\(expires)\"") }
            expiresAt = ms
        } else if let ttl {
            guard let s = UInt64(ttl), s > 0, s <= 365 * 86400 else { return bad("bad ttl \"\(ttl)\"") }
            expiresAt = tag.order.ms.saturatingAdd(s * 1000)
        } else if defaultTTL > 0 {
            expiresAt = tag.order.ms.saturatingAdd(UInt64(defaultTTL) * 1000)
        }
        return .command(Command(tag: tag, device: device, topic: name, qos: q, payload: payload,
                                expiresAtMs: expiresAt))
    }

}

/// A command in its pile's mailbox (`redis.mailbox_prefix` + device, a hash).
extension Command {
    /// The mailbox value: `QOS EXPIRES TOPICLENGTH ` then the topic and the payload
    /// bytes (binary-safe, no escaping).
    var mailboxValue: [UInt8] {
        var v = Array("\(qos.rawValue) \(expiresAtMs) \(topic.utf8.count) ".utf8)
        v.append(contentsOf: topic.utf8)
        v.append(contentsOf: payload)
        return v
    }

    /// A mailbox entry (field, value) read back; nil if it is not one of ours.
    init?(device: String, field: String, value: [UInt8]) {
        var numbers: [UInt64] = []
        var i = 0, n: UInt64 = 0, digits = 0
        while numbers.count < 3, i < value.count {
            let b = value[i]
            i += 1
            if b == UInt8(ascii: " ") {
                guard digits > 0 else { return nil }
                numbers.append(n); n = 0; digits = 0
            } else if b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") && digits < 19 {
                n = n * 10 + UInt64(b - UInt8(ascii: "0")); digits += 1
            } else {
                return nil
            }
        }
        guard numbers.count == 3, let q = QoS(rawValue: UInt8(truncatingIfNeeded: numbers[0])), numbers[0] <= 2,
              Int(numbers[2]) <= value.count - i else { return nil }
        let topicEnd = i + Int(numbers[2])
        guard let t = String(validating: value[i..<topicEnd], as: UTF8.self) else { return nil }
        self.init(tag: CommandTag(field: field), device: device, topic: t, qos: q,
                  payload: Array(value[topicEnd...]), expiresAtMs: numbers[1])
    }

    /// The commands of an HGETALL reply on a mailbox, oldest first; fields whose
    /// value does not parse go to `bad`.
    static func mailbox(_ r: RedisReply, device: String, bad: inout [CommandTag]) -> [Command] {
        var out: [Command] = []
        for (field, value) in r.pairs {
            if let c = Command(device: device, field: field, value: value.bytes) {
                out.append(c)
            } else {
                bad.append(CommandTag(field: field))
            }
        }
        return out.sorted { $0.tag.order < $1.tag.order }
    }
}
