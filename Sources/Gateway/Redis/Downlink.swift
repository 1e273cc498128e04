import Logging
import MQTTCodec
import PileLoop

/// The node's command reader, run by shard 0 on its own Redis connection (its
/// XREADGROUP blocks, so it cannot share the pipelined uplink connection).
///
/// Reads `downlink_prefix + node` with consumer group `group`, consumer = node.
/// On every (re)connect: create the group if missing, claim every pending entry
/// (XAUTOCLAIM from 0-0: what an earlier run read and did not end), then read new
/// entries. An entry stays pending until its command ends (DownlinkCommands.swift);
/// the review walks the pending ones idle for `downlink.review_idle_ms`, one batch
/// a second, for expiry and piles that are back.
final class Downlink {
    enum Step { case createGroup, claim, read, review }

    /// Reads kept in flight: while the shard works through one batch, Redis is
    /// already collecting the next. With batched XACKs, a 200k command burst went
    /// from 28-33k to 43-45k deliveries/s (`pileload --profile downlink`); with
    /// receipts (stored first, XACKed on the pile's PUBACK) it is 13-19k acked/s.
    static let readsInFlight = 2
    static let batch = "1000"

    let link: RedisLink<RedisExpectation>
    let key: String
    private let slot: UInt16
    private let group: String
    private let consumer: String
    private let reviewIdle: String
    private var reading = 0
    /// The newest entry this process has read. A pending entry up to it was handled
    /// by this process (stored in its mailbox, or ended with its XACK on the way);
    /// one past it was read by an earlier run, or its read's reply was lost.
    var lastRead: StreamID?
    /// Where the review goes on (XAUTOCLAIM's cursor), and whether one is out.
    private var reviewCursor = "0-0"
    private var reviewing = false
    private var nextReviewMs: UInt64 = 0

    init(config: Config, address: SocketAddress, ring: Ring, logger: Logger) {
        key = config.redis.downlinkPrefix + config.server.node
        group = config.redis.group
        consumer = config.server.node
        reviewIdle = String(config.downlink.reviewIdleMs)
        link = RedisLink(id: 1, name: "downlink", redis: config.redis, address: address,
                         clientName: "pilegate-\(config.server.node)-downlink", resendOnReconnect: false, ring: ring, logger: logger)
        slot = link.slot(key)
        link.homeSlots = [slot]
    }

    /// The connection is up: start from the top (the journal was emptied by design:
    /// nothing outstanding survives a reconnect, so it is all re-issued here). A new
    /// group starts at the stream's first entry, not its end: a command a worker
    /// wrote before this node's first start is a command all the same (and one too
    /// old has expired by its ttl).
    func start() {
        reading = 0
        reviewing = false
        link.enqueue(.downlink(.createGroup), slot: slot) { $0.respCommand(["XGROUP", "CREATE", key, group, "0", "MKSTREAM"]) }
        claim(from: "0-0")
    }

    func claim(from cursor: String) {
        link.enqueue(.downlink(.claim), slot: slot) {
            $0.respCommand(["XAUTOCLAIM", key, group, consumer, "0", cursor, "COUNT", Downlink.batch])
        }
    }

    /// A read came back (or the claim phase ended): keep `readsInFlight` outstanding.
    func read(answered: Bool = false) {
        if answered { reading -= 1 }
        while reading < Downlink.readsInFlight {
            reading += 1
            link.enqueue(.downlink(.read), slot: slot) {
                $0.respCommand(["XREADGROUP", "GROUP", group, consumer, "COUNT", Downlink.batch, "BLOCK", "1000",
                                "STREAMS", key, ">"])
            }
        }
    }

    /// Each tick: one review batch a second while the reader is up.
    func reviewIfDue(nowMs: UInt64) {
        // After the claim phase (reads have started): that phase took every pending entry.
        guard link.state == .up, reading > 0, !reviewing, nowMs >= nextReviewMs else { return }
        reviewing = true
        nextReviewMs = nowMs + 1000
        link.enqueue(.downlink(.review), slot: slot) {
            $0.respCommand(["XAUTOCLAIM", key, group, consumer, reviewIdle, reviewCursor, "COUNT", Downlink.batch])
        }
    }

    /// A review batch came back; the next one starts from `cursor`.
    func reviewed(cursor: String) {
        reviewing = false
        reviewCursor = cursor.isEmpty ? "0-0" : cursor
    }
}
