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

        init(iterations: Int, salt: [UInt8], hash: [UInt8]) {
            self.iterations = iterations; self.salt = salt; self.hash = hash
        }

        /// `$7$ITERATIONS$SALT$HASH` (a file line after `user:`, or a Redis hash value).
        init?<S: StringProtocol>(_ text: S) {
            let parts = text.split(separator: "$", omittingEmptySubsequences: false)
            guard parts.count == 5, parts[0].isEmpty, parts[1] == "7", let iterations = Int(parts[2]), iterations > 0,
                  let salt = Data(base64Encoded: String(parts[3])), let hash = Data(base64Encoded: String(parts[4])),
                  hash.count == 64 else { return nil }
            self.init(iterations: iterations, salt: [UInt8](salt), hash: [UInt8](hash))
        }

        func verify(_ password: [UInt8]) -> Bool {
            CRYPTO_memcmp(PasswordFile.pbkdf2(password, salt, iterations), hash, 64) == 0
        }
    }

    /// Iterations for new entries: Mosquitto's own default. Measured with the same
    /// OpenSSL PBKDF2 (ops/SECURITY.md): 61 us per verification, so the first CONNECT
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
            guard let e = Entry(line[line.index(after: colon)...]) else {
                throw Config.Invalid(description: "password file line \(n + 1): not a $7$ (PBKDF2-SHA512) entry for \(user)")
            }
            set(user, e)
        }
    }

    public init(path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            let why = access(path, R_OK) == 0 ? "not UTF-8 text" : String(cString: strerror(errno))
            throw Config.Invalid(description: "cannot read password file \(path): \(why)")
        }
        try self.init(text: text)
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

/// Who may connect: the password file, an optional Redis hash of the same entries
/// (`auth.redis_hash`: user -> `$7$...`), and anonymous access by peer. Shared by all
/// shards. Both caches are bounded (`auth.cache_size`):
/// - entries fetched from Redis, trusted for `auth.cache_seconds` (and past that while
///   Redis is unreachable), unknown users included, so a storm does not hammer Redis;
/// - successful verifications (user -> SHA-256 of the password and the entry's salt),
///   so a reconnect storm re-verifies with a hash, not a key derivation, and a changed
///   entry is verified afresh.
final class Authenticator: @unchecked Sendable {
    enum Anonymous: String { case never = "false", always = "true", loopback }

    enum Verdict: Equatable {
        case accepted
        case refused(ConnectReturnCode, String)
        /// Ask Redis for this user's entry (`learn`), then check again.
        case lookup(String)
    }

    private struct Fetched {
        var entry: PasswordFile.Entry?
        var atMs: UInt64
    }

    private struct Verified {
        var digest: [UInt8]
        var salt: [UInt8]
    }

    private let file: PasswordFile?
    let redisHash: String?
    private let anonymous: Anonymous
    private let ttlMs: UInt64
    private let lock = Lock()
    private var fetched: BoundedCache<String, Fetched>
    private var verified: BoundedCache<String, Verified>

    init(config: Config.Auth) throws {
        anonymous = Anonymous(rawValue: config.allowAnonymous)!
        file = config.passwordFile.isEmpty ? nil : try PasswordFile(path: config.passwordFile)
        redisHash = config.redisHash.isEmpty ? nil : config.redisHash
        ttlMs = UInt64(config.cacheSeconds) * 1000
        fetched = BoundedCache(capacity: config.cacheSize)
        verified = BoundedCache(capacity: config.cacheSize)
    }

    /// Are user names checked at all (else every client is anonymous)?
    var checksUsers: Bool { file != nil || redisHash != nil }

    /// `redisUp`: a lookup can be answered now; when not, a stale Redis entry is used.
    func check(username: String?, password: [UInt8]?, peer: Peer, nowMs: UInt64 = 0,
               redisUp: Bool = false) -> Verdict {
        guard checksUsers, let username else {
            switch anonymous {
            case .always: return .accepted
            case .loopback where peer.isLoopback: return .accepted
            case .loopback: return .refused(.notAuthorized, "anonymous clients only from loopback (auth.allow_anonymous)")
            case .never: return .refused(.notAuthorized, "anonymous access is off")
            }
        }
        var entry = file?.entries[username]
        if entry == nil && redisHash != nil {
            guard let f = lock.withLock({ fetched.get(username) }) else {
                return redisUp ? .lookup(username)
                               : .refused(.serverUnavailable, "credential store (Redis) unreachable")
            }
            if redisUp && nowMs &- f.atMs > ttlMs { return .lookup(username) }
            entry = f.entry
        }
        guard let entry else { return .refused(.badUsernameOrPassword, "bad user name or password") }
        let pw = password ?? []
        let digest = PasswordFile.sha256(pw)
        if let v = lock.withLock({ verified.get(username) }), v.digest == digest, v.salt == entry.salt { return .accepted }
        guard entry.verify(pw) else { return .refused(.badUsernameOrPassword, "bad user name or password") }
        lock.withLock { verified.set(username, Verified(digest: digest, salt: entry.salt)) }
        return .accepted
    }

    /// Redis answered a lookup: the user's `$7$` entry, or nil (no such user, or a
    /// value that is not an entry).
    func learn(_ username: String, entry: String?, nowMs: UInt64) {
        let e = entry.flatMap { PasswordFile.Entry($0) }
        lock.withLock { fetched.set(username, Fetched(entry: e, atMs: nowMs)) }
    }
}

/// A map bounded by two generations: lookups try the young map, then the old one
/// (moving a hit to the young map); when the young map fills half the capacity the
/// old one is dropped. At most `capacity` entries, and roughly least recently used
/// ones go first, with no per-entry bookkeeping.
struct BoundedCache<Key: Hashable, Value> {
    private var young: [Key: Value] = [:]
    private var old: [Key: Value] = [:]
    let capacity: Int

    init(capacity: Int) { self.capacity = max(2, capacity) }

    mutating func get(_ key: Key) -> Value? {
        if let v = young[key] { return v }
        guard let v = old.removeValue(forKey: key) else { return nil }
        set(key, v)
        return v
    }

    mutating func set(_ key: Key, _ value: Value) {
        young[key] = value
        if young.count >= capacity / 2 {
            old = young
            young = [:]
        }
    }

    var count: Int { young.count + old.count }
}
