import Glibc

/// A growable byte buffer over malloc with explicit ownership: the owner calls
/// `release()`. Used for connection send queues, whose storage must stay put while
/// the kernel reads it, and which idle connections must not keep.
public struct ByteBuffer {
    public private(set) var base: UnsafeMutableRawPointer?
    // 32-bit sizes keep the struct at 16 bytes: it sits in every connection's slab entry.
    @usableFromInline var used: UInt32 = 0
    @usableFromInline var allocated: UInt32 = 0

    @inlinable public var count: Int { Int(used) }
    @inlinable public var capacity: Int { Int(allocated) }

    public init() {}

    @inlinable public var isEmpty: Bool { count == 0 }

    // Inlinable with the growth out of line: the RESP writer calls these several
    // times per field of every uplink XADD, and as calls across the module they were
    // 5% of the gateway's CPU at 20,000 msgs/s (perf, bench/README "RESP writer").
    @inlinable public mutating func reserve(_ extra: Int) {
        if count + extra > capacity { grow(to: count + extra) }
    }

    @usableFromInline mutating func grow(to need: Int) {
        var cap = max(capacity * 2, 256)
        while cap < need { cap *= 2 }
        precondition(cap <= Int(UInt32.max), "ByteBuffer over 4 GiB")
        base = realloc(base, cap)
        precondition(base != nil, "out of memory")
        allocated = UInt32(cap)
    }

    @inlinable public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(bytes.count)
        (base! + count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        used += UInt32(bytes.count)
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// Let `body` write up to `max` bytes at the end; it returns how many it wrote.
    @inlinable public mutating func write(max: Int, _ body: (UnsafeMutableRawBufferPointer) -> Int) {
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
