import Glibc
import MQTTCodec
import PileLoop

// The send-rate rules (RateRules.swift) and the per-pile in-flight bound,
// applied to each PUBLISH before it is handled (from PacketDispatch.swift).

/// What becomes of a PUBLISH at the gate, before its handler.
enum PublishGate {
    case pass
    /// Not read now: the connection is held and this PUBLISH is decoded again later.
    case hold
    /// Dropped by a rule (already acknowledged).
    case dropped
    /// The rule closed the connection.
    case closed
}

extension Shard {
    /// The per-pile in-flight bound, then the device's rate rule and daily quota.
    func gatePublish(_ slot: UInt32, _ p: Publish, size: Int) -> PublishGate {
        if p.qos != .atMostOnce && redis != nil && Int(slab[Int(slot)].uplinksPending) >= config.limits.maxInflightIn {
            counters.add(.inflightInPauses)
            holdReading(slot)   // released by redisReplied, not by a timer
            return .hold
        }
        guard let session = slab[Int(slot)].session else { return .pass }
        let override = overrides.isEmpty ? nil : overrides[session.clientID]
        guard policy.rates.active || override != nil else { return .pass }
        session.usage.roll(to: today)
        switch policy.rates.admit(topic: p.topic, size: size, usage: session.usage, state: &session.rate,
                                  now: monotonicNanos(), override: override) {
        case .pass:
            return .pass
        case .wait(let nanos, let rule):
            counters.add(.rateThrottles)
            counters.rateAction(rule: rule)
            if rule < 0 { reportQuota(slot, session) } else { reportRate(slot, session, rule, "throttle") }
            let wait = rule < 0
                ? UInt64(policy.rates.secondsToNextDay(wallSeconds: Int64(wallMillis() / 1000))) * 1_000_000_000
                : nanos
            hold(slot, nanos: wait)
            return .hold
        case .act(let action, let rule):
            counters.rateAction(rule: rule)
            if rule < 0 { reportQuota(slot, session) } else { reportRate(slot, session, rule, action.rawValue) }
            switch action {
            case .throttle, .drop:
                counters.add(.rateDrops)
                acknowledge(slot, p.packetID, p.qos)
                return .dropped
            case .disconnect:
                counters.add(.rateDisconnects)
                close(slot, rule < 0 ? .quota : .rateLimited)
                return .closed
            case .ban:
                counters.add(.rateBans)
                ctx.connectGuard.ban(clientID: session.clientID, seconds: policy.rates.banSeconds(rule), now: monotonicNanos())
                close(slot, .banned)
                return .closed
            }
        }
    }

    /// One log line and one event per connection and kind of rate action (the
    /// counters count every one): a pile held at 10 msg/s must not write 10 lines a second.
    private func reportRate(_ slot: UInt32, _ session: Session, _ rule: Int, _ action: String) {
        guard !session.rateReported else { return }
        session.rateReported = true
        denied(slot, .rate, "over rate rule \"\(policy.rates.ruleName(rule))\": \(action)",
               extra: [("rule", policy.rates.ruleName(rule)), ("action", action)])
    }

    /// Once per device and day.
    private func reportQuota(_ slot: UInt32, _ session: Session) {
        guard !session.usage.breachReported else { return }
        session.usage.breachReported = true
        counters.add(.quotaBreaches)
        denied(slot, .quota, "over the daily quota of \(policy.rates.quota) bytes (\(session.usage.total) used): \(policy.rates.quotaAction.rawValue)",
               extra: [("bytes", String(session.usage.total)), ("action", policy.rates.quotaAction.rawValue)])
    }

    /// Estimated bytes below MQTT per packet on this connection.
    func overhead(_ slot: UInt32) -> UInt64 {
        policy.rates.packetOverhead + (slab[Int(slot)].tls == nil ? 0 : policy.rates.tlsOverhead)
    }
}
