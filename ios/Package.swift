// swift-tools-version: 5.9
// Doorstep for iOS: the Rust core (doorstep-core) as a static library in
// DoorstepCoreFFI.xcframework, its uniffi-generated Swift bindings (target DoorstepCore), and
// a thin Swift layer (target Doorstep: async/await and the Keychain-held store key).
//
// The XCFramework and Sources/DoorstepCore/DoorstepCore.swift are build outputs: run
// ./build-xcframework.sh on a Mac first (README.md).

import PackageDescription

let package = Package(
    name: "Doorstep",
    platforms: [
        .iOS(.v15),
    ],
    products: [
        .library(name: "Doorstep", targets: ["Doorstep"]),
    ],
    targets: [
        // The C side of the FFI: libdoorstep_core.a per platform, with DoorstepCoreFFI.h and
        // its module.modulemap.
        .binaryTarget(
            name: "DoorstepCoreFFI",
            path: "DoorstepCoreFFI.xcframework"
        ),
        // The generated bindings: DoorstepStore, the records, DoorstepError, SyncCancel, ...
        .target(
            name: "DoorstepCore",
            dependencies: ["DoorstepCoreFFI"],
            path: "Sources/DoorstepCore",
            linkerSettings: [
                // What the static library needs from the system beyond libSystem (rustc's
                // "native-static-libs", printed by build-xcframework.sh): the time zone
                // lookup of the core's clock goes through CoreFoundation.
                .linkedFramework("CoreFoundation"),
            ]
        ),
        // The app's entry point: async wrappers and KeychainKeyProvider.
        .target(
            name: "Doorstep",
            dependencies: ["DoorstepCore"],
            path: "Sources/Doorstep"
        ),
    ]
)
