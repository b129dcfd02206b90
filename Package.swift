// swift-tools-version:6.0
import PackageDescription

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
        // C libraries, reached only through HeraldKafka and HeraldPostgres.
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
                "HeraldCore",
                "HeraldKafka",
                "HeraldPostgres",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "herald", dependencies: ["HeraldRuntime"]),
        .executableTarget(name: "herald-trigger", dependencies: ["HeraldRuntime"]),
        .executableTarget(name: "herald-shaper", dependencies: ["HeraldRuntime"]),
        .executableTarget(name: "herald-sink", dependencies: ["HeraldRuntime"]),
        // Benchmarks against ceilings measured in the same run; `scripts/bench`, never `scripts/test`.
        .executableTarget(name: "herald-bench", dependencies: ["HeraldRuntime"]),
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
