import CURing
import Glibc

/// Errors from ring setup. Per-operation errors arrive as negative `res` in completions.
public struct RingError: Error, CustomStringConvertible {
    public let call: String
    public let errno: Int32
    public init(_ call: String, _ errno: Int32) { self.call = call; self.errno = errno }
    public var description: String { "\(call): \(String(cString: strerror(errno))) (\(errno))" }
}

/// One completion, copied out of the CQ so the slot can be released at once.
public struct Completion {
    public var userData: UInt64
    public var res: Int32
    public var flags: UInt32
    /// The parent request stays armed (multishot).
    @inlinable public var more: Bool { flags & IORING_CQE_F_MORE != 0 }
    /// Buffer id from the provided-buffer ring, when the kernel picked one.
    @inlinable public var bufferID: UInt16? {
        flags & IORING_CQE_F_BUFFER != 0 ? UInt16(truncatingIfNeeded: flags >> 16) : nil
    }
    @inlinable public init(userData: UInt64, res: Int32, flags: UInt32) {
        self.userData = userData; self.res = res; self.flags = flags
    }
}

/// An io_uring owned by exactly one thread (created with SINGLE_ISSUER and
/// DEFER_TASKRUN, which must be created on the submitting thread).
/// SQE preparation helpers are thin: they name the op, its fixed-file form and
/// the user_data tag, nothing else. No liburing type appears in this API: the
/// gateway and the load generator never import the C shim.
public final class Ring {
    /// The length of a relative timeout, kept where the kernel reads it when the
    /// timeout is submitted; arm it as often as needed.
    public final class Interval {
        let spec: UnsafeMutablePointer<__kernel_timespec>

        public init(nanoseconds: UInt64) {
            spec = .allocate(capacity: 1)
            spec.initialize(to: __kernel_timespec(tv_sec: Int64(nanoseconds / 1_000_000_000),
                                                  tv_nsec: Int64(nanoseconds % 1_000_000_000)))
        }

        deinit { spec.deallocate() }
    }

    @usableFromInline let raw: UnsafeMutablePointer<io_uring>
    private var cqes: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    private let batch: Int
    /// SQEs handed to the kernel so far (ring statistics).
    public private(set) var submitted: UInt64 = 0

    public init(entries: UInt32, cqBatch: Int = 512) throws {
        raw = .allocate(capacity: 1)
        raw.initialize(to: io_uring())
        var params = io_uring_params()
        params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
            | IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL
        params.cq_entries = entries * 8
        let ret = io_uring_queue_init_params(entries, raw, &params)
        if ret < 0 {
            raw.deallocate()
            // The two failures an operator meets, named with their cure.
            let hint = -ret == ENOMEM ? " (ring memory counts as locked memory: raise RLIMIT_MEMLOCK, e.g. LimitMEMLOCK=infinity in the unit or ulimit -l unlimited)"
                : -ret == EINVAL ? " (this kernel lacks IORING_SETUP_DEFER_TASKRUN or SINGLE_ISSUER: Linux 6.1 or later is needed)" : ""
            throw RingError("io_uring_queue_init_params" + hint, -ret)
        }
        batch = cqBatch
        cqes = .allocate(capacity: cqBatch)
    }

    deinit {
        io_uring_queue_exit(raw)
        raw.deallocate()
        cqes.deallocate()
    }

    /// Register a sparse fixed-file table: accepted sockets live here, not in the fd table.
    public func registerSparseFiles(_ count: UInt32) throws {
        let ret = io_uring_register_files_sparse(raw, count)
        if ret < 0 { throw RingError("io_uring_register_files_sparse(\(count))", -ret) }
    }

    /// A free SQE; submits what is queued when the SQ is full.
    func sqe() -> UnsafeMutablePointer<io_uring_sqe> {
        if let s = io_uring_get_sqe(raw) { return s }
        submit()
        guard let s = io_uring_get_sqe(raw) else { fatalError("io_uring SQ exhausted after submit") }
        return s
    }

    /// Make room for `n` SQEs that must go in one submission (a linked chain must
    /// not be split across two submits).
    public func reserve(_ n: UInt32) {
        if io_uring_sq_space_left(raw) < n { submit() }
    }

    /// Submit queued SQEs and wait for at least `waitFor` completions.
    @discardableResult
    public func submitAndWait(_ waitFor: UInt32) -> Int32 {
        let n = io_uring_submit_and_wait(raw, waitFor)
        if n > 0 { submitted &+= UInt64(n) }
        return n
    }

    func submit() {
        let n = io_uring_submit(raw)
        if n > 0 { submitted &+= UInt64(n) }
    }

    /// Drain available completions in batches, handing each to `body`.
    @inlinable public func drainCompletions(_ body: (Completion) -> Void) -> Int {
        var total = 0
        while true {
            let n = Int(io_uring_peek_batch_cqe(raw, cqesPointer, UInt32(batchSize)))
            if n == 0 { break }
            for i in 0..<n {
                let c = cqesPointer[i]!.pointee
                body(Completion(userData: c.user_data, res: c.res, flags: c.flags))
            }
            io_uring_cq_advance(raw, UInt32(n))
            total += n
            if n < batchSize { break }
        }
        return total
    }

    @usableFromInline var cqesPointer: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?> { cqes }
    @usableFromInline var batchSize: Int { batch }

    // MARK: Operations

    /// Accept one connection into fixed-file slot `file` (which must be empty); the
    /// peer's address lands in `addr` (which must stay put until the completion).
    public func acceptDirect(listenFD: Int32, file: UInt32, addr: UnsafeMutablePointer<sockaddr>,
                             addrLen: UnsafeMutablePointer<socklen_t>, tag: UInt64) {
        let s = sqe()
        io_uring_prep_accept_direct(s, listenFD, addr, addrLen, 0, file)
        io_uring_sqe_set_data64(s, tag)
    }

    /// Cancel every request this ring has on an ordinary fd (the listener, at shutdown).
    public func cancelAll(fd: Int32, tag: UInt64) {
        let s = sqe()
        io_uring_prep_cancel_fd(s, fd, IORING_ASYNC_CANCEL_ALL)
        io_uring_sqe_set_data64(s, tag)
    }

    public func recvMultishot(fixed file: Int32, bufferGroup: UInt16, tag: UInt64) {
        let s = sqe()
        io_uring_prep_recv_multishot(s, file, nil, 0, 0)
        s.pointee.flags |= CUR_IOSQE_FIXED_FILE | CUR_IOSQE_BUFFER_SELECT
        s.pointee.buf_index = bufferGroup
        io_uring_sqe_set_data64(s, tag)
    }

    public func send(fixed file: Int32, _ base: UnsafeRawPointer, _ count: Int, tag: UInt64) {
        let s = sqe()
        io_uring_prep_send(s, file, base, count, Int32(MSG_NOSIGNAL))
        s.pointee.flags |= CUR_IOSQE_FIXED_FILE
        io_uring_sqe_set_data64(s, tag)
    }

    public func closeDirect(_ file: UInt32, tag: UInt64) {
        let s = sqe()
        io_uring_prep_close_direct(s, file)
        io_uring_sqe_set_data64(s, tag)
    }

    /// Cancel the request whose user_data is `target` (a hash lookup in the kernel;
    /// cancelling by file scans every request armed on the ring).
    /// `hardLink`: the next SQE runs after this one whatever its result.
    public func cancel(tag target: UInt64, tag: UInt64, hardLink: Bool = false) {
        let s = sqe()
        io_uring_prep_cancel64(s, target, 0)
        if hardLink { s.pointee.flags |= CUR_IOSQE_IO_HARDLINK }
        io_uring_sqe_set_data64(s, tag)
    }

    /// A relative timeout: the shard's single timer, driving its timing wheel.
    public func timeout(_ interval: Interval, tag: UInt64) {
        let s = sqe()
        io_uring_prep_timeout(s, interval.spec, 0, 0)
        io_uring_sqe_set_data64(s, tag)
    }

    public func read(fd: Int32, _ buf: UnsafeMutableRawPointer, _ count: UInt32, tag: UInt64) {
        let s = sqe()
        io_uring_prep_read(s, fd, buf, count, 0)
        io_uring_sqe_set_data64(s, tag)
    }

    // Ordinary fds (the Redis connections: a handful per process, not per pile).

    public func connect(fd: Int32, _ addr: UnsafePointer<sockaddr>, _ len: socklen_t, tag: UInt64) {
        let s = sqe()
        io_uring_prep_connect(s, fd, addr, len)
        io_uring_sqe_set_data64(s, tag)
    }

    public func send(fd: Int32, _ base: UnsafeRawPointer, _ count: Int, tag: UInt64) {
        let s = sqe()
        io_uring_prep_send(s, fd, base, count, Int32(MSG_NOSIGNAL))
        io_uring_sqe_set_data64(s, tag)
    }

    public func recv(fd: Int32, _ base: UnsafeMutableRawPointer, _ count: Int, tag: UInt64) {
        let s = sqe()
        io_uring_prep_recv(s, fd, base, count, 0)
        io_uring_sqe_set_data64(s, tag)
    }

    // Client side (load generator): a socket created straight into fixed-file slot
    // `file`, so the setsockopt/bind/connect linked after it can name that slot.
    public func socketDirect(file: UInt32, tag: UInt64, link: Bool) {
        let s = sqe()
        io_uring_prep_socket_direct(s, AF_INET, Int32(SOCK_STREAM.rawValue), 0, file, 0)
        if link { s.pointee.flags |= CUR_IOSQE_IO_LINK }
        io_uring_sqe_set_data64(s, tag)
    }

    public func setsockopt(fixed file: Int32, level: Int32, name: Int32,
                           _ value: UnsafeRawPointer, _ len: Int32, tag: UInt64, link: Bool) {
        let s = sqe()
        cur_prep_setsockopt(s, file, level, name, value, len)
        s.pointee.flags |= CUR_IOSQE_FIXED_FILE | (link ? CUR_IOSQE_IO_LINK : 0)
        io_uring_sqe_set_data64(s, tag)
    }

    public func bind(fixed file: Int32, _ addr: UnsafePointer<sockaddr>, _ len: socklen_t,
                     tag: UInt64, link: Bool) {
        let s = sqe()
        cur_prep_bind(s, file, addr, len)
        s.pointee.flags |= CUR_IOSQE_FIXED_FILE | (link ? CUR_IOSQE_IO_LINK : 0)
        io_uring_sqe_set_data64(s, tag)
    }

    public func connect(fixed file: Int32, _ addr: UnsafePointer<sockaddr>, _ len: socklen_t, tag: UInt64) {
        let s = sqe()
        io_uring_prep_connect(s, file, addr, len)
        s.pointee.flags |= CUR_IOSQE_FIXED_FILE
        io_uring_sqe_set_data64(s, tag)
    }
}
