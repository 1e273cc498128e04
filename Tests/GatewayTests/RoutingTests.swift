import XCTest
@testable import Gateway

final class RoutingTests: XCTestCase {
    func value(_ json: String, _ key: String) -> String? {
        Array(json.utf8).withUnsafeBytes { JSONScan.topLevelString($0, key: Array(key.utf8)).map { String(decoding: $0, as: UTF8.self) } }
    }

    func testTopLevelStringScan() {
        let run = #"{"命令":"运行数据","reqid":3,"数据分区":"1枪数据","状态数据":[{"名称":"工作状态","值":"空闲"}]}"#
        XCTAssertEqual(value(run, "命令"), "运行数据")
        XCTAssertEqual(value(run, "数据分区"), "1枪数据")
        XCTAssertNil(value(run, "名称"), "nested keys are not top-level")
        XCTAssertNil(value(run, "reqid"), "not a string")
        XCTAssertEqual(value(#"{"a":{"命令":"x"},"命令":"y"}"#, "命令"), "y")
        XCTAssertEqual(value(#" { "k" : "v\"q" } "#, "k"), #"v\"q"#)
        XCTAssertEqual(value(#"{"命令":"a","命令":"b"}"#, "命令"), "a", "duplicate keys: the first wins")
        XCTAssertNil(value(#"["命令","x"]"#, "命令"))
        XCTAssertNil(value(#"{"命令":"unterminated"#, "命令"))
        XCTAssertNil(value("", "命令"))
        // garbage bytes inside another string do not derail the scan
        var bytes = Array(#"{"车辆VIN码":""#.utf8) + [0xC3, 0x28, 0xFF] + Array(#"","命令":"交易记录"}"#.utf8)
        let got = bytes.withUnsafeMutableBytes { JSONScan.topLevelString(UnsafeRawBufferPointer($0), key: Array("命令".utf8)).map { [UInt8]($0) } }
        XCTAssertEqual(got, Array("交易记录".utf8))
    }

    func testFirstMatchingRuleWins() {
        let r = Router(routes: [
            .init(filter: "/xjdy/ops/v1/TCU/+/msg", jsonKey: "命令", jsonValue: "交易记录", stream: "up:trade"),
            .init(filter: "/xjdy/ops/v1/TCU/+/msg", jsonKey: "命令", jsonValue: "启动失败原因", stream: "up:bootfail"),
            .init(filter: "/xjdy/ops/v1/TCU/#", stream: "up:other"),
        ], defaultStream: "up")
        func s(_ topic: String, _ payload: String) -> String { r.streams[r.route(topic: topic, payload: Array(payload.utf8)).stream] }
        XCTAssertEqual(s("/xjdy/ops/v1/TCU/AAAAAJQX/msg", #"{"命令":"交易记录"}"#), "up:trade")
        XCTAssertEqual(s("/xjdy/ops/v1/TCU/AAAAAJQX/msg", #"{"命令":"启动失败原因"}"#), "up:bootfail")
        XCTAssertEqual(s("/xjdy/ops/v1/TCU/AAAAAJQX/msg", #"{"命令":"运行数据"}"#), "up:other")
        XCTAssertEqual(s("/xjdy/ops/v1/TCU/AAAAAJQX/msg", "not json"), "up:other")
        XCTAssertEqual(s("/elsewhere", #"{"命令":"交易记录"}"#), "up")
    }

    /// A route's `dedup_json_key`: its string value is the record's identity; a
    /// payload without it (or not JSON) has none.
    func testIdentityKeyOfTheMatchingRoute() {
        let r = Router(routes: [
            .init(filter: "/xjdy/ops/v1/TCU/+/msg", jsonKey: "命令", jsonValue: "交易记录", stream: "up:trade",
                  dedupJSONKey: "交易流水号"),
            .init(filter: "/xjdy/ops/v1/TCU/#", stream: "up:other"),
        ], defaultStream: "up")
        func id(_ payload: String) -> String? {
            r.route(topic: "/xjdy/ops/v1/TCU/P1/msg", payload: Array(payload.utf8)).identity.map { String(decoding: $0, as: UTF8.self) }
        }
        XCTAssertEqual(id(#"{"命令":"交易记录","交易流水号":"0000000000000000250618190619040"}"#), "0000000000000000250618190619040")
        XCTAssertNil(id(#"{"命令":"交易记录"}"#))
        XCTAssertNil(id(#"{"命令":"运行数据","交易流水号":"1"}"#), "another route: no identity")
    }
}
