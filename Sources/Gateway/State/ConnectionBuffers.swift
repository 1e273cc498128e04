import PileLoop

/// A connection's three byte buffers: a packet that straddles receive buffers,
/// packets encoded this turn, and the bytes the kernel is sending.
struct ConnectionBuffers {
    var inbound = ByteBuffer()
    var outbound = ByteBuffer()
    var inFlight = ByteBuffer()

    /// None holds memory: the pool entry can go back.
    var isReleased: Bool { inbound.base == nil && outbound.base == nil && inFlight.base == nil }

    /// What was queued becomes what is sent, and the drained send buffer takes the
    /// next turn's packets (both keep their memory).
    mutating func flip() { swap(&outbound, &inFlight) }

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
/// (`Shard.buffers(_:)`); it goes back once all three are released.
struct BufferPool {
    private(set) var entries = [ConnectionBuffers()]
    private var free: [UInt32] = []

    /// Entries holding bytes (the pool's size is the peak of this).
    var taken: Int { entries.count - 1 - free.count }

    mutating func take() -> UInt32 {
        if let i = free.popLast() { return i }
        entries.append(ConnectionBuffers())
        return UInt32(entries.count - 1)
    }

    mutating func give(_ i: UInt32) {
        precondition(i != 0 && entries[Int(i)].isReleased)
        free.append(i)
    }

    subscript(i: UInt32) -> ConnectionBuffers {
        get { entries[Int(i)] }
        _modify { yield &entries[Int(i)] }
    }
}
