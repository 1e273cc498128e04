import Glibc
import PileLoop

/// Free heap pages go back to the kernel once a burst of connections is over.
///
/// A connect burst leaves glibc's arenas with free pages between the sessions that
/// stay: per-connect memory that is transient (CONNECT fields, CONNACK and SUBACK
/// buffers, per-turn lists grown for the burst, index arrays outgrown on the way).
/// malloc keeps them for reuse, and they count in the RSS. malloc_trim(0) gives
/// back every whole free page: 200,000 subscribed piles measured 493 B of RSS per
/// pile after connecting and 412 B after one trim (bench/README.md, "scale.sh").
/// A trim walks every arena under its lock, so it runs once the churn has stopped:
/// at least `minChurn` connections opened or closed since the last trim, and fewer
/// than a tenth as many during the last interval (a burst still going reuses the
/// free memory anyway).
struct MemoryTrim {
    static let minChurn: UInt64 = 1000
    private var churnAtTrim: UInt64 = 0
    private var churnBefore: UInt64 = 0

    /// Called every interval with the connections opened plus closed so far;
    /// true when a trim is due (and counted as done).
    mutating func due(churn: UInt64) -> Bool {
        defer { churnBefore = churn }
        let since = churn &- churnAtTrim, recent = churn &- churnBefore
        guard since >= Self.minChurn, recent * 10 < since else { return false }
        churnAtTrim = churn
        return true
    }

    /// Blocks of 1 MiB and more that the heap has no free room for are mapped on
    /// their own and go back when freed; the heap is shrunk only by the trim above,
    /// not by every free.
    ///
    /// glibc's default raises its mmap threshold to the size of each mmapped block
    /// freed (up to 32 MiB), so once an index array or a Redis pipeline buffer has
    /// grown and moved, the next blocks of that size are carved from the heap
    /// between the sessions and leave holes there when they move again. Side by side
    /// at 200,000 piles (`bench/scale.sh`, bench/README.md "scale.sh"): 527 and 460 B
    /// of RSS per pile after connecting, 436 and 374 B after the trim, against 312 and
    /// 310, then 290 and 289 B. Not lower than 1 MiB: at 128 KiB the turn's relay
    /// batches (hundreds of KiB at full speed) were mapped and faulted in on every
    /// turn, 20,000 page faults a second. The trim threshold goes up with it, as
    /// glibc's own adjustment would, or arenas shrink and fault back in all the time.
    static func keepLargeBlocksOutOfTheHeap() {
        let mallopt = mallocFunction("mallopt", as: (@convention(c) (Int32, Int32) -> Int32).self)
        let M_TRIM_THRESHOLD: Int32 = -1, M_MMAP_THRESHOLD: Int32 = -3   // malloc.h
        precondition(mallopt(M_MMAP_THRESHOLD, Int32(largeBlock)) == 1 && mallopt(M_TRIM_THRESHOLD, 64 << 20) == 1,
                     "mallopt refused")
    }

    static let largeBlock = 1 << 20

    fileprivate static let trim = mallocFunction("malloc_trim", as: (@convention(c) (Int) -> Int32).self)
}

/// A function of glibc's malloc.h, which is not in the Glibc module.
func mallocFunction<F>(_ name: String, as type: F.Type) -> F {
    guard let f = dlsym(nil, name) else { fatalError("\(name) not found in the C library") }
    return unsafeBitCast(f, to: type)
}

extension Shard {
    /// Shard 0, every `server.memory_trim_interval` seconds.
    func trimMemoryIfDue() {
        let churn = Counters.total(.connectionsAccepted, ctx.counters) + Counters.total(.connectionsClosed, ctx.counters)
        guard memoryTrim.due(churn: churn) else { return }
        let before = Metrics.residentBytes(), t0 = monotonicNanos()
        _ = MemoryTrim.trim(0)
        let freed = max(0, before - Metrics.residentBytes()), ms = (monotonicNanos() - t0) / 1_000_000
        counters.add(.memoryTrims)
        counters.add(.memoryTrimmedBytes, UInt64(freed))
        logger.info("connection churn over: returned \(freed >> 20) MiB of free heap to the kernel in \(ms) ms (malloc_trim)")
    }
}
