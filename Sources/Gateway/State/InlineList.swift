/// A list that keeps its first element inline. Nearly every pile has exactly one
/// subscription (its command topic), and nearly every such topic one subscriber;
/// both then cost no array allocation (64 bytes each with malloc's header).
struct InlineList<Element>: Sequence, ExpressibleByArrayLiteral {
    private var head: Element?
    private var rest: [Element] = []

    init() {}
    init(arrayLiteral elements: Element...) {
        for e in elements { append(e) }
    }

    var isEmpty: Bool { head == nil }
    var count: Int { head == nil ? 0 : 1 + rest.count }

    mutating func append(_ e: Element) {
        if head == nil { head = e } else { rest.append(e) }
    }

    /// Replace the element `same` picks, or append `e`.
    mutating func upsert(_ e: Element, same: (Element) -> Bool) {
        if let h = head, !same(h) { rest.upsert(e, same: same) } else { head = e }
    }

    /// Remove the first element `which` picks; false if there is none.
    mutating func remove(where which: (Element) -> Bool) -> Bool {
        if let h = head, which(h) {
            head = rest.isEmpty ? nil : rest.removeFirst()
            return true
        }
        guard let i = rest.firstIndex(where: which) else { return false }
        rest.remove(at: i)
        return true
    }

    struct Iterator: IteratorProtocol {
        fileprivate let list: InlineList
        fileprivate var i = -1

        mutating func next() -> Element? {
            defer { i += 1 }
            return i < 0 ? list.head : i < list.rest.count ? list.rest[i] : nil
        }
    }

    func makeIterator() -> Iterator { Iterator(list: self) }
}

extension Array {
    /// Replace the element `same` picks, or append `e`.
    mutating func upsert(_ e: Element, same: (Element) -> Bool) {
        if let i = firstIndex(where: same) { self[i] = e } else { append(e) }
    }
}
