import FuzzDriver
import MQTTCodec

// The MQTT decoder on arbitrary bytes, read as a stream of packets: it must never trap
// or read past the input, and what it accepts must survive an encode and decode.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    var offset = 0
    while offset < bytes.count {
        let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
        guard case .packet(let p, let used) = Decoder.decode(rest, maxPacketSize: 1 << 20) else { break }
        precondition(used > 0 && used <= rest.count, "consumed \(used) of \(rest.count)")
        let again = Encoder.encode(p).withUnsafeBytes { Decoder.decode($0, maxPacketSize: 1 << 21) }
        guard case .packet(let q, _) = again, q == p else { preconditionFailure("\(p) did not survive encoding: \(again)") }
        offset += used
    }
    return 0
}

runFuzzer(fuzzOne)
