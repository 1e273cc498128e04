import Foundation
import Glibc
import MQTTCodec
import XCTest

/// The TLS listener with real clients: mosquitto_pub/sub with --cafile, openssl
/// s_client, mutual TLS with the certificate CN as the client id.
final class TLSTests: XCTestCase {
    var gw: Gateway?
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "pilegate-tls-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // A CA, a server certificate for localhost, two pile certificates from the CA
        // and one self-signed certificate that no CA vouches for.
        func ossl(_ args: String) throws { try shell("sh", ["-c", "cd \(dir!) && openssl \(args) 2>/dev/null"]) }
        try ossl("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj '/CN=pilegate test CA'")
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(toFile: "\(dir!)/san.ext", atomically: true, encoding: .utf8)
        for (name, cn) in [("server", "localhost"), ("pile", "AAAAAJQX")] {
            try ossl("req -newkey rsa:2048 -nodes -keyout \(name).key -out \(name).csr -subj '/CN=\(cn)'")
            try ossl("x509 -req -in \(name).csr -CA ca.crt -CAkey ca.key -CAcreateserial -out \(name).crt -days 2"
                     + (name == "server" ? " -extfile san.ext" : ""))
        }
        try ossl("req -x509 -newkey rsa:2048 -nodes -keyout rogue.key -out rogue.crt -days 2 -subj '/CN=AAAAAJQX'")
    }

    override func tearDown() {
        if let gw { XCTAssertEqual(gw.stop(), 0) }
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// `admin`: keys for the harness's `[admin]` table, which the config continues.
    func start(mutual: Bool = false, admin: String = "", extra: String = "") throws -> (Gateway, UInt16) {
        let g = try Gateway(config: config(mutual: mutual, admin: admin, extra: extra))
        gw = g
        guard let port = g.tlsPort else { throw Failure("no TLS listener line in the log") }
        return (g, port)
    }

    func config(mutual: Bool = false, admin: String = "", extra: String = "", certificate: String = "server.crt") -> String {
        """
        \(admin)
        [redis]
        enabled = false
        [tls]
        enabled = true
        bind = "127.0.0.1:0"
        certificate = "\(dir!)/\(certificate)"
        private_key = "\(dir!)/server.key"
        ca = "\(dir!)/ca.crt"
        require_client_certificate = \(mutual)
        handshake_timeout = 1
        \(extra)
        """
    }

    /// The SHA-256 fingerprint of the certificate the TLS listener presents.
    func presented(_ port: UInt16) throws -> String {
        try shell("sh", ["-c", "echo | openssl s_client -connect 127.0.0.1:\(port) -CAfile \(dir!)/ca.crt 2>/dev/null"
                               + " | openssl x509 -noout -fingerprint -sha256"]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A renewed certificate (new key, same name) is presented by new handshakes after
    /// SIGHUP; a reload naming a certificate file that is not there is refused and
    /// the renewed one stays.
    func testARenewedCertificateIsPresentedAfterAReload() throws {
        let (g, port) = try start()
        let before = try presented(port)
        XCTAssertTrue(before.contains("Fingerprint"), before)
        try shell("sh", ["-c", "cd \(dir!) && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=localhost' 2>/dev/null"
                               + " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext 2>/dev/null"])
        XCTAssertEqual(try presented(port), before, "the running context until the reload")
        XCTAssertNotNil(g.sighup(), g.logText)
        let after = try presented(port)
        XCTAssertNotEqual(after, before)
        try shell("mosquitto_pub", tlsArgs(port) + ["-t", "t", "-m", "over the renewed certificate"])

        try g.rewriteConfig(config(certificate: "missing.crt"))
        XCTAssertNotNil(g.sighup(expect: "refused, the running config stays"), g.logText)
        XCTAssertEqual(try presented(port), after)
    }

    func tlsArgs(_ port: UInt16, cert: String? = nil) -> [String] {
        ["-h", "localhost", "-p", "\(port)", "--cafile", "\(dir!)/ca.crt"]
            + (cert.map { ["--cert", "\(dir!)/\($0).crt", "--key", "\(dir!)/\($0).key"] } ?? [])
    }

    func testMosquittoClientsAndOpenSSLOverTLS() throws {
        let (g, port) = try start()
        let sub = try Background("mosquitto_sub", tlsArgs(port) + ["-i", "tls-sub", "-t", "pile/#", "-q", "1", "-C", "2", "-v"])
        XCTAssertNotNil(g.waitSubscribed("pile/#"))
        try shell("mosquitto_pub", tlsArgs(port) + ["-i", "tls-pub", "-t", "pile/a", "-m", "over-tls", "-q", "1"])
        // a plain client on the plain port sees the same broker
        try shell("mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(g.port)", "-i", "plain-pub", "-t", "pile/b", "-m", "plain", "-q", "1"])
        XCTAssertEqual(sub.finish(), "pile/a over-tls\npile/b plain\n")
        let s = try shell("sh", ["-c", "echo | openssl s_client -connect 127.0.0.1:\(port) -CAfile \(dir!)/ca.crt 2>&1"])
        XCTAssertTrue(s.contains("Verify return code: 0 (ok)"), s)
        XCTAssertEqual(try g.waitForCounter("tlsHandshakes", atLeast: 3), 3, "sub, pub and s_client")
    }

    /// A CONNACK refusal over TLS arrives whole, then close_notify: the peer reads the
    /// refusal code and a clean end of stream (not an EOF error).
    func testARefusalOverTLSArrivesBeforeCloseNotify() throws {
        let (_, port) = try start(extra: "[auth]\nallow_anonymous = \"false\"")
        let client = """
        import socket, ssl
        ctx = ssl.create_default_context(cafile="\(dir!)/ca.crt")
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", \(port))), server_hostname="localhost")
        body = b"\\x00\\x04MQTT\\x04\\x02\\x00\\x3c\\x00\\x04anon"
        s.sendall(bytes([0x10, len(body)]) + body)
        print(s.recv(4).hex(), repr(s.recv(4)))
        """
        let out = try shell("python3", ["-c", client])
        XCTAssertEqual(out.trimmingCharacters(in: .whitespacesAndNewlines), "20020005 b''", "CONNACK 5, then close_notify")
    }

    /// Closing a TLS client sends close_notify first; a client that does not read
    /// cannot hold that last send, and with it the slot, for longer than a second.
    func testAStalledTLSClientIsTornDownAfterItsKick() throws {
        let (g, port) = try start(admin: "token = \"t0k\"")
        let script = Bundle.module.url(forResource: "interop/stalled_tls_subscriber", withExtension: "py")!
        let stalled = try Background("python3", [script.path, "127.0.0.1", "\(port)", "\(dir!)/ca.crt", "30"])
        XCTAssertNotNil(stalled.out.waitFor("ready", timeout: 10))
        // Fill everything between the gateway and the stalled reader.
        let flood = try RawClient(port: g.port)
        XCTAssertEqual(flood.connect(Connect(clientID: "flooder"))?.returnCode, .accepted)
        let big = Array(repeating: UInt8(0x61), count: 16_384)
        for _ in 0..<600 { flood.send(.publish(Publish(topic: "flood/x", payload: big))) }
        func established() throws -> Int {
            try shell("ss", ["-tnH", "state", "established", "( sport = :\(port) )"]).split(separator: "\n").count
        }
        flood.send(.pingreq)
        XCTAssertEqual(flood.receive(), .pingresp, "all 9.8 MB handed to the gateway: the stalled client's sends are stuck")
        XCTAssertEqual(try established(), 1)
        XCTAssertEqual(try http(XCTUnwrap(g.adminPort), "/admin/clients/stalled/kick", method: "POST", token: "t0k").status, 200)
        let kicked = Date()
        while try established() > 0 && Date().timeIntervalSince(kicked) < 5 { usleep(50_000) }
        XCTAssertEqual(try established(), 0, "torn down although its last send never finished")
        XCTAssertLessThan(Date().timeIntervalSince(kicked), 3.0, "the 1 s flush deadline, a tick, and a loaded machine")
        stalled.process.terminate()
    }

    func testMutualTLSCertificateMustNameTheClient() throws {
        let (g, port) = try start(mutual: true)
        // The pile's certificate (CN = AAAAAJQX) authenticates it as that client id, in the pile role.
        let sub = try Background("mosquitto_sub", ["-h", "127.0.0.1", "-p", "\(g.port)", "-i", "watch", "-t", "/xjdy/#", "-C", "1"])
        XCTAssertNotNil(g.waitSubscribed("/xjdy/#"))
        try shell("mosquitto_pub", tlsArgs(port, cert: "pile") + ["-i", "AAAAAJQX", "-t", "/xjdy/ops/v1/TCU/AAAAAJQX/msg", "-m", "mine", "-q", "1"])
        XCTAssertEqual(sub.finish(), "mine\n")
        // Wrong CN for the client id: CONNACK 5.
        XCTAssertThrowsError(try shell("mosquitto_pub", tlsArgs(port, cert: "pile") + ["-i", "AAAAAJQY", "-t", "x", "-m", "m"]))
        XCTAssertNotNil(g.waitForLog("denied (certificate): CONNECT refused (notAuthorized): certificate CN AAAAAJQX is not the client id"))
        // No certificate, or one no trusted CA signed: the handshake fails.
        XCTAssertThrowsError(try shell("mosquitto_pub", tlsArgs(port) + ["-i", "AAAAAJQX", "-t", "x", "-m", "m"]))
        XCTAssertThrowsError(try shell("mosquitto_pub", tlsArgs(port, cert: "rogue") + ["-i", "AAAAAJQX", "-t", "x", "-m", "m"]))
        XCTAssertNotNil(g.waitForLog("closing connection: TLS: certificate verification failed"))
        XCTAssertGreaterThanOrEqual(try g.waitForCounter("tlsFailures", atLeast: 2), 2)
        XCTAssertGreaterThanOrEqual(try g.waitForCounter("authFailures", atLeast: 1), 1)
    }

    /// Under mutual TLS the certificate is the identity: a user name naming anyone
    /// else (an operator's, to take its role) is refused; the pile's own is accepted.
    func testAUserNameUnderMutualTLSMustBeTheCertificates() throws {
        let (g, port) = try start(mutual: true, extra: "[acl.users]\nop1 = \"operator\"\n")
        XCTAssertThrowsError(try shell("mosquitto_pub", tlsArgs(port, cert: "pile")
            + ["-i", "AAAAAJQX", "-u", "op1", "-t", "/xjdy/ops/v1/TCU/AAAAAJQY/cmd", "-m", "not yours", "-q", "1"]))
        XCTAssertNotNil(g.waitForLog("denied (certificate): CONNECT refused (notAuthorized): user name op1 is not the certificate CN AAAAAJQX"))
        try shell("mosquitto_pub", tlsArgs(port, cert: "pile")
            + ["-i", "AAAAAJQX", "-u", "AAAAAJQX", "-t", "/xjdy/ops/v1/TCU/AAAAAJQX/msg", "-m", "mine", "-q", "1"])
    }

    /// A socket that never finishes the handshake is closed at handshake_timeout;
    /// bytes that are not TLS close that connection only; TLS clients carry on.
    func testHandshakeTimeoutAndGarbageCloseOnlyThatConnection() throws {
        let (g, port) = try start()
        let silent = try RawClient(port: port, timeout: 4)
        let t0 = Date()
        XCTAssertTrue(silent.waitClosed())
        XCTAssertLessThan(Date().timeIntervalSince(t0), 3, "closed at the 1 s handshake timeout")
        XCTAssertNotNil(g.waitForLog("closing connection: TLS handshake not done within 1 s"))
        let plain = try RawClient(port: port)
        plain.send(.connect(Connect(clientID: "plain-on-tls")))   // MQTT where TLS is expected
        XCTAssertTrue(plain.waitClosed())
        XCTAssertNotNil(g.waitForLog("closing connection: TLS:"))
        try shell("mosquitto_pub", tlsArgs(port) + ["-i", "after", "-t", "a", "-m", "still serving", "-q", "1"])
        XCTAssertEqual(try g.waitForCounter("tlsHandshakeTimeouts", atLeast: 1), 1)
        XCTAssertGreaterThanOrEqual(try g.waitForCounter("tlsFailures", atLeast: 1), 1)
    }
}
