import XCTest
@testable import PileLoop

final class TimingWheelTests: XCTestCase {
    func testFiresAtDeadlineNotBefore() {
        var w = TimingWheel(buckets: 8, startTick: 100)
        w.schedule(slot: 1, at: 103)
        w.schedule(slot: 2, at: 120)   // more than one revolution away
        w.schedule(slot: 3, at: 50)    // past: clamped to the next tick
        var out: [TimingWheel.Entry] = []
        w.advance(to: 101, expired: &out)
        XCTAssertEqual(out.map(\.slot), [3])
        out.removeAll()
        w.advance(to: 102, expired: &out)
        XCTAssertTrue(out.isEmpty)
        w.advance(to: 110, expired: &out)
        XCTAssertEqual(out.map(\.slot), [1], "bucket shared with 120 (mod 8) keeps the later entry")
        out.removeAll()
        w.advance(to: 119, expired: &out)
        XCTAssertTrue(out.isEmpty)
        w.advance(to: 500, expired: &out)   // a jump past several revolutions
        XCTAssertEqual(out.map(\.slot), [2])
        XCTAssertEqual(w.count, 0)
    }

    func testManyRandomDeadlines() {
        var w = TimingWheel(buckets: 64)
        var rng = SystemRandomNumberGenerator()
        var want: [UInt32: UInt64] = [:]
        for i in 0..<5000 {
            let d = UInt64.random(in: 1...1000, using: &rng)
            want[UInt32(i)] = d
            w.schedule(slot: UInt32(i), at: d)
        }
        var fired: [UInt32: UInt64] = [:]
        var out: [TimingWheel.Entry] = []
        for t in stride(from: UInt64(1), through: 1000, by: Int.random(in: 1...7, using: &rng)) {
            w.advance(to: t, expired: &out)
            for e in out { XCTAssertLessThanOrEqual(e.deadline, t); fired[e.slot] = t }
            out.removeAll()
        }
        w.advance(to: 1001, expired: &out)
        for e in out { fired[e.slot] = 1001 }
        XCTAssertEqual(fired.count, want.count, "every entry fires exactly once")
        for (s, d) in want { XCTAssertGreaterThanOrEqual(fired[s]!, d) }
    }

    /// One entry per slot: scheduling again moves it, cancel removes it, and slots
    /// sharing a bucket stay linked when one in the middle leaves.
    func testOneEntryPerSlotMovesAndCancels() {
        var w = TimingWheel(buckets: 8, startTick: 0, slots: 16)
        for s: UInt32 in 0..<6 { w.schedule(slot: s, at: 8) }   // one bucket, six entries
        w.schedule(slot: 2, at: 3)    // moved earlier
        w.cancel(4)
        w.cancel(4)                   // twice: nothing
        w.schedule(slot: 0, at: 16)   // moved a revolution later, same bucket
        XCTAssertEqual(w.count, 5)
        var out: [TimingWheel.Entry] = []
        w.advance(to: 3, expired: &out)
        XCTAssertEqual(out, [TimingWheel.Entry(slot: 2, deadline: 3)])
        out.removeAll()
        w.advance(to: 8, expired: &out)
        XCTAssertEqual(Set(out.map(\.slot)), [1, 3, 5])
        XCTAssertTrue(out.allSatisfy { $0.deadline == 8 })
        out.removeAll()
        w.advance(to: 16, expired: &out)
        XCTAssertEqual(out, [TimingWheel.Entry(slot: 0, deadline: 16)])
        XCTAssertEqual(w.count, 0)
    }
}
