//! Issue 5 on the JVM: the Kotlin bindings generated from the host build of
//! `libdoorstep_core`, compiled with kotlinc against JNA together with the Kotlin
//! program in `tests/kotlin/src/` and the Android module's coroutine wrapper
//! (`android/src/main/kotlin/app/doorstep/android/Doorstep.kt`), run against the real
//! server on loopback; then the server's side of what that program did. The Swift bindings are generated too, so a
//! change of the surface that breaks either generator fails here.
//!
//! Needs kotlinc, JNA and java: `tests/kotlin/install-tools.sh` installs them (`.ci/run`
//! calls it). Missing tools fail these tests; they are never skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use doorstep_core::evidence::EvidenceRecord;
use doorstep_core::model::{self, HouseholdId, VisitOutcome};
use doorstep_server::db::{GridRef, Role, Scope, ServerDb};
use doorstep_tests::{
    ServerProcess, fixture, jpeg_has_no_metadata, kotlin, server_binary, workspace_root,
};
use sha2::{Digest, Sha256};

use super::import;

/// The exported methods of `DoorstepStore`, as Kotlin and Swift name them; `open` is
/// its constructor. A change of the surface changes this list (and the Android and iOS
/// wrappers).
const STORE_METHODS: &[&str] = &[
    "acknowledgeDirective",
    "account",
    "addPhoto",
    "captureSignature",
    "confirmDirectivePush",
    "conflicts",
    "deviceId",
    "directives",
    "drawFollowUpSample",
    "enrolScanned",
    "enrolWithCode",
    "finishVisit",
    "fixRectification",
    "followUpTargets",
    "household",
    "households",
    "paperText",
    "pending",
    "recordFollowUpCall",
    "rectifications",
    "refused",
    "sign",
    "startVisit",
    "syncNow",
    "voidVisit",
];

/// The records of the surface (Kotlin data classes, Swift structs).
const RECORDS: &[&str] = &[
    "CapturedSignature",
    "ConflictInfo",
    "DirectiveInfo",
    "DirectivePlace",
    "FollowUpResult",
    "FollowUpSample",
    "FollowUpTarget",
    "HouseholdDetail",
    "HouseholdFilter",
    "HouseholdRow",
    "Location",
    "PadPoint",
    "PaperText",
    "Pending",
    "PhotoInfo",
    "RectificationInfo",
    "RefusedInfo",
    "ResidentInfo",
    "SignInput",
    "SignaturePad",
    "SyncReport",
    "VisitEnd",
    "VisitInfo",
    "WitnessMark",
];

/// Names declared by `fun `name`(` (Kotlin) or `func name(` (Swift) between the line
/// that starts with `start` and the next line that is a lone `}`.
fn methods_in(text: &str, start: &str, kotlin: bool) -> BTreeSet<String> {
    let block: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with(start))
        .take_while(|l| *l != "}")
        .collect();
    assert!(!block.is_empty(), "`{start}` not found in the bindings");
    block
        .iter()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = if kotlin {
                l.strip_prefix("fun `")?
            } else {
                l.strip_prefix("func ")?
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

#[test]
fn kotlin_and_swift_bindings_generate_with_the_whole_surface() {
    server_binary();
    let bindgen = kotlin::bindgen();
    let out = tempfile::tempdir().unwrap();
    let kotlin_files = kotlin::generate(&bindgen, "kotlin", &out.path().join("kotlin"));
    let kt_path = out.path().join("kotlin/app/doorstep/core/doorstep_core.kt");
    assert_eq!(
        kotlin_files,
        vec![kt_path.clone()],
        "one Kotlin file, in app.doorstep.core"
    );
    let kt = std::fs::read_to_string(&kt_path).unwrap();
    assert!(kt.contains("package app.doorstep.core"), "Kotlin package");
    assert!(
        kt.contains("\"doorstep_core\""),
        "Kotlin loads the cdylib doorstep_core"
    );

    let swift_dir = out.path().join("swift");
    let swift_files = kotlin::generate(&bindgen, "swift", &swift_dir);
    let names: Vec<String> = swift_files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "DoorstepCore.swift",
            "DoorstepCoreFFI.h",
            "DoorstepCoreFFI.modulemap"
        ],
        "the Swift module and its C module, as core/uniffi.toml names them"
    );
    let swift = std::fs::read_to_string(swift_dir.join("DoorstepCore.swift")).unwrap();
    let header = std::fs::read_to_string(swift_dir.join("DoorstepCoreFFI.h")).unwrap();
    let modulemap = std::fs::read_to_string(swift_dir.join("DoorstepCoreFFI.modulemap")).unwrap();
    assert!(
        modulemap.contains("module DoorstepCoreFFI") && modulemap.contains("DoorstepCoreFFI.h")
    );

    let want: BTreeSet<String> = STORE_METHODS.iter().map(|s| s.to_string()).collect();
    let kt_methods = methods_in(&kt, "public interface DoorstepStoreInterface", true);
    let swift_methods = methods_in(&swift, "public protocol DoorstepStoreProtocol", false);
    assert_eq!(
        kt_methods, want,
        "Kotlin's DoorstepStore methods (STORE_METHODS lists the surface)"
    );
    assert_eq!(
        swift_methods, want,
        "Swift's DoorstepStore methods (STORE_METHODS lists the surface)"
    );
    assert!(
        kt.contains("fun `open`(`path`: kotlin.String, `key`: kotlin.ByteArray): DoorstepStore")
    );
    assert!(swift.contains("public static func `open`(path: String, key: Data)"));
    for m in STORE_METHODS {
        let snake: String = m
            .chars()
            .flat_map(|c| {
                let lower = c.to_ascii_lowercase();
                (c.is_ascii_uppercase().then_some('_').into_iter()).chain([lower])
            })
            .collect();
        let symbol = format!("uniffi_doorstep_core_fn_method_doorstepstore_{snake}(");
        assert!(header.contains(&symbol), "the C header declares {symbol}");
    }
    for r in RECORDS {
        assert!(
            kt.contains(&format!("data class {r} (")),
            "Kotlin record {r}"
        );
        assert!(
            swift.contains(&format!("public struct {r}: ")),
            "Swift record {r}"
        );
    }
    for (kt_decl, swift_decl) in [
        (
            "sealed class DoorstepException",
            "enum DoorstepError: Swift.Error",
        ),
        ("enum class Outcome", "public enum Outcome"),
        ("enum class PaperKind", "public enum PaperKind"),
        (
            "public interface SyncListener",
            "public protocol SyncListener",
        ),
        ("open class SyncCancel", "open class SyncCancel"),
        ("open class DoorstepStore", "open class DoorstepStore"),
    ] {
        assert!(kt.contains(kt_decl), "Kotlin: {kt_decl}");
        assert!(swift.contains(swift_decl), "Swift: {swift_decl}");
    }
    // Every variant of the error, with `code()` and `detail()` on both sides.
    for variant in [
        "WrongKey",
        "StorageFull",
        "Storage",
        "NotEnrolled",
        "Unauthorized",
        "ServerKeyMismatch",
        "Offline",
        "Server",
        "Cancelled",
        "PhotoRefused",
        "SignatureRefused",
        "VisitIncomplete",
        "NotFound",
        "Invalid",
        "Internal",
    ] {
        assert!(
            kt.contains(&format!("class {variant}(")),
            "Kotlin error {variant}"
        );
        assert!(
            swift.contains(&format!("case {variant}(")),
            "Swift error {variant}"
        );
    }
    assert!(
        kt.contains("fun `code`(): kotlin.String") && kt.contains("fun `detail`(): kotlin.String")
    );
    assert!(
        swift.contains("public func code() -> String")
            && swift.contains("public func detail() -> String")
    );
}

/// `user enrol` on the command line: the one-time code and the QR payload.
fn enrol(data: &Path, username: &str, server_url: &str) -> (String, String) {
    let out = Command::new(server_binary())
        .args(["user", "enrol", "--data"])
        .arg(data)
        .args(["--username", username, "--server-url", server_url])
        .output()
        .expect("run user enrol");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "user enrol {username}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in: {text}"))
            .trim()
            .to_string()
    };
    (
        line(&format!("enrolment code for {username}: ")),
        line("QR payload: "),
    )
}

/// The values of the `@name ...` lines the Kotlin program prints.
fn reported(stdout: &str) -> BTreeMap<String, Vec<String>> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix('@'))
        .map(|l| {
            let mut words = l.split_whitespace().map(str::to_string);
            (words.next().unwrap_or_default(), words.collect())
        })
        .collect()
}

#[test]
fn kotlin_phone_records_a_visit_offline_syncs_it_and_a_supervisor_checks_it() {
    let started = Instant::now();
    let tools = kotlin::tools();
    server_binary();
    let bindgen = kotlin::bindgen();
    let work = tempfile::tempdir().unwrap();

    // The generated bindings, the Android module's coroutine wrapper (plain JVM Kotlin:
    // it imports nothing from android.*) and the test program, in one kotlinc run.
    let generated = kotlin::generate(&bindgen, "kotlin", &work.path().join("bindings"));
    let mut sources: Vec<PathBuf> = generated
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "kt"))
        .collect();
    let wrapper = workspace_root().join("android/src/main/kotlin/app/doorstep/android/Doorstep.kt");
    assert!(wrapper.is_file(), "{} is missing", wrapper.display());
    assert!(
        !std::fs::read_to_string(&wrapper)
            .unwrap()
            .contains("import android."),
        "Doorstep.kt must stay plain JVM Kotlin (it is tested here)"
    );
    sources.push(wrapper);
    sources.extend(kotlin::kotlin_sources(
        &workspace_root().join("tests/kotlin/src"),
    ));
    let jar = work.path().join("kotlin-tests.jar");
    let classpath = [tools.coroutines.clone()];
    let compile_time = kotlin::compile(&tools, &sources, &classpath, &jar);
    eprintln!(
        "kotlinc: {} files in {:.1} s",
        sources.len(),
        compile_time.as_secs_f64()
    );

    // The server: village A, a grid worker and a supervisor on its first grid.
    let data = work.path().join("server");
    import(&data, "roster/village_a.xlsx");
    let roster = doorstep_server::roster::read_roster(&fixture("roster/village_a.xlsx")).unwrap();
    let (village, grid) = (
        roster.households[0].village.clone(),
        roster.households[0].grid.clone(),
    );
    let in_grid: Vec<_> = roster
        .households
        .iter()
        .filter(|h| h.grid == grid)
        .collect();
    {
        let db = ServerDb::open(&data).unwrap();
        let scope = Scope::grids(vec![GridRef::new(&village, &grid)]);
        db.add_user(
            "kt-worker",
            "kotlin test worker",
            Role::GridWorker,
            &scope,
            "(test)",
        )
        .unwrap();
        db.add_user(
            "kt-supervisor",
            "kotlin test supervisor",
            Role::Supervisor,
            &scope,
            "(test)",
        )
        .unwrap();
    }
    let server = ServerProcess::start(&data);
    let (worker_code, _) = enrol(&data, "kt-worker", &server.url());
    let (_, supervisor_qr) = enrol(&data, "kt-supervisor", &server.url());
    let phones = work.path().join("phones");
    std::fs::create_dir(&phones).unwrap();

    // A photo as an Android phone hands it over (4608x1976, 2.2 MB, EXIF).
    let photo = fixture("photos/phone/HMD_Nokia_8.3_5G.jpg");
    let mut java = kotlin::java(&tools, &jar, &classpath, "MainKt");
    java.env("DOORSTEP_SERVER_URL", server.url())
        .env("DOORSTEP_WORKER_CODE", &worker_code)
        .env("DOORSTEP_SUPERVISOR_QR", &supervisor_qr)
        .env("DOORSTEP_GRID_HOUSEHOLDS", in_grid.len().to_string())
        .env("DOORSTEP_PHOTO", &photo)
        .env("DOORSTEP_WORK_DIR", &phones);
    let run = kotlin::run_with_timeout(java, Duration::from_secs(240));
    let output = format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        run.stdout, run.stderr
    );
    // Shown with --nocapture, and by the harness when the test fails.
    println!("{output}");
    assert!(
        run.status.is_some_and(|s| s.success()),
        "the Kotlin tests failed ({}); their output is above",
        run.describe_status()
    );
    let ok_lines = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("ok   "))
        .count();
    assert!(
        run.stdout
            .contains(&format!("kotlin: {ok_lines} passed, 0 failed")),
        "the closing line does not add up to the {ok_lines} checks that passed:\n{output}"
    );
    assert!(
        ok_lines >= 30,
        "only {ok_lines} Kotlin checks ran:\n{output}"
    );

    // What the server holds of it.
    let at = reported(&run.stdout);
    let (hid, visit) = match at.get("visit").map(Vec::as_slice) {
        Some([h, v]) => (HouseholdId::parse(h).unwrap(), v.clone()),
        other => panic!("no `@visit HOUSEHOLD VISIT` line: {other:?}"),
    };
    let photo_sha = at["photo"][0].clone();
    let follow_up = at["follow_up"][0].clone();
    let verify = Command::new(server_binary())
        .args(["verify", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let verify_out = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && verify_out.contains("all holds"),
        "verify: {verify_out}{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    let db = ServerDb::open(&data).unwrap();
    let h = model::read_household(&db.household_doc(hid).unwrap().expect("the household")).unwrap();
    let v = &h.visits[&visit];
    assert_eq!(v.outcome, Some(VisitOutcome::Completed));
    assert_eq!(v.visitor, "kt-worker");
    assert!(v.voided.is_none());
    assert_eq!(
        v.photos
            .values()
            .map(|p| p.sha256.clone())
            .collect::<Vec<_>>(),
        vec![photo_sha.clone()],
        "the visit's one photo"
    );
    let kinds: BTreeSet<&str> = h
        .evidence
        .values()
        .map(|e| EvidenceRecord::from_canonical(&e.record.0).unwrap())
        .filter(|r| r.visit.to_string() == visit)
        .map(|r| r.kind.as_str())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["notice", "pledge"]), "signed papers");
    let call = &h.follow_up_calls[&follow_up];
    assert_eq!(
        (
            call.visit_id.as_str(),
            call.by.as_str(),
            call.reached,
            call.confirmed
        ),
        (visit.as_str(), "kt-supervisor", true, Some(true))
    );
    let jpeg = db
        .blob(&photo_sha)
        .unwrap()
        .expect("the photo's bytes arrived");
    assert_eq!(hex::encode(Sha256::digest(&jpeg)), photo_sha);
    assert!(jpeg_has_no_metadata(&jpeg), "the stored photo has no EXIF");
    // The voided nobody-home visit arrived as well: two visits in all.
    assert_eq!(db.visit_ids().unwrap().len(), 2, "visits on the server");

    // The audit log saw both enrolments and the reused code.
    let audit = Command::new(server_binary())
        .args(["audit", "export", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let actions: Vec<String> = String::from_utf8_lossy(&audit.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["action"].to_string())
        .collect();
    let count = |a: &str| actions.iter().filter(|x| x.trim_matches('"') == a).count();
    assert_eq!(count("enrolment_redeemed"), 2, "{actions:?}");
    assert_eq!(count("enrolment_refused"), 1, "{actions:?}");

    // The phones' files, encrypted at rest: no SQLite header, no name or number of the
    // grid in them.
    let personal: Vec<String> = in_grid
        .iter()
        .flat_map(|h| {
            let mut v = vec![h.head_name.clone(), h.phone.clone()];
            for r in h.residents.values() {
                v.push(r.name.clone());
                v.extend(r.id_number.clone());
                v.extend(r.phone.clone());
            }
            v
        })
        .filter(|s| s.chars().count() >= 2)
        .collect();
    let mut scanned = 0;
    for entry in std::fs::read_dir(&phones).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.starts_with(b"SQLite format 3\0"),
            "{} is a plain SQLite file",
            path.display()
        );
        let text = String::from_utf8_lossy(&bytes);
        for p in &personal {
            assert!(
                !text.contains(p.as_str()),
                "{} holds personal data in the clear ({} characters)",
                path.display(),
                p.chars().count()
            );
        }
        scanned += bytes.len();
    }
    assert!(scanned > 100_000, "the phones' files hold {scanned} bytes");
    eprintln!(
        "kotlin: {ok_lines} checks in {:.1} s on the JVM; whole test {:.1} s (kotlinc {:.1} s); {} values of personal data absent from {scanned} bytes of store files",
        run.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        compile_time.as_secs_f64(),
        personal.len()
    );
}
