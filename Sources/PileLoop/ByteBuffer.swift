import Glibc

/// A growable byte buffer over malloc with explicit ownership: the owner calls
/// `release()`. Used for connection send queues, whose storage must stay put while
/// the kernel reads it, and which idle connections must not keep.
public struct ByteBuffer {
    public private(set) var base: UnsafeMutableRawPointer?
    public private(set) var count: Int = 0
    public private(set) var capacity: Int = 0

    public init() {}

    @inlinable public var isEmpty: Bool { count == 0 }

    public mutating func reserve(_ extra: Int) {
        let need = count + extra
        if need <= capacity { return }
        var cap = max(capacity * 2, 256)
        while cap < need { cap *= 2 }
        base = realloc(base, cap)
        precondition(base != nil, "out of memory")
        capacity = cap
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(bytes.count)
        (base! + count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        count += bytes.count
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// Let `body` write up to `max` bytes at the end; it returns how many it wrote.
    public mutating func write(max: Int, _ body: (UnsafeMutableRawBufferPointer) -> Int) {
        reserve(max)
        let n = body(UnsafeMutableRawBufferPointer(start: base! + count, count: max))
        count += n
    }

    /// Drop the first `n` bytes (after a partial send).
    public mutating func consume(_ n: Int) {
        precondition(n <= count)
        if n == count { count = 0; return }
        memmove(base!, base! + n, count - n)
        count -= n
    }

    public mutating func clear() { count = 0 }

    public mutating func release() {
        free(base)
        base = nil
        count = 0
        capacity = 0
    }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}
