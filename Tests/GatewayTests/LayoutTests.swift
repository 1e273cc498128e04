import Glibc
import MQTTCodec
import XCTest
@testable import Gateway

/// What an idle pile's memory rests on (bench/scale.sh): the slab entry and the
/// Session's malloc chunk. One byte more can cost 16 per pile.
final class LayoutTests: XCTestCase {
    /// The slab entry carries a buffer-pool index, not three buffers.
    func testSlabEntryIsSixtyFourBytes() {
        XCTAssertEqual(MemoryLayout<Connection>.stride, 64)
    }

    /// The Session fits a 128-byte malloc chunk (120 usable bytes).
    func testSessionFitsA128ByteChunk() {
        let usable = mallocFunction("malloc_usable_size", as: (@convention(c) (UnsafeMutableRawPointer?) -> Int).self)
        let s = Session(clientID: "P0000000000000001", handle: 1, persistent: false)
        XCTAssertEqual(usable(Unmanaged.passUnretained(s).toOpaque()), 120)
    }

    /// What an idle pile lacks lives behind one pointer that comes and goes: a user
    /// name equal to the client id, in-flight and queued messages, mailbox fetches.
    func testRareStateComesAndGoes() {
        let s = Session(clientID: "p1", handle: 1, persistent: true)
        s.username = "p1"
        XCTAssertEqual(s.username, "p1")
        XCTAssertTrue(s.isIdle, "a pile's user name is its client id: nothing allocated")
        s.username = "operator"
        XCTAssertEqual(s.username, "operator")
        XCTAssertFalse(s.isIdle)
        s.username = nil
        XCTAssertNil(s.username)
        XCTAssertTrue(s.isIdle)

        let m = Message(topic: "t", payload: [1], qos: .atLeastOnce, retain: false)
        let a = s.nextPacketID()
        s.inflight.append(Outgoing(packetID: a, message: m, qos: .atLeastOnce, retain: false, released: false, command: nil))
        XCTAssertEqual(s.nextPacketID(), a + 1, "an id in flight is not handed out again")
        s.awaitingRelease.append(7)
        s.mailFetches &+= 1
        s.inflight.removeAll()
        s.awaitingRelease.removeAll { $0 == 7 }
        XCTAssertFalse(s.isIdle, "a mailbox fetch is still out")
        s.fetchAnswered()
        XCTAssertEqual(s.mailFetches, 0)
        XCTAssertTrue(s.isIdle)
        s.subscribe(TopicRequest("a/+", .atLeastOnce))
        XCTAssertFalse(s.isIdle)
        XCTAssertTrue(s.unsubscribe("a/+"))
        XCTAssertTrue(s.isIdle)
    }

    /// The own command topic's QoS and the flags share one byte without mixing.
    func testSessionFlagsAndOwnSubscription() {
        let s = Session(clientID: "p1", handle: 1, persistent: true)
        s.subscribe(TopicRequest("", .exactlyOnce))
        s.subscribe(TopicRequest("a/+", .atMostOnce))
        s.silentReported = true
        s.usage.breachReported = true
        XCTAssertEqual(s.subscriptions.map(\.filter), ["", "a/+"])
        XCTAssertEqual(s.subscriptions.map(\.qos), [.exactlyOnce, .atMostOnce])
        XCTAssertTrue(s.persistent && s.silentReported && !s.rateReported)
        s.subscribe(TopicRequest("", .atLeastOnce))
        XCTAssertEqual(s.subscriptions.map(\.qos).first, .atLeastOnce)
        XCTAssertEqual(s.subscriptions.count, 2)
        XCTAssertTrue(s.unsubscribe(""))
        XCTAssertFalse(s.unsubscribe(""))
        XCTAssertEqual(s.subscriptions.map(\.filter), ["a/+"])
        XCTAssertTrue(s.persistent && s.silentReported)
        s.persistent = false
        XCTAssertFalse(s.persistent)
        XCTAssertTrue(s.silentReported)
        XCTAssertTrue(s.usage.breachReported)
        s.usage.roll(to: s.usage.day + 1)
        XCTAssertFalse(s.usage.breachReported)
        s.unsubscribeAll()
        XCTAssertEqual(s.subscriptions.count, 0)
    }

    /// Entries are reused once drained, entry 0 is never handed out, and the
    /// pool grows only to the peak of entries holding bytes. A drained entry keeps
    /// small buffers for the next connection (no malloc per CONNACK or PUBACK),
    /// never a big one, and at most `keptEntries` of them.
    func testEntriesComeBackWarmAndAreReused() {
        var pool = BufferPool()
        XCTAssertTrue(pool[0].isReleased)
        let a = pool.take(), b = pool.take()
        XCTAssertNotEqual(a, 0); XCTAssertNotEqual(b, 0); XCTAssertNotEqual(a, b)
        pool[a].outbound.append([1, 2, 3])
        pool[b].inbound.append([UInt8](repeating: 7, count: BufferPool.keptCapacity + 1))
        XCTAssertEqual(pool.taken, 2)
        pool[a].flip()
        XCTAssertEqual(Array(pool[a].inFlight.bytes), [1, 2, 3])
        XCTAssertTrue(pool[a].outbound.isEmpty)
        pool[a].clear()
        pool.give(a)
        XCTAssertEqual(pool.taken, 1)
        XCTAssertEqual(pool.kept, 1)
        XCTAssertFalse(pool[a].isReleased)          // kept warm
        XCTAssertEqual(pool.take(), a)              // reused, not a new entry
        XCTAssertEqual(pool.entries.count, 3)       // the empty entry and two
        XCTAssertTrue(pool[0].isReleased)           // never written
        pool[b].clear()
        pool.give(b)
        XCTAssertTrue(pool[b].isReleased)           // too big to keep
        XCTAssertEqual(pool.kept, 0)
        pool[a].release()

        var many = BufferPool()
        let ids = (0..<(BufferPool.keptEntries + 10)).map { _ in many.take() }
        for i in ids { many[i].outbound.append([1]); many[i].clear(); many.give(i) }
        XCTAssertEqual(many.kept, BufferPool.keptEntries)
        XCTAssertEqual(ids.filter { many[$0].isReleased }.count, 10)
        for i in ids { many[i].release() }
    }
}
