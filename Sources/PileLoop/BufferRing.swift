import CURing
import Glibc

/// A provided-buffer ring: the kernel picks a buffer when data arrives, so an idle
/// connection owns no receive memory. Buffers go back with `recycle` and become
/// visible to the kernel at `publish` (once per loop turn).
public final class BufferRing {
    public let group: UInt16
    public let count: UInt32
    public let size: Int
    private let ring: Ring
    private let br: UnsafeMutablePointer<io_uring_buf_ring>
    private let memory: UnsafeMutableRawPointer
    private let mask: Int32
    private var pending: Int32 = 0

    public init(ring: Ring, group: UInt16, count: UInt32, size: Int) throws {
        precondition(count.nonzeroBitCount == 1, "buffer count must be a power of two")
        var err: Int32 = 0
        guard let br = cur_setup_buf_ring(ring.raw, count, Int32(group), &err) else {
            throw RingError("io_uring_register_buf_ring", -err)
        }
        self.ring = ring
        self.br = br
        self.group = group
        self.count = count
        self.size = size
        self.mask = io_uring_buf_ring_mask(count)
        memory = UnsafeMutableRawPointer.allocate(byteCount: Int(count) * size, alignment: 4096)
        for id in 0..<count { recycle(UInt16(id)) }
        publish()
    }

    deinit {
        cur_free_buf_ring(ring.raw, br, count, Int32(group))
        memory.deallocate()
    }

    @inlinable public func bytes(_ id: UInt16, _ length: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + Int(id) * bufferSize, count: length)
    }

    @usableFromInline var base: UnsafeMutableRawPointer { memory }
    @usableFromInline var bufferSize: Int { size }

    public func recycle(_ id: UInt16) {
        io_uring_buf_ring_add(br, memory + Int(id) * size, UInt32(size), id, mask, pending)
        pending += 1
    }

    public func publish() {
        if pending > 0 {
            io_uring_buf_ring_advance(br, pending)
            pending = 0
        }
    }
}
