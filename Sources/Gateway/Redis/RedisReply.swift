import CHiredis

typealias RedisReply = UnsafeMutablePointer<redisReply>

/// Reading hiredis' reply tree.
extension UnsafeMutablePointer where Pointee == redisReply {
    var isError: Bool { pointee.type == CHR_REPLY_ERROR }
    var isNil: Bool { pointee.type == CHR_REPLY_NIL }
    /// String, status or error text.
    var text: String {
        guard let s = pointee.str else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: s, count: pointee.len), as: UTF8.self)
    }
    var integer: Int64? { pointee.type == CHR_REPLY_INTEGER ? pointee.integer : nil }
    var bytes: [UInt8] {
        guard let s = pointee.str else { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: s, count: pointee.len))
    }
    var elements: [RedisReply] {
        guard pointee.type == CHR_REPLY_ARRAY, let e = pointee.element else { return [] }
        return (0..<pointee.elements).compactMap { e[$0] }
    }
    /// An HGETALL reply (or a stream entry's fields) as (field, value) pairs.
    var pairs: [(field: String, value: RedisReply)] {
        let kv = elements
        return stride(from: 0, to: kv.count - 1, by: 2).map { (kv[$0].text, kv[$0 + 1]) }
    }
}
