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
    /// The pattern around `%c` (no pattern without one: nothing is a command topic).
    private let prefix: Substring
    private let suffix: Substring
    private let valid: Bool

    init(pattern: String) {
        let c = pattern.firstRange(of: "%c")
        valid = c != nil
        prefix = pattern[..<(c?.lowerBound ?? pattern.startIndex)]
        suffix = pattern[(c?.upperBound ?? pattern.endIndex)...]
    }

    /// The filter as a session stores it: empty for the pile's own command topic.
    func stored(_ filter: String, clientID: String) -> String { isOwn(filter, clientID: clientID) ? "" : filter }

    /// The filter as the pile sent it.
    func text(_ stored: String, clientID: String) -> String { stored.isEmpty ? prefix + clientID + suffix : stored }

    /// Is `topic` exactly the command topic of `clientID`? (No allocation.)
    func isOwn(_ topic: String, clientID: String) -> Bool {
        var c = clientID
        return withID(in: topic) { id in id.map { id in c.withUTF8 { id.elementsEqual($0) } } ?? false }
    }

    /// The client whose command topic `topic` is, if it is one. Called for every
    /// routed message: an uplink topic fails on its last bytes, before any allocation.
    func clientID(of topic: String) -> String? {
        withID(in: topic) { id in id.map { String(decoding: $0, as: UTF8.self) } }
    }

    /// The client id's bytes in `topic` if it is a command topic (an id with a level
    /// separator or a wildcard makes no plain command topic), else nil.
    private func withID<R>(in topic: String, _ body: (UnsafeBufferPointer<UInt8>?) -> R) -> R {
        var t = topic
        return t.withUTF8 { tb in
            let p = prefix.utf8.count, s = suffix.utf8.count
            guard valid, tb.count > p + s, tb.suffix(s).elementsEqual(suffix.utf8), tb.prefix(p).elementsEqual(prefix.utf8)
            else { return body(nil) }
            let id = UnsafeBufferPointer(rebasing: tb[p..<(tb.count - s)])
            let plain = !id.contains { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") }
            return body(plain ? id : nil)
        }
    }
}
