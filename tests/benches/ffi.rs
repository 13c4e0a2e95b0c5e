//! FFI benchmark (issue 5): the cost of a call through the uniffi surface, from Kotlin
//! on the JVM against the same call from Rust. An encrypted phone store (SQLCipher) with
//! 1,000 households; listing all of them with `DoorstepStore::households` in pages of
//! 100 and of 500 (until a page comes back short: 11 and 3 calls), and two trivial calls
//! for the fixed cost of a call: `device_id()` (the store's lock, a string back) and
//! `SyncCancel::is_cancelled()` (a boolean back, nothing else). Rust calls the `doorstep_core::ffi::DoorstepStore` object directly; Kotlin
//! calls it through the generated bindings (JNA, the RustBuffer serialisation of every
//! row, Kotlin data classes) on the same store file with the same key, after a JIT
//! warm-up, in `tests/kotlin/bench/Bench.kt`. Rust runs before and after Kotlin, and its
//! figure is the median over both runs.
//!
//! Run: `cargo bench -p doorstep-tests --bench ffi` (also links the core's release
//! `cdylib` and builds `uniffi-bindgen`, generates the Kotlin bindings and compiles them
//! with kotlinc: needs `tests/kotlin/install-tools.sh`).
//! Environment: `DOORSTEP_BENCH_ITERS` (timed listings of each kind and blocks of 1,000
//! `device_id()` calls, default 300), `DOORSTEP_BENCH_WARMUP` (untimed listings first,
//! default 100), `DOORSTEP_KOTLINC`, `DOORSTEP_JNA_JAR`.
//!
//! These are measurements, not tests: nothing here asserts a time.

use std::path::Path;
use std::time::{Duration, Instant};

use doorstep_core::ffi::{DoorstepStore, HouseholdFilter, SyncCancel};
use doorstep_core::store::{STORE_KEY_BYTES, Store};
use doorstep_tests::{cargo_build_profile, kotlin, workspace_root};

const HOUSEHOLDS: usize = 1000;
const BLOCK: u32 = 1000;

/// An encrypted phone store holding the households, as after a first sync.
fn make_store(path: &Path, key: &[u8; STORE_KEY_BYTES]) {
    let mut store = Store::open_encrypted(path, key).expect("open store");
    doorstep_tests::insert_demo_households(&mut store, HOUSEHOLDS);
}

/// Lists every household in pages of `page`: the rows and the calls it took.
fn list_all(store: &DoorstepStore, page: u32) -> (usize, usize) {
    let (mut rows, mut calls) = (0, 0);
    loop {
        let got = store
            .households(HouseholdFilter {
                text: None,
                status: None,
                offset: rows as u32,
                limit: page,
            })
            .expect("households");
        calls += 1;
        rows += got.len();
        assert!(
            got.last().is_none_or(|r| !r.head_name.is_empty()),
            "a row without a head"
        );
        if got.len() < page as usize {
            return (rows, calls);
        }
    }
}

/// One measurement: the listing's shape and its samples, in nanoseconds (per listing,
/// or per call for the trivial calls).
#[derive(Debug, Clone)]
struct Measure {
    rows: usize,
    calls: usize,
    samples: Vec<f64>,
}

impl Measure {
    fn quantile(&self, q: f64) -> f64 {
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q) as usize]
    }

    fn median(&self) -> f64 {
        self.quantile(0.5)
    }
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// The Rust half: the same four measurements as Bench.kt, in the same order.
fn rust_half(path: &Path, key: &[u8], iterations: usize, warmup: usize) -> Vec<Measure> {
    let store = DoorstepStore::open(path.to_string_lossy().into_owned(), key.to_vec())
        .expect("open the store through the FFI object");
    let mut out = Vec::new();
    for page in [100, 500] {
        let mut shape = (0, 0);
        for _ in 0..warmup {
            shape = list_all(&store, page);
        }
        let samples = (0..iterations)
            .map(|_| {
                let t = Instant::now();
                shape = std::hint::black_box(list_all(&store, page));
                ns(t.elapsed())
            })
            .collect();
        out.push(Measure {
            rows: shape.0,
            calls: shape.1,
            samples,
        });
    }
    let mut sink = 0;
    for _ in 0..warmup * 20 {
        sink += store.device_id().len();
    }
    let samples = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..BLOCK {
                sink += std::hint::black_box(store.device_id()).len();
            }
            ns(t.elapsed()) / f64::from(BLOCK)
        })
        .collect();
    assert!(sink > 0);
    out.push(Measure {
        rows: 0,
        calls: 1,
        samples,
    });
    let cancel = SyncCancel::new();
    let mut set = 0;
    for _ in 0..warmup * 20 {
        set += usize::from(cancel.is_cancelled());
    }
    let samples = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..BLOCK {
                set += usize::from(std::hint::black_box(&cancel).is_cancelled());
            }
            ns(t.elapsed()) / f64::from(BLOCK)
        })
        .collect();
    assert_eq!(set, 0);
    out.push(Measure {
        rows: 0,
        calls: 1,
        samples,
    });
    out
}

/// Parses Bench.kt's `bench NAME rows=R calls=C samples=N median_ns=M ...` lines: the
/// name, rows, calls, and the median, 10th and 90th percentiles in nanoseconds.
fn kotlin_lines(stdout: &str) -> Vec<(String, usize, usize, f64, f64, f64)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("bench "))
        .map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().expect("a name").to_string();
            let field = |k: &str| -> u64 {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no {k}= in {l}"))
            };
            (
                name,
                field("rows") as usize,
                field("calls") as usize,
                field("median_ns") as f64,
                field("p10_ns") as f64,
                field("p90_ns") as f64,
            )
        })
        .collect()
}

/// Nanoseconds as the tables show them.
fn time(ns: f64) -> String {
    let us = ns / 1e3;
    if us >= 100.0 {
        format!("{us:.0} µs")
    } else if us >= 1.0 {
        format!("{us:.1} µs")
    } else {
        format!("{ns:.1} ns")
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, load {load}")
}

fn main() {
    let iterations = env_usize("DOORSTEP_BENCH_ITERS", 300);
    let warmup = env_usize("DOORSTEP_BENCH_WARMUP", 100);
    let tools = kotlin::tools();

    // The release library and uniffi-bindgen, then the bindings and Bench.kt in one jar.
    let t = Instant::now();
    // The release library as this `cargo bench` resolves it (so that neither rebuilds the
    // other's copy), and the generator in the dev profile (it only reads the library).
    cargo_build_profile(
        "bench",
        &[
            "-p",
            "doorstep-tests",
            "-p",
            "doorstep-core",
            "--lib",
            "--bench",
            "ffi",
        ],
    );
    cargo_build_profile(
        "debug",
        &["-p", "uniffi-bindgen", "--bin", "uniffi-bindgen"],
    );
    eprintln!("builds: {:.1} s", t.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sources: Vec<_> = kotlin::generate(
        &kotlin::bindgen_in("debug"),
        "kotlin",
        &dir.path().join("bindings"),
    )
    .into_iter()
    .filter(|p| p.extension().is_some_and(|x| x == "kt"))
    .collect();
    sources.extend(kotlin::kotlin_sources(
        &workspace_root().join("tests/kotlin/bench"),
    ));
    let jar = dir.path().join("bench.jar");
    let compile = kotlin::compile(&tools, &sources, &[], &jar);
    eprintln!("kotlinc: {:.1} s", compile.as_secs_f64());

    let key: [u8; STORE_KEY_BYTES] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5c);
    let path = dir.path().join("phone.db");
    make_store(&path, &key);

    let before = rust_half(&path, &key, iterations, warmup);
    let mut java = kotlin::java(&tools, &jar, &[], "BenchKt");
    java.arg(&path)
        .arg(hex::encode(key))
        .arg(iterations.to_string())
        .arg(warmup.to_string());
    let run = kotlin::run_with_timeout(java, Duration::from_secs(1800));
    assert!(
        run.status.is_some_and(|s| s.success()),
        "Bench.kt failed ({}):\n{}{}",
        run.describe_status(),
        run.stdout,
        run.stderr
    );
    let after = rust_half(&path, &key, iterations, warmup);
    let kt = kotlin_lines(&run.stdout);
    assert_eq!(kt.len(), 4, "four Kotlin measurements:\n{}", run.stdout);

    println!(
        "\nFFI cost per call: {HOUSEHOLDS} households in an encrypted store, {iterations} timed runs after {warmup} warm-up runs; {}",
        machine()
    );
    println!();
    println!(
        "| call | rows | calls | Rust median (p10-p90) | Kotlin median (p10-p90) | Kotlin − Rust per call | per row | Kotlin ÷ Rust |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let what = [
        "`households`, pages of 100",
        "`households`, pages of 500",
        "`deviceId()`",
        "`SyncCancel.isCancelled()`",
    ];
    for (i, (name, rows, calls, kmed, k10, k90)) in kt.iter().enumerate() {
        let mut rust = before[i].clone();
        rust.samples.extend(after[i].samples.iter().copied());
        assert_eq!(
            (rust.rows, rust.calls),
            (*rows, *calls),
            "{name}: Rust and Kotlin listed alike"
        );
        let rmed = rust.median();
        let extra = (kmed - rmed).max(0.0);
        let (rows, per_row) = if *rows > 0 {
            (rows.to_string(), time(extra / *rows as f64))
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "| {} | {rows} | {calls} | {} ({}-{}) | {} ({}-{}) | {} | {per_row} | {:.2}× |",
            what[i],
            time(rmed),
            time(rust.quantile(0.1)),
            time(rust.quantile(0.9)),
            time(*kmed),
            time(*k10),
            time(*k90),
            time(extra / *calls as f64),
            kmed / rmed
        );
    }
    println!();
    println!(
        "Rust medians before / after the Kotlin run: {}",
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| format!("{} / {}", time(b.median()), time(a.median())))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "Kotlin run: {:.1} s of JVM in all (start, JIT warm-up and timed runs); kotlinc {:.1} s",
        run.elapsed.as_secs_f64(),
        compile.as_secs_f64()
    );
}
