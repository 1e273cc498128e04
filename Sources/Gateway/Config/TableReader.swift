import TOMLKit

/// Reads typed keys from one TOML table and remembers which it saw.
struct TableReader {
    let table: TOMLTable
    let path: String
    var seen: Set<String> = []

    init(_ table: TOMLTable, path: String) { self.table = table; self.path = path }

    func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    mutating func table(_ key: String, _ body: (inout TableReader) throws -> Void) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let t = v.table else { throw Config.Invalid(description: "config: \(name(key)) must be a table") }
        var sub = TableReader(t, path: name(key))
        try body(&sub)
        try sub.finish()
    }

    /// A table of named sub-tables (`[key.NAME]`), each read by `body`.
    mutating func each(_ key: String, _ body: (String, inout TableReader) throws -> Void) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let t = v.table else { throw Config.Invalid(description: "config: \(name(key)) must be a table") }
        for k in t.keys {
            guard let sub = t[k]?.table else { throw Config.Invalid(description: "config: \(name(key)).\(k) must be a table") }
            var r = TableReader(sub, path: "\(name(key)).\(k)")
            try body(k, &r)
            try r.finish()
        }
    }

    /// A table of string values with free keys (`[key]` name = "value").
    mutating func eachString(_ key: String, _ body: (String, String) throws -> Void) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let t = v.table else { throw Config.Invalid(description: "config: \(name(key)) must be a table") }
        for k in t.keys {
            guard let s = t[k]?.string else { throw Config.Invalid(description: "config: \(name(key)).\(k) must be a string") }
            try body(k, s)
        }
    }

    mutating func strings(_ key: String, _ into: inout [String]) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let a = v.array else { throw Config.Invalid(description: "config: \(name(key)) must be an array of strings") }
        into = try a.map { e in
            guard let s = e.string else { throw Config.Invalid(description: "config: \(name(key)) must be an array of strings") }
            return s
        }
    }

    /// An array of tables (`[[key]]`).
    mutating func tables(_ key: String, _ body: (inout TableReader) throws -> Void) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let array = v.array else { throw Config.Invalid(description: "config: \(name(key)) must be [[\(key)]] tables") }
        for (i, element) in array.enumerated() {
            guard let t = element.table else { throw Config.Invalid(description: "config: \(name(key))[\(i)] must be a table") }
            var sub = TableReader(t, path: "\(name(key))[\(i)]")
            try body(&sub)
            try sub.finish()
        }
    }

    mutating func string(_ key: String, _ into: inout String) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let s = v.string else { throw Config.Invalid(description: "config: \(name(key)) must be a string") }
        into = s
    }

    mutating func int(_ key: String, _ into: inout Int, _ range: ClosedRange<Int>) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let i = v.int, range.contains(i) else {
            throw Config.Invalid(description: "config: \(name(key)) must be an integer in \(range)")
        }
        into = i
    }

    /// An integer that may be left out (nil: a default decided elsewhere).
    mutating func optionalInt(_ key: String, _ into: inout Int?, _ range: ClosedRange<Int>) throws {
        guard table[key] != nil else { seen.insert(key); return }
        var v = 0
        try int(key, &v, range)
        into = v
    }

    /// A number (integer or float), at least 0.
    mutating func double(_ key: String, _ into: inout Double) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let d = v.double ?? v.int.map(Double.init), d >= 0, d.isFinite else {
            throw Config.Invalid(description: "config: \(name(key)) must be a number, at least 0")
        }
        into = d
    }

    /// One of an enumeration's raw values.
    mutating func enumeration<E: RawRepresentable & CaseIterable>(_ key: String, _ into: inout E) throws
    where E.RawValue == String {
        var raw = into.rawValue
        try string(key, &raw)
        guard let e = E(rawValue: raw) else {
            let all = E.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
            throw Config.Invalid(description: "config: \(name(key)) must be one of \(all)")
        }
        into = e
    }

    /// The limit keys shared by `[rate]` and each `[[rate.topic]]`.
    mutating func rateRule(_ rule: inout RateRules.Rule) throws {
        var messages = 0.0, bytes = 0.0, burst = 10, burstBytes = 65536
        try double("messages_per_second", &messages)
        try double("bytes_per_second", &bytes)
        try int("burst", &burst, 1...1_000_000)
        try int("burst_bytes", &burstBytes, 1...1 << 30)
        try enumeration("action", &rule.action)
        try int("ban_seconds", &rule.banSeconds, 1...30 * 86400)
        rule.messages = GCRA(perSecond: messages, burst: burst)
        rule.bytes = GCRA(perSecond: bytes, burst: burstBytes)
    }

    mutating func bool(_ key: String, _ into: inout Bool) throws {
        seen.insert(key)
        guard let v = table[key] else { return }
        guard let b = v.bool else { throw Config.Invalid(description: "config: \(name(key)) must be true or false") }
        into = b
    }

    func finish() throws {
        for k in table.keys where !seen.contains(k) {
            throw Config.Invalid(description: "config: unknown key \(name(k))")
        }
    }
}
