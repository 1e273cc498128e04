import Glibc

/// libFuzzer's driver for the fuzz targets beside this folder (bench/fuzz.sh builds them
/// with `-sanitize=fuzzer,address`). SwiftPM links an executable with `main` bound to the
/// module's own entry point, so libFuzzer's `main` never runs: each target's top-level code
/// calls this with its LLVMFuzzerTestOneInput (which must also exist under that name, as
/// the fuzzer runtime refers to it).
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                                 _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                                 _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

public func runFuzzer(_ oneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> Never {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, oneInput))
}
