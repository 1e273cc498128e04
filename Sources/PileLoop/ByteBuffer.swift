import Glibc

/// A growable byte buffer over malloc with explicit ownership: the owner calls
/// `release()`. Used for connection send queues, whose storage must stay put while
/// the kernel reads it, and which idle connections must not keep.
public struct ByteBuffer {
    public private(set) var base: UnsafeMutableRawPointer?
    // 32-bit sizes keep the struct at 16 bytes: it sits in every connection's slab entry.
    private var used: UInt32 = 0
    private var allocated: UInt32 = 0

    @inlinable public var count: Int { Int(usedCount) }
    public var capacity: Int { Int(allocated) }
    @usableFromInline var usedCount: UInt32 { used }

    public init() {}

    @inlinable public var isEmpty: Bool { count == 0 }

    public mutating func reserve(_ extra: Int) {
        let need = count + extra
        if need <= capacity { return }
        var cap = max(capacity * 2, 256)
        while cap < need { cap *= 2 }
        precondition(cap <= Int(UInt32.max), "ByteBuffer over 4 GiB")
        base = realloc(base, cap)
        precondition(base != nil, "out of memory")
        allocated = UInt32(cap)
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(bytes.count)
        (base! + count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        used += UInt32(bytes.count)
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// Let `body` write up to `max` bytes at the end; it returns how many it wrote.
    public mutating func write(max: Int, _ body: (UnsafeMutableRawBufferPointer) -> Int) {
        reserve(max)
        let n = body(UnsafeMutableRawBufferPointer(start: base! + count, count: max))
        used += UInt32(n)
    }

    /// Drop the first `n` bytes (after a partial send).
    public mutating func consume(_ n: Int) {
        precondition(n <= count)
        if n == count { used = 0; return }
        memmove(base!, base! + n, count - n)
        used -= UInt32(n)
    }

    public mutating func clear() { used = 0 }

    public mutating func release() {
        free(base)
        base = nil
        used = 0
        allocated = 0
    }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}
