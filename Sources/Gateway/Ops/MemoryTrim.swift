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

    /// glibc's malloc_trim (malloc.h is not in the Glibc module).
    fileprivate static let trim: @convention(c) (Int) -> Int32 = {
        guard let f = dlsym(nil, "malloc_trim") else { fatalError("malloc_trim not found in the C library") }
        return unsafeBitCast(f, to: (@convention(c) (Int) -> Int32).self)
    }()
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
