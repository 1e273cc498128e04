import Glibc
import MQTTCodec
import PileLoop

/// One slab entry. Plain value, addressed by (slot, generation) in every SQE's
/// user_data. An idle connected client owns: this struct (64 bytes), its Session,
/// and no buffers (its pool entry goes back whenever they drain). Rarely used
/// state lives with the shard, by slot: the will in `Shard.wills`, an unfinished
/// CONNECT in `Shard.waits` (ConnectWaits).
struct Connection {
    enum State: UInt8 {
        case free, awaitingConnect, awaitingTakeover, connected, closing
    }

    var state: State = .free
    var generation: UInt32 = 0
    /// Index in the ring's fixed-file table.
    var file: Int32 = -1
    var recvArmed = false
    var sending = false
    var dirty = false
    var tornDown = false
    /// Close once the send queue has drained (a refusing CONNACK must arrive).
    var closeAfterFlush = false
    /// Not being read: its next PUBLISH waits for room in the Redis pipeline
    /// (backpressure). Bytes already received wait in `inbound`.
    var paused = false
    /// Held: not being read until whoever held it lets go (Loop/ReadHolds.swift):
    /// a throttle rate rule or a connect-rate slot (its wheel entry), the in-flight
    /// bound (Redis replies), a credential lookup (the reply).
    var throttled = false
    /// Counted in the ConnectGuard's per-IP table (released at close).
    var ipCounted = false
    /// From a listener with `proxy_protocol`: the first bytes must be a PROXY v2
    /// header, which replaces `peer` (ProxyProtocol.swift).
    var awaitingProxy = false
    /// QoS 1/2 PUBLISHes from this pile waiting on Redis (limits.max_inflight_in).
    var uplinksPending: UInt16 = 0
    /// Completions the kernel still owes for this slot; it is reused only at 0.
    var pendingOps: UInt16 = 0
    var keepAlive: UInt16 = 0
    /// Wheel tick (100 ms; 32 bits last 13 years) of the last packet received (the
    /// connection's one deadline lives in the wheel: `wheel.deadline(of:)`).
    var lastSeen: UInt32 = 0
    /// Tick the send now in flight was submitted (a partial send resubmits: progress).
    var sendSince: UInt32 = 0
    /// Its entry in the shard's buffer pool while it has bytes in or out
    /// (ConnectionBuffers.swift); 0, the empty entry, while idle.
    var buffers: UInt32 = 0
    var session: Session?
    var peer = Peer()
    /// Set on connections from the TLS listener: bytes pass through it both ways.
    var tls: TLSSession?

    var isOpen: Bool { state == .awaitingConnect || state == .awaitingTakeover || state == .connected }
}

extension ByteBuffer: ByteSink {
    @inlinable public mutating func append(byte: UInt8) {
        write(max: 1) { $0[0] = byte; return 1 }
    }
    @inlinable public mutating func append(bytes: UnsafeRawBufferPointer) { append(bytes) }
}
