//! `doorstep-server demo`: a working server with a generated demo village, and two
//! simulated phones on the real core that sign in, go offline, record complete visits
//! (a generated photo, a signed notice and pledge) and one visit where nobody was home,
//! both visit one same household and change its phone number, and sync. It prints
//! what arrived and keeps serving.

use std::io::Cursor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use doorstep_core::media::signature::{InkRule, SignatureStrokes, Stroke, StrokePoint};
use doorstep_core::model::{
    EvidenceId, EvidenceKind, GeoPoint, Household, HouseholdId, ProfileField, Resident, ResidentId,
    VisitId, VisitOutcome,
};
use doorstep_core::store::{
    HouseholdQuery, NewVisit, SignRequest, Store, VisitFinish, VisitStart, now_ms,
};
use doorstep_core::sync::{Client, sync_now};
use uuid::Uuid;

use crate::db::{GridRef, Role, Scope, ServerDb};
use crate::error::{Error, Result};
use crate::http::ServeOptions;
use crate::tls::TlsSetup;

/// The demo village.
pub const DEMO_VILLAGE: &str = "示范村";
/// Its first grid, where both demo phones work.
pub const DEMO_GRID: &str = "示范村第1网格";
/// Password of the demo accounts `demo-worker-1`, `demo-worker-2`, `demo-office` and
/// `demo-admin`.
pub const DEMO_PASSWORD: &str = "doorstep-demo";

const SURNAMES: &[&str] = &["王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴"];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "强", "磊", "军", "洋", "勇", "艳", "杰",
];

/// Generates `n` households of the demo village, half in each of two grids, with
/// invented residents (no real person's data). IDs are fixed, so a rerun finds them.
pub fn demo_households(n: usize) -> Vec<Household> {
    (0..n)
        .map(|i| {
            let grid = if i % 2 == 0 {
                DEMO_GRID
            } else {
                "示范村第2网格"
            };
            let id = HouseholdId(Uuid::new_v5(
                &Uuid::NAMESPACE_OID,
                format!("doorstep-demo-{i}").as_bytes(),
            ));
            let mut h = Household::new(
                id,
                DEMO_VILLAGE,
                grid,
                &format!("{DEMO_VILLAGE}{}号", i + 1),
            );
            let surname = SURNAMES[i % SURNAMES.len()];
            for j in 0..(1 + i % 4) {
                let name = format!(
                    "{surname}{}{}",
                    GIVEN[(i + j) % GIVEN.len()],
                    GIVEN[(i * 7 + j) % GIVEN.len()]
                );
                if j == 0 {
                    h.head_name = name.clone();
                    h.phone = format!("138{:08}", 1000 + i);
                }
                h.residents.insert(
                    ResidentId(Uuid::new_v5(&id.0, &[j as u8])).to_string(),
                    Resident {
                        name,
                        relation: if j == 0 {
                            "户主".into()
                        } else {
                            "子".into()
                        },
                        sex: if (i + j) % 2 == 0 {
                            "男".into()
                        } else {
                            "女".into()
                        },
                        birth_date: Some(format!(
                            "{}-0{}-1{}",
                            1950 + (i * 3 + j * 11) % 60,
                            1 + j,
                            i % 10
                        )),
                        id_number: None,
                        phone: None,
                        target_groups: if (i + j) % 5 == 0 {
                            vec!["老年人".into()]
                        } else {
                            vec![]
                        },
                    },
                );
            }
            h
        })
        .collect()
}

/// A generated 12 MP-class camera JPEG (2400×1800, a gradient with a band per seed),
/// standing in for a photo of the visit.
pub fn demo_photo(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(2400, 1800, |x, y| {
        let band = ((x / 150 + seed) % 7) as u8;
        image::Rgb([(x / 10) as u8 ^ (seed * 37) as u8, (y / 8) as u8, band * 36])
    });
    let mut out = Cursor::new(Vec::new());
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
    img.write_with_encoder(encoder)
        .map(|_| out.into_inner())
        .unwrap_or_default()
}

/// A demo visit where nobody was home, started now, at a point that moves with `seed`
/// (about 1 m per step).
pub fn demo_visit(seed: u32) -> NewVisit {
    let start = now_ms();
    NewVisit {
        outcome: VisitOutcome::NobodyHome,
        outcome_reason: "敲门无人应答，已留联系卡".into(),
        started_at_ms: start,
        finished_at_ms: Some(start + 2 * 60_000),
        target_groups_reached: Vec::new(),
        remarks: String::new(),
        location: Some(demo_place(seed)),
    }
}

fn demo_place(seed: u32) -> GeoPoint {
    GeoPoint {
        lat: 30.27 + f64::from(seed) * 1e-5,
        lon: 120.15,
        accuracy_m: Some(12.0),
    }
}

/// A generated handwritten-looking signature on a 360×144 surface: three character-like
/// clusters of four strokes each, shaped by `seed`, with pressure, about 1.5 s of ink.
pub fn demo_signature(seed: u32) -> SignatureStrokes {
    let mut strokes = Vec::new();
    let mut t = 0u32;
    for c in 0..3u32 {
        let x0 = 30.0 + c as f32 * 105.0;
        for s in 0..4u32 {
            let k = (seed.wrapping_mul(31) + c * 7 + s * 3) % 11;
            let (dx, dy) = match s % 4 {
                0 => (70.0, 4.0 + k as f32),
                1 => (6.0 + k as f32, 80.0),
                2 => (60.0, 60.0 - k as f32 * 2.0),
                _ => (-50.0 + k as f32, 40.0),
            };
            let back = if dx < 0.0 { 60.0 } else { 0.0 };
            let (sx, sy) = (x0 + back + (k as f32) * 2.0, 18.0 + (s as f32) * 8.0);
            let points = (0..12u32)
                .map(|i| {
                    let f = i as f32 / 11.0;
                    t += 12;
                    StrokePoint {
                        x: sx + dx * f + (f * 6.0).sin() * 3.0,
                        y: sy + dy * f,
                        t_ms: t,
                        pressure: Some(0.4 + 0.5 * (f * 3.0).sin().abs()),
                    }
                })
                .collect();
            strokes.push(Stroke { points });
            t += 90;
        }
    }
    SignatureStrokes {
        surface_width: 360.0,
        surface_height: 144.0,
        strokes,
    }
}

/// Records a complete visit on a phone as a team does at the door: start, a photo,
/// the head of household (or the first resident) signs the notice and then the
/// pledge, finish as completed. `seed` varies the photo, the signatures and the place.
///
/// Errors: whatever the core refuses (for instance a household without residents).
pub fn complete_visit(
    store: &mut Store,
    household: HouseholdId,
    seed: u32,
) -> doorstep_core::error::Result<VisitId> {
    let start = now_ms();
    let visit = store.start_visit(
        household,
        VisitStart {
            started_at_ms: start,
            location: Some(demo_place(seed)),
        },
    )?;
    store.attach_photo(household, visit, &demo_photo(seed))?;
    for (i, kind) in [EvidenceKind::Notice, EvidenceKind::Pledge]
        .into_iter()
        .enumerate()
    {
        sign_paper(
            store,
            household,
            visit,
            kind,
            seed.wrapping_mul(2) + i as u32,
        )?;
    }
    store.finish_visit(
        household,
        visit,
        VisitFinish {
            outcome: VisitOutcome::Completed,
            outcome_reason: String::new(),
            finished_at_ms: (start + 8 * 60_000).max(now_ms()),
            target_groups_reached: vec!["老年人".into()],
            remarks: "讲解了冒充客服、刷单返利等常见诈骗".into(),
        },
    )?;
    Ok(visit)
}

/// The resident who signs for a household: the head (户主), else the first resident.
///
/// Errors: [`doorstep_core::error::Error::Invalid`] for a household without residents;
/// what the store refuses.
pub fn signer_of(
    store: &Store,
    household: HouseholdId,
) -> doorstep_core::error::Result<ResidentId> {
    let h = store.household(household)?;
    h.residents
        .iter()
        .find(|(_, r)| r.relation == "户主")
        .or_else(|| h.residents.iter().next())
        .and_then(|(id, _)| ResidentId::parse(id))
        .ok_or(doorstep_core::error::Error::Invalid {
            field: "signer",
            reason: "the household has no residents".into(),
        })
}

/// The household's signer signs `kind` (the template in force) during an open visit,
/// with a generated signature shaped by `seed`, as at the door.
///
/// Errors: whatever the core refuses.
pub fn sign_paper(
    store: &mut Store,
    household: HouseholdId,
    visit: VisitId,
    kind: EvidenceKind,
    seed: u32,
) -> doorstep_core::error::Result<EvidenceId> {
    let signer = signer_of(store, household)?;
    let captured = store.capture_signature(&demo_signature(seed), InkRule::Signature)?;
    store.sign_evidence(
        household,
        visit,
        SignRequest {
            kind,
            template_id: None,
            signer,
            signature_png_sha256: captured.png_sha256,
            witness: None,
            location: None,
        },
    )
}

fn phone_visit(store: &mut Store, household: HouseholdId, seed: u32) -> Result<()> {
    complete_visit(store, household, seed).map_err(core_err)?;
    Ok(())
}

fn core_err(e: doorstep_core::error::Error) -> Error {
    Error::Internal(e.to_string())
}

fn run_phones(url: String, pin: Option<String>, phones: PathBuf) -> Result<()> {
    std::fs::create_dir_all(&phones)?;
    let client = match &pin {
        Some(pin) => Client::with_pin(&url, pin).map_err(core_err)?,
        None => Client::new(&url),
    };
    let mut stores = Vec::new();
    for n in 1..=2 {
        let mut store = Store::open(phones.join(format!("phone-{n}.db"))).map_err(core_err)?;
        client
            .sign_in(&mut store, &format!("demo-worker-{n}"), DEMO_PASSWORD)
            .map_err(core_err)?;
        sync_now(&mut store, None, |_| {}).map_err(core_err)?;
        stores.push(store);
    }
    // Offline from here on: each phone visits its households, and both visit the first.
    let list = stores[0]
        .households(&HouseholdQuery::default())
        .map_err(core_err)?;
    let shared = list
        .first()
        .ok_or_else(|| Error::Internal("the demo grid is empty".into()))?
        .id;
    for (n, store) in stores.iter_mut().enumerate() {
        phone_visit(store, shared, n as u32)?;
        store
            .set_household_field(shared, ProfileField::Phone, &format!("1390000000{n}"))
            .map_err(core_err)?;
        for (k, h) in list.iter().skip(1 + n * 3).take(3).enumerate() {
            phone_visit(store, h.id, 10 + (n * 3 + k) as u32)?;
        }
        let away = list
            .get(8 + n)
            .ok_or_else(|| Error::Internal("the demo grid is too small".into()))?;
        store
            .record_visit(away.id, demo_visit(20 + n as u32))
            .map_err(core_err)?;
    }
    for round in 0..2 {
        for (n, store) in stores.iter_mut().enumerate() {
            let p = sync_now(store, None, |_| {}).map_err(core_err)?;
            println!(
                "phone {} sync {}: {} changes sent, {} document updates received, {} of {} files (photos, thumbnails, signatures) uploaded",
                n + 1,
                round + 1,
                p.changes_sent,
                p.docs_received,
                p.blobs_uploaded,
                p.blobs_total
            );
        }
    }
    let conflicts = stores[0].conflicts().map_err(core_err)?;
    for c in &conflicts {
        let values: Vec<&str> = c.conflict.values.iter().map(|v| v.value.as_str()).collect();
        println!(
            "conflict in household {} at {}: {}",
            c.household,
            c.conflict.path.join("."),
            values.join(" / ")
        );
    }
    Ok(())
}

/// Runs the demo in the fresh data folder `dir` on `listen`, over HTTPS with `tls`
/// (the demo phones pin its key) or plain HTTP, and serves until the process is
/// stopped.
///
/// Errors: the data folder cannot be opened, the address cannot be bound, or a demo
/// phone fails to sync.
pub async fn run(dir: PathBuf, listen: SocketAddr, tls: Option<TlsSetup>) -> Result<()> {
    if dir.join("doorstep.db").exists() {
        return Err(Error::BadRequest(format!(
            "the demo starts from a fresh data folder, and {} already holds data: delete it or give another --data",
            dir.display()
        )));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::BadRequest(format!("cannot listen on {listen}: {e}")))?;
    let db = Arc::new(ServerDb::open(&dir)?);
    db.import_households(&demo_households(40))?;
    for n in 1..=2 {
        db.add_user(
            &format!("demo-worker-{n}"),
            DEMO_PASSWORD,
            Role::GridWorker,
            &Scope::grids(vec![GridRef::new(DEMO_VILLAGE, DEMO_GRID)]),
            "(demo)",
        )?;
    }
    // The office and the administrator, to try the JSON API on the demo's data.
    db.add_user(
        "demo-office",
        DEMO_PASSWORD,
        Role::Office,
        &Scope::default(),
        "(demo)",
    )?;
    db.add_user(
        "demo-admin",
        DEMO_PASSWORD,
        Role::Admin,
        &Scope::default(),
        "(demo)",
    )?;
    // The supervision team, the village's liaison and its community officer, to try the
    // web pages (follow-up rounds, directives, fraud cases).
    let village = Scope::villages(vec![DEMO_VILLAGE.into()]);
    db.add_user(
        "demo-supervisor",
        DEMO_PASSWORD,
        Role::Supervisor,
        &village,
        "(demo)",
    )?;
    db.add_user(
        "demo-liaison",
        DEMO_PASSWORD,
        Role::Liaison,
        &village,
        "(demo)",
    )?;
    db.add_user(
        "demo-police",
        DEMO_PASSWORD,
        Role::Police,
        &village,
        "(demo)",
    )?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let pin = tls.as_ref().map(|t| t.pin.clone());
    let options = ServeOptions {
        tls: tls.map(|t| t.config),
        pin: pin.clone(),
        ..ServeOptions::default()
    };
    let server = tokio::spawn(crate::http::serve(listener, db.clone(), options));
    let url = format!("{scheme}://{addr}");
    let phones = phones_dir(&dir);
    let phone_pin = pin.clone();
    tokio::task::spawn_blocking(move || run_phones(url, phone_pin, phones))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let t = db.totals()?;
    println!(
        "arrived: {} households, {} residents, {} visits, {} photos ({} received), {} signed notices and pledges, {} conflicting fields",
        t.households, t.residents, t.visits, t.photos, t.photos_received, t.evidence, t.conflicts
    );
    let d = dir.clone();
    let checked = tokio::task::spawn_blocking(move || crate::verify::verify(&d, None))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    match checked {
        Ok(report) => println!("evidence check: {report}"),
        Err(broken) => println!("evidence check FAILED: {broken}"),
    }
    if let Some(pin) = &pin {
        println!("phones pin the server's key as {pin}");
    }
    println!(
        "accounts: demo-worker-1, demo-worker-2 (grid workers), demo-office, demo-admin, demo-supervisor, demo-liaison, demo-police; password {DEMO_PASSWORD}"
    );
    println!("web pages: sign in at {scheme}://{addr}/login");
    println!(
        "doorstep-server demo serving on {scheme}://{addr} (data in {}); Ctrl-C stops it",
        dir.display()
    );
    server.await.map_err(|e| Error::Internal(e.to_string()))??;
    Ok(())
}

fn phones_dir(dir: &Path) -> PathBuf {
    dir.join("demo-phones")
}
