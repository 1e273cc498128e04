/// The 64-bit `user_data` of every SQE: which operation, on which slab slot, of
/// which generation. A completion whose generation no longer matches its slot is
/// from a connection that is gone and is ignored: no object pointers in the ring.
public struct Tag: Equatable {
    public var op: UInt8
    public var generation: UInt32   // 24 bits used
    public var slot: UInt32

    @inlinable public init(op: UInt8, slot: UInt32, generation: UInt32) {
        self.op = op; self.slot = slot; self.generation = generation & 0xFF_FFFF
    }

    @inlinable public init(_ raw: UInt64) {
        op = UInt8(truncatingIfNeeded: raw >> 56)
        generation = UInt32(truncatingIfNeeded: raw >> 32) & 0xFF_FFFF
        slot = UInt32(truncatingIfNeeded: raw)
    }

    @inlinable public var raw: UInt64 {
        UInt64(op) << 56 | UInt64(generation & 0xFF_FFFF) << 32 | UInt64(slot)
    }
}
