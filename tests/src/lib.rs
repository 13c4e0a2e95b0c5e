//! Shared pieces of Doorstep's end-to-end tests: finding the fixtures, starting the real
//! server binary on a free loopback port, and checking stored photos.

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
/// test binary.
///
/// Panics when cargo cannot build it.
pub fn server_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_server_binary).clone()
}

/// Cargo builds a package's own binaries for its integration tests, but not another
/// package's; so the first test that needs the server asks cargo to build it (a no-op
/// when it is fresh), in the profile these tests were built with.
fn build_server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile folder");
    let target_dir = profile_dir.parent().expect("target folder");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // The same targets as `cargo test --workspace`, so that features resolve alike and
    // nothing is rebuilt back and forth; this includes the server binary.
    cmd.args(["build", "--quiet", "--workspace", "--bins", "--tests"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace_root());
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("run cargo to build doorstep-server");
    assert!(status.success(), "cargo could not build doorstep-server");
    let bin = profile_dir.join(format!("doorstep-server{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

/// A running `doorstep-server serve` on a free loopback port, over plain HTTP or TLS;
/// killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// Kept open, so that what the server prints later does not meet a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its data folder.
    pub data: PathBuf,
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
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start doorstep-server");
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
            scheme,
        }
    }

    /// `http://addr` or `https://addr`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
