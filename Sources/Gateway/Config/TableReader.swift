import TOMLKit
import PileLoop

/// What one read of a config file found: every problem (a bad key does not stop the
/// read, so `pilegate check-config` lists them all at once) and the name of every
/// key the reader knows, `[]` standing for an array index and `*` for a free name
/// (`route[].stream`, `acl.roles.*.publish`): CONFIGURATION.md is checked against it.
final class ConfigReport {
    var problems: [String] = []
    var known: Set<String> = []
}

/// Reads typed keys from one TOML table and remembers which it saw. A key of the
/// wrong type or range is a problem on the report and keeps its default.
struct TableReader {
    let table: TOMLTable
    let path: String
    /// `path` with array indices as `[]` and free names as `*`.
    let pattern: String
    let report: ConfigReport
    var seen: Set<String> = []

    init(_ table: TOMLTable, path: String, pattern: String, report: ConfigReport) {
        self.table = table; self.path = path; self.pattern = pattern; self.report = report
    }

    func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// Marks `key` as read (a `leaf` is a value, not a table); its value, when present.
    private mutating func value(_ key: String, leaf: Bool = true) -> TOMLValueConvertible? {
        seen.insert(key)
        if leaf { report.known.insert(pattern.isEmpty ? key : "\(pattern).\(key)") }
        return table[key]
    }

    /// A problem that spans keys: recorded when `ok` is false.
    func check(_ ok: Bool, _ problem: @autoclosure () -> String) {
        if !ok { report.problems.append("config: " + problem()) }
    }

    private func fail(_ key: String, _ what: String) { report.problems.append("config: \(name(key)) \(what)") }

    private func sub(_ t: TOMLTable, path: String, pattern: String) -> TableReader {
        TableReader(t, path: path, pattern: pattern, report: report)
    }

    mutating func table(_ key: String, _ body: (inout TableReader) -> Void) {
        guard let v = value(key, leaf: false) else { return }
        guard let t = v.table else { return fail(key, "must be a table") }
        var r = sub(t, path: name(key), pattern: pattern.isEmpty ? key : "\(pattern).\(key)")
        body(&r)
        r.finish()
    }

    /// A table of named sub-tables (`[key.NAME]`), each read by `body`.
    mutating func each(_ key: String, _ body: (String, inout TableReader) -> Void) {
        guard let v = value(key, leaf: false) else { return }
        guard let t = v.table else { return fail(key, "must be a table") }
        for k in t.keys {
            guard let s = t[k]?.table else { fail("\(key).\(k)", "must be a table"); continue }
            var r = sub(s, path: "\(name(key)).\(k)", pattern: "\(pattern).\(key).*")
            body(k, &r)
            r.finish()
        }
    }

    /// A table of string values with free keys (`[key]` name = "value").
    mutating func eachString(_ key: String, _ body: (String, String) -> Void) {
        report.known.insert("\(pattern).\(key).*")
        guard let v = value(key, leaf: false) else { return }
        guard let t = v.table else { return fail(key, "must be a table") }
        for k in t.keys {
            guard let s = t[k]?.string else { fail("\(key).\(k)", "must be a string"); continue }
            body(k, s)
        }
    }

    mutating func strings(_ key: String, _ into: inout [String]) {
        guard let v = value(key) else { return }
        guard let a = v.array, a.allSatisfy({ $0.string != nil }) else { return fail(key, "must be an array of strings") }
        into = a.map { $0.string! }
    }

    /// An array of tables (`[[key]]`).
    mutating func tables(_ key: String, _ body: (inout TableReader) -> Void) {
        guard let v = value(key, leaf: false) else { return }
        guard let array = v.array else { return fail(key, "must be [[\(key)]] tables") }
        for (i, element) in array.enumerated() {
            guard let t = element.table else { fail("\(key)[\(i)]", "must be a table"); continue }
            var r = sub(t, path: "\(name(key))[\(i)]", pattern: pattern.isEmpty ? "\(key)[]" : "\(pattern).\(key)[]")
            body(&r)
            r.finish()
        }
    }

    mutating func string(_ key: String, _ into: inout String) {
        guard let v = value(key) else { return }
        guard let s = v.string else { return fail(key, "must be a string") }
        into = s
    }

    /// A HOST:PORT string.
    mutating func address(_ key: String, _ into: inout String, emptyAllowed: Bool = false) {
        string(key, &into)
        if !(emptyAllowed && into.isEmpty) && SocketAddress(into) == nil { fail(key, "\"\(into)\" is not HOST:PORT") }
    }

    mutating func int(_ key: String, _ into: inout Int, _ range: ClosedRange<Int>) {
        guard let v = value(key) else { return }
        guard let i = v.int, range.contains(i) else { return fail(key, "must be an integer in \(range)") }
        into = i
    }

    /// An integer that may be left out (nil: a default decided elsewhere).
    mutating func optionalInt(_ key: String, _ into: inout Int?, _ range: ClosedRange<Int>) {
        guard table[key] != nil else { _ = value(key); return }
        var v = into ?? range.lowerBound
        int(key, &v, range)
        into = v
    }

    /// A number (integer or float), at least 0.
    mutating func double(_ key: String, _ into: inout Double) {
        guard let v = value(key) else { return }
        guard let d = v.double ?? v.int.map(Double.init), d >= 0, d.isFinite else { return fail(key, "must be a number, at least 0") }
        into = d
    }

    /// One of an enumeration's raw values.
    mutating func enumeration<E: RawRepresentable & CaseIterable>(_ key: String, _ into: inout E) where E.RawValue == String {
        var raw = into.rawValue
        string(key, &raw)
        guard let e = E(rawValue: raw) else {
            return fail(key, "must be one of " + E.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", "))
        }
        into = e
    }

    /// The limit keys shared by `[rate]` and each `[[rate.topic]]`.
    mutating func rateRule(_ rule: inout RateRules.Rule) {
        var messages = 0.0, bytes = 0.0, burst = 10, burstBytes = 65536
        double("messages_per_second", &messages)
        double("bytes_per_second", &bytes)
        int("burst", &burst, 1...1_000_000)
        int("burst_bytes", &burstBytes, 1...1 << 30)
        enumeration("action", &rule.action)
        int("ban_seconds", &rule.banSeconds, 1...30 * 86400)
        rule.messages = GCRA(perSecond: messages, burst: burst)
        rule.bytes = GCRA(perSecond: bytes, burst: burstBytes)
    }

    mutating func bool(_ key: String, _ into: inout Bool) {
        guard let v = value(key) else { return }
        guard let b = v.bool else { return fail(key, "must be true or false") }
        into = b
    }

    func finish() {
        for k in table.keys.sorted() where !seen.contains(k) { report.problems.append("config: unknown key \(name(k))") }
    }
}
