import Glibc
import PileLoop
import MQTTCodec

/// A rate limit as GCRA (the "virtual scheduling" form of a token bucket): the
/// whole state is one theoretical arrival time, so a device costs 8 bytes per
/// limit and a check is two comparisons. Times are monotonic nanoseconds.
public struct GCRA: Sendable {
    /// Nanoseconds one unit (message, byte, connect) uses up.
    let interval: UInt64
    /// How far ahead of now the arrival time may run: `burst` units at once.
    let tolerance: UInt64

    /// nil for "no limit" (rate 0).
    init?(perSecond rate: Double, burst: Int) {
        guard rate > 0 else { return nil }
        interval = max(1, UInt64(1e9 / rate))
        tolerance = interval * UInt64(max(1, burst))
    }

    /// Take `cost` units now: nil when allowed (state advanced), else nanoseconds
    /// until they would be. A full bucket always admits one unit, however large,
    /// so a message bigger than the byte burst is slowed, never stuck.
    func take(_ tat: inout UInt64, cost: UInt64 = 1, now: UInt64) -> UInt64? {
        let start = max(tat, now)
        let next = start + cost * interval
        if start == now || next <= now + tolerance {
            tat = next
            return nil
        }
        return next - now - tolerance
    }

    /// Take `cost` units, queueing behind earlier takers: the wait (0 = now) until
    /// the units are ours; they are reserved either way, unless the wait exceeds
    /// `maxWait`, in which case nothing is taken and nil comes back.
    func reserve(_ tat: inout UInt64, now: UInt64, maxWait: UInt64) -> UInt64? {
        let next = max(tat, now) + interval
        let wait = next > now + tolerance ? next - now - tolerance : 0
        if wait > maxWait { return nil }
        tat = next
        return wait
    }
}

/// What a rate rule does to traffic over its limit (Sources/ARCHITECTURE.md, "Policy").
public enum RateAction: String, Sendable, CaseIterable {
    /// Stop reading the connection until the bucket refills: TCP pushes back, nothing is lost.
    case throttle
    /// Drop the PUBLISH (QoS 1/2 still acknowledged, as for an ACL denial).
    case drop
    /// Close the connection (the will is sent).
    case disconnect
    /// Close it and refuse the client id for `ban_seconds`.
    case ban
}

/// The send-rate rules of `[rate]`, compiled once: a per-device default and
/// per-topic overrides (first matching filter wins), and the daily byte quota.
public struct RateRules: Sendable {
    public struct Rule: Sendable {
        var name: String
        var filter: String?
        var messages: GCRA?
        var bytes: GCRA?
        var action: RateAction
        var banSeconds: Int
        var isLimited: Bool { messages != nil || bytes != nil }
    }

    /// Index 0: the per-device rule (all topics); then the topic rules in order.
    let rules: [Rule]
    let quota: UInt64
    let quotaAction: RateAction
    let quotaBanSeconds: Int
    /// Added per MQTT packet when estimating what a pile's SIM carries.
    let packetOverhead: UInt64
    let tlsOverhead: UInt64
    let dayOffsetSeconds: Int64

    /// Any rate rule or quota at all (otherwise the publish path skips this file).
    let active: Bool

    init(_ c: Config.Rate) {
        rules = [c.device] + c.topics
        active = c.dailyQuotaBytes > 0 || rules.contains { $0.isLimited }
        quota = UInt64(c.dailyQuotaBytes)
        quotaAction = c.quotaAction
        quotaBanSeconds = c.quotaBanSeconds
        packetOverhead = UInt64(c.packetOverheadBytes)
        tlsOverhead = UInt64(c.tlsOverheadBytes)
        dayOffsetSeconds = Int64(c.dayOffsetMinutes) * 60
    }

    /// The rule governing `topic`: the first topic rule that matches, else the device rule.
    func ruleIndex(for topic: String) -> Int {
        for i in 1..<rules.count where Topic.matches(filter: rules[i].filter!, topic: topic) { return i }
        return 0
    }

    /// Day number (UTC shifted by `day_offset_minutes`) that quotas and accounting roll over on.
    func day(wallSeconds: Int64) -> UInt32 { UInt32(truncatingIfNeeded: (wallSeconds + dayOffsetSeconds) / 86_400) }

    /// Seconds from `wallSeconds` to the start of the next quota day.
    func secondsToNextDay(wallSeconds: Int64) -> Int64 {
        86_400 - (wallSeconds + dayOffsetSeconds) % 86_400
    }
}

/// A device's buckets: two arrival times (messages, bytes) per rule, allocated
/// on its first PUBLISH when any rule is limited.
struct RateState {
    var tats: [UInt64] = []
}

/// The verdict on one PUBLISH.
enum RateVerdict {
    case pass
    /// Over a throttle rule: read again after this many nanoseconds.
    case wait(UInt64, rule: Int)
    /// Over a drop, disconnect or ban rule (or the quota, rule = -1).
    case act(RateAction, rule: Int)
}

extension RateRules {
    /// Check (and charge) one PUBLISH of `size` wire bytes against the device's rule
    /// for its topic and its daily quota. Charging happens only when it passes.
    /// `override`: the device's own limits and quota (DeviceOverrides.swift).
    func admit(topic: String, size: Int, usage: DailyUsage, state: inout RateState, now: UInt64,
               override: DeviceOverride? = nil) -> RateVerdict {
        let quota = override?.quota ?? self.quota
        if quota > 0 && usage.total >= quota {
            return quotaAction == .throttle ? .wait(UInt64.max, rule: -1) : .act(quotaAction, rule: -1)
        }
        let i = rules.count == 1 ? 0 : ruleIndex(for: topic)
        // Fields read in place: copying the Rule would retain its strings per PUBLISH.
        let messages = override?.messages ?? rules[i].messages, bytes = override?.bytes ?? rules[i].bytes
        guard messages != nil || bytes != nil else { return .pass }
        // Sized on first use, and again after a reload changed the number of rules.
        if state.tats.count != 2 * rules.count { state.tats = Array(repeating: 0, count: 2 * rules.count) }
        var m = state.tats[2 * i], b = state.tats[2 * i + 1]
        var wait: UInt64 = 0
        if let g = messages, let w = g.take(&m, now: now) { wait = w }
        if wait == 0, let g = bytes, let w = g.take(&b, cost: UInt64(size), now: now) { wait = w }
        if wait > 0 {
            let action = rules[i].action
            return action == .throttle ? .wait(wait, rule: i) : .act(action, rule: i)
        }
        state.tats[2 * i] = m
        state.tats[2 * i + 1] = b
        return .pass
    }

    func ruleName(_ i: Int) -> String { i < 0 ? "daily_quota" : rules[i].name }
    func banSeconds(_ i: Int) -> Int { i < 0 ? quotaBanSeconds : rules[i].banSeconds }
}
