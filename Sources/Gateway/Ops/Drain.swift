/// Draining (POST /drain or SIGUSR1, `AdminControl.drain`): this shard closes
/// `perTick` connected piles each tick, walking its slab with `cursor`, so they
/// reconnect to other nodes at `admin.drain_rate` over the whole node.
struct Drain {
    /// Connections to close per tick (0: not draining).
    var perTick = 0
    var cursor = 0
}

extension Shard {
    /// One drain step: close up to `drain.perTick` connected piles, walking the slab.
    func drainSome() {
        var closed = 0
        while closed < drain.perTick && drain.cursor < slab.count {
            let slot = UInt32(drain.cursor)
            drain.cursor += 1
            if slab[Int(slot)].isOpen {
                close(slot, .drain)
                closed += 1
            }
        }
        if drain.cursor >= slab.count { drain.cursor = 0 }   // later arrivals (before the listener closed)
    }
}
