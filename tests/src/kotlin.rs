//! The generated bindings on the JVM (issue 5): finding kotlinc and JNA, generating the
//! Kotlin and Swift bindings from the host build of `libdoorstep_core`, compiling Kotlin
//! sources with them into one jar, and running a `main` of that jar with a timeout.
//! Used by the e2e test `kotlin` and the `ffi` benchmark.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{profile_dir, workspace_root};

/// The message of every failure to find a tool: how to get it.
const INSTALL: &str = "run tests/kotlin/install-tools.sh (as root: it installs libjna-java \
     with apt and the npm package kotlin-compiler into target/tools/kotlinc), or set \
     DOORSTEP_KOTLINC and DOORSTEP_JNA_JAR";

/// The tools the JVM tests need.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The Kotlin compiler's launcher (`bin/kotlinc`).
    pub kotlinc: PathBuf,
    /// The JNA jar the generated bindings load the library with.
    pub jna: PathBuf,
    /// `java`.
    pub java: PathBuf,
    /// kotlinx-coroutines-core for the JVM, from kotlinc's `lib/` (the Android module's
    /// coroutine wrapper needs it).
    pub coroutines: PathBuf,
}

/// Finds kotlinc (`$DOORSTEP_KOTLINC`, else `target/tools/kotlinc/bin/kotlinc` in the
/// workspace, else `kotlinc` on `PATH`), JNA (`$DOORSTEP_JNA_JAR`, else
/// `/usr/share/java/jna.jar`) and `java` on `PATH`.
///
/// Panics, saying how to install them, when one is missing: the JVM tests are part of
/// the test command and are never skipped.
pub fn tools() -> Tools {
    let kotlinc = match std::env::var_os("DOORSTEP_KOTLINC") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "DOORSTEP_KOTLINC={} is not a file",
                p.display()
            );
            p
        }
        None => {
            let local = workspace_root().join("target/tools/kotlinc/bin/kotlinc");
            if local.is_file() {
                local
            } else {
                on_path("kotlinc").unwrap_or_else(|| {
                    panic!(
                        "kotlinc not found (not in {} nor on PATH): {INSTALL}",
                        local.display()
                    )
                })
            }
        }
    };
    let jna = std::env::var_os("DOORSTEP_JNA_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/java/jna.jar"));
    assert!(
        jna.is_file(),
        "JNA not found at {}: {INSTALL}",
        jna.display()
    );
    let java = on_path("java").unwrap_or_else(|| panic!("java not found on PATH: {INSTALL}"));
    let home = std::fs::canonicalize(&kotlinc)
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.to_path_buf()))
        .unwrap_or_default();
    let coroutines = home.join("lib/kotlinx-coroutines-core-jvm.jar");
    assert!(
        coroutines.is_file(),
        "kotlinx-coroutines-core-jvm.jar not found beside kotlinc ({}): {INSTALL}",
        coroutines.display()
    );
    Tools {
        kotlinc,
        jna,
        java,
        coroutines,
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The host build of the core that JNA loads, in this binary's profile folder.
pub fn core_library() -> PathBuf {
    let lib = profile_dir().join(format!(
        "{}doorstep_core{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        lib.is_file(),
        "{} is missing: build with `cargo build --workspace --lib`",
        lib.display()
    );
    lib
}

/// The workspace's `uniffi-bindgen` in this binary's profile folder.
pub fn bindgen() -> PathBuf {
    profile_dir().join(format!("uniffi-bindgen{}", std::env::consts::EXE_SUFFIX))
}

/// The workspace's `uniffi-bindgen` in the profile folder `profile` (`debug`,
/// `release`) of this binary's target folder.
pub fn bindgen_in(profile: &str) -> PathBuf {
    profile_dir()
        .parent()
        .expect("target folder")
        .join(profile)
        .join(format!("uniffi-bindgen{}", std::env::consts::EXE_SUFFIX))
}

/// Generates the bindings for `language` (`kotlin`, `swift`) of [`core_library`] into
/// `out` with `bindgen` (the workspace's `uniffi-bindgen`, [`bindgen`]; uniffi library
/// mode: it reads the surface from the library and the names from `core/uniffi.toml`);
/// returns the files written.
///
/// Panics with the generator's output when it fails.
pub fn generate(bindgen: &Path, language: &str, out: &Path) -> Vec<PathBuf> {
    assert!(bindgen.is_file(), "{} is missing", bindgen.display());
    let output = Command::new(bindgen)
        .args([
            "generate",
            "--no-format",
            "--language",
            language,
            "--library",
        ])
        .arg(core_library())
        .arg("--out-dir")
        .arg(out)
        .current_dir(workspace_root())
        .output()
        .expect("run uniffi-bindgen");
    assert!(
        output.status.success(),
        "uniffi-bindgen generate --language {language} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut files = Vec::new();
    walk(out, &mut files);
    files.sort();
    files
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a generated folder") {
        let path = entry.expect("read a generated folder").path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The `.kt` files directly in `dir`, sorted.
pub fn kotlin_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("read a source folder").path())
        .filter(|p| p.extension().is_some_and(|x| x == "kt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .kt files in {}", dir.display());
    files
}

/// Compiles `sources` with the JNA jar and `classpath` into the runnable jar `jar`
/// (Kotlin runtime included) in one kotlinc run; returns how long it took.
///
/// Panics with kotlinc's output when it fails or takes over 10 minutes.
pub fn compile(tools: &Tools, sources: &[PathBuf], classpath: &[PathBuf], jar: &Path) -> Duration {
    let cp =
        std::env::join_paths(std::iter::once(&tools.jna).chain(classpath)).expect("class path");
    let mut cmd = Command::new(&tools.kotlinc);
    cmd.args(sources)
        .arg("-cp")
        .arg(cp)
        .args(["-jvm-target", "17", "-include-runtime", "-d"])
        .arg(jar);
    let started = Instant::now();
    let run = run_with_timeout(cmd, Duration::from_secs(600));
    assert!(
        run.status.is_some_and(|s| s.success()) && jar.is_file(),
        "kotlinc failed ({}):\n{}{}",
        run.describe_status(),
        run.stdout,
        run.stderr
    );
    started.elapsed()
}

/// `java` running `main_class` from `jar` (with JNA and `classpath` on the class path),
/// loading [`core_library`] from this binary's profile folder.
pub fn java(tools: &Tools, jar: &Path, classpath: &[PathBuf], main_class: &str) -> Command {
    let cp = std::env::join_paths(
        [jar, tools.jna.as_path()]
            .into_iter()
            .chain(classpath.iter().map(PathBuf::as_path)),
    )
    .expect("class path");
    let mut cmd = Command::new(&tools.java);
    cmd.arg(format!("-Djna.library.path={}", profile_dir().display()))
        .arg("-cp")
        .arg(cp)
        .arg(main_class);
    cmd
}

/// What a finished (or killed) process wrote.
#[derive(Debug)]
pub struct Run {
    /// Its exit status; `None` when it was killed at the timeout.
    pub status: Option<ExitStatus>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl Run {
    /// `exit status: 0`, or `killed after N s`.
    pub fn describe_status(&self) -> String {
        match self.status {
            Some(s) => s.to_string(),
            None => format!("killed after {:.0} s", self.elapsed.as_secs_f64()),
        }
    }
}

/// Runs `cmd` to its end, killing it after `timeout`, with both outputs captured.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Run {
    let started = Instant::now();
    // Its own process group, so that a timeout also ends what it started (kotlinc is a
    // shell script that runs java).
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout")));
    let err = reader(Box::new(child.stderr.take().expect("stderr")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the process") {
            break Some(status);
        }
        if started.elapsed() > timeout {
            #[cfg(unix)]
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}
