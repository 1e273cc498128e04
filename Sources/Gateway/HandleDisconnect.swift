extension Shard {
    /// DISCONNECT (3.14): close without publishing the will (3.14.4-3).
    func handleDisconnect(_ slot: UInt32) {
        slab[Int(slot)].session?.will = nil
        close(slot, .clientDisconnect)
    }
}
