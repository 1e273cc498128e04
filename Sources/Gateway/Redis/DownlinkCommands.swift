import MQTTCodec

/// Commands from workers on the node's downlink stream: the reader's steps
/// (create group, claim what a crashed run left pending, read), delivery to the
/// pile, one outcome entry per command and one XACK per batch.
extension Shard {
    /// Replies on the downlink connection drive its little state machine.
    func downlinkReplied(_ step: Downlink.Step, _ r: RedisReply) {
        guard let downlink else { return }
        switch step {
        case .createGroup:
            if r.isError && !r.text.hasPrefix("BUSYGROUP") {
                logger.error("downlink: XGROUP CREATE failed: \(r.text)")
            }
        case .claim:
            let parts = r.elements
            if r.isError || parts.count < 2 {
                logger.error("downlink: XAUTOCLAIM failed: \(r.text)")
                return downlink.read()
            }
            let claimed = DownlinkEntry.all(parts[1])
            if !claimed.isEmpty { logger.info("downlink: re-delivering \(claimed.count) entries left pending") }
            deliverCommands(claimed, key: downlink.key)
            let next = parts[0].text
            if next == "0-0" || claimed.isEmpty { downlink.read() } else { downlink.claim(from: next) }
        case .read:
            if r.isError {
                logger.error("downlink: XREADGROUP failed: \(r.text)")
            } else if !r.isNil {
                for stream in r.elements {
                    let parts = stream.elements
                    guard parts.count == 2 else { continue }
                    deliverCommands(DownlinkEntry.all(parts[1]), key: downlink.key)
                }
            }
            downlink.read(answered: true)
        }
    }

    /// A batch of commands from workers, each: `device` (required), `payload`,
    /// optional `topic` (default: `mqtt.command_topic` for the device) and `qos` (default 1).
    /// Outcomes are reported one by one, then the batch is acknowledged at once.
    private func deliverCommands(_ entries: [DownlinkEntry], key: String) {
        guard let redis, !entries.isEmpty else { return }
        for e in entries {
            let topic = e.topic ?? config.mqtt.commandTopic(for: e.device)
            let qosByte = e.qos.map { UInt8($0) } ?? 1
            guard !e.device.isEmpty, Topic.isValidName(topic.utf8), let qos = qosByte.flatMap(QoS.init) else {
                logger.warning("downlink: entry \(e.id) is missing device or has a bad topic/qos; acknowledged as offline")
                redis.downlinkOutcome(id: e.id, device: e.device, .offline)
                continue
            }
            let outcome = fanOut(Message(topic: topic, payload: e.payload, qos: qos, retain: false), target: e.device)
                ?? .offline
            counters.add(outcome.counter)
            redis.downlinkOutcome(id: e.id, device: e.device, outcome)
        }
        redis.acknowledge(key: key, ids: entries.lazy.map(\.id), count: entries.count)
    }
}

extension DownlinkOutcome {
    var counter: Counter {
        switch self {
        case .delivered: .downlinkDelivered
        case .queued: .downlinkQueued
        case .offline: .downlinkOffline
        case .notSubscribed: .downlinkNotSubscribed
        }
    }
}
