import FuzzDriver
@testable import Gateway

// The PROXY protocol v2 header parser: any bytes, any verdict, but a header it
// accepts fits in the input and under the parser's own bound.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    if case .header(let length, _) = ProxyHeader.parse(bytes) {
        precondition(length >= 16 && length <= size && length <= ProxyHeader.maxLength, "header length \(length) of \(size)")
    }
    return 0
}

runFuzzer(fuzzOne)
