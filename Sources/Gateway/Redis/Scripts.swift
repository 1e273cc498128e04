import COpenSSL

/// The Lua scripts pilegate runs in Redis, where two steps must be one: each is
/// loaded by SCRIPT LOAD in every connection's handshake (so a restarted Redis
/// has them again) and called by EVALSHA with the SHA1 computed here.
enum Script: CaseIterable {
    /// Store a command in its pile's mailbox unless it is there already; past
    /// `max` commands, remove the oldest. KEYS: mailbox. ARGV: field, value, max.
    /// Returns `{added, removed fields...}`.
    case mailboxAdd
    /// An uplink XADD that is skipped for a resend (Sources/ARCHITECTURE.md, "Uplink
    /// without duplicates"): a DUP=1 PUBLISH, or one whose route names an identity.
    /// KEYS: recent-ids key, stream, [identity key]. ARGV: record (packet id and
    /// payload hash, 10 bytes, or empty), its offset in the recent-ids key, dup flag,
    /// window ms, then XADD's arguments after the key. Returns the entry id, 0 for a
    /// DUP resend, -1 for a repeated identity.
    case dedupAdd
    /// A pile connected here: presence says so, and the node it was connected to
    /// before, or whose session it left (`presence:away`), if another, gets a
    /// takeover entry on its command stream: it closes the old connection (MQTT
    /// 3.1.4-2 across the fleet) and drops the session. KEYS: presence, away.
    /// ARGV: device, `node|since`, node, downlink prefix, stream cap, since.
    case claimPresence
    /// A PUBLISH to a pile's command topic, for a pile that is not here: a command
    /// entry on the stream of the node presence names (none, or this one: 0). KEYS:
    /// presence. ARGV: device, node, downlink prefix, stream cap, topic, payload, qos.
    /// Returns the entry id, or 0.
    case forwardCommand

    var source: String {
        switch self {
        case .mailboxAdd: """
            local added = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
            local out = {added}
            local max = tonumber(ARGV[3])
            if added == 1 and redis.call('HLEN', KEYS[1]) > max then
              local fields = redis.call('HKEYS', KEYS[1])
              local function id(f)
                local ms, seq = string.match(f, '^(%d+)-(%d+)@')
                return tonumber(ms) or 0, tonumber(seq) or 0
              end
              table.sort(fields, function(a, b)
                local am, as = id(a)
                local bm, bs = id(b)
                if am ~= bm then return am < bm end
                return as < bs
              end)
              for i = 1, #fields - max do
                redis.call('HDEL', KEYS[1], fields[i])
                out[#out + 1] = fields[i]
              end
            end
            return out
            """
        case .dedupAdd: """
            local at = tonumber(ARGV[2])
            if ARGV[3] == '1' and ARGV[1] ~= '' and redis.call('GETRANGE', KEYS[1], at, at + 9) == ARGV[1] then
              return 0
            end
            if KEYS[3] and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[4]) then return -1 end
            local id = redis.call('XADD', KEYS[2], unpack(ARGV, 5))
            if ARGV[1] ~= '' then
              redis.call('SETRANGE', KEYS[1], at, ARGV[1])
              redis.call('PEXPIRE', KEYS[1], ARGV[4])
            end
            return id
            """
        case .claimPresence: """
            local old = redis.call('HGET', KEYS[1], ARGV[1])
            redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
            local away = redis.call('HGET', KEYS[2], ARGV[1])
            if away then redis.call('HDEL', KEYS[2], ARGV[1]) end
            local told = {}
            for _, at in ipairs({old or '', away or ''}) do
              local n = string.match(at, '^(.*)|')
              if n and n ~= ARGV[3] and not told[n] then
                told[n] = true
                redis.call('XADD', ARGV[4] .. n, 'MAXLEN', '~', ARGV[5], '*',
                           'control', 'takeover', 'device', ARGV[1], 'since', ARGV[6], 'by', ARGV[3])
              end
            end
            return 0
            """
        case .forwardCommand: """
            local at = redis.call('HGET', KEYS[1], ARGV[1])
            local node = at and string.match(at, '^(.*)|')
            if not node or node == ARGV[2] then return 0 end
            return redis.call('XADD', ARGV[3] .. node, 'MAXLEN', '~', ARGV[4], '*', 'device', ARGV[1],
                              'topic', ARGV[5], 'payload', ARGV[6], 'qos', ARGV[7], 'from', ARGV[2])
            """
        }
    }

    /// The script's SHA1 in hex, as EVALSHA wants it.
    var sha: String { Script.shas[self]! }

    private static let shas: [Script: String] = Dictionary(uniqueKeysWithValues: allCases.map { s in
        var digest = [UInt8](repeating: 0, count: 20)
        var size: UInt32 = 0
        let ok = Array(s.source.utf8).withUnsafeBytes { src in
            EVP_Digest(src.baseAddress, src.count, &digest, &size, EVP_sha1(), nil)
        }
        precondition(ok == 1 && size == 20, "SHA1 failed")
        return (s, digest.map { String(format2: $0) }.joined())
    })

    /// SCRIPT LOAD of every script, for a connection's handshake.
    static var load: [[String]] { allCases.map { ["SCRIPT", "LOAD", $0.source] } }
}

private extension String {
    init(format2 b: UInt8) {
        let hex = Array("0123456789abcdef".utf8)
        self.init(decoding: [hex[Int(b >> 4)], hex[Int(b & 15)]], as: UTF8.self)
    }
}

/// A 64-bit hash of a payload that is the same on every node and across restarts
/// (Swift's Hasher is seeded per process): 8 bytes per step, murmur3's finalizer.
enum PayloadHash {
    static func of(_ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBytes { p in
            var h: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(p.count)
            var i = 0
            while i + 8 <= p.count {
                let w = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                let m = h ^ (w &* 0x87C3_7B91_1142_53D5)
                h = (m << 31 | m >> 33) &* 0x4CF5_AD43_2745_937F
                i += 8
            }
            var tail: UInt64 = 0
            var shift: UInt64 = 0
            while i < p.count { tail |= UInt64(p[i]) << shift; shift += 8; i += 1 }
            h ^= tail &* 0x87C3_7B91_1142_53D5
            h ^= h >> 33; h &*= 0xFF51_AFD7_ED55_8CCD
            h ^= h >> 33; h &*= 0xC4CE_B9FE_1A85_EC53
            return h ^ (h >> 33)
        }
    }
}
