import Atomics
import Glibc
import MQTTCodec
import PileLoop

struct Plan: Sendable {
    var target: SocketAddress
    var sources: [SocketAddress]
    var profile: Profile
    var firstIndex: Int
    var connections: Int
    var keepAlive: UInt16
    var connectRate: Int          // new connections per second, this worker
    var maxPending: Int           // connects in flight at once
    var payload: Int
    var burst: Int                // PUBLISH packets per send
    var qos: QoS
    var rate: Int                 // messages per second from this worker; 0 = as fast as possible
    var subscribeOwn: Bool        // piles subscribe to their own cmd topic
    var hostsSubscriber: Bool     // fanin: this worker owns the wildcard subscriber (connection 0)
    var fileTable: Int
    /// Reconnect after a refusal or a close, after 100-1000 ms (a pile's own backoff).
    var retry: Bool
    /// Piles log in as user = client id with this password (the fan-in subscriber stays anonymous).
    var password: String?
    /// pile: each gun sends run data every `minInterval...maxInterval` ms; every
    /// `tradeEvery`-th message of a pile is a trade record (1-2 KB).
    var guns: Int
    var minInterval: Int
    var maxInterval: Int
    var tradeEvery: Int
    /// Commands coming back carry their send time (`"t":µs`): record end-to-end latency.
    var measureEndToEnd: Bool
    /// downlink: this many piles drop their link on their command, before the PUBACK,
    /// and reconnect: the gateway must send it again.
    var dropBeforeAck = 0
}

/// Counters the main thread reads for progress and the report.
final class Stats: @unchecked Sendable {
    /// Latencies in the measured window (PUBACK, command delivery end to end) and of
    /// every connect (socket to CONNACK). Written by the worker only; read by the
    /// main thread after `finished` (release/acquire).
    let puback = LatencyRecorder()
    let endToEnd = LatencyRecorder()
    let connect = LatencyRecorder()
    let connected = ManagedAtomic<Int>(0)
    let failed = ManagedAtomic<Int>(0)
    let closedByServer = ManagedAtomic<Int>(0)
    let published = ManagedAtomic<Int>(0)
    let acked = ManagedAtomic<Int>(0)
    let received = ManagedAtomic<Int>(0)
    let subscribed = ManagedAtomic<Int>(0)
    /// CONNACKs with a non-zero return code, and reconnect attempts (--retry).
    let refused = ManagedAtomic<Int>(0)
    let retries = ManagedAtomic<Int>(0)
    let droppedBeforeAck = ManagedAtomic<Int>(0)
    /// storm: this worker has dropped its piles (the storm's "back" waits for every worker).
    let stormed = ManagedAtomic<Bool>(false)
    let finished = ManagedAtomic<Bool>(false)
}

/// Shared switches from the main thread.
final class Control: Sendable {
    let go = ManagedAtomic<Bool>(false)      // start publishing (storm: drop everyone)
    /// µs (monotonic) the run started: latency series count seconds from here.
    let epoch = micros()
    let measure = ManagedAtomic<Bool>(false) // record latencies (after warm-up)
    let stop = ManagedAtomic<Bool>(false)    // end the run
}

/// pile id: 8 upper-case letters from an index (AAAAAAAA, AAAAAAAB, ...).
func pileID(_ n: Int) -> String {
    var x = n
    var chars = [UInt8](repeating: UInt8(ascii: "A"), count: 8)
    for i in (0..<8).reversed() {
        chars[i] = UInt8(ascii: "A") + UInt8(x % 26)
        x /= 26
    }
    return String(decoding: chars, as: UTF8.self)
}

enum LOp {
    static let socket: UInt8 = 1, sockopt: UInt8 = 2, bind: UInt8 = 3, connect: UInt8 = 4
    static let recv: UInt8 = 5, send: UInt8 = 6, timer: UInt8 = 7, close: UInt8 = 8
}

/// One client connection's state; slot index = fixed-file index.
struct Client {
    enum State { case unused, connecting, awaitingConnack, connected, failed }
    var state = State.unused
    /// Connection attempt, in every tag: completions of an abandoned socket are ignored.
    var attempt: UInt32 = 0
    var sending = false
    var failedOnce = false
    var out = ByteBuffer()        // control packets (CONNECT, SUBSCRIBE, PINGREQ)
    var inFlight = ByteBuffer()
    var burst = ByteBuffer()      // prebuilt PUBLISH packets (publishers)
    var burstInFlight = false
    var burstSent = 0             // bytes of the current burst already written
    var awaitingAcks = 0          // QoS 1/2: acknowledgements still owed for the last burst
    var burstStarted: UInt64 = 0  // µs, when the last burst went out
    var rx: [UInt8] = []
    var dirty = false
    var nextID: UInt16 = 0
    var connectStarted: UInt64 = 0   // µs
    /// pile: the one QoS 1 PUBLISH whose PUBACK is being timed, and messages sent.
    var timedID: UInt16 = 0
    var timedAt: UInt64 = 0
    var messages: UInt32 = 0
    /// downlink: this pile dropped its link once before acknowledging (--drop-before-ack).
    var dropped = false
}

/// Monotonic microseconds.
func micros() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
}
