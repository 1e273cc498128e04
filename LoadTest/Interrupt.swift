import Atomics
import Glibc

/// SIGINT (Ctrl-C) or SIGTERM ends a run early, with its report and JSON: the
/// connect or steady phase stops at its next 100 ms check. A bench script stops a
/// background pileload this way (a background job of a script starts with SIGINT
/// ignored; installing a handler takes it back). A second signal kills as usual.
enum Interrupt {
    private static let flag = ManagedAtomic<Bool>(false)

    static func install() {
        _ = flag.load(ordering: .relaxed)   // initialised here, not first in the handler
        for s in [SIGINT, SIGTERM] { signal(s) { _ in Interrupt.flag.store(true, ordering: .relaxed) } }
    }

    /// True once a signal came; the default action is back for the next one.
    static var requested: Bool {
        guard flag.load(ordering: .relaxed) else { return false }
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
        return true
    }
}
