import XCTest
@testable import MQTTCodec

/// Seeded random decoding: random bytes, and valid packets with bytes flipped,
/// cut, or spliced. The decoder must never trap, must never claim more bytes than
/// it was given, and whatever it accepts must re-encode to an equal packet.
final class FuzzTests: XCTestCase {
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    func check(_ bytes: [UInt8], _ stats: inout [String: Int]) {
        let r = bytes.withUnsafeBytes { Decoder.decode($0, maxPacketSize: 1 << 16) }
        switch r {
        case .packet(let p, let n):
            XCTAssertLessThanOrEqual(n, bytes.count)
            let again = Encoder.encode(p)
            XCTAssertEqual(again.withUnsafeBytes { Decoder.decode($0) }, .packet(p, consumed: again.count),
                           "re-encode of \(p.type) from \(bytes.prefix(32))")
            stats["packet", default: 0] += 1
        case .incomplete(let needed):
            if let needed { XCTAssertGreaterThan(needed, bytes.count) }
            stats["incomplete", default: 0] += 1
        case .failure:
            stats["failure", default: 0] += 1
        }
    }

    func testRandomBytes() {
        var rng = SplitMix(state: 0x5EED_0001)
        var stats: [String: Int] = [:]
        for _ in 0..<100_000 {
            let n = Int.random(in: 0...64, using: &rng)
            var bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if n > 1 { bytes[1] = UInt8(min(n - 2, 127)) }   // plausible length, so bodies get parsed
            check(bytes, &stats)
        }
        XCTAssertGreaterThan(stats["failure", default: 0], 0)
        XCTAssertGreaterThan(stats["packet", default: 0], 0, "some random inputs are valid packets")
    }

    func testMutatedValidPackets() {
        var rng = SplitMix(state: 0x5EED_0002)
        var stats: [String: Int] = [:]
        let seeds = RoundTripTests.samples.filter { Encoder.size(of: $0) < 4096 }.map { Encoder.encode($0) }
        for _ in 0..<200_000 {
            var b = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
            switch Int.random(in: 0..<4, using: &rng) {
            case 0:   // flip bits
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    b[Int.random(in: 0..<b.count, using: &rng)] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng)
                }
            case 1:   // truncate
                b.removeLast(Int.random(in: 0..<b.count, using: &rng))
            case 2:   // overwrite one byte
                b[Int.random(in: 0..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            default:  // splice two packets
                b += seeds[Int.random(in: 0..<seeds.count, using: &rng)]
            }
            check(b, &stats)
        }
        XCTAssertGreaterThan(stats["failure", default: 0], 1000)
        XCTAssertGreaterThan(stats["packet", default: 0], 1000)
    }
}
