import PileLoop

/// A connection's three byte buffers: a packet that straddles receive buffers,
/// packets encoded this turn, and the bytes the kernel is sending.
struct ConnectionBuffers {
    var inbound = ByteBuffer()
    var outbound = ByteBuffer()
    var inFlight = ByteBuffer()

    /// Bytes waiting to be sent: queued and in the kernel's hands.
    var unsent: Int { outbound.count + inFlight.count }

    /// None holds bytes: the pool entry can go back.
    var isDrained: Bool { inbound.isEmpty && outbound.isEmpty && inFlight.isEmpty }

    /// None holds memory either.
    var isReleased: Bool { inbound.base == nil && outbound.base == nil && inFlight.base == nil }

    /// Small enough to keep for the next connection.
    var isSmall: Bool {
        max(inbound.capacity, outbound.capacity, inFlight.capacity) <= BufferPool.keptCapacity
    }

    /// What was queued becomes what is sent, and the drained send buffer takes the
    /// next turn's packets (both keep their memory).
    mutating func flip() { swap(&outbound, &inFlight) }

    mutating func clear() {
        inbound.clear(); outbound.clear(); inFlight.clear()
    }

    mutating func release() {
        inbound.release(); outbound.release(); inFlight.release()
    }
}

/// The buffers of a shard's connections that have bytes in flight, by index.
/// A slab entry holds a 4-byte index instead of three 16-byte buffers: at any
/// moment nearly every pile is idle with all three empty, and 200,000 slab
/// entries carried 48 bytes each for nothing (112 -> 64 bytes an entry).
///
/// Entry 0 is empty and never written: an idle connection (index 0) reads empty
/// buffers without taking an entry. Whatever writes bytes takes one first
/// (`Shard.buffers(_:)`); it goes back once all three are drained.
///
/// Up to `keptEntries` entries given back keep their (small) memory for the next
/// connection: a CONNACK, SUBACK or PUBACK then costs no malloc and no free. Freed
/// instead, each 256-byte send buffer of a connect burst became a hole that the
/// next connection's Session was carved from, leaving a 112-byte remainder nothing
/// reuses (malloc_info after 50,000 connects: 24,136 free 112-byte chunks).
struct BufferPool {
    /// Warm entries kept per shard, and the most memory each buffer of one may keep.
    static let keptEntries = 256
    static let keptCapacity = 4096
    private(set) var entries = [ConnectionBuffers()]
    /// Free entries that kept their memory, and free entries without any.
    private var warm: [UInt32] = []
    private var cold: [UInt32] = []

    /// Entries holding bytes (the pool's size is the peak of this).
    var taken: Int { entries.count - 1 - warm.count - cold.count }
    var kept: Int { warm.count }

    mutating func take() -> UInt32 {
        if let i = warm.popLast() ?? cold.popLast() { return i }
        entries.append(ConnectionBuffers())
        return UInt32(entries.count - 1)
    }

    mutating func give(_ i: UInt32) {
        precondition(i != 0 && entries[Int(i)].isDrained)
        if warm.count < Self.keptEntries && entries[Int(i)].isSmall && !entries[Int(i)].isReleased {
            warm.append(i)
        } else {
            entries[Int(i)].release()
            cold.append(i)
        }
    }

    subscript(i: UInt32) -> ConnectionBuffers {
        get { entries[Int(i)] }
        _modify { yield &entries[Int(i)] }
    }
}
