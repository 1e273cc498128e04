import PileLoop

/// Broker statistics as retained messages under $SYS/broker/ (the convention
/// Mosquitto and most brokers follow), so ordinary MQTT tools can read them.
extension Shard {
    func publishSysStats() {
        let sets = ctx.counters
        func put(_ topic: String, _ value: String) {
            fanOut(Message(topic: "$SYS/broker/" + topic, payload: Array(value.utf8), qos: .atMostOnce, retain: true))
        }
        put("version", "pilegate \(pilegateVersion)")
        put("uptime", "\((monotonicMillis() - ctx.startedAt) / 1000) seconds")
        put("clients/connected", "\(Counters.total(.clientsConnected, sets))")
        put("clients/total", "\(broker.clientCount)")
        put("messages/received", "\(Counters.totalPackets(.in, .publish, sets).packets)")
        put("messages/sent", "\(Counters.totalPackets(.out, .publish, sets).packets)")
        put("load/bytes/received", "\(Counters.total(.bytesIn, sets))")
        put("load/bytes/sent", "\(Counters.total(.bytesOut, sets))")
        for c in Counter.allCases {
            put("counters/\(c)", "\(Counters.total(c, sets))")
        }
    }
}
