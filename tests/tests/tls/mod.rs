//! Transport security end to end: the real server binary serving HTTPS with a
//! self-signed certificate made here (rcgen), phones on the real core pinning its key,
//! `tls-pin`, and the startup errors of bad certificate and key files.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use doorstep_core::error::Error;
use doorstep_core::model::{HouseholdId, VisitOutcome};
use doorstep_core::store::{HouseholdQuery, NewVisit, Store, now_ms};
use doorstep_core::sync::{Client, spki_pin, sync_now};
use doorstep_server::db::ServerDb;
use doorstep_tests::{ServerProcess, fixtures, server_binary};
use rcgen::PublicKeyData;
use sha2::{Digest, Sha256};

use super::{Field, PASSWORD, field_with};

/// A self-signed certificate and its key, written as PEM files into `dir` with the
/// file names `{name}.crt` and `{name}.key`.
struct TestCert {
    cert: PathBuf,
    key: PathBuf,
    /// The certificate in DER.
    der: Vec<u8>,
    /// The key's SubjectPublicKeyInfo in DER, as the key pair encodes it.
    spki: Vec<u8>,
}

fn self_signed(dir: &Path, name: &str) -> TestCert {
    let key = rcgen::KeyPair::generate().unwrap();
    // A name the tests never connect by: with a pin, the key is what counts.
    let cert = rcgen::CertificateParams::new(vec!["doorstep.town.example".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    TestCert {
        cert: cert_path,
        key: key_path,
        der: cert.der().to_vec(),
        spki: key.subject_public_key_info(),
    }
}

/// The pin as RFC 7469 section 2.4 computes it, apart from the core's function.
fn expected_pin(c: &TestCert) -> String {
    format!("sha256/{}", base64_standard(&Sha256::digest(&c.spki)))
}

/// Standard base64 with padding (RFC 4648 section 4), written out so the test does not
/// share the code it checks.
fn base64_standard(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Village A's field (see [`super::field`]) with the server on HTTPS, and its cert.
fn tls_field() -> (Field, TestCert) {
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path(), "server");
    let (c, k) = (cert.cert.clone(), cert.key.clone());
    let f = field_with(dir, move |data| ServerProcess::start_tls(data, &c, &k));
    assert_eq!(f.server.scheme, "https", "the server says it serves HTTPS");
    (f, cert)
}

fn store(f: &Field, name: &str) -> Store {
    Store::open(f._dir.path().join(format!("{name}.db"))).unwrap()
}

/// A visit where nobody was home, recorded offline, with a real photo.
fn record_visit(store: &mut Store, h: HouseholdId) -> String {
    let now = now_ms();
    let visit = store
        .record_visit(
            h,
            NewVisit {
                outcome: VisitOutcome::NobodyHome,
                outcome_reason: "nobody answered".into(),
                started_at_ms: now,
                finished_at_ms: Some(now + 1),
                target_groups_reached: vec![],
                remarks: String::new(),
                location: None,
            },
        )
        .unwrap();
    let mut photos: Vec<_> = std::fs::read_dir(fixtures().join("photos/phone"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    photos.sort();
    store
        .attach_photo(h, visit, &std::fs::read(&photos[0]).unwrap())
        .unwrap();
    visit.to_string()
}

fn first_household(store: &Store) -> HouseholdId {
    store.households(&HouseholdQuery::default()).unwrap()[0].id
}

fn server_visits(f: &Field) -> Vec<String> {
    ServerDb::open(&f.server.data)
        .unwrap()
        .visit_ids()
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn tls_a_phone_with_the_right_pin_signs_in_and_syncs_a_household() {
    let (f, cert) = tls_field();
    let pin = spki_pin(&cert.der).unwrap();
    let mut phone = store(&f, "pinned");
    let client = Client::with_pin(&f.server.url(), &pin).unwrap();
    assert_eq!(client.pin(), Some(pin.as_str()));
    client.sign_in(&mut phone, "worker-a", PASSWORD).unwrap();
    assert_eq!(phone.setting("server_pin").unwrap(), Some(pin.clone()));
    assert_eq!(phone.setting("server_url").unwrap(), Some(f.server.url()));

    // sync_now builds its client from the store: the pin goes with it.
    sync_now(&mut phone, None, |_| {}).unwrap();
    let h = first_household(&phone);
    let visit = record_visit(&mut phone, h);
    let p = sync_now(&mut phone, None, |_| {}).unwrap();
    // The photo and its thumbnail.
    assert!(p.changes_sent > 0 && p.blobs_uploaded == 2, "{p:?}");
    assert!(phone.outbox().unwrap().is_empty());
    assert!(phone.pending_blobs().unwrap().is_empty());
    assert_eq!(server_visits(&f), vec![visit]);
    let db = ServerDb::open(&f.server.data).unwrap();
    assert_eq!(
        db.photo_hashes().unwrap().len(),
        1,
        "the photo came over TLS"
    );
}

#[test]
fn tls_a_wrong_pin_is_refused_with_the_pin_error_and_the_phone_keeps_its_data() {
    let (f, cert) = tls_field();
    let right = spki_pin(&cert.der).unwrap();
    let other = self_signed(f._dir.path(), "other");
    let wrong = spki_pin(&other.der).unwrap();
    assert_ne!(right, wrong);

    // Signing in with another key's pin: refused, and nothing is stored.
    let mut fresh = store(&f, "fresh");
    let err = Client::with_pin(&f.server.url(), &wrong)
        .unwrap()
        .sign_in(&mut fresh, "worker-a", PASSWORD)
        .unwrap_err();
    match &err {
        Error::PinMismatch { pinned, presented } => {
            assert_eq!(pinned, &wrong);
            assert_eq!(presented, &right);
        }
        other => panic!("expected the pin error, got {other:?}"),
    }
    assert!(err.to_string().contains("does not match"), "{err}");
    assert_eq!(fresh.setting("token").unwrap(), None);
    assert_eq!(fresh.setting("server_url").unwrap(), None);

    // A signed-in phone with work not yet sent meets an impostor at the server's
    // address (another machine with another key): nothing goes out, nothing changes.
    let mut phone = store(&f, "field");
    Client::with_pin(&f.server.url(), &right)
        .unwrap()
        .sign_in(&mut phone, "worker-a", PASSWORD)
        .unwrap();
    sync_now(&mut phone, None, |_| {}).unwrap();
    let h = first_household(&phone);
    let visit = record_visit(&mut phone, h);
    let outbox = phone.outbox().unwrap().len();
    let pending = phone.pending_blobs().unwrap();
    let cursor = phone.cursor().unwrap();
    let before = phone.household(h).unwrap();
    assert!(outbox > 0 && !pending.is_empty());

    let impostor_dir = tempfile::tempdir().unwrap();
    let impostor = ServerProcess::start_tls(impostor_dir.path(), &other.cert, &other.key);
    phone.set_setting("server_url", &impostor.url()).unwrap();
    let err = sync_now(&mut phone, None, |_| {}).unwrap_err();
    assert!(
        matches!(&err, Error::PinMismatch { pinned, presented } if *pinned == right && *presented == wrong),
        "{err:?}"
    );
    assert_eq!(phone.outbox().unwrap().len(), outbox);
    assert_eq!(phone.pending_blobs().unwrap(), pending);
    assert_eq!(phone.cursor().unwrap(), cursor);
    assert!(phone.household(h).unwrap().visits.contains_key(&visit));
    assert_eq!(phone.household(h).unwrap(), before);
    assert!(server_visits(&f).is_empty());
    assert_eq!(
        ServerDb::open(impostor_dir.path())
            .unwrap()
            .visit_ids()
            .unwrap()
            .len(),
        0
    );

    // Back at the real server, the same phone sends it all.
    phone.set_setting("server_url", &f.server.url()).unwrap();
    sync_now(&mut phone, None, |_| {}).unwrap();
    assert!(phone.outbox().unwrap().is_empty());
    assert_eq!(server_visits(&f), vec![visit]);
}

#[test]
fn tls_without_a_pin_a_self_signed_server_is_refused_as_an_unknown_issuer() {
    let (f, cert) = tls_field();
    let mut phone = store(&f, "unpinned");
    let err = Client::new(&f.server.url())
        .sign_in(&mut phone, "worker-a", PASSWORD)
        .unwrap_err();
    match &err {
        Error::Network(message) => {
            assert!(message.contains("UnknownIssuer"), "{message}");
            assert!(message.contains("pin"), "{message}");
        }
        other => panic!("expected a network error, got {other:?}"),
    }
    assert_eq!(phone.setting("token").unwrap(), None);
    // A pin with a plain http:// address is refused up front, never ignored.
    assert!(matches!(
        Client::with_pin(
            &format!("http://{}", f.server.addr),
            &spki_pin(&cert.der).unwrap()
        ),
        Err(Error::Invalid {
            field: "server_url",
            ..
        })
    ));
    // A malformed pin is refused before any connection.
    assert!(matches!(
        Client::with_pin(&f.server.url(), "sha256/short"),
        Err(Error::Invalid { field: "pin", .. })
    ));
}

#[test]
fn tls_pin_prints_the_pin_of_the_certificates_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path(), "server");
    let out = Command::new(server_binary())
        .args(["tls-pin", "--cert"])
        .arg(&cert.cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.trim(), expected_pin(&cert));
    assert_eq!(printed.trim(), spki_pin(&cert.der).unwrap());
    assert_eq!(printed, format!("{}\n", printed.trim()), "one line");
}

/// Runs the server binary with `args` and waits at most 60 s for it to exit (a server
/// that starts after all is killed, failing the test).
fn run_until_exit(args: &[&std::ffi::OsStr]) -> (ExitStatus, String) {
    let mut child = Command::new(server_binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[test]
fn tls_bad_certificate_and_key_files_are_clear_errors_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = self_signed(d, "good");
    let other = self_signed(d, "other");
    let missing = d.join("missing.pem");
    let garbage = d.join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file at all\n").unwrap();
    let bad_base64 = d.join("bad-base64.pem");
    std::fs::write(
        &bad_base64,
        "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let not_x509 = d.join("not-x509.pem");
    std::fs::write(
        &not_x509,
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();

    // (certificate, key, the file the message must name, words it must hold)
    let cases: Vec<(&Path, &Path, &Path, &str)> = vec![
        (&missing, &good.key, &missing, "cannot read"),
        (&garbage, &good.key, &garbage, "no PEM certificate"),
        (&bad_base64, &good.key, &bad_base64, "bad PEM"),
        (&not_x509, &good.key, &not_x509, "not an X.509 certificate"),
        (&good.cert, &missing, &missing, "cannot read"),
        (&good.cert, &garbage, &garbage, "no PEM private key"),
        // The certificate given as the key: no key in it.
        (&good.cert, &good.cert, &good.cert, "no PEM private key"),
        // Another certificate's key.
        (
            &good.cert,
            &other.key,
            &other.key,
            "cannot serve the certificate",
        ),
    ];
    for (cert, key, named, words) in cases {
        for command in ["serve", "demo"] {
            let data = d.join(format!("data-{command}"));
            let (status, stderr) = run_until_exit(&[
                command.as_ref(),
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--data".as_ref(),
                data.as_os_str(),
                "--tls-cert".as_ref(),
                cert.as_os_str(),
                "--tls-key".as_ref(),
                key.as_os_str(),
            ]);
            let what = format!(
                "{command} --tls-cert {} --tls-key {}",
                cert.display(),
                key.display()
            );
            assert_eq!(status.code(), Some(2), "{what}: {stderr}");
            assert!(stderr.starts_with("error: "), "{what}: {stderr}");
            assert!(
                stderr.contains(&named.display().to_string()),
                "{what} names the file: {stderr}"
            );
            assert!(stderr.contains(words), "{what} says {words:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{what}: {stderr}");
            assert!(!data.exists(), "{what} made no data folder");
        }
    }

    // One of the two alone is a usage error (clap's, also exit code 2).
    for (flag, file) in [("--tls-cert", &good.cert), ("--tls-key", &good.key)] {
        let (status, stderr) = run_until_exit(&[
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--data".as_ref(),
            d.join("data-alone").as_os_str(),
            flag.as_ref(),
            file.as_os_str(),
        ]);
        assert_eq!(status.code(), Some(2), "{flag} alone: {stderr}");
        assert!(stderr.contains("--tls-"), "{flag} alone: {stderr}");
    }

    // tls-pin on a bad file.
    for (file, words) in [(&missing, "cannot read"), (&garbage, "no PEM certificate")] {
        let (status, stderr) =
            run_until_exit(&["tls-pin".as_ref(), "--cert".as_ref(), file.as_os_str()]);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&file.display().to_string()) && stderr.contains(words),
            "{stderr}"
        );
    }
}

#[test]
fn tls_a_phone_enrols_from_a_scanned_code_and_keeps_the_pin_it_carried() {
    let (f, cert) = tls_field();
    let pin = spki_pin(&cert.der).unwrap();
    // What the office's `POST /v1/enrolments` gives when the server serves TLS.
    let enrolment = ServerDb::open(&f.server.data)
        .unwrap()
        .issue_enrolment("worker-a", "office", &f.server.url(), Some(&pin))
        .unwrap();
    let mut phone = store(&f, "scanned");
    Client::enrol_scanned(&mut phone, &enrolment.qr_payload).unwrap();
    assert_eq!(phone.setting("server_pin").unwrap(), Some(pin));
    sync_now(&mut phone, None, |_| {}).unwrap();
    assert!(
        !phone
            .households(&HouseholdQuery::default())
            .unwrap()
            .is_empty()
    );
    // A code whose pin is not the server's is refused before anything is sent, and
    // the code is still unused afterwards.
    let other = self_signed(f._dir.path(), "other");
    let second = ServerDb::open(&f.server.data)
        .unwrap()
        .issue_enrolment("worker-b", "office", &f.server.url(), None)
        .unwrap();
    let forged_second = second.qr_payload.replace(
        "\"code\"",
        &format!("\"pin\":\"{}\",\"code\"", spki_pin(&other.der).unwrap()),
    );
    let mut victim = store(&f, "victim");
    let refused = Client::enrol_scanned(&mut victim, &forged_second);
    assert!(
        matches!(refused, Err(Error::PinMismatch { .. })),
        "{refused:?}"
    );
    let mut ok = store(&f, "after");
    Client::enrol_scanned(
        &mut ok,
        &second.qr_payload.replace(
            "\"code\"",
            &format!("\"pin\":\"{}\",\"code\"", spki_pin(&cert.der).unwrap()),
        ),
    )
    .unwrap();
    assert!(matches!(
        Client::enrol_scanned(
            &mut victim,
            "{\"doorstep_enrol\":1,\"server\":\"ftp://x\",\"code\":\"A\"}"
        ),
        Err(Error::Invalid { .. })
    ));
}
