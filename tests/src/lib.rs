//! Shared pieces of Doorstep's end-to-end tests: finding the fixtures, starting the real
//! server binary on a free loopback port, checking stored photos, and (`kotlin`) the
//! generated bindings compiled and run on the JVM; (`browser`) headless Chromium for the
//! office's web pages.

pub mod browser;
pub mod kotlin;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The shared fixtures folder: `$DOORSTEP_FIXTURES`, else `../shared/fixtures` beside the
/// workspace root.
///
/// Panics (failing the test) with the missing path named when the folder is absent:
/// under CI a missing fixture is a failure, never a skip.
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("DOORSTEP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/fixtures"));
    assert!(
        dir.join("README.md").exists(),
        "fixtures not found at {} (set DOORSTEP_FIXTURES, or put the shared folder beside the project); CI={}",
        dir.display(),
        std::env::var("CI").unwrap_or_default()
    );
    dir
}

/// One fixture file, failing the test when it is missing.
pub fn fixture(rel: &str) -> PathBuf {
    let p = fixtures().join(rel);
    assert!(p.exists(), "fixture {} is missing", p.display());
    p
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `doorstep-server` binary of this workspace, built (or found fresh) next to this
/// test binary, together with the rest of the workspace's binaries and libraries
/// (`uniffi-bindgen` and `libdoorstep_core.so` among them).
///
/// Panics when cargo cannot build it.
pub fn server_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_server_binary).clone()
}

/// The target profile folder this binary was built into (`target/debug`,
/// `target/release`): where cargo puts the workspace's binaries and libraries.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target profile folder")
        .to_path_buf()
}

/// Runs `cargo build` with `args` (packages and targets: `--workspace`, `--lib`, ...)
/// in the profile and target folder this binary was built with (`target/release` is
/// taken as `--release`; a benchmark uses [`cargo_build_profile`] with `bench`).
///
/// Panics when cargo fails.
pub fn cargo_build(args: &[&str]) {
    let profile_dir = profile_dir();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    cargo_build_profile(&profile, args);
}

/// As [`cargo_build`], in the cargo profile `profile` (`debug` and `release` as cargo
/// names their folders, or any profile name), in this binary's target folder.
///
/// Ask for what the running `cargo test` or `cargo bench` already resolves alike (the
/// same profile, and packages whose features unify the same way): cargo keeps one copy
/// of a workspace crate per profile, so a build that resolves its dependencies
/// differently rebuilds it, and the next `cargo bench` rebuilds it back.
///
/// Panics when cargo fails.
pub fn cargo_build_profile(profile: &str, args: &[&str]) {
    let profile_dir = profile_dir();
    let target_dir = profile_dir.parent().expect("target folder");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // What cargo set for this test or bench process is not for the build: some build
    // scripts (ring's) track CARGO_MANIFEST_DIR and CARGO_PKG_*, so inheriting them would
    // make this build and a `cargo build` from a shell rebuild each other back and forth.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&name.as_ref())
        {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd.args(["build", "--quiet"])
        .args(args)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace_root());
    match profile {
        // `cargo test` builds everything in target/debug with the `test` profile
        // (opt-level 1 here); a `dev` build of the same crates would be other units, and
        // the core's rlib, named without a hash because the core is also a cdylib, would
        // be overwritten under the test binaries already linked against it.
        "debug" => {
            cmd.args(["--profile", "test"]);
        }
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("run cargo build");
    assert!(
        status.success(),
        "cargo build --profile {profile} {args:?} failed"
    );
}

/// Cargo builds a package's own binaries for its integration tests, but not another
/// package's; so the first test that needs the server asks cargo to build it (a no-op
/// when it is fresh), in the profile these tests were built with. The same targets as
/// `cargo test --workspace`, so that features resolve alike and nothing is rebuilt back
/// and forth, plus `--lib`: a library built only as a dependency is not linked as the
/// `cdylib` the Kotlin tests load (`libdoorstep_core.so`); `--bins` includes
/// `uniffi-bindgen`.
fn build_server_binary() -> PathBuf {
    cargo_build(&["--workspace", "--lib", "--bins", "--tests"]);
    let bin = profile_dir().join(format!("doorstep-server{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

/// A running `doorstep-server serve` on a free loopback port, over plain HTTP or TLS;
/// killed when dropped.
///
/// It logs at `debug`, the most it writes; every line is kept and, when the server is
/// dropped, scanned by [`assert_no_personal_data`] (issue 4: no names, phone or ID
/// numbers in logs).
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// Kept open, so that what the server prints later does not meet a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its data folder.
    pub data: PathBuf,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
    /// `http` or `https`, as the server said.
    pub scheme: String,
}

impl ServerProcess {
    /// Starts the real server binary on `127.0.0.1:0` over the data folder `data` and waits
    /// until it says where it listens.
    pub fn start(data: &Path) -> Self {
        Self::start_with(data, &[])
    }

    /// As [`ServerProcess::start`], serving HTTPS with the PEM certificate `cert` and
    /// key `key`.
    pub fn start_tls(data: &Path, cert: &Path, key: &Path) -> Self {
        Self::start_with(
            data,
            &[
                "--tls-cert".as_ref(),
                cert.as_os_str(),
                "--tls-key".as_ref(),
                key.as_os_str(),
            ],
        )
    }

    /// As [`ServerProcess::start`], with more arguments to `serve`.
    pub fn start_with(data: &Path, args: &[&std::ffi::OsStr]) -> Self {
        let mut child = Command::new(server_binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start doorstep-server");
        let stderr = child.stderr.take().expect("server stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log_reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("WARN") || line.contains("ERROR") {
                        eprintln!("server: {line}");
                    }
                    let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                    l.push_str(&line);
                    l.push('\n');
                }
            })
        };
        let stdout = child.stdout.take().expect("server stdout");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the server's first line");
        // "doorstep-server listening on http://127.0.0.1:1234 (data in ...)"
        let (scheme, addr) = line
            .split_whitespace()
            .find_map(|word| word.split_once("://"))
            .and_then(|(scheme, addr)| Some((scheme.to_string(), addr.parse().ok()?)))
            .unwrap_or_else(|| panic!("server did not say where it listens: {line:?}"));
        Self {
            child,
            _stdout: stdout,
            addr,
            data: data.to_path_buf(),
            log,
            log_reader: Some(log_reader),
            scheme,
        }
    }

    /// `http://addr` or `https://addr`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The log lines written so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.log_reader.take() {
            let _ = r.join();
        }
        if !std::thread::panicking() {
            let log = self.log();
            assert_no_personal_data(&log, "the server's log");
            eprintln!(
                "log scan: {} lines of this server's log, none with personal data",
                log.lines().count()
            );
        }
    }
}

/// Lines of server output scanned so far by [`assert_no_personal_data`] in this test
/// binary.
pub static LOG_LINES_SCANNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Personal data of the fixtures: every name, phone number and ID number in the
/// roster fixtures (households, residents, and the names of rows not imported), read
/// with the server's own roster reader, plus `extra` values tests add.
pub fn fixture_personal_data() -> &'static [String] {
    static PII: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    PII.get_or_init(|| {
        let mut out = std::collections::BTreeSet::new();
        for name in ["roster/village_a.xlsx", "roster/village_b_gbk.csv"] {
            let roster = doorstep_server::roster::read_roster(&fixture(name))
                .unwrap_or_else(|e| panic!("read {name}: {e}"));
            for h in &roster.households {
                out.insert(h.head_name.clone());
                out.insert(h.phone.clone());
                for r in h.residents.values() {
                    out.insert(r.name.clone());
                    out.extend(r.id_number.clone());
                    out.extend(r.phone.clone());
                }
            }
            for e in &roster.row_errors {
                out.insert(e.name.clone());
            }
        }
        // Values the tests themselves write.
        out.extend(TEST_PERSONAL_DATA.iter().map(|s| s.to_string()));
        out.into_iter().filter(|s| s.chars().count() >= 2).collect()
    })
}

/// Names, phone and ID numbers that tests write into households of their own.
pub const TEST_PERSONAL_DATA: &[&str] = &[
    "张三丰",
    "李四光",
    "13812345678",
    "13987654321",
    "110101199001011234",
    "11010119850505123X",
];

/// Fails the test when `text` (log output) holds a name, phone or ID number of the
/// fixtures, or anything shaped like a mobile number (a token of 11 digits starting
/// with 1) or an ID number (a token of 17 digits and a digit or X). `source` names the
/// log in the failure.
pub fn assert_no_personal_data(text: &str, source: &str) {
    let pii = fixture_personal_data();
    for (i, line) in text.lines().enumerate() {
        if let Some(hit) = pii.iter().find(|p| line.contains(p.as_str())) {
            panic!(
                "{source}, line {}: personal data ({} characters) in a log line: {line}",
                i + 1,
                hit.chars().count()
            );
        }
        for token in line.split(|c: char| !c.is_ascii_alphanumeric()) {
            let digits = token.bytes().filter(u8::is_ascii_digit).count();
            let id_like = token.len() == 18
                && digits >= 17
                && token[..17].bytes().all(|b| b.is_ascii_digit());
            let phone_like = token.len() == 11 && digits == 11 && token.starts_with('1');
            assert!(
                !(id_like || phone_like),
                "{source}, line {}: something shaped like a phone or ID number in a log line: {line}",
                i + 1
            );
        }
    }
    LOG_LINES_SCANNED.fetch_add(
        text.lines().count() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// JPEG marker segments of a file, as (marker byte, segment length) up to the scan.
pub fn jpeg_segments(jpeg: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
        let marker = jpeg[i + 1];
        let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
        out.push((marker, len));
        if marker == 0xDA {
            break;
        }
        i += 2 + len;
    }
    out
}

/// True when the JPEG carries no metadata block: no APP1..APP15 (EXIF, XMP, ICC, ...)
/// and no COM; a JFIF APP0 is allowed.
pub fn jpeg_has_no_metadata(jpeg: &[u8]) -> bool {
    jpeg.starts_with(&[0xFF, 0xD8])
        && jpeg_segments(jpeg)
            .iter()
            .all(|(m, _)| !((0xE1..=0xEF).contains(m) || *m == 0xFE))
}

/// Puts `n` demo households into a phone store, as a first sync would (their documents
/// inserted directly, not queued for push); returns each household's ID and document
/// bytes. For benchmarks.
///
/// Panics when a document cannot be made or stored.
pub fn insert_demo_households(
    store: &mut doorstep_core::store::Store,
    n: usize,
) -> Vec<(doorstep_core::model::HouseholdId, Vec<u8>)> {
    use doorstep_core::model::{self, HouseholdId};
    let server = automerge::ActorId::random();
    doorstep_server::demo::demo_households(n)
        .into_iter()
        .map(|h| {
            let id = HouseholdId::parse(&h.id).expect("demo IDs are UUIDs");
            let bytes =
                model::new_household_doc(&h, server.clone(), doorstep_core::store::now_ms())
                    .expect("household doc")
                    .save();
            store.insert_household_doc(&bytes, id).expect("insert doc");
            (id, bytes)
        })
        .collect()
}
