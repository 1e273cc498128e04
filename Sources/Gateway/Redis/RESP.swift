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
