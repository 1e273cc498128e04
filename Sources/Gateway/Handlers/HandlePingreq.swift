extension Shard {
    /// PINGREQ (3.12): the receive already refreshed the keepalive.
    func handlePingreq(_ slot: UInt32) {
        send(slot, .pingresp)
    }
}
