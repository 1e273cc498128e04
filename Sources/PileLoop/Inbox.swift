import CURing
import Glibc

/// A many-writers, one-reader mailbox between threads: a locked array plus an
/// eventfd that the owning shard keeps a ring read armed on. Only the post that
/// finds the box empty writes the eventfd, so a burst costs one wake-up.
///
/// The lock is a pthread mutex (`Lock`), not Synchronization.Mutex: ThreadSanitizer
/// sees pthread locks, but not the futex inside the toolchain's uninstrumented
/// Synchronization library, and reported every post and drain as a race (bench/tsan.sh).
public final class Inbox<Message: Sendable>: @unchecked Sendable {
    private let lock = Lock()
    private var box: [Message] = []
    public let eventFD: Int32

    public init() {
        eventFD = cur_eventfd()
        precondition(eventFD >= 0, "eventfd failed: \(errno)")
    }

    deinit { close(eventFD) }

    public func post(_ message: Message) {
        let wake = lock.withLock { () -> Bool in
            box.append(message)
            return box.count == 1
        }
        if wake { signal() }
    }

    public func post<S: Sequence>(contentsOf messages: S) where S.Element == Message {
        let wake = lock.withLock { () -> Bool in
            let was = box.count
            box.append(contentsOf: messages)
            return was == 0 && box.count > 0
        }
        if wake { signal() }
    }

    /// Swap the pending messages into `into` (which should be empty) and return them.
    public func drain(into spare: inout [Message]) {
        lock.withLock { swap(&box, &spare) }
    }

    /// For a thread without a ring: block until something is posted or
    /// `timeoutMillis` pass, then take what is there.
    public func wait(timeoutMillis: Int32) -> [Message] {
        var p = pollfd(fd: eventFD, events: Int16(POLLIN), revents: 0)
        if poll(&p, 1, timeoutMillis) > 0 {
            var v: UInt64 = 0
            _ = read(eventFD, &v, 8)
        }
        var out: [Message] = []
        drain(into: &out)
        return out
    }

    private func signal() {
        var one: UInt64 = 1
        _ = write(eventFD, &one, 8)
    }
}
