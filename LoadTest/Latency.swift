import Atomics
import Histogram

/// Latencies one worker records, in microseconds, as HdrHistograms (3 significant
/// digits, 1 µs to 10 min): the whole measured window, and the current second for
/// the per-second series behind `--plot`. Written by the worker thread only; the
/// main thread reads `total` and `series` after the worker has finished, and the
/// last completed second's p99 through an atomic for the progress line.
final class LatencyRecorder: @unchecked Sendable {
    private(set) var total = LatencyRecorder.make()
    private var second = LatencyRecorder.make()
    private var secondIndex = -1
    /// (second since the run's epoch, samples, p50 µs, p99 µs, max µs).
    private(set) var series: [(second: Int, count: UInt64, p50: UInt64, p99: UInt64, max: UInt64)] = []
    let lastP99 = ManagedAtomic<UInt64>(0)

    static func make() -> Histogram<UInt64> {
        Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    }

    /// `now` and `epoch` in µs: the sample's second is (now - epoch) / 1 s.
    func record(_ micros: UInt64, now: UInt64, epoch: UInt64) {
        let s = Int((now &- epoch) / 1_000_000)
        if s != secondIndex { closeSecond(); secondIndex = s }
        _ = total.record(max(1, micros))
        _ = second.record(max(1, micros))
    }

    /// End the current second (at a second boundary, and at the end of the run).
    func closeSecond() {
        guard secondIndex >= 0, second.totalCount > 0 else { return }
        let p99 = second.valueAtPercentile(99)
        series.append((secondIndex, second.totalCount, second.valueAtPercentile(50), p99, second.max))
        lastP99.store(p99, ordering: .relaxed)
        second.reset()
    }
}

extension Histogram where Count == UInt64 {
    /// "p50 p90 p99 p99.9 max" in milliseconds, for the report.
    var summary: [(String, Double?)] {
        let empty = totalCount == 0
        func ms(_ v: UInt64) -> Double? { empty ? nil : Double(v) / 1000 }
        return [("p50", ms(valueAtPercentile(50))), ("p90", ms(valueAtPercentile(90))), ("p99", ms(valueAtPercentile(99))),
                ("p999", ms(valueAtPercentile(99.9))), ("max", ms(max))]
    }
}
