import XCTest
@testable import Gateway

final class InlineListTests: XCTestCase {
    /// Random appends, upserts and removes against an Array model.
    func testAgreesWithAnArray() {
        var list = InlineList<(key: Int, value: Int)>()
        var model: [(key: Int, value: Int)] = []
        for round in 0..<5_000 {
            let k = Int.random(in: 0..<6), v = round
            switch Int.random(in: 0..<3) {
            case 0:
                list.upsert((k, v)) { $0.key == k }
                model.upsert((k, v)) { $0.key == k }
            case 1:
                XCTAssertEqual(list.remove { $0.key == k }, model.firstIndex { $0.key == k } != nil)
                if let i = model.firstIndex(where: { $0.key == k }) { model.remove(at: i) }
            default:
                if !model.contains(where: { $0.key == k }) { list.append((k, v)); model.append((k, v)) }
            }
            XCTAssertEqual(list.map(\.key), model.map(\.key))
            XCTAssertEqual(list.map(\.value), model.map(\.value))
            XCTAssertEqual(list.count, model.count)
            XCTAssertEqual(list.isEmpty, model.isEmpty)
        }
    }
}
