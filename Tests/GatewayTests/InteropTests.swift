import Foundation
import MQTTCodec
import XCTest

/// pilegate driven by the tools operators and piles actually use: Debian's
/// mosquitto-clients and paho-mqtt.
final class InteropTests: XCTestCase {
    var gw: Gateway!

    override func setUpWithError() throws { gw = try Gateway() }
    override func tearDown() {
        if let gw { XCTAssertEqual(gw.stop(), 0, "clean exit on SIGTERM") }
    }

    var hp: [String] { ["-h", "127.0.0.1", "-p", "\(gw.port)"] }

    func testMosquittoQoS012ThroughWildcard() throws {
        let sub = try Background("mosquitto_sub", hp + ["-t", "/xjdy/ops/v1/TCU/+/#", "-q", "2", "-v", "-C", "3", "-W", "10"])
        XCTAssertNotNil(gw.waitSubscribed("/xjdy/ops/v1/TCU/+/#"))
        for q in 0...2 {
            try shell("mosquitto_pub", hp + ["-t", "/xjdy/ops/v1/TCU/AAAAAJQX/msg", "-q", "\(q)", "-m", #"{"命令":"运行数据","q":\#(q)}"#])
        }
        let out = sub.finish()
        XCTAssertEqual(out.split(separator: "\n").map(String.init), (0...2).map { #"/xjdy/ops/v1/TCU/AAAAAJQX/msg {"命令":"运行数据","q":\#($0)}"# })
    }

    func testWildcardDoesNotLeakOtherTopics() throws {
        let sub = try Background("mosquitto_sub", hp + ["-t", "/xjdy/ops/v1/TCU/+/cmd", "-v", "-W", "2"])
        XCTAssertNotNil(gw.waitSubscribed("/xjdy/ops/v1/TCU/+/cmd"))
        try shell("mosquitto_pub", hp + ["-t", "/xjdy/ops/v1/TCU/AAAAAJQX/msg", "-m", "up"])
        try shell("mosquitto_pub", hp + ["-t", "/xjdy/ops/v1/TCU/AAAAAJQX/cmd", "-m", "down"])
        let out = sub.finish()
        XCTAssertEqual(out.trimmingCharacters(in: .whitespacesAndNewlines), "/xjdy/ops/v1/TCU/AAAAAJQX/cmd down")
    }

    func testRetainedMessageSetAndCleared() throws {
        try shell("mosquitto_pub", hp + ["-t", "site/1/state", "-m", "online", "-r", "-q", "1"])
        let got = try shell("mosquitto_sub", hp + ["-t", "site/+/state", "-C", "1", "-W", "5", "-F", "%r %t %p"])
        XCTAssertEqual(got.trimmingCharacters(in: .whitespacesAndNewlines), "1 site/1/state online")
        try shell("mosquitto_pub", hp + ["-t", "site/1/state", "-n", "-r"])
        let none = try Background("mosquitto_sub", hp + ["-t", "site/#", "-W", "1"])
        XCTAssertEqual(none.finish(), "", "an empty retained payload deletes the retained message")
    }

    func testPahoInteropSuite() throws {
        let script = Bundle.module.url(forResource: "interop/paho_suite", withExtension: "py")!
        let out = try shell("python3", [script.path, "127.0.0.1", "\(gw.port)"], timeout: 60)
        XCTAssertTrue(out.contains("paho suite: all checks passed"), out)
    }
}
