import Foundation
import XCTest
@testable import Gateway

final class ConfigTests: XCTestCase {
    func testExampleConfigParsesToTheEmbeddedDefaults() throws {
        let text = try String(contentsOf: repoRoot.appendingPathComponent("ops/pilegate.example.toml"), encoding: .utf8)
        let c = try Config(toml: text)
        let d = Config()
        XCTAssertEqual(c.listener.bind, d.listener.bind)
        XCTAssertEqual(c.listener.backlog, d.listener.backlog)
        XCTAssertEqual(c.server.maxConnections, d.server.maxConnections)
        XCTAssertEqual(c.server.recvBuffers, d.server.recvBuffers)
        XCTAssertEqual(c.server.sysInterval, d.server.sysInterval)
        XCTAssertEqual(c.mqtt.maxPacketSize, d.mqtt.maxPacketSize)
        XCTAssertEqual(c.mqtt.maxInflight, d.mqtt.maxInflight)
        XCTAssertEqual(c.mqtt.maxQueuedMessages, d.mqtt.maxQueuedMessages)
        XCTAssertEqual(c.mqtt.maxSendBuffer, d.mqtt.maxSendBuffer)
        XCTAssertEqual(c.mqtt.maxQueuedBytes, d.mqtt.maxQueuedBytes)
        XCTAssertEqual(c.mqtt.queueMemoryBudget, d.mqtt.queueMemoryBudget)
        XCTAssertEqual(c.mqtt.commandTopic, d.mqtt.commandTopic)
        XCTAssertEqual(c.acl.roles, d.acl.roles)
        XCTAssertEqual(c.redis.consumerGroups, d.redis.consumerGroups)
        XCTAssertEqual(c.redis.reviewIntervalMs, d.redis.reviewIntervalMs)
        XCTAssertEqual(c.redis.memoryBudget, d.redis.memoryBudget)
        XCTAssertEqual(c.log.level, d.log.level)
        XCTAssertEqual(c.limits.connectRate, d.limits.connectRate)
        XCTAssertEqual(c.limits.overRate, d.limits.overRate)
        XCTAssertEqual(c.limits.flapConnects, d.limits.flapConnects)
        XCTAssertEqual(c.limits.maxInflightIn, d.limits.maxInflightIn)
        XCTAssertNil(c.rate.device.messages)
        XCTAssertEqual(c.rate.device.action, d.rate.device.action)
        XCTAssertEqual(c.rate.dailyQuotaBytes, d.rate.dailyQuotaBytes)
        XCTAssertEqual(c.rate.packetOverheadBytes, d.rate.packetOverheadBytes)
        XCTAssertTrue(c.rate.topics.isEmpty)
        XCTAssertEqual(c.redis.mailboxPrefix, d.redis.mailboxPrefix)
        XCTAssertEqual(c.redis.dedupWindowMs, d.redis.dedupWindowMs)
        XCTAssertEqual(c.redis.dedupRecent, d.redis.dedupRecent)
        XCTAssertEqual(c.downlink.redeliver, d.downlink.redeliver)
        XCTAssertEqual(c.downlink.maxPending, d.downlink.maxPending)
        XCTAssertEqual(c.downlink.defaultTTL, d.downlink.defaultTTL)
        XCTAssertEqual(c.downlink.reviewIdleMs, d.downlink.reviewIdleMs)
    }

    func testCommandTopicMustNameThePile() throws {
        XCTAssertEqual(try Config(toml: "[mqtt]\ncommand_topic = \"cmd/%c\"\n").acl.roles["pile"]?.subscribe, ["cmd/%c"])
        for bad in ["cmd/all", "cmd/%c/#", ""] {
            XCTAssertThrowsError(try Config(toml: "[mqtt]\ncommand_topic = \"\(bad)\"\n")) {
                XCTAssertEqual("\($0)", "config: mqtt.command_topic must be a topic name containing %c")
            }
        }
        let custom = try Config(toml: "[mqtt]\ncommand_topic = \"cmd/%c\"\n[acl]\nanonymous_role = \"pile\"\n[acl.roles.pile]\nsubscribe = [\"x/%c\"]\n")
        XCTAssertEqual(custom.acl.roles["pile"]?.subscribe, ["x/%c"], "roles given in the file are kept as written")
    }

    func testRateRulesAndLimitsParse() throws {
        let c = try Config(toml: """
        [limits]
        connect_rate = 5000.5
        over_rate = "wait"
        [rate]
        messages_per_second = 0.1
        burst = 3
        action = "drop"
        [[rate.topic]]
        name = "run-data"
        filter = "/xjdy/ops/v1/TCU/+/msg"
        bytes_per_second = 1000
        action = "ban"
        """)
        XCTAssertEqual(c.limits.connectRate, 5000.5)
        XCTAssertEqual(c.limits.overRate, .wait)
        XCTAssertEqual(c.rate.device.messages?.interval, 10_000_000_000, "0.1 msg/s = one per 10 s")
        XCTAssertEqual(c.rate.device.messages?.tolerance, 30_000_000_000)
        XCTAssertEqual(c.rate.device.action, .drop)
        XCTAssertEqual(c.rate.topics.map(\.name), ["run-data"])
        XCTAssertEqual(c.rate.topics[0].bytes?.interval, 1_000_000)
        XCTAssertEqual(c.rate.topics[0].action, .ban)
        XCTAssertThrowsError(try Config(toml: "[rate]\naction = \"slow\"\n")) {
            XCTAssertEqual("\($0)", "config: rate.action must be one of \"throttle\", \"drop\", \"disconnect\", \"ban\"")
        }
        XCTAssertThrowsError(try Config(toml: "[rate]\nmessages_per_second = -1\n"))
        XCTAssertThrowsError(try Config(toml: "[[rate.topic]]\nname = \"x\"\nfilter = \"a/#/b\"\n"))
        XCTAssertThrowsError(try Config(toml: "[limits]\nover_rate = \"queue\"\n"))
    }

    /// GCRA against its definition: burst at once, then one per interval; a unit
    /// bigger than the burst passes on a full bucket; verdicts of the rule set.
    func testRateLimiterArithmetic() {
        let g = GCRA(perSecond: 10, burst: 3)!
        var tat: UInt64 = 0
        let t0: UInt64 = 1_000_000_000
        for _ in 0..<3 { XCTAssertNil(g.take(&tat, now: t0)) }
        XCTAssertEqual(g.take(&tat, now: t0), 100_000_000, "4th waits one interval")
        XCTAssertNil(g.take(&tat, now: t0 + 100_000_000))
        XCTAssertNotNil(g.take(&tat, now: t0 + 150_000_000))
        let bytes = GCRA(perSecond: 100, burst: 10)!
        var bt: UInt64 = 0
        XCTAssertNil(bytes.take(&bt, cost: 500, now: t0), "full bucket admits an oversized unit")
        XCTAssertEqual(bytes.take(&bt, cost: 1, now: t0 + 1_000_000_000), 3_910_000_000, "then pays it back: 5 s of bytes, 1 s passed, 0.1 s of burst")
        var w: UInt64 = 0
        XCTAssertEqual(g.reserve(&w, now: t0, maxWait: 1_000_000_000), 0)
        for _ in 0..<2 { _ = g.reserve(&w, now: t0, maxWait: 1_000_000_000) }
        XCTAssertEqual(g.reserve(&w, now: t0, maxWait: 1_000_000_000), 100_000_000, "queued one interval out")
        XCTAssertNil(g.reserve(&w, now: t0, maxWait: 50_000_000), "past max wait: not taken")

        var rc = Config.Rate()
        rc.device.messages = GCRA(perSecond: 1, burst: 1)
        rc.device.action = .drop
        rc.topics = [RateRules.Rule(name: "trade", filter: "/xjdy/+/trade", messages: nil, bytes: nil, action: .ban, banSeconds: 9)]
        rc.dailyQuotaBytes = 1000
        let rules = RateRules(rc)
        var state = RateState()
        var usage = DailyUsage()
        guard case .pass = rules.admit(topic: "/a", size: 10, usage: usage, state: &state, now: t0) else { return XCTFail() }
        guard case .act(.drop, 0) = rules.admit(topic: "/a", size: 10, usage: usage, state: &state, now: t0) else { return XCTFail() }
        guard case .pass = rules.admit(topic: "/xjdy/x/trade", size: 10, usage: usage, state: &state, now: t0) else {
            return XCTFail("the topic rule (no limit) overrides the device rule")
        }
        usage.inbound.bytes = 1000
        guard case .act(.disconnect, -1) = rules.admit(topic: "/a", size: 10, usage: usage, state: &state, now: t0) else {
            return XCTFail("over quota")
        }
        XCTAssertEqual(rules.ruleName(-1), "daily_quota")
        XCTAssertEqual(rules.day(wallSeconds: 86_400 * 3 - 1), 2)
        XCTAssertEqual(RateRules({ var r = Config.Rate(); r.dayOffsetMinutes = 480; return r }()).day(wallSeconds: 86_400 * 3 - 8 * 3600), 3)
    }

    /// Anonymous access, when the file does not say: the loopback trial default with no
    /// credentials, off once a password file or Redis hash is set; said, as said.
    func testAnonymousAccessFollowsTheCredentials() throws {
        XCTAssertEqual(try Config(toml: "").auth.allowAnonymous, "loopback")
        XCTAssertEqual(try Config(toml: "[auth]\npassword_file = \"/etc/pilegate/passwd\"\n").auth.allowAnonymous, "false")
        XCTAssertEqual(try Config(toml: "[auth]\nredis_hash = \"h\"\n").auth.allowAnonymous, "false")
        XCTAssertEqual(try Config(toml: "[auth]\nallow_anonymous = \"loopback\"\npassword_file = \"p\"\n").auth.allowAnonymous, "loopback")
    }

    func testMistakesAreErrors() {
        XCTAssertThrowsError(try Config(toml: "[mqtt]\nmax_inflight_msgs = 3\n")) {
            XCTAssertEqual("\($0)", "config: unknown key mqtt.max_inflight_msgs")
        }
        XCTAssertThrowsError(try Config(toml: "[mqtt]\nmax_inflight = \"3\"\n"))
        XCTAssertThrowsError(try Config(toml: "[mqtt]\nmax_inflight = 0\n"))
        XCTAssertThrowsError(try Config(toml: "[server]\nrecv_buffers = 1000\n"))
        XCTAssertThrowsError(try Config(toml: "[log]\nlevel = \"loud\"\n"))
        XCTAssertThrowsError(try Config(toml: "[listener\n"))
        XCTAssertThrowsError(try Config(toml: "listener = 3\n"))
        XCTAssertThrowsError(try Config(toml: "[downlink]\nmax_pending = 0\n"))
        XCTAssertThrowsError(try Config(toml: "[downlink]\nredeliver = \"yes\"\n"))
        XCTAssertThrowsError(try Config(toml: "[downlink]\nreview_idle_ms = 10\n"))
        XCTAssertThrowsError(try Config(toml: "[redis]\ndedup_window_ms = -1\n"))
        XCTAssertThrowsError(try Config(toml: "[[route]]\nfilter = \"a/#\"\nstream = \"s\"\ndedup_json_keys = \"x\"\n")) {
            XCTAssertEqual("\($0)", "config: unknown key route[0].dedup_json_keys")
        }
    }

    /// toml++ assumes a table name follows `[`, and a value (not `}`) follows an array's
    /// `[` or `,`: such files are refused before it parses (its assertions ended the
    /// process; bench/fuzz.sh found both). Brackets that are values, in arrays, strings
    /// and comments, are not headers.
    func testWhatTOMLKitDoesNotCheckIsRefusedBeforeIt() {
        for (text, line) in [("[é]\n", 1), ("[mqtt]\nmax_inflight = 5\n[=x]\n", 3), ("[[+a]]\n", 1), ("[\n", 1),
                             ("a = \"x\"\n  [ #no\n", 2), ("\u{FEFF}[\u{FFFD}", 1), ("s = '''\n\n'''\n[[ {]]", 4)] {
            XCTAssertEqual(TOMLPrecheck.problem(in: text),
                           "config: a table name must start with a letter, a digit, _, - or a quote at line \(line)", text)
            XCTAssertThrowsError(try Config(toml: text), text)
        }
        // And a `}` where an array expects a value (toml++ asserted on that too).
        for (text, line) in [("a = [}", 1), ("a = [1,\n }", 2), ("a = [[}]]", 1), ("a = {b = [ }]}", 1)] {
            XCTAssertEqual(TOMLPrecheck.problem(in: text), "config: '}' inside an array at line \(line)", text)
            XCTAssertThrowsError(try Config(toml: text), text)
        }
        for text in ["[a]\n[[b]]\n[ \"c d\" ]\n['e'.f]\n[]\n", "a = [\n  [1, 2],\n  [{x = 1}],\n  \"[=\",\n]\n[b]",
                     "a = {b = [1, {c = 2}]}\nd = [{e = \"}\"}]\n[f]",
                     "s = \"\"\"\n[é\n\"\"\"\n", "# [é]\nt = '[+'\n", "x = \"a\\\"[\"\n[b]"] {
            XCTAssertNil(TOMLPrecheck.problem(in: text), text)
        }
    }

    /// The Redis connections are made for the credentials hash named at start: a
    /// reload keeps it (and says so) while the rest of `[auth]` applies.
    func testAReloadKeepsTheCredentialsHash() {
        var next = Config()
        next.auth.redisHash = "pilegate:users"
        next.auth.cacheSeconds = 5
        let (live, kept) = Reloader.split(next, running: Config())
        XCTAssertEqual(live.auth.redisHash, "")
        XCTAssertEqual(live.auth.cacheSeconds, 5)
        XCTAssertEqual(kept, ["auth.redis_hash"])
    }

    func testShardLayoutFollowsTheFileLimit() {
        var c = Config()
        c.server.maxConnections = 200_000
        let (shards, table) = Server.layout(config: c, cores: 2, fileLimit: 20_000)
        XCTAssertEqual(table, 19_744)
        XCTAssertEqual(shards, 11, "200k / 19,744 per ring")
        c.server.maxConnections = 1000
        XCTAssertEqual(Server.layout(config: c, cores: 2, fileLimit: 20_000).shards, 2, "at least one per core")
        c.server.shards = 5
        XCTAssertEqual(Server.layout(config: c, cores: 2, fileLimit: 20_000).shards, 5)
    }
}
