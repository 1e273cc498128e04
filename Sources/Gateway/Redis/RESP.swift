import PileLoop

/// Redis commands written as RESP arrays of bulk strings straight into a send
/// buffer (cheaper than hiredis' redisFormatCommandArgv, which allocates per command).
extension ByteBuffer {
    mutating func respArray(_ n: Int) {
        respByte(UInt8(ascii: "*")); respNumber(n); respCRLF()
    }

    mutating func respBulk(_ s: String) {
        var s = s
        s.withUTF8 { respBulk(UnsafeRawBufferPointer($0)) }
    }

    mutating func respBulk(_ b: [UInt8]) { b.withUnsafeBytes { respBulk($0) } }

    mutating func respBulk(_ raw: UnsafeRawBufferPointer) {
        reserve(raw.count + 16)
        respByte(UInt8(ascii: "$")); respNumber(raw.count); respCRLF()
        append(raw)
        respCRLF()
    }

    /// One bulk string written from three pieces (a key made of a prefix, a separator
    /// and a client id): no String built per command.
    mutating func respBulk(_ a: String, _ b: StaticString, _ c: String) {
        reserve(a.utf8.count + b.utf8CodeUnitCount + c.utf8.count + 16)
        respByte(UInt8(ascii: "$")); respNumber(a.utf8.count + b.utf8CodeUnitCount + c.utf8.count); respCRLF()
        var a = a, c = c
        a.withUTF8 { append(UnsafeRawBufferPointer($0)) }
        append(UnsafeRawBufferPointer(start: b.utf8Start, count: b.utf8CodeUnitCount))
        c.withUTF8 { append(UnsafeRawBufferPointer($0)) }
        respCRLF()
    }

    /// A 16-bit and a 64-bit number, big-endian, as one 10-byte bulk string.
    mutating func respBulk(_ high: UInt16, _ low: UInt64) {
        reserve(16)
        respByte(UInt8(ascii: "$")); respNumber(10); respCRLF()
        write(max: 10) { out in
            out[0] = UInt8(high >> 8); out[1] = UInt8(truncatingIfNeeded: high)
            for i in 0..<8 { out[2 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(i))) }
            return 10
        }
        respCRLF()
    }

    /// A number as a bulk string, after `prefix`, formatted in place: no String
    /// per command on the uplink path (message ids, timestamps).
    mutating func respBulk(prefix: [UInt8] = [], number n: UInt64) {
        var digits = 1, v = n
        while v >= 10 { v /= 10; digits += 1 }
        reserve(prefix.count + digits + 16)
        respByte(UInt8(ascii: "$")); respNumber(prefix.count + digits); respCRLF()
        prefix.withUnsafeBytes { append($0) }
        respNumber(Int(n))
        respCRLF()
    }

    /// A whole command from string arguments (control commands, not the hot path).
    mutating func respCommand(_ args: [String]) {
        respArray(args.count)
        for a in args { respBulk(a) }
    }

    private mutating func respByte(_ b: UInt8) { write(max: 1) { $0[0] = b; return 1 } }
    private mutating func respCRLF() { write(max: 2) { $0[0] = 13; $0[1] = 10; return 2 } }

    private mutating func respNumber(_ n: Int) {
        write(max: 20) { out in
            var v = n, digits = 0
            repeat { out[digits] = UInt8(ascii: "0") + UInt8(v % 10); v /= 10; digits += 1 } while v > 0
            out[0..<digits].reverse()
            return digits
        }
    }
}
