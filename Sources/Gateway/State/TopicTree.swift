import MQTTCodec

/// A tree of topic levels. Two uses, one structure:
/// - subscription filters (levels may be `+` / `#`), matched against a concrete topic;
/// - retained messages (concrete topics), collected for a filter on SUBSCRIBE.
/// Level keys are short strings (piles' levels fit Swift's 15-byte inline form), so a
/// walk allocates nothing.
final class TopicNode<Value> {
    var children: [String: TopicNode] = [:]
    var values: [Value] = []
    var isEmpty: Bool { children.isEmpty && values.isEmpty }
}

struct TopicTree<Value> {
    let root = TopicNode<Value>()

    /// The node for `path` (a filter or topic), created on the way.
    func node(for path: String) -> TopicNode<Value> {
        var n = root
        for level in path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false) {
            let key = String(Substring(level))
            if let c = n.children[key] { n = c } else {
                let c = TopicNode<Value>()
                n.children[key] = c
                n = c
            }
        }
        return n
    }

    /// Apply `edit` to the values at `path` (if the node exists) and prune nodes
    /// left empty on the way back up.
    func edit(_ path: String, _ edit: (inout [Value]) -> Void) {
        let levels = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
            .map { String(Substring($0)) }
        var trail: [TopicNode<Value>] = [root]
        for key in levels {
            guard let c = trail.last!.children[key] else { return }
            trail.append(c)
        }
        edit(&trail.last!.values)
        var i = levels.count
        while i > 0, trail[i].isEmpty {
            trail[i - 1].children[levels[i - 1]] = nil
            i -= 1
        }
    }

    /// Every value whose filter matches `topic` (4.7: `+` one level, `#` this level
    /// and all below; wildcards at the first level never match a `$` topic).
    /// Walks the topic's bytes in place: no level array is built per publish.
    func match(topic: String, _ visit: (Value) -> Void) {
        let utf8 = topic.utf8
        TopicTree.match(root, utf8, from: utf8.startIndex, first: true,
                        dollar: utf8.first == UInt8(ascii: "$"), visit)
    }

    private static func match(_ node: TopicNode<Value>, _ utf8: String.UTF8View, from: String.Index?,
                              first: Bool, dollar: Bool, _ visit: (Value) -> Void) {
        let wild = !(first && dollar)
        if wild, let all = node.children["#"] { all.values.forEach(visit) }
        guard let start = from else { node.values.forEach(visit); return }
        let end = utf8[start...].firstIndex(of: UInt8(ascii: "/")) ?? utf8.endIndex
        let next = end == utf8.endIndex ? nil : utf8.index(after: end)
        if wild, let plus = node.children["+"] {
            match(plus, utf8, from: next, first: false, dollar: dollar, visit)
        }
        if let exact = node.children[String(Substring(utf8[start..<end]))] {
            match(exact, utf8, from: next, first: false, dollar: dollar, visit)
        }
    }

    /// Every value stored under a concrete topic that `filter` matches.
    func collect(filter: String, _ visit: (Value) -> Void) {
        let levels = filter.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
            .map { String(Substring($0)) }
        TopicTree.collect(root, levels[...], first: true, visit)
    }

    private static func collect(_ node: TopicNode<Value>, _ levels: ArraySlice<String>, first: Bool,
                                _ visit: (Value) -> Void) {
        guard let level = levels.first else { node.values.forEach(visit); return }
        switch level {
        case "#":
            node.values.forEach(visit)   // "a/#" matches "a" too (4.7.1.2)
            for (k, c) in node.children where !(first && k.hasPrefix("$")) { all(c, visit) }
        case "+":
            for (k, c) in node.children where !(first && k.hasPrefix("$")) {
                collect(c, levels.dropFirst(), first: false, visit)
            }
        default:
            if let c = node.children[level] { collect(c, levels.dropFirst(), first: false, visit) }
        }
    }

    private static func all(_ node: TopicNode<Value>, _ visit: (Value) -> Void) {
        node.values.forEach(visit)
        for c in node.children.values { all(c, visit) }
    }
}
