//! uniffi's binding generator, built from the same uniffi version as the core, so the
//! generated Kotlin and Swift always match the scaffolding in the library. Usage:
//! `cargo run -p uniffi-bindgen -- generate --library target/release/libdoorstep_core.so
//! --language kotlin --out-dir OUT` (see android/ and ios/).

fn main() {
    uniffi::uniffi_bindgen_main()
}
