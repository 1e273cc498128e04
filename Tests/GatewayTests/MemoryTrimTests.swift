import Glibc
import MQTTCodec
import XCTest
@testable import Gateway

/// Free heap goes back to the kernel once a burst of connections is over, once.
final class MemoryTrimTests: XCTestCase {
    func testDueOnlyAfterABurstIsOver() {
        var t = MemoryTrim()
        XCTAssertFalse(t.due(churn: 500))       // too little churn
        XCTAssertFalse(t.due(churn: 5_000))     // a burst still going
        XCTAssertTrue(t.due(churn: 5_100))      // over: 100 of 5,100 in the last interval
        XCTAssertFalse(t.due(churn: 5_100))     // nothing since
        XCTAssertFalse(t.due(churn: 5_900))     // 800 since: under the minimum
        XCTAssertFalse(t.due(churn: 7_000))     // 1,900 since, 1,100 of them just now
        XCTAssertTrue(t.due(churn: 7_050))
    }

    /// After a large block is freed, the next one is still mapped on its own
    /// (glibc's default would now carve it from the heap): `malloc_info`'s count of
    /// mmapped blocks goes up by one for each. Blocks the heap has room for come
    /// from it whatever the threshold, so the size doubles until the first one is
    /// mapped (other tests in this process leave free heap behind).
    func testLargeBlocksStayOutOfTheHeap() throws {
        MemoryTrim.keepLargeBlocksOutOfTheHeap()
        var size = 2 * MemoryTrim.largeBlock
        while size <= 16 << 20 {
            let before = try mappedBlocks()
            let first = malloc(size)
            let mapped = try mappedBlocks() == before + 1
            free(first)
            if mapped {
                let second = malloc(size)
                defer { free(second) }
                XCTAssertEqual(try mappedBlocks(), before + 1, "the next \(size >> 20) MiB block is mapped too")
                return
            }
            size *= 2
        }
        XCTFail("the heap had room for every size tried")
    }

    /// `<total type="mmap" count="N" .../>` from glibc's `malloc_info`.
    private func mappedBlocks() throws -> Int {
        let info = mallocFunction("malloc_info", as: (@convention(c) (Int32, UnsafeMutablePointer<FILE>) -> Int32).self)
        var buffer: UnsafeMutablePointer<CChar>?
        var size = 0
        let stream = try XCTUnwrap(open_memstream(&buffer, &size))
        XCTAssertEqual(info(0, stream), 0)
        fclose(stream)
        defer { free(buffer) }
        let xml = String(cString: try XCTUnwrap(buffer))
        let total = try XCTUnwrap(xml.split(separator: "\n").last { $0.contains("<total type=\"mmap\"") })
        let count = try XCTUnwrap(total.split(separator: "count=\"").last?.prefix { $0.isNumber })
        return try XCTUnwrap(Int(count))
    }

    /// 600 piles connect and leave (1,200 connections opened or closed): the next
    /// quiet interval trims, logs and counts it, and nothing more happens without churn.
    func testTrimsAfterConnectionChurn() throws {
        let g = try Gateway(config: "[redis]\nenabled = false\n", server: "memory_trim_interval = 1")
        defer { XCTAssertEqual(g.stop(), 0) }
        for i in 0..<600 {
            let c = try RawClient(port: g.port)
            XCTAssertEqual(c.connect(Connect(clientID: "trim\(i)"))?.returnCode, .accepted)
            c.send(.disconnect)
            XCTAssertTrue(c.waitClosed())
        }
        let line = g.waitForLog("connection churn over: returned", timeout: 8)
        XCTAssertNotNil(line)
        XCTAssertTrue(line?.contains("(malloc_trim)") == true, line ?? "")
        guard let port = g.adminPort else { return XCTFail("no admin port") }
        sleep(3)
        let metrics = try http(port, "/metrics").body
        XCTAssertEqual(metricValue(metrics, "pilegate_memory_trims_total"), 1)
        XCTAssertNotNil(metricValue(metrics, "pilegate_memory_trimmed_bytes_total"))
    }
}
