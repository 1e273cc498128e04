/// What toml++ (the parser inside TOMLKit) does not check, checked before TOMLKit sees
/// the document. toml++ assumes two things without checking them, and each aborts on an
/// assertion where the library is built without NDEBUG and is undefined behaviour where
/// it is built with it (both found by bench/fuzz.sh, fuzz-config):
/// - what follows a header's `[` or `[[` starts a key, a bare-key character or a quote:
///   `[é]`, `[=x]` or `[[+a]]` broke it;
/// - inside an array, where a value is due, there is no `}`: `a = [}` broke it.
/// A reload with such a typo must be refused with a line number, not end the gateway.
///
/// Headers are the `[` at the start of a line outside any open bracket, string or
/// comment: a `[` inside a multi-line array is a value.
enum TOMLPrecheck {
    static func problem(in text: String) -> String? {
        var bytes = Array(text.utf8)[...]
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = bytes.dropFirst(3) }  // a BOM
        var i = bytes.startIndex, line = 1, lineStart = true
        var open: [UInt8] = []   // value brackets: `[` arrays and `{` inline tables
        while i < bytes.endIndex {
            let c = bytes[i]
            switch c {
            case UInt8(ascii: "\n"):
                line += 1; lineStart = true; i += 1; continue
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
                i += 1; continue
            case UInt8(ascii: "#"):
                i = bytes[i...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.endIndex; continue
            case UInt8(ascii: "\""), UInt8(ascii: "'"):
                i = skipString(bytes, from: i, line: &line)
            case UInt8(ascii: "[") where lineStart && open.isEmpty:
                var j = i + 1
                if j < bytes.endIndex, bytes[j] == UInt8(ascii: "[") { j += 1 }
                while j < bytes.endIndex, bytes[j] == UInt8(ascii: " ") || bytes[j] == UInt8(ascii: "\t") { j += 1 }
                if j < bytes.endIndex, !startsKey(bytes[j]) {
                    return "config: a table name must start with a letter, a digit, _, - or a quote at line \(line)"
                }
                i = bytes[i...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.endIndex; continue
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                open.append(c); i += 1
            case UInt8(ascii: "]"):
                if open.last == UInt8(ascii: "[") { open.removeLast() }   // else toml++ reports it
                i += 1
            case UInt8(ascii: "}"):
                if open.last == UInt8(ascii: "[") { return "config: '}' inside an array at line \(line)" }
                if open.last == UInt8(ascii: "{") { open.removeLast() }
                i += 1
            default:
                i += 1
            }
            lineStart = false
        }
        return nil
    }

    /// A bare-key character (TOML 1.0: A-Z a-z 0-9 _ -), a quote, or the `]` that toml++
    /// itself reports as an empty name.
    private static func startsKey(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"),
             UInt8(ascii: "\""), UInt8(ascii: "'"), UInt8(ascii: "]"): return true
        default: return false
        }
    }

    /// The index after the string starting at `start` (basic or literal, one line or
    /// three quotes and many lines); the end of the text if it never closes.
    private static func skipString(_ b: ArraySlice<UInt8>, from start: Int, line: inout Int) -> Int {
        let q = b[start]
        let triple = b[start...].starts(with: [q, q, q])
        var i = start + (triple ? 3 : 1)
        while i < b.endIndex {
            let c = b[i]
            if c == UInt8(ascii: "\n") {
                if !triple { return i }  // toml++ reports the unclosed string
                line += 1
            }
            if c == UInt8(ascii: "\\"), q == UInt8(ascii: "\"") {
                if i + 1 < b.endIndex, b[i + 1] == UInt8(ascii: "\n") { line += 1 }
                i += 2; continue
            }
            if c == q, !triple || b[i...].starts(with: [q, q, q]) { return i + (triple ? 3 : 1) }
            i += 1
        }
        return b.endIndex
    }
}
