/// Topic names and filters (section 4.7). Pure functions over UTF-8 bytes.
public enum Topic {
    /// A PUBLISH topic name: at least one byte, no wildcard characters (4.7.3, 3.3.2-2).
    public static func isValidName<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        !bytes.isEmpty && !bytes.contains(where: { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") })
    }

    /// A SUBSCRIBE/UNSUBSCRIBE filter: `#` only as the whole last level, `+` only as a
    /// whole level (4.7.1).
    public static func isValidFilter<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        if bytes.isEmpty { return false }
        let slash = UInt8(ascii: "/"), plus = UInt8(ascii: "+"), hash = UInt8(ascii: "#")
        var levelStart = true
        var prev: UInt8 = slash
        var i = bytes.startIndex
        while i != bytes.endIndex {
            let b = bytes[i]
            let next = bytes.index(after: i)
            let atLevelEnd = next == bytes.endIndex || bytes[next] == slash
            if b == hash {
                // must be alone in its level and the last character
                if !(levelStart && next == bytes.endIndex) { return false }
            } else if b == plus {
                if !(levelStart && atLevelEnd) { return false }
            }
            levelStart = b == slash
            prev = b
            i = next
        }
        _ = prev
        return true
    }

    public static func hasWildcard<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        bytes.contains(where: { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") })
    }

    /// Does `filter` match `topic`? Topics starting with `$` are not matched by a
    /// filter starting with a wildcard (4.7.2). Walks both in place, no allocation.
    public static func matches(filter: String, topic: String) -> Bool {
        if topic.utf8.first == UInt8(ascii: "$"), let first = filter.utf8.first,
           first == UInt8(ascii: "+") || first == UInt8(ascii: "#") {
            return false
        }
        var f = Levels(filter.utf8), t = Levels(topic.utf8)
        while let fl = f.next() {
            if fl.elementsEqual("#".utf8) { return true }
            guard let tl = t.next() else { return false }
            if !fl.elementsEqual("+".utf8) && !fl.elementsEqual(tl) { return false }
        }
        return t.next() == nil
    }

    /// The `/`-separated levels of a topic or filter, empty ones included
    /// ("a/" is "a" then "").
    public struct Levels {
        let utf8: String.UTF8View
        var position: String.Index?

        public init(_ utf8: String.UTF8View) { self.utf8 = utf8; position = utf8.startIndex }

        public mutating func next() -> Substring.UTF8View? {
            guard let p = position else { return nil }
            if let slash = utf8[p...].firstIndex(of: UInt8(ascii: "/")) {
                position = utf8.index(after: slash)
                return Substring(utf8[p..<slash]).utf8
            }
            position = nil
            return Substring(utf8[p...]).utf8
        }
    }
}
