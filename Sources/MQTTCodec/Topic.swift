/// Topic names and filters (section 4.7). Pure functions over UTF-8 bytes.
public enum Topic {
    /// A PUBLISH topic name: at least one byte, no wildcard characters (4.7.3, 3.3.2-2).
    @inlinable
    public static func isValidName<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        !bytes.isEmpty && !hasWildcard(bytes)
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

    /// Inlinable: unspecialized, it went through a witness table per byte (3% of a
    /// connect storm's CPU, called for each SUBSCRIBE).
    @inlinable
    public static func hasWildcard<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        bytes.contains(where: { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") })
    }

    /// Does `filter` match `topic`? Topics starting with `$` are not matched by a
    /// filter starting with a wildcard (4.7.2). Walks both in place, no allocation.
    public static func matches(filter: String, topic: String) -> Bool {
        var f = filter, t = topic
        return f.withUTF8 { fb in t.withUTF8 { tb in matches(filter: fb, topic: tb) } }
    }

    /// The same over contiguous UTF-8 (`String.withUTF8`): the hot-path form.
    public static func matches(filter: UnsafeBufferPointer<UInt8>, topic: UnsafeBufferPointer<UInt8>) -> Bool {
        if topic.first == UInt8(ascii: "$"), let first = filter.first,
           first == UInt8(ascii: "+") || first == UInt8(ascii: "#") {
            return false
        }
        var f = Levels(filter), t = Levels(topic)
        while let fl = f.next() {
            if fl.isLevel("#") { return true }
            guard let tl = t.next() else { return false }
            if !fl.isLevel("+") && !fl.sameBytes(tl) { return false }
        }
        return t.next() == nil
    }

    /// The `/`-separated levels of a topic or filter, empty ones included ("a/" is
    /// "a" then ""), as slices of the caller's bytes: no allocation, no Unicode work.
    public struct Levels {
        let bytes: UnsafeBufferPointer<UInt8>
        var position: Int?

        public init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes; position = 0 }

        public mutating func next() -> UnsafeBufferPointer<UInt8>? {
            guard let p = position else { return nil }
            var i = p
            while i < bytes.count && bytes[i] != UInt8(ascii: "/") { i += 1 }
            position = i < bytes.count ? i + 1 : nil
            return UnsafeBufferPointer(rebasing: bytes[p..<i])
        }
    }
}

extension UnsafeBufferPointer where Element == UInt8 {
    /// Byte-wise equality.
    @inlinable public func sameBytes(_ other: UnsafeBufferPointer<UInt8>) -> Bool {
        guard count == other.count else { return false }
        for i in 0..<count where self[i] != other[i] { return false }
        return true
    }

    /// Is this level exactly the one-byte `+` or `#`?
    @inlinable public func isLevel(_ c: Unicode.Scalar) -> Bool { count == 1 && self[0] == UInt8(ascii: c) }
}
