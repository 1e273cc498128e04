import CHiredis
import PileLoop
import XCTest
@testable import Gateway

/// The RESP writer (Redis/RESP.swift) against hiredis' own formatter: the same
/// bytes for every kind of field, at each digit-count boundary of the lengths and
/// numbers, and across the buffer's growth.
final class RESPWriterTests: XCTestCase {
    /// hiredis' `redisFormatCommandArgv` of these arguments.
    func hiredis(_ args: [[UInt8]]) -> [UInt8] {
        var out: UnsafeMutablePointer<CChar>?
        let n = RedisServer.withArgv(args) { redisFormatCommandArgv(&out, Int32(args.count), $0, $1) }
        defer { redisFreeCommand(out) }
        return Array(UnsafeRawBufferPointer(start: out, count: Int(n)))
    }

    func testFieldsAreWhatHiredisWrites() {
        let numbers: [UInt64] = [0, 9, 10, 99, 100, 65_535, 1_795_267_226_012, UInt64(Int64.max), UInt64.max]
        for n in numbers {
            let payload = [UInt8](repeating: 0x41, count: Int(n % 1_000))   // lengths 0 .. 999: one to three digits
            var b = ByteBuffer()
            defer { b.release() }
            b.respArray(6)
            b.respBulk("XADD")
            b.respBulk(payload)
            b.respBulk(number: n)
            b.respBulk(prefix: Array("gw-1-".utf8), number: n)
            b.respBulk("pilegate:up:{3}", ":dd:", "AAAAAJQX")
            b.respBulk(UInt16(truncatingIfNeeded: n), n)
            var record = [UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)]
            for i in 0..<8 { record.append(UInt8(truncatingIfNeeded: n >> (56 - 8 * UInt64(i)))) }
            let expected = hiredis([Array("XADD".utf8), payload, Array(String(n).utf8), Array("gw-1-\(n)".utf8),
                                    Array("pilegate:up:{3}:dd:AAAAAJQX".utf8), record])
            XCTAssertEqual(Array(b.bytes), expected, "number \(n)")
        }
    }

    func testManyCommandsGrowTheBufferIntact() {
        var b = ByteBuffer()
        defer { b.release() }
        var expected: [UInt8] = []
        let big = [UInt8](repeating: 7, count: 70_000)
        for i in 0..<300 {
            let payload = i % 100 == 0 ? big : Array("payload \(i)".utf8)
            b.respArray(3); b.respBulk("SET"); b.respBulk(number: UInt64(i)); b.respBulk(payload)
            expected += hiredis([Array("SET".utf8), Array(String(i).utf8), payload])
        }
        XCTAssertEqual(Array(b.bytes), expected)
        XCTAssertGreaterThanOrEqual(b.capacity, b.count)
    }
}
