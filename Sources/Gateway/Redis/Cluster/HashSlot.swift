import PileLoop

/// Redis Cluster's map from a key to one of 16,384 hash slots: CRC16 (XMODEM,
/// polynomial 0x1021) of the key, or of the text between its first `{` and the
/// next `}` when that text is not empty (the hash tag), modulo 16,384. Keys with
/// the same tag share a slot, which is what lets a Lua script touch them together.
enum HashSlot {
    static let count = 16384

    static func of(_ key: String) -> UInt16 {
        var key = key
        return key.withUTF8 { of(UnsafeRawBufferPointer($0)) }
    }

    static func of(_ key: [UInt8]) -> UInt16 { key.withUnsafeBytes { of($0) } }

    /// A key written as a prefix and a client id (a mailbox), without building it.
    static func of(_ prefix: String, _ rest: String) -> UInt16 {
        of(Array(prefix.utf8) + Array(rest.utf8))
    }

    static func of(_ key: UnsafeRawBufferPointer) -> UInt16 {
        var bytes = key
        if let open = key.firstIndex(of: UInt8(ascii: "{")),
           let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1 {
            bytes = UnsafeRawBufferPointer(rebasing: key[(open + 1)..<close])
        }
        return crc16(bytes) & 0x3FFF
    }

    /// CRC16-CCITT (XMODEM): initial 0, no reflection, no final xor.
    static func crc16(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        var crc: UInt16 = 0
        for b in bytes { crc = (crc << 8) ^ table[Int((crc >> 8) ^ UInt16(b))] }
        return crc
    }

    private static let table: [UInt16] = (0..<256).map { i in
        var c = UInt16(i) << 8
        for _ in 0..<8 { c = c & 0x8000 != 0 ? (c << 1) ^ 0x1021 : c << 1 }
        return c
    }
}
