//! `doorstep-phone`: a simulated phone on the real core, as a separate process so tests
//! can kill it with SIGKILL in the middle of its work.
//!
//! - `doorstep-phone record STORE HOUSEHOLD COUNT [PHOTO]`: records COUNT visits (each
//!   with the photo, or the photos of a folder in turn), printing `confirmed <visit-id>`
//!   once each is durable.
//! - `doorstep-phone sync STORE`: syncs, printing `progress ...` after each answer.

use std::io::Write;

use doorstep_core::model::{HouseholdId, VisitOutcome};
use doorstep_core::store::{NewVisit, Store, now_ms};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("record") if args.len() >= 5 => record(&args[2], &args[3], &args[4], args.get(5)),
        Some("sync") if args.len() >= 3 => sync(&args[2]),
        _ => Err("usage: doorstep-phone record STORE HOUSEHOLD COUNT [PHOTO] | sync STORE".into()),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn record(store: &str, household: &str, count: &str, photo: Option<&String>) -> Result<(), String> {
    let mut store = Store::open(store).map_err(|e| e.to_string())?;
    let household = HouseholdId::parse(household).ok_or("household is not a UUID")?;
    let count: usize = count.parse().map_err(|_| "count is not a number")?;
    // A folder of photos is used in turn, so that each visit stores distinct blobs.
    let photos: Vec<Vec<u8>> = match photo {
        None => Vec::new(),
        Some(p) if std::path::Path::new(p).is_dir() => {
            let mut files: Vec<_> = std::fs::read_dir(p)
                .map_err(|e| e.to_string())?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            files.sort();
            files
                .iter()
                .map(std::fs::read)
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?
        }
        Some(p) => vec![std::fs::read(p).map_err(|e| e.to_string())?],
    };
    let mut out = std::io::stdout().lock();
    for i in 0..count {
        let now = now_ms();
        let visit = store
            .record_visit(
                household,
                NewVisit {
                    outcome: VisitOutcome::NobodyHome,
                    outcome_reason: format!("visit {i}: nobody answered"),
                    started_at_ms: now,
                    finished_at_ms: Some(now + 1),
                    target_groups_reached: vec![],
                    remarks: String::new(),
                    location: None,
                },
            )
            .map_err(|e| e.to_string())?;
        if !photos.is_empty() {
            store
                .attach_photo(household, visit, &photos[i % photos.len()])
                .map_err(|e| e.to_string())?;
        }
        writeln!(out, "confirmed {visit}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn sync(store: &str) -> Result<(), String> {
    let mut store = Store::open(store).map_err(|e| e.to_string())?;
    let p = doorstep_core::sync::sync_now(&mut store, None, |p| {
        println!(
            "progress sent={} received={} blobs={}/{}",
            p.changes_sent, p.docs_received, p.blobs_uploaded, p.blobs_total
        );
    })
    .map_err(|e| e.to_string())?;
    println!("done sent={} blobs={}", p.changes_sent, p.blobs_uploaded);
    Ok(())
}
