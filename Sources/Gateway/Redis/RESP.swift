import PileLoop

/// Redis commands written as RESP arrays of bulk strings straight into a send
/// buffer (cheaper than hiredis' redisFormatCommandArgv, which allocates per command).
extension ByteBuffer {
    mutating func respArray(_ n: Int) { respHeader(UInt8(ascii: "*"), n) }

    mutating func respBulk(_ s: String) {
        var s = s
        s.withUTF8 { respBulk(UnsafeRawBufferPointer($0)) }
    }

    mutating func respBulk(_ b: [UInt8]) { b.withUnsafeBytes { respBulk($0) } }

    mutating func respBulk(_ raw: UnsafeRawBufferPointer) {
        reserve(raw.count + 24)
        respHeader(UInt8(ascii: "$"), raw.count)
        append(raw)
        respCRLF()
    }

    /// One bulk string written from three pieces (a key made of a prefix, a separator
    /// and a client id): no String built per command.
    mutating func respBulk(_ a: String, _ b: StaticString, _ c: String) {
        reserve(a.utf8.count + b.utf8CodeUnitCount + c.utf8.count + 24)
        respHeader(UInt8(ascii: "$"), a.utf8.count + b.utf8CodeUnitCount + c.utf8.count)
        var a = a, c = c
        a.withUTF8 { append(UnsafeRawBufferPointer($0)) }
        append(UnsafeRawBufferPointer(start: b.utf8Start, count: b.utf8CodeUnitCount))
        c.withUTF8 { append(UnsafeRawBufferPointer($0)) }
        respCRLF()
    }

    /// A 16-bit and a 64-bit number, big-endian, as one 10-byte bulk string.
    mutating func respBulk(_ high: UInt16, _ low: UInt64) {
        write(max: 17) { out in
            out[0] = UInt8(ascii: "$"); out[1] = UInt8(ascii: "1"); out[2] = UInt8(ascii: "0"); out[3] = 13; out[4] = 10
            out[5] = UInt8(high >> 8); out[6] = UInt8(truncatingIfNeeded: high)
            for i in 0..<8 { out[7 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(i))) }
            out[15] = 13; out[16] = 10
            return 17
        }
    }

    /// A number as a bulk string, after `prefix`, formatted in place: no String
    /// per command on the uplink path (message ids, timestamps).
    mutating func respBulk(prefix: [UInt8] = [], number n: UInt64) {
        let digits = Self.digitCount(n)
        reserve(prefix.count + digits + 24)
        respHeader(UInt8(ascii: "$"), prefix.count + digits)
        prefix.withUnsafeBytes { append($0) }
        write(max: digits + 2) { out in
            Self.format(n, digits, into: out)
            out[digits] = 13; out[digits + 1] = 10
            return digits + 2
        }
    }

    /// A whole command from string arguments (control commands, not the hot path).
    mutating func respCommand(_ args: [String]) {
        respArray(args.count)
        for a in args { respBulk(a) }
    }

    /// `*` or `$`, a count and CRLF in one write: the parts of every field of every
    /// XADD, so one bounds check and one store run each, and digits go straight to
    /// their place (bench/README, "RESP writer").
    private mutating func respHeader(_ marker: UInt8, _ n: Int) {
        let digits = Self.digitCount(UInt64(n))
        write(max: digits + 3) { out in
            out[0] = marker
            Self.format(UInt64(n), digits, into: UnsafeMutableRawBufferPointer(rebasing: out[1...]))
            out[digits + 1] = 13; out[digits + 2] = 10
            return digits + 3
        }
    }

    private mutating func respCRLF() { write(max: 2) { $0[0] = 13; $0[1] = 10; return 2 } }

    private static func digitCount(_ n: UInt64) -> Int {
        var digits = 1, v = n
        while v >= 10 { v /= 10; digits += 1 }
        return digits
    }

    /// `n`'s `digits` decimal digits at the start of `out`, last digit first.
    private static func format(_ n: UInt64, _ digits: Int, into out: UnsafeMutableRawBufferPointer) {
        var v = n, i = digits
        repeat { i -= 1; out[i] = UInt8(ascii: "0") + UInt8(v % 10); v /= 10 } while i > 0
    }
}
