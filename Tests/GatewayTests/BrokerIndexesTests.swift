import XCTest
@testable import Gateway

final class BrokerIndexesTests: XCTestCase {
    /// Random inserts and removes against a Dictionary model, through growth and
    /// shrinking: every key present is found with its handle, every removed one is not.
    func testHandleIndexAgreesWithADictionary() {
        var keys = SlotTable<String>()
        var index = HandleIndex()
        var model: [String: UInt32] = [:]
        var rng = SystemRandomNumberGenerator()
        func key(_ h: UInt32) -> String { keys[h]! }
        for round in 0..<60_000 {
            // Phases: grow to ~20k, shrink to a few, grow again (exercises resize both ways).
            let growing = (round / 20_000) % 2 == 0
            if model.isEmpty || Int.random(in: 0..<10, using: &rng) < (growing ? 7 : 3) {
                let k = "/xjdy/ops/v1/TCU/\(UInt32.random(in: 0..<200_000, using: &rng))/cmd"
                if model[k] != nil { continue }
                let h = keys.insert(k)
                index.insert(k, h, keyOf: key)
                model[k] = h
            } else {
                let (k, h) = model.randomElement(using: &rng)!
                index.remove(k, h, keyOf: key)
                keys.remove(h)
                model[k] = nil
            }
            if round % 5_000 == 0 {
                for (k, h) in model { XCTAssertEqual(index.find(k, keyOf: key), h, k) }
            }
        }
        XCTAssertEqual(index.count, model.count)
        for (k, h) in model { XCTAssertEqual(index.find(k, keyOf: key), h) }
        XCTAssertNil(index.find("/xjdy/ops/v1/TCU/absent/cmd", keyOf: key))
        for (k, h) in model { index.remove(k, h, keyOf: key); keys.remove(h) }
        XCTAssertEqual(index.count, 0)
        XCTAssertNil(index.find(model.keys.first ?? "x", keyOf: key))
    }

    func testSlotTableReusesFreedHandles() {
        var t = SlotTable<String>()
        let a = t.insert("a"), b = t.insert("b")
        t.remove(a)
        XCTAssertNil(t[a])
        XCTAssertEqual(t.insert("c"), a, "a freed handle is reused first")
        XCTAssertEqual(t[b], "b")
        XCTAssertEqual(t.insert("d"), 2)
    }
}
