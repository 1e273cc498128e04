import FuzzDriver
@testable import Gateway

// The TOML config loader on arbitrary text: a config or a list of problems, never a trap.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeRawBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? Config(toml: text)
    _ = Config.check(toml: text)
    return 0
}

runFuzzer(fuzzOne)
