import Foundation
import MQTTCodec
import XCTest

/// ops/examples/worker.py, the worker a platform developer starts from, run against
/// the real gateway and Redis: it reads the uplink with a consumer group, keeps one
/// of two entries with the same msgid, and answers a pile's record with a command
/// whose outcome it reads.
final class WorkerExampleTests: RedisGatewayTestCase {
    func testWorkerReadsDedupesAndCommandsAPile() throws {
        let g = try startGateway()
        let pile = try connected(g, "AAAAAJQX")
        pile.send(.subscribe(Subscribe(packetID: 1, topics: [TopicRequest("/xjdy/ops/v1/TCU/AAAAAJQX/cmd", .atLeastOnce)])))
        guard case .suback = pile.receive() else { throw Failure("no SUBACK") }
        let up = "/xjdy/ops/v1/TCU/AAAAAJQX/msg"
        for (id, body) in [(1, #"{"命令":"运行数据","reqid":3}"#),
                           (2, #"{"命令":"启动失败原因","reqid":1,"交易流水号":"00000000000000002506181906190401","失败原因":"0X68"}"#)] {
            pile.send(.publish(Publish(topic: up, payload: Array(body.utf8), qos: .atLeastOnce, packetID: UInt16(id))))
            XCTAssertEqual(pile.receive(), .puback(UInt16(id)))
        }
        // The gateway's own re-send of an XADD whose reply was lost: same fields, same msgid.
        let first = try XCTUnwrap(redis.entries("pilegate:up").first)
        try redis.command(["XADD", "pilegate:up", "*"] + first.fields.sorted { $0.key < $1.key }
            .flatMap { [$0.key, String(decoding: $0.value, as: UTF8.self)] })

        let worker = try Background("python3", [repoRoot.appendingPathComponent("ops/examples/worker.py").path,
                                                "--redis", redis.address, "--exit-after", "2", "--timeout", "60"])
        guard case .publish(let command) = pile.receive(timeout: 30) else { throw Failure("no command: \(worker.finish())") }
        XCTAssertEqual(command.topic, "/xjdy/ops/v1/TCU/AAAAAJQX/cmd")
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(command.payload)) as? [String: Any])
        XCTAssertEqual(json["命令"] as? String, "日志召唤")
        pile.send(.puback(command.packetID))

        let out = worker.finish(timeout: 60)
        XCTAssertEqual(worker.process.terminationStatus, 0, out)
        XCTAssertTrue(out.contains("AAAAAJQX: 运行数据"), out)
        XCTAssertTrue(out.contains("duplicate msgid \(String(decoding: first.fields["msgid"]!, as: UTF8.self)) skipped"), out)
        XCTAssertTrue(out.contains("AAAAAJQX: sent 日志召唤"), out)
        XCTAssertNotNil(out.range(of: #"AAAAAJQX: command \S+ acked"#, options: .regularExpression), out)
        XCTAssertTrue(out.hasSuffix("done: 2 entries\n"), out)
        // Everything the worker read is acknowledged in its group.
        XCTAssertEqual(try redis.command(["XPENDING", "pilegate:up", "workers"]).items.first, .integer(0))
    }
}
