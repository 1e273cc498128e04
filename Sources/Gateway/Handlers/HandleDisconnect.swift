extension Shard {
    /// DISCONNECT (3.14): close without publishing the will (3.14.4-3).
    func handleDisconnect(_ slot: UInt32) {
        wills[slot] = nil
        close(slot, .clientDisconnect)
    }
}
