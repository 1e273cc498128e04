import FuzzDriver
import CHiredis
@testable import Gateway

// Redis's replies as pilegate reads them: hiredis' reader on arbitrary bytes, then
// every reply through what pilegate makes of one (a cluster slot map, a downlink
// entry, a mailbox, a stream entry's fields).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    // hiredis 0.14 allocates an announced array whole (`*1000000000` asks for 8 GB at
    // once; this target found it). Redis is inside the trust boundary (ops/SECURITY.md),
    // so such inputs are skipped here rather than reported again and again.
    if announcesHugeArray(UnsafeRawBufferPointer(start: data, count: size)) { return 0 }
    let reader = redisReaderCreate()!
    defer { redisReaderFree(reader) }
    data.map { p in p.withMemoryRebound(to: CChar.self, capacity: size) { _ = redisReaderFeed(reader, $0, size) } }
    while true {
        var raw: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &raw) == CHR_OK, let raw else { break }
        defer { freeReplyObject(raw) }
        let r = raw.assumingMemoryBound(to: redisReply.self)
        _ = SlotMap.parse(r, askedHost: "127.0.0.1")
        _ = Command.read(r, stream: "pilegate:down:n", commandTopic: { "/xjdy/ops/v1/TCU/\($0)/cmd" }, defaultTTL: 60)
        var bad: [CommandTag] = []
        _ = Command.mailbox(r, device: "AAAAAJQX", bad: &bad)
        for e in r.elements { _ = e.pairs; _ = e.text; _ = e.bytes; _ = e.integer }
    }
    return 0
}

/// A line `*N` with N over a million anywhere in the input.
func announcesHugeArray(_ b: UnsafeRawBufferPointer) -> Bool {
    var i = 0
    while i < b.count {
        if b[i] == UInt8(ascii: "*") && (i == 0 || b[i - 1] == UInt8(ascii: "\n")) {
            var n = 0, j = i + 1
            while j < b.count, b[j] >= 48, b[j] <= 57, n <= 1_000_000 { n = n * 10 + Int(b[j] - 48); j += 1 }
            if n > 1_000_000 { return true }
        }
        i += 1
    }
    return false
}

runFuzzer(fuzzOne)
