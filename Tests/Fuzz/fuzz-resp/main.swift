import FuzzDriver
import CHiredis
@testable import Gateway

// Redis's replies as pilegate reads them: hiredis' reader on arbitrary bytes, then
// every reply through what pilegate makes of one (a cluster slot map, a downlink
// entry, a mailbox, a stream entry's fields).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
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

runFuzzer(fuzzOne)
