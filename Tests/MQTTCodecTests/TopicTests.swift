import XCTest
@testable import MQTTCodec

final class TopicTests: XCTestCase {
    func testFilterValidity() {   // 4.7.1
        for ok in ["#", "+", "a/#", "+/+", "/+/#", "sport/tennis/+", "/xjdy/ops/v1/TCU/+/#", "a//b", "/"] {
            XCTAssertTrue(Topic.isValidFilter(Array(ok.utf8)), ok)
        }
        for bad in ["", "a#", "#/a", "a/#/b", "a+", "+a", "a/b+/c", "##", "++"] {
            XCTAssertFalse(Topic.isValidFilter(Array(bad.utf8)), bad)
        }
    }

    func testMatching() {   // 4.7.1.2, 4.7.1.3, 4.7.2
        let cases: [(String, String, Bool)] = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            ("sport/tennis/player1/#", "sport/tennis/player1/ranking", true),
            ("sport/#", "sport", true),
            ("#", "a/b/c", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("/xjdy/ops/v1/TCU/+/#", "/xjdy/ops/v1/TCU/AAAAAJQX/msg", true),
            ("/xjdy/ops/v1/TCU/+/cmd", "/xjdy/ops/v1/TCU/AAAAAJQX/msg", false),
            ("#", "$SYS/broker/uptime", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/broker/uptime", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("a/b", "a/b", true),
            ("a/b", "a/B", false),
            ("a/", "a/", true),
            ("a/", "a", false),
            ("a", "a/", false),
            ("a/+", "a/", true),
            ("/", "/", true),
            ("+/+", "/", true),
            ("+", "", true),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
            ("a/#", "a/", true),
            ("a//", "a/", false),
            ("a//", "a//", true),
        ]
        for (f, t, want) in cases {
            XCTAssertEqual(Topic.matches(filter: f, topic: t), want, "\(f) vs \(t)")
        }
    }
}
