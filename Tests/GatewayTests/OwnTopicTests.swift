@testable import Gateway
import XCTest

/// The interned own command topic: which filters and topics are a pile's own.
final class OwnTopicTests: XCTestCase {
    let own = OwnTopic(pattern: "/xjdy/ops/v1/TCU/%c/cmd")

    func testWhatIsAPilesOwnTopic() {
        XCTAssertTrue(own.isOwn("/xjdy/ops/v1/TCU/AAAA0001/cmd", clientID: "AAAA0001"))
        XCTAssertFalse(own.isOwn("/xjdy/ops/v1/TCU/AAAA0002/cmd", clientID: "AAAA0001"), "another pile's")
        XCTAssertFalse(own.isOwn("/xjdy/ops/v1/TCU/AAAA0001/cmdx", clientID: "AAAA0001"))
        XCTAssertFalse(own.isOwn("/xjdy/ops/v1/TCU/+/cmd", clientID: "+"), "a wildcard is never interned")
        XCTAssertFalse(own.isOwn("/xjdy/ops/v1/TCU/a/b/cmd", clientID: "a/b"), "nor an id spanning levels")
        XCTAssertEqual(own.stored("/xjdy/ops/v1/TCU/P1/cmd", clientID: "P1"), "")
        XCTAssertEqual(own.stored("other", clientID: "P1"), "other")
        XCTAssertEqual(own.text("", clientID: "P1"), "/xjdy/ops/v1/TCU/P1/cmd")
        XCTAssertEqual(own.text("other", clientID: "P1"), "other")
    }

    func testWhoseTopicAMessageIs() {
        XCTAssertEqual(own.clientID(of: "/xjdy/ops/v1/TCU/AAAA0001/cmd"), "AAAA0001")
        XCTAssertNil(own.clientID(of: "/xjdy/ops/v1/TCU/AAAA0001/msg"), "an uplink topic")
        XCTAssertNil(own.clientID(of: "/xjdy/ops/v1/TCU//cmd"), "no id")
        XCTAssertNil(own.clientID(of: "/xjdy/ops/v1/TCU/a/b/cmd"))
        XCTAssertNil(own.clientID(of: "/xjdy/ops/v1/TCU/cmd"))
        let suffixless = OwnTopic(pattern: "cmd/%c")
        XCTAssertEqual(suffixless.clientID(of: "cmd/P9"), "P9")
        XCTAssertTrue(suffixless.isOwn("cmd/P9", clientID: "P9"))
    }
}
