import COpenSSL
import Foundation
import MQTTCodec
import PileLoop

/// A password file in mosquitto_passwd's format, so an existing Mosquitto file (and
/// its tool) carries over unchanged:
/// `user:$7$ITERATIONS$BASE64(SALT)$BASE64(PBKDF2-HMAC-SHA512(password, SALT, ITERATIONS, 64 bytes))`
public struct PasswordFile: Sendable {
    public struct Entry: Sendable, Equatable {
        var iterations: Int
        var salt: [UInt8]
        var hash: [UInt8]
    }

    /// Iterations for new entries: Mosquitto's own default. Measured with the same
    /// OpenSSL PBKDF2 (README, Security): 61 us per verification, so the first CONNECT
    /// of 200k piles after a restart costs 12 s of one core (1,000 iterations: 248 s).
    /// A verified password is then cached; a reconnect storm costs a SHA-256 per pile.
    public static let defaultIterations = 101

    public private(set) var entries: [String: Entry] = [:]
    private var order: [String] = []

    public init() {}

    public init(text: String) throws {
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw Config.Invalid(description: "password file line \(n + 1): expected user:hash")
            }
            let user = String(line[..<colon])
            let parts = line[line.index(after: colon)...].split(separator: "$", omittingEmptySubsequences: false)
            guard parts.count == 5, parts[0].isEmpty, parts[1] == "7", let iterations = Int(parts[2]), iterations > 0,
                  let salt = Data(base64Encoded: String(parts[3])), let hash = Data(base64Encoded: String(parts[4])),
                  hash.count == 64 else {
                throw Config.Invalid(description: "password file line \(n + 1): not a $7$ (PBKDF2-SHA512) entry for \(user)")
            }
            set(user, Entry(iterations: iterations, salt: [UInt8](salt), hash: [UInt8](hash)))
        }
    }

    public init(path: String) throws {
        try self.init(text: String(contentsOfFile: path, encoding: .utf8))
    }

    public mutating func set(_ user: String, password: String, iterations: Int = defaultIterations) {
        var salt = [UInt8](repeating: 0, count: 12)
        precondition(RAND_bytes(&salt, 12) == 1, "RAND_bytes failed")
        set(user, Entry(iterations: iterations, salt: salt, hash: Self.pbkdf2(Array(password.utf8), salt, iterations)))
    }

    private mutating func set(_ user: String, _ e: Entry) {
        if entries[user] == nil { order.append(user) }
        entries[user] = e
    }

    public mutating func remove(_ user: String) -> Bool {
        guard entries.removeValue(forKey: user) != nil else { return false }
        order.removeAll { $0 == user }
        return true
    }

    public var text: String {
        order.map { u in
            let e = entries[u]!
            return "\(u):$7$\(e.iterations)$\(Data(e.salt).base64EncodedString())$\(Data(e.hash).base64EncodedString())\n"
        }.joined()
    }

    public func verify(_ user: String, _ password: [UInt8]) -> Bool {
        guard let e = entries[user] else { return false }
        return CRYPTO_memcmp(Self.pbkdf2(password, e.salt, e.iterations), e.hash, 64) == 0
    }

    static func pbkdf2(_ password: [UInt8], _ salt: [UInt8], _ iterations: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 64)
        let ok = password.withUnsafeBytes { p in
            PKCS5_PBKDF2_HMAC(p.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(password.count),
                              salt, Int32(salt.count), Int32(iterations), EVP_sha512(), 64, &out)
        }
        precondition(ok == 1, "PKCS5_PBKDF2_HMAC failed")
        return out
    }

    static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        _ = bytes.withUnsafeBytes { EVP_Digest($0.baseAddress, bytes.count, &out, &len, EVP_sha256(), nil) }
        return out
    }
}

/// Who may connect: the password file, and anonymous access by peer. Shared by all
/// shards; successful verifications are cached (user -> SHA-256 of the password)
/// so a reconnect storm re-verifies with a hash, not a key derivation.
final class Authenticator: @unchecked Sendable {
    enum Anonymous: String { case never = "false", always = "true", loopback }

    private let file: PasswordFile?
    private let anonymous: Anonymous
    private let lock = Lock()
    private var verified: [String: [UInt8]] = [:]

    init(config: Config.Auth) throws {
        anonymous = Anonymous(rawValue: config.allowAnonymous)!
        file = config.passwordFile.isEmpty ? nil : try PasswordFile(path: config.passwordFile)
    }

    /// nil: accepted (and whether as anonymous); else the CONNACK refusal and why.
    func check(username: String?, password: [UInt8]?, peer: Peer) -> (code: ConnectReturnCode, why: String)? {
        guard let file, let username else {
            switch anonymous {
            case .always: return nil
            case .loopback where peer.isLoopback: return nil
            case .loopback: return (.notAuthorized, "anonymous clients only from loopback (auth.allow_anonymous)")
            case .never: return (.notAuthorized, "anonymous access is off")
            }
        }
        let pw = password ?? []
        let digest = PasswordFile.sha256(pw)
        if lock.withLock({ verified[username] }) == digest { return nil }
        guard file.verify(username, pw) else { return (.badUsernameOrPassword, "bad user name or password") }
        lock.withLock { verified[username] = digest }
        return nil
    }
}
