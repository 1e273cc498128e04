/// A pile's own command topic (`mqtt.command_topic` with its client id), interned.
/// Nearly every pile subscribes to it and to nothing else; kept as a String it cost
/// 80 bytes of heap, held by the session and an exact-topic index entry (42 bytes
/// more) per pile (bench/README.md, "memory per pile"). Interned, the session keeps
/// an empty filter (no allocation: MQTT forbids empty filters, 4.7.3) and the
/// Broker's client entry a QoS; the topic's text is built only when asked for.
///
/// The pattern is the one at start: a reload that changes `mqtt.command_topic`
/// changes what later SUBSCRIBEs ask for, not what an existing subscription means.
struct OwnTopic: Sendable {
    private let prefix: [UInt8]
    private let suffix: [UInt8]

    init(pattern: String) {
        let parts = pattern.split(separator: "%c", maxSplits: 1, omittingEmptySubsequences: false)
        prefix = Array(parts[0].utf8)
        suffix = parts.count > 1 ? Array(parts[1].utf8) : []
    }

    /// The filter as a session stores it: empty for the pile's own command topic.
    func stored(_ filter: String, clientID: String) -> String { isOwn(filter, clientID: clientID) ? "" : filter }

    /// The filter as the pile sent it.
    func text(_ stored: String, clientID: String) -> String {
        stored.isEmpty ? String(decoding: prefix, as: UTF8.self) + clientID + String(decoding: suffix, as: UTF8.self) : stored
    }

    /// A client id with a level separator or a wildcard makes no plain command topic.
    private static func special(_ b: UInt8) -> Bool { b == UInt8(ascii: "/") || b == UInt8(ascii: "+") || b == UInt8(ascii: "#") }

    /// Is `topic` exactly the command topic of `clientID`? (No allocation.)
    func isOwn(_ topic: String, clientID: String) -> Bool {
        var t = topic, c = clientID
        return t.withUTF8 { tb in
            c.withUTF8 { cb in
                tb.count == prefix.count + cb.count + suffix.count && !cb.isEmpty && !cb.contains(where: Self.special)
                    && tb.prefix(prefix.count).elementsEqual(prefix)
                    && tb.dropFirst(prefix.count).prefix(cb.count).elementsEqual(cb)
                    && tb.suffix(suffix.count).elementsEqual(suffix)
            }
        }
    }

    /// The client whose command topic `topic` is, if it is one. Called for every
    /// routed message: an uplink topic fails on its last bytes, before any allocation.
    func clientID(of topic: String) -> String? {
        var t = topic
        return t.withUTF8 { tb -> String? in
            guard tb.count > prefix.count + suffix.count, tb.suffix(suffix.count).elementsEqual(suffix),
                  tb.prefix(prefix.count).elementsEqual(prefix) else { return nil }
            let id = UnsafeBufferPointer(rebasing: tb[prefix.count..<(tb.count - suffix.count)])
            guard !id.contains(where: Self.special) else { return nil }
            return String(decoding: id, as: UTF8.self)
        }
    }
}
