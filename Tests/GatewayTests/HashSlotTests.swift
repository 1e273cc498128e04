import XCTest
@testable import Gateway

/// Redis Cluster's key slots and the config rules for a cluster (no server needed;
/// ClusterTests runs the gateway on a real cluster).
final class HashSlotTests: XCTestCase {
    func testSlotsMatchRedis() {
        XCTAssertEqual(Array("123456789".utf8).withUnsafeBytes { HashSlot.crc16($0) }, 0x31C3)
        // CLUSTER KEYSLOT on Redis 7.0 gives these.
        XCTAssertEqual(HashSlot.of("foo"), 12182)
        XCTAssertEqual(HashSlot.of("bar"), 5061)
        XCTAssertEqual(HashSlot.of("{user1000}.following"), HashSlot.of("user1000"))
        XCTAssertEqual(HashSlot.of("pilegate:up:{3}:dd:P1"), HashSlot.of("3"))
        XCTAssertEqual(HashSlot.of("{pilegate}:presence"), HashSlot.of("{pilegate}:down:gw-1"))
        // An empty tag, or none closed, hashes the whole key.
        XCTAssertEqual(HashSlot.of("foo{}{bar}"), HashSlot.of(Array("foo{}{bar}".utf8)))
        XCTAssertNotEqual(HashSlot.of("foo{}{bar}"), HashSlot.of("bar"))
        XCTAssertEqual(HashSlot.of("foo{{bar}}zap"), HashSlot.of("{bar"))
        XCTAssertEqual(HashSlot.of("pilegate:mail:", "P1"), HashSlot.of("pilegate:mail:P1"))
    }

    func testUplinkPartitions() {
        let r = Router(routes: [Config.Route(filter: "/a/#", stream: "trades")], defaultStream: "pilegate:up", partitions: 16)
        XCTAssertEqual(r.streams.count, 32)
        XCTAssertEqual(r.streams[3], "pilegate:up:{3}")
        XCTAssertEqual(r.streams[16 + 5], "trades:{5}")
        let device = "AAAAAJQX"
        let p = Int(Array(device.utf8).withUnsafeBytes { HashSlot.crc16($0) }) % 16
        XCTAssertEqual(r.stream(r.route(topic: "/b", payload: []), device: device), p)
        XCTAssertEqual(r.stream(r.route(topic: "/a/x", payload: []), device: device), 16 + p)
        let one = Router(routes: [], defaultStream: "pilegate:up")
        XCTAssertEqual(one.streams, ["pilegate:up"])
    }

    func testClusterConfig() throws {
        var c = try Config(toml: "[redis]\ncluster = true\naddress = \"127.0.0.1:7000, 127.0.0.1:7001\"\n")
        XCTAssertEqual(c.redis.seeds, ["127.0.0.1:7000", "127.0.0.1:7001"])
        XCTAssertEqual(c.redis.partitions, 16)
        XCTAssertEqual(c.redis.presenceKey, "{pilegate}:presence")
        XCTAssertEqual(c.redis.downlinkPrefix, "{pilegate}:down:")
        c = try Config(toml: "[redis]\naddress = \"127.0.0.1:7000\"\n")
        XCTAssertEqual(c.redis.partitions, 1)
        XCTAssertEqual(c.redis.presenceKey, "pilegate:presence")

        func problems(_ toml: String) -> String {
            do { _ = try Config(toml: toml); return "" } catch { return "\(error)" }
        }
        XCTAssertTrue(problems("[redis]\ncluster = true\naddress = \"\"\n").contains("must list the cluster's seeds"))
        XCTAssertTrue(problems("[redis]\ncluster = true\naddress = \"127.0.0.1:7000\"\ndatabase = 2\n").contains("database must be 0"))
        XCTAssertTrue(problems("[redis]\ncluster = true\naddress = \"127.0.0.1:7000\"\npresence_key = \"p\"\n")
            .contains("must share a hash tag"))
        XCTAssertTrue(problems("[redis]\nuplink_partitions = 4\ndefault_stream = \"up{x}\"\n").contains("must not contain {"))
        XCTAssertTrue(problems("[redis]\nwait_replicas = 17\n").contains("wait_replicas"))
    }
}
