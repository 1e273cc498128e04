// swift-tools-version:6.1
import PackageDescription

// Layout (see README "Code map"):
//   CURing     thin C shim over liburing (static inlines, macros, newer uapi constants)
//   CHiredis   thin C shim over hiredis (its RESP reply reader)
//   COpenSSL   thin C shim over OpenSSL 3 (PBKDF2 for credentials)
//   PileLoop   the ring, buffer ring, timing wheel, cross-thread inbox: no MQTT in here
//   MQTTCodec  MQTT 3.1.1 packets as pure functions over bytes: no I/O
//   Gateway    the broker: shards, connections, one handler per packet type, sessions
//   pilegate   the executable
//   pileload   the load-test harness (LoadTest/), on the same loop and codec
//   codecbench micro benchmarks of the codec (bench/CodecBench)
// Release builds of the loop, the codec and the broker skip Swift's run-time
// exclusivity checks (debug builds, the test suite and bench/tsan.sh keep them): at
// 200,000 idle piles the checks were a quarter of the gateway's user-space CPU
// (swift_beginAccess and its thread-local access set, `perf` in bench/README.md,
// "scale.sh"), and every access they guard is already checked at compile time or
// by the debug suite. Cross-module optimization lets the broker inline PileLoop's
// ByteBuffer (RESP is written a byte and a CRLF at a time): gateway CPU per uplink
// message at full speed -9 to -23% (bench/README.md, "redis-cost.sh").
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked", "-cross-module-optimization"], .when(configuration: .release))]

let package = Package(
    name: "pilegate",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "pilegate", targets: ["pilegate"]),
        .executable(name: "pileload", targets: ["pileload"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        .target(
            name: "CURing",
            path: "Sources/CURing",
            linkerSettings: [.linkedLibrary("uring")]
        ),
        .target(
            name: "CHiredis",
            path: "Sources/CHiredis",
            linkerSettings: [.linkedLibrary("hiredis")]
        ),
        .target(
            name: "COpenSSL",
            path: "Sources/COpenSSL",
            linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        .target(
            name: "PileLoop",
            dependencies: [
                "CURing",
                .product(name: "Atomics", package: "swift-atomics"),
            ],
            swiftSettings: hotPath
        ),
        .target(name: "MQTTCodec", swiftSettings: hotPath),
        .target(
            name: "Gateway",
            dependencies: [
                "PileLoop", "MQTTCodec", "CHiredis", "COpenSSL",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            // The operator console's page, compiled into the binary (no files to install,
            // no requests leave the page).
            resources: [.embedInCode("Ops/Console/console.html")],
            swiftSettings: hotPath
        ),
        .executableTarget(
            name: "pilegate",
            dependencies: [
                "Gateway",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "pileload",
            dependencies: [
                "PileLoop", "MQTTCodec", "CHiredis",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "LoadTest",
            exclude: ["faultproxy.py"]   // the fault-injecting proxy (Python), run beside pileload
        ),
        .executableTarget(name: "codecbench", dependencies: ["MQTTCodec"], path: "bench/CodecBench"),
        .testTarget(name: "MQTTCodecTests", dependencies: ["MQTTCodec"]),
        .testTarget(name: "PileLoopTests", dependencies: ["PileLoop"]),
        .testTarget(
            name: "GatewayTests",
            dependencies: ["Gateway", "MQTTCodec", "CHiredis", "pilegate"],
            resources: [.copy("interop")]
        ),
    ]
)

// Fuzz targets (bench/fuzz.sh), only with PILEGATE_FUZZ=1: libFuzzer and AddressSanitizer
// (-sanitize=fuzzer,address) on the MQTT decoder, the PROXY v2 parser, the Redis reply
// path and the TOML config loader. Each defines LLVMFuzzerTestOneInput and hands it to
// libFuzzer's driver from its own main (Tests/Fuzz/FuzzDriver).
if Context.environment["PILEGATE_FUZZ"] == "1" {
    package.targets += [
        .target(name: "FuzzDriver", path: "Tests/Fuzz/FuzzDriver"),
        .executableTarget(name: "fuzz-mqtt", dependencies: ["FuzzDriver", "MQTTCodec"], path: "Tests/Fuzz/fuzz-mqtt"),
        .executableTarget(name: "fuzz-proxy", dependencies: ["FuzzDriver", "Gateway"], path: "Tests/Fuzz/fuzz-proxy"),
        .executableTarget(name: "fuzz-resp", dependencies: ["FuzzDriver", "Gateway", "CHiredis"], path: "Tests/Fuzz/fuzz-resp"),
        .executableTarget(name: "fuzz-config", dependencies: ["FuzzDriver", "Gateway"], path: "Tests/Fuzz/fuzz-config"),
    ]
}
