// The Doorstep Android library (namespace app.doorstep.core).
//
// Two tasks feed it from the Rust workspace one folder up:
//   cargoNdkBuild         cargo ndk ... build --release --package doorstep-core
//                         -> <abi>/libdoorstep_core.so, added to every variant's jniLibs
//   uniffiKotlinBindings  the workspace's uniffi-bindgen on the first ABI's library (arm64-v8a)
//                         -> app/doorstep/core/doorstep_core.kt, added to the Kotlin sources
// Both are wired through the Variant API (addGeneratedSourceDirectory), so every task that
// merges native libraries or compiles Kotlin depends on them, and Android Studio runs them
// when it syncs. Their outputs live under build/; nothing generated lands in src/.

import javax.inject.Inject
import org.gradle.api.file.FileSystemOperations
import org.gradle.process.ExecOperations
import org.gradle.work.DisableCachingByDefault
import org.jetbrains.kotlin.gradle.dsl.JvmTarget

buildscript {
    repositories {
        mavenCentral()
    }
    dependencies {
        // AGP 9 compiles Kotlin itself ("built-in Kotlin") with the Kotlin Gradle plugin it
        // depends on; this raises that plugin to the current Kotlin release.
        classpath("org.jetbrains.kotlin:kotlin-gradle-plugin:2.4.21")
    }
}

plugins {
    id("com.android.library") version "9.5.1"
}

// An app's build can take this one in with `includeBuild` and depend on
// "app.doorstep:doorstep-android" (README.md).
group = "app.doorstep"
version = "0.1.0"

/** The Android ABIs built, in the names cargo-ndk and jniLibs use. */
val defaultAbis = listOf("arm64-v8a", "armeabi-v7a", "x86_64")

/** Minimum Android API level, for both the Kotlin side and the NDK's libc the core links. */
val minApi = 26

/**
 * NDK r28+ links 64-bit libraries for 16 KB pages by default (which Google Play requires of new
 * apps); this is AGP 9's default NDK, pinned so that every machine builds the same thing.
 */
val ndk = "28.2.13676358"

android {
    namespace = "app.doorstep.core"
    compileSdk = 36
    ndkVersion = ndk

    defaultConfig {
        minSdk = minApi
        consumerProguardFiles("consumer-rules.pro")
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    compilerOptions {
        jvmTarget = JvmTarget.JVM_17
    }
}

dependencies {
    // The generated bindings call the core through JNA; the AAR carries libjnidispatch.so.
    implementation("net.java.dev.jna:jna:5.19.1@aar")
    // `api`: the Kotlin layer's public signatures use Flow and suspend functions.
    api("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.11.0")
}

// ---------------------------------------------------------------------------------------------
// The Rust side.

/**
 * Cross-builds the core for the Android ABIs with cargo-ndk, laid out as jniLibs
 * (`<abi>/libdoorstep_core.so`). Gradle skips it while no Rust input changed; when one did,
 * cargo rebuilds only what it must. Always the release profile: a debug build of the core is
 * about 250 MB and too slow for the photo pipeline to be usable on a phone.
 */
@DisableCachingByDefault(because = "The libraries depend on the host's Rust toolchain and NDK")
abstract class CargoNdkBuild @Inject constructor(
    private val exec: ExecOperations,
    private val fs: FileSystemOperations,
) : DefaultTask() {
    /** The Rust workspace root (where Cargo.toml and Cargo.lock are). */
    @get:Internal
    abstract val workspaceDir: DirectoryProperty

    /** What the libraries are built from; cargo tracks the finer detail itself. */
    @get:InputFiles
    @get:PathSensitive(PathSensitivity.RELATIVE)
    abstract val rustSources: ConfigurableFileCollection

    /** The cargo package, `doorstep-core`. */
    @get:Input
    abstract val cratePackage: Property<String>

    /** Android ABIs (`arm64-v8a`, `armeabi-v7a`, `x86_64`, `x86`). */
    @get:Input
    abstract val abis: ListProperty<String>

    /** The API level the NDK's libc is linked for: the library's minSdk. */
    @get:Input
    abstract val apiLevel: Property<Int>

    /** The NDK's version, so that a different NDK rebuilds. */
    @get:Input
    abstract val ndkVersion: Property<String>

    /** The NDK (passed to cargo-ndk as ANDROID_NDK_HOME). */
    @get:Internal
    abstract val ndkDirectory: DirectoryProperty

    /** The cargo executable. */
    @get:Internal
    abstract val cargo: Property<String>

    /** PATH for cargo, with $CARGO_HOME/bin in front (cargo finds `cargo-ndk` there). */
    @get:Internal
    abstract val searchPath: Property<String>

    /** `<abi>/libdoorstep_core.so` for each ABI. AGP chooses the place. */
    @get:OutputDirectory
    abstract val jniLibsDir: DirectoryProperty

    @TaskAction
    fun build() {
        val out = jniLibsDir.get().asFile
        // Nothing from an ABI no longer built, or from an older layout, stays behind.
        fs.delete { delete(out) }
        val result = exec.exec {
            workingDir = workspaceDir.get().asFile
            executable = cargo.get()
            args("ndk")
            abis.get().forEach { args("-t", it) }
            args("--platform", apiLevel.get(), "-o", out.absolutePath)
            args("build", "--release", "--package", cratePackage.get())
            environment("ANDROID_NDK_HOME", ndkDirectory.get().asFile.absolutePath)
            environment("PATH", searchPath.get())
            isIgnoreExitValue = true
        }
        if (result.exitValue != 0) {
            throw GradleException(
                "`cargo ndk` failed (exit ${result.exitValue}); its output is above. It needs " +
                    "cargo-ndk (`cargo install cargo-ndk`), the Rust Android targets (`rustup " +
                    "target add aarch64-linux-android armv7-linux-androideabi " +
                    "x86_64-linux-android`), and perl and make for the bundled OpenSSL. " +
                    "See android/README.md."
            )
        }
    }
}

/**
 * Generates the Kotlin bindings with the workspace's own uniffi-bindgen (the same uniffi
 * version as the core, so the bindings always match the library's scaffolding), reading the
 * interface from the built library's metadata ("library mode") and the package name from
 * core/uniffi.toml.
 */
@DisableCachingByDefault(because = "Runs the workspace's generator through cargo")
abstract class UniffiKotlinBindings @Inject constructor(
    private val exec: ExecOperations,
    private val fs: FileSystemOperations,
) : DefaultTask() {
    /** The Rust workspace root. */
    @get:Internal
    abstract val workspaceDir: DirectoryProperty

    /** A built libdoorstep_core.so (any ABI: the metadata is the same in each). */
    @get:InputFile
    @get:PathSensitive(PathSensitivity.NONE)
    abstract val library: RegularFileProperty

    /** The generator's own sources and core/uniffi.toml. */
    @get:InputFiles
    @get:PathSensitive(PathSensitivity.RELATIVE)
    abstract val generatorSources: ConfigurableFileCollection

    /** The cargo executable. */
    @get:Internal
    abstract val cargo: Property<String>

    /** PATH for cargo. */
    @get:Internal
    abstract val searchPath: Property<String>

    /** Kotlin sources (`app/doorstep/core/doorstep_core.kt`). AGP chooses the place. */
    @get:OutputDirectory
    abstract val outputDir: DirectoryProperty

    @TaskAction
    fun generate() {
        val out = outputDir.get().asFile
        fs.delete { delete(out) }
        val result = exec.exec {
            workingDir = workspaceDir.get().asFile
            executable = cargo.get()
            args("run", "--package", "uniffi-bindgen", "--")
            args("generate", "--library", library.get().asFile.absolutePath)
            args("--language", "kotlin", "--out-dir", out.absolutePath, "--no-format")
            environment("PATH", searchPath.get())
            isIgnoreExitValue = true
        }
        if (result.exitValue != 0) {
            throw GradleException(
                "uniffi-bindgen failed (exit ${result.exitValue}); its output is above."
            )
        }
    }
}

val workspace: File =
    providers.gradleProperty("doorstep.workspaceDir")
        .map { rootDir.resolve(it).canonicalFile }
        .getOrElse(rootDir.canonicalFile.parentFile)

val cargoHome: File =
    providers.environmentVariable("CARGO_HOME").map { File(it) }
        .getOrElse(File(providers.systemProperty("user.home").get(), ".cargo"))

val cargoExecutable: Provider<String> =
    providers.gradleProperty("doorstep.cargo").orElse(
        provider {
            listOf("cargo", "cargo.exe").map { cargoHome.resolve("bin").resolve(it) }
                .firstOrNull { it.canExecute() }?.absolutePath ?: "cargo"
        }
    )

val cargoSearchPath: Provider<String> =
    providers.environmentVariable("PATH").orElse("")
        .map { listOf(cargoHome.resolve("bin").absolutePath, it).joinToString(File.pathSeparator) }

/** ABIs to build; `-Pdoorstep.abis=arm64-v8a` builds one, for a faster edit-run cycle. */
val buildAbis: List<String> =
    providers.gradleProperty("doorstep.abis")
        .map { it.split(',').map(String::trim).filter(String::isNotEmpty) }
        .getOrElse(defaultAbis)

val cargoNdkBuild = tasks.register<CargoNdkBuild>("cargoNdkBuild") {
    group = "rust"
    description = "Cross-builds libdoorstep_core.so for ${buildAbis.joinToString()} with cargo-ndk."
    workspaceDir.set(workspace)
    rustSources.from(
        workspace.resolve("Cargo.toml"),
        workspace.resolve("Cargo.lock"),
        workspace.resolve("rust-toolchain.toml"),
        fileTree(workspace.resolve(".cargo")),
        fileTree(workspace.resolve("core")),
    )
    cratePackage.set("doorstep-core")
    abis.set(buildAbis)
    apiLevel.set(minApi)
    ndkVersion.set(ndk)
    ndkDirectory.set(androidComponents.sdkComponents.ndkDirectory)
    cargo.set(cargoExecutable)
    searchPath.set(cargoSearchPath)
    // AGP sets the real place when the directory is added to the variants below.
    jniLibsDir.convention(layout.buildDirectory.dir("generated/rust/jniLibs"))
}

val uniffiKotlinBindings = tasks.register<UniffiKotlinBindings>("uniffiKotlinBindings") {
    group = "rust"
    description = "Generates the Kotlin bindings of doorstep-core with the workspace's uniffi-bindgen."
    workspaceDir.set(workspace)
    library.set(cargoNdkBuild.flatMap { it.jniLibsDir.file("${buildAbis.first()}/libdoorstep_core.so") })
    generatorSources.from(
        workspace.resolve("Cargo.lock"),
        workspace.resolve("core/uniffi.toml"),
        fileTree(workspace.resolve("uniffi-bindgen")),
    )
    cargo.set(cargoExecutable)
    searchPath.set(cargoSearchPath)
    outputDir.convention(layout.buildDirectory.dir("generated/uniffi/kotlin"))
}

androidComponents {
    onVariants { variant ->
        variant.sources.jniLibs?.addGeneratedSourceDirectory(cargoNdkBuild, CargoNdkBuild::jniLibsDir)
        (variant.sources.kotlin ?: variant.sources.java)
            ?.addGeneratedSourceDirectory(uniffiKotlinBindings, UniffiKotlinBindings::outputDir)
    }
}
