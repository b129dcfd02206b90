// swift-tools-version:6.0
import PackageDescription

// Every module a target imports, or whose value types it lays out through another
// module's types, must be listed as its dependency, not reached transitively: SwiftPM
// recompiles a target only when a DIRECT dependency's .swiftmodule changes. With
// ["HeraldRuntime"] alone, adding stored properties to HeraldCore's TriggerEngine/Shaper
// (issue 5) left Sources/herald/*.o compiled for the old, smaller `Replay` (0x230 bytes
// instead of 0x271) while the new HeraldCore was linked in: `herald replay` wrote past
// its stack slot and crashed releasing a neighbouring local (HeraldRuntime.swiftmodule,
// the only listed input, is not rewritten when its own interface is unchanged).
let executableDependencies: [Target.Dependency] = [
    "HeraldRuntime", "HeraldCore", "HeraldKafka", "HeraldPostgres",
    .product(name: "Logging", package: "swift-log"),
    .product(name: "ArgumentParser", package: "swift-argument-parser"),
]

let package = Package(
    name: "herald",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "herald", targets: ["herald"]),
        .executable(name: "herald-trigger", targets: ["herald-trigger"]),
        .executable(name: "herald-shaper", targets: ["herald-shaper"]),
        .executable(name: "herald-sink", targets: ["herald-sink"]),
        .executable(name: "herald-bench", targets: ["herald-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
    ],
    targets: [
        // C libraries, reached only through HeraldKafka and HeraldPostgres (and CMalloc, below).
        .systemLibrary(
            name: "CRdKafka",
            pkgConfig: "rdkafka",
            providers: [.apt(["librdkafka-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        // glibc's malloc_trim (not in Swift's Glibc module): HeraldRuntime's
        // `ProcessMemory.returnFreedMemory()` only; it takes and returns no pointers.
        .systemLibrary(name: "CMalloc"),
        .target(
            name: "HeraldKafka",
            dependencies: [
                "CRdKafka",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "HeraldPostgres",
            dependencies: [
                "CLibPQ",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Everything that needs no I/O: events, rules, expressions, templates, shaping.
        .target(
            name: "HeraldCore",
            dependencies: [
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // Workers, schema, configuration and development tooling over the wrappers.
        .target(
            name: "HeraldRuntime",
            dependencies: [
                "CMalloc",
                "HeraldCore",
                "HeraldKafka",
                "HeraldPostgres",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "herald", dependencies: executableDependencies),
        .executableTarget(name: "herald-trigger", dependencies: executableDependencies),
        .executableTarget(name: "herald-shaper", dependencies: executableDependencies),
        .executableTarget(name: "herald-sink", dependencies: executableDependencies),
        // Benchmarks against ceilings measured in the same run; `scripts/bench`, never `scripts/test`.
        .executableTarget(name: "herald-bench", dependencies: executableDependencies),
        // Corpus/: the fuzzers' seeds, read through #filePath.
        .testTarget(name: "HeraldCoreTests", dependencies: ["HeraldCore"], exclude: ["Corpus"]),
        .testTarget(name: "HeraldKafkaTests", dependencies: ["HeraldKafka"]),
        .testTarget(name: "HeraldPostgresTests", dependencies: ["HeraldPostgres"]),
        .testTarget(
            name: "HeraldEndToEndTests",
            dependencies: ["HeraldRuntime", "HeraldKafka", "HeraldPostgres", "HeraldCore",
                           .product(name: "Yams", package: "Yams")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
