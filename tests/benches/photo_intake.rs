//! Photo intake benchmark: `doorstep_core::media::intake_photo` against a libjpeg-turbo
//! anchor, side by side in one run, on every JPEG in the phone fixtures.
//!
//! Run: `cargo bench -p doorstep-tests --bench photo_intake`
//! (needs the system libturbojpeg: `apt-get install libturbojpeg0-dev`).
//! Environment: `DOORSTEP_FIXTURES` (the fixtures folder; default `../shared/fixtures`
//! beside the workspace), `DOORSTEP_BENCH_ITERS` (timed runs per file, default 15).
//!
//! The anchor does what our intake does at its core, with libjpeg-turbo 2.x through
//! its TurboJPEG API: decode to RGB, scale to the same long edge with the same
//! fast_image_resize filter, encode baseline JPEG at quality 80 with 4:2:0 chroma.
//! It is measured twice: decoding at full size, and decoding with libjpeg-turbo's DCT
//! scaling (the smallest of 1/8, 1/4, 1/2 that keeps the long edge at or above the
//! target, as Android's `inSampleSize` or vips' shrink-on-load do), then resizing the
//! rest of the way. Ours does more: it also reads the EXIF orientation, turns the
//! image upright, makes and encodes a 320 px thumbnail and hashes both outputs.
//! Times are medians; each iteration runs ours and both anchors back to back so that
//! noise from other processes falls on all three alike.

use std::alloc::System;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use doorstep_core::media::{PhotoLimits, intake_photo};
use fast_image_resize as fir;
use peakmem_alloc::{INSTRUMENTED_SYSTEM, PeakMemAlloc, PeakMemAllocTrait};

#[global_allocator]
static GLOBAL: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The filter `doorstep_core::media` uses (see docs/adr/0003-photo-pipeline.md).
const FILTER: fir::FilterType = fir::FilterType::Hamming;
const QUALITY: i32 = 80;

fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("DOORSTEP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let phone = dir.join("photos/phone");
    assert!(
        phone.is_dir(),
        "phone photo fixtures missing: {} is not a folder; set DOORSTEP_FIXTURES",
        phone.display()
    );
    phone
}

/// Same rule as the core: long edge at most `long_edge`, aspect kept, never upscaled.
fn fit_long_edge(width: usize, height: usize, long_edge: usize) -> (usize, usize) {
    let long = width.max(height);
    if long <= long_edge {
        return (width, height);
    }
    let shrink = |edge: usize| ((edge * long_edge + long / 2) / long).max(1);
    if width >= height {
        (long_edge, shrink(height))
    } else {
        (shrink(width), long_edge)
    }
}

/// Decode with libjpeg-turbo (optionally DCT-scaled), resize with fast_image_resize,
/// encode with libjpeg-turbo. Returns the JPEG.
fn turbo_anchor(input: &[u8], long_edge: usize, dct_scaling: bool) -> Vec<u8> {
    let mut decompressor = turbojpeg::Decompressor::new().expect("turbojpeg decompressor");
    let header = decompressor.read_header(input).expect("turbojpeg header");
    let (target_w, target_h) = fit_long_edge(header.width, header.height, long_edge);
    let (mut w, mut h) = (header.width, header.height);
    if dct_scaling {
        // Smallest power-of-two reduction that keeps the long edge >= the target.
        for denom in [8, 4, 2] {
            let (sw, sh) = (header.width.div_ceil(denom), header.height.div_ceil(denom));
            if sw.max(sh) >= target_w.max(target_h) {
                (w, h) = (sw, sh);
                break;
            }
        }
    }
    // tjDecompress2 picks the largest DCT scaling factor whose size fits (w, h).
    let mut decoded = turbojpeg::Image {
        pixels: vec![0u8; w * h * 3],
        width: w,
        pitch: w * 3,
        height: h,
        format: turbojpeg::PixelFormat::RGB,
    };
    decompressor
        .decompress(input, decoded.as_deref_mut())
        .expect("turbojpeg decode");

    let pixels = if (w, h) == (target_w, target_h) {
        decoded.pixels
    } else {
        let src =
            fir::images::ImageRef::new(w as u32, h as u32, &decoded.pixels, fir::PixelType::U8x3)
                .expect("resize source");
        let mut dst =
            fir::images::Image::new(target_w as u32, target_h as u32, fir::PixelType::U8x3);
        let options = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(FILTER));
        fir::Resizer::new()
            .resize(&src, &mut dst, &options)
            .expect("resize");
        dst.into_vec()
    };

    let mut compressor = turbojpeg::Compressor::new().expect("turbojpeg compressor");
    compressor.set_quality(QUALITY);
    compressor.set_subsamp(turbojpeg::Subsamp::Sub2x2);
    let image = turbojpeg::Image {
        pixels: pixels.as_slice(),
        width: target_w,
        pitch: target_w * 3,
        height: target_h,
        format: turbojpeg::PixelFormat::RGB,
    };
    compressor.compress_to_vec(image).expect("turbojpeg encode")
}

fn median_ms(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn time_ms(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1000.0
}

struct Row {
    name: String,
    size: String,
    ours: f64,
    dct: f64,
    full: f64,
    peak_mib: f64,
    ours_kib: usize,
    turbo_kib: usize,
}

fn main() {
    let iterations: usize = std::env::var("DOORSTEP_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15)
        .max(1);
    let dir = fixtures_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read phone fixtures")
        .map(|entry| entry.expect("fixture entry").path())
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .jpg files in {}", dir.display());

    let limits = PhotoLimits::default();
    let long_edge = limits.long_edge_px as usize;
    let mut rows = Vec::new();
    for path in &files {
        let input = std::fs::read(path).expect("read fixture");
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let header = turbojpeg::read_header(&input).expect("turbojpeg header");

        // Warm up, and keep one output of each for sizes.
        let ours_out = intake_photo(&input, &limits).expect("intake");
        let turbo_out = turbo_anchor(&input, long_edge, true);
        turbo_anchor(&input, long_edge, false);

        GLOBAL.reset_peak_memory();
        black_box(intake_photo(black_box(&input), &limits).expect("intake"));
        let peak_mib = GLOBAL.get_peak_memory() as f64 / (1024.0 * 1024.0);

        let (mut ours, mut dct, mut full) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..iterations {
            ours.push(time_ms(|| {
                black_box(intake_photo(black_box(&input), &limits).expect("intake"));
            }));
            dct.push(time_ms(|| {
                black_box(turbo_anchor(black_box(&input), long_edge, true));
            }));
            full.push(time_ms(|| {
                black_box(turbo_anchor(black_box(&input), long_edge, false));
            }));
        }
        rows.push(Row {
            name,
            size: format!(
                "{}x{} ({:.1} MB)",
                header.width,
                header.height,
                input.len() as f64 / 1e6
            ),
            ours: median_ms(&mut ours),
            dct: median_ms(&mut dct),
            full: median_ms(&mut full),
            peak_mib,
            ours_kib: ours_out.jpeg.len() / 1024,
            turbo_kib: turbo_out.len() / 1024,
        });
    }

    println!("\nPhoto intake, median of {iterations} runs per file (ms); ratio = ours / anchor\n");
    println!(
        "| photo | input | ours (ms) | turbo DCT-scaled (ms) | ratio | turbo full decode (ms) | ratio | our peak heap (MiB) | output KiB ours / turbo |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let (mut log_dct, mut log_full) = (0.0, 0.0);
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} | {} / {} |",
            r.name,
            r.size,
            r.ours,
            r.dct,
            r.ours / r.dct,
            r.full,
            r.ours / r.full,
            r.peak_mib,
            r.ours_kib,
            r.turbo_kib
        );
        log_dct += (r.ours / r.dct).ln();
        log_full += (r.ours / r.full).ln();
    }
    let n = rows.len() as f64;
    let (gm_dct, gm_full) = ((log_dct / n).exp(), (log_full / n).exp());
    println!("| geometric mean | | | | {gm_dct:.2} | | {gm_full:.2} | | |");
    let worst = rows.iter().map(|r| r.ours / r.dct).fold(0.0, f64::max);
    println!(
        "\nGoal: ours at most 1.5x libjpeg-turbo (DCT-scaled anchor). Worst file {worst:.2}x, geometric mean {gm_dct:.2}x: {}.",
        if worst <= 1.5 { "met" } else { "missed" }
    );
}
