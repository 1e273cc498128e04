import PileLoop

/// Shard 0 drives the stream review (StreamReview.swift) on its uplink connection:
/// it sends each phase's commands and reads their replies in order.
extension Shard {
    /// Each tick on shard 0: start a review when one is due.
    func reviewStreams(nowMs: UInt64) {
        guard let review, let redis, redis.link.state == .up, review.due(nowMs: nowMs) else { return }
        review.begin()
        redis.link.enqueueAnywhere(.review(.memory)) { $0.respCommand(["INFO", "memory"]) }
        for (s, stream) in review.watch.streams.enumerated() {
            let slot = redis.link.slot(stream)
            redis.link.enqueue(.review(.length(s)), slot: slot) { $0.respCommand(["XLEN", stream]) }
            redis.link.enqueue(.review(.groups(s)), slot: slot) { $0.respCommand(["XINFO", "GROUPS", stream]) }
        }
    }

    /// Once per Redis connection: a `maxmemory-policy` that may evict keys without an
    /// expiry would evict the streams, and with them acknowledged messages.
    func checkEvictionPolicy() {
        redis?.link.enqueueAnywhere(.evictionPolicy) { $0.respCommand(["CONFIG", "GET", "maxmemory-policy"]) }
        redis?.link.enqueueAnywhere(.serverInfo) { $0.respCommand(["INFO"]) }
    }

    /// What pilegate needs of the server: Redis 6.2 or later (XAUTOCLAIM takes up the
    /// commands a crashed run left pending; XADD with MINID), and a server in the
    /// mode `redis.cluster` says (a cluster refuses keys of other slots to a client
    /// that does not follow MOVED).
    func serverInfoReplied(_ r: RedisReply) {
        guard !r.isError else { return logger.warning("redis INFO failed: \(r.text)") }
        var version = "", cluster = false
        for line in r.text.split(whereSeparator: \.isNewline) {
            if line.hasPrefix("redis_version:") { version = String(line.dropFirst("redis_version:".count)) }
            if line == "cluster_enabled:1" { cluster = true }
        }
        let parts = version.split(separator: ".").compactMap { Int($0) }
        if parts.count >= 2, (parts[0], parts[1]) < (6, 2) {
            logger.error("redis \(version) is older than 6.2: commands left pending by a crash cannot be taken up (XAUTOCLAIM) and worker-lag trimming fails (XTRIM MINID); upgrade Redis")
        }
        if cluster && !config.redis.cluster {
            logger.error("redis \(config.redis.address.isEmpty ? "(embedded)" : config.redis.address) runs in cluster mode: this pilegate talks to one standalone Redis, and keys in other slots are refused (MOVED)")
        }
        logger.info("redis \(version)\(cluster ? " (cluster mode)" : "")")
    }

    func evictionPolicyReplied(_ r: RedisReply) {
        let policy = r.elements.count == 2 ? r.elements[1].text : ""
        if policy.hasPrefix("allkeys-") {
            logger.warning("redis maxmemory-policy is \(policy): under memory pressure Redis may evict the uplink streams, and acknowledged messages with them; use noeviction (volatile-* may also evict the dedup keys and the daily traffic hashes, which expire)")
        }
    }

    func reviewReplied(_ step: StreamReview.Step, _ r: RedisReply) {
        guard let review, let redis else { return }
        let streams = review.watch.streams
        switch step {
        case .memory:
            if !r.isError { review.readMemory(r) }
        case .length(let s):
            review.readLength(s, r)
        case .groups(let s):
            // "no such key": no stream yet, nothing to keep or trim. Any other error
            // (a Redis user without XINFO, say) leaves the stream untrimmed: say so.
            if r.isError && !r.text.contains("no such key") && review.warned.insert(r.text).inserted {
                logger.warning("stream review: XINFO GROUPS \(streams[s]) failed: \(r.text); the stream is not trimmed")
            }
            let present = r.isError ? [] : review.readGroups(s, r)
            reportMissingGroups(s, present: present, streamExists: !r.isError)
            if present.isEmpty {
                if r.isError { return streamReviewed() }
                // No named group to wait for: trim as without consumer_groups.
                return redis.link.enqueue(.review(.trimmed(s)), slot: redis.link.slot(streams[s])) {
                    $0.respCommand(["XTRIM", streams[s], "MAXLEN", "~", String(review.watch.cap)])
                }
            }
            for g in present {
                let group = review.watch.groups[g]
                redis.link.enqueue(.review(.pending(s, g)), slot: redis.link.slot(streams[s])) {
                    $0.respCommand(["XPENDING", streams[s], group])
                }
                let after = review.lastDelivered(s, g)
                redis.link.enqueue(.review(.nextUnread(s, g)), slot: redis.link.slot(streams[s])) {
                    $0.respCommand(["XRANGE", streams[s], "(" + after, "+", "COUNT", "1"])
                }
            }
        case .pending(let s, let g):
            review.readPending(s, g, r)
            if review.isComplete(s) { trim(s) }
        case .nextUnread(let s, let g):
            review.readNextUnread(s, g, r)
            if review.isComplete(s) { trim(s) }
        case .trimmed(let s):
            if r.isError { logger.warning("stream review: XTRIM \(streams[s]) failed: \(r.text)") }
            review.trimmed(s, removed: Int(r.integer ?? 0))
            streamReviewed()
        }
    }

    /// Trim stream `s` up to the oldest entry a named group still needs.
    private func trim(_ s: Int) {
        guard let review, let redis else { return }
        guard let bound = review.trimBound(s, nowMs: wallMillis()) else { return streamReviewed() }
        let stream = review.watch.streams[s]
        redis.link.enqueue(.review(.trimmed(s)), slot: redis.link.slot(stream)) {
            $0.respCommand(["XTRIM", stream, "MINID", bound.description])
        }
    }

    private func streamReviewed() {
        guard let review, let held = review.streamDone() else { return }
        if held {
            counters.add(.workerLagHolds)
            logger.warning("uplink held: \(review.watch.heldReason ?? "workers behind"); piles are not read until the workers catch up")
        } else {
            logger.notice("uplink released: the workers caught up")
        }
    }

    /// One log line when a named group goes missing from a stream, one when it is back.
    private func reportMissingGroups(_ s: Int, present: [Int], streamExists: Bool) {
        guard let watch = review?.watch, streamExists else { return }
        for (g, group) in watch.groups.enumerated() {
            let isMissing = !present.contains(g)
            let k = s * watch.groups.count + g
            guard watch.missing[k].exchange(isMissing, ordering: .relaxed) != isMissing else { continue }
            if isMissing {
                logger.warning("consumer group \(group) does not exist on stream \(watch.streams[s]): it holds no entries (trimming follows the groups present, or MAXLEN with none)")
            } else {
                logger.notice("consumer group \(group) on stream \(watch.streams[s]) is present again")
            }
        }
    }
}
