import MQTTCodec
import XCTest
@testable import Gateway

/// The subscription tree must agree with the spec's matching rule (Topic.matches)
/// on every filter/topic pair, and retained lookup likewise in reverse.
final class TopicTreeTests: XCTestCase {
    func testTreeAgreesWithReferenceMatcher() {
        let levels = ["a", "b", "", "$SYS", "TCU", "AAAAAJQX"]
        var rng = SystemRandomNumberGenerator()
        func topic() -> String {
            (0..<Int.random(in: 1...4, using: &rng)).map { _ in levels.randomElement(using: &rng)! }.joined(separator: "/")
        }
        func filter() -> String {
            var parts = (0..<Int.random(in: 1...4, using: &rng)).map { _ in
                [levels.randomElement(using: &rng)!, "+"].randomElement(using: &rng)!
            }
            if Bool.random(using: &rng) { parts.append("#") }
            return parts.joined(separator: "/")
        }
        let filters = Array(Set((0..<300).map { _ in filter() }))
        let tree = TopicTree<String>()
        for f in filters { tree.node(for: f).values.append(f) }
        let retained = TopicTree<String>()
        let topics = Array(Set((0..<300).map { _ in topic() }))
        for t in topics { retained.node(for: t).values.append(t) }
        for t in topics {
            var got: [String] = []
            tree.match(topic: t) { got.append($0) }
            XCTAssertEqual(Set(got), Set(filters.filter { Topic.matches(filter: $0, topic: t) }), "topic \(t)")
            XCTAssertEqual(got.count, Set(got).count, "each filter once")
        }
        for f in filters {
            var got: [String] = []
            retained.collect(filter: f) { got.append($0) }
            XCTAssertEqual(Set(got), Set(topics.filter { Topic.matches(filter: f, topic: $0) }), "filter \(f)")
        }
        // removal prunes the tree back to empty
        for f in filters { tree.edit(f) { $0.removeAll() } }
        XCTAssertTrue(tree.root.isEmpty)
    }
}
