//! Signature capture: checks that the strokes a resident drew on the phone's signature
//! pad are a real signature (or, for a resident who cannot write, a real mark), stores
//! them in a compact, deterministic form whose hash goes into the signed evidence
//! record, and renders them to the fixed-size PNG shown with the notice or pledge.
//!
//! The blank check is the campaign's rule that a notice or pledge must carry a real
//! signature (issue 3): an empty pad, a tap or a tiny scribble is refused with
//! [`SignatureError::Blank`] and the measured [`InkStats`], so the app can say why.
//!
//! Coordinates are in the drawing surface's own units ("surface units": dp on Android,
//! points on iOS), origin top-left; times are milliseconds since the first point.
//!
//! # Stored form, version 1
//!
//! [`encode_strokes`] writes one CBOR data item (RFC 8949) in the deterministic
//! encoding of section 4.2.1: definite lengths, the shortest head for every integer,
//! map keys sorted by their encoded bytes. It holds integers only: no floats, no tags.
//! The item is a map of four text keys, in this order:
//!
//! | key   | value |
//! | ----- | ----- |
//! | `"h"` | surface height in tenths of a surface unit, unsigned integer |
//! | `"s"` | array of strokes, in drawing order |
//! | `"v"` | format version, the unsigned integer `1` |
//! | `"w"` | surface width in tenths of a surface unit, unsigned integer |
//!
//! Each stroke is an array of integers `[flag, point, point, ...]` with at least one
//! point. `flag` is `0` when the stroke has no pressure (each point is 3 integers
//! `x, y, t`) and `1` when it has (each point is 4 integers `x, y, t, p`):
//!
//! - `x`, `y`: the coordinate times 10, rounded to the nearest integer (halves away
//!   from zero), signed. The first point of a stroke holds that value; every later point
//!   holds the difference from the previous point of the same stroke.
//! - `t`: milliseconds, unsigned when read back. The first point of the first stroke
//!   holds `t_ms`; every other point holds the difference from the point drawn before
//!   it: the previous point of its stroke, or for a stroke's first point the last point
//!   of the previous stroke.
//! - `p`: pressure clamped to 0..=1 times 1023, rounded (halves away from zero), so
//!   0..=1023. The first point of a stroke holds that value, later points the
//!   difference from the previous point.
//!
//! Reading back: with X, Y and P the running sums of `x`, `y` and `p` within a stroke
//! and T the running sum of `t` over the whole signature, a point is at `X / 10`,
//! `Y / 10`, drawn at `T` ms, with pressure `P / 1023`; the surface is `w / 10` by
//! `h / 10`.
//!
//! Example: a 100 × 50 surface with one stroke of two points, (1.0, 2.0) at 0 ms and
//! (1.5, 2.0) at 8 ms, both with pressure 0.5, is
//! `{"h": 500, "s": [[1, 10, 20, 0, 512, 5, 0, 8, 0]], "v": 1, "w": 1000}`, the 29 bytes
//! `a4 61 68 19 01 f4 61 73 81 89 01 0a 14 00 19 02 00 05 00 08 00 61 76 01 61 77 19 03 e8`.
//!
//! [`decode_strokes`] refuses input over [`MAX_ENCODED_BYTES`], any version but 1,
//! counts beyond those [`check`] allows, values that do not fit their range, and any
//! bytes that are not exactly the encoding [`encode_strokes`] would write for what they
//! hold, so one set of strokes has one byte string and one hash.

use std::fmt;

use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use serde::{Deserialize, Serialize};
use tiny_skia as sk;

/// Smallest accepted surface side ([`SignatureStrokes::surface_width`] and
/// `surface_height`), in surface units.
pub const MIN_SURFACE_SIDE: f32 = 16.0;

/// Largest accepted surface side, in surface units.
pub const MAX_SURFACE_SIDE: f32 = 4096.0;

/// Most strokes in one signature.
pub const MAX_STROKES: usize = 64;

/// Most points in one stroke (at least one is required).
pub const MAX_POINTS_PER_STROKE: usize = 4000;

/// Most points in one signature, over all its strokes.
pub const MAX_POINTS: usize = 20_000;

/// How far a point may lie outside the surface, as a fraction of the surface's width
/// (for `x`) or height (for `y`) on each side: a finger that runs off the edge of the
/// pad still reports points a little beyond it.
pub const EDGE_MARGIN: f32 = 0.05;

/// Latest accepted [`StrokePoint::t_ms`], in milliseconds (10 minutes).
pub const MAX_T_MS: u32 = 600_000;

/// Radius around the first point, as a fraction of the surface's longer side D, within
/// which all points make "a single dot" (D/100): refused under both [`InkRule`]s.
pub const DOT_RADIUS_FRACTION: f32 = 1.0 / 100.0;

/// Least total ink length for [`InkRule::Signature`], as a fraction of the surface's
/// longer side D (D/4): less is "too little ink".
pub const MIN_INK_FRACTION: f32 = 1.0 / 4.0;

/// Least bounding-box side for [`InkRule::Signature`], as a fraction of the surface's
/// longer side D (D/10): a signature whose box is narrower AND lower than this is "too
/// small".
pub const MIN_BOX_FRACTION: f32 = 1.0 / 10.0;

/// Largest stored stroke encoding [`decode_strokes`] reads, in bytes (1 MiB).
pub const MAX_ENCODED_BYTES: usize = 1024 * 1024;

/// Version of the stored form written by [`encode_strokes`].
pub const STROKES_VERSION: u64 = 1;

/// Width of the image [`render_png`] makes, in pixels.
pub const PNG_WIDTH: u32 = 640;

/// Height of the image [`render_png`] makes, in pixels.
pub const PNG_HEIGHT: u32 = 256;

/// Blank border kept around the scaled surface in the rendered image, in pixels.
pub const PNG_MARGIN: f32 = 8.0;

/// Ink width at pressure 0, in image pixels.
pub const MIN_LINE_WIDTH: f32 = 1.5;

/// Ink width at pressure 1.0 or when the platform gives no pressure, in image pixels.
pub const MAX_LINE_WIDTH: f32 = 3.0;

/// Largest magnitude of a stored coordinate or surface side, in tenths of a surface
/// unit (100,000 units, far beyond any surface [`check`] accepts): up to here a value
/// read into `f32` rounds back to the same tenth, so decoding and encoding again gives
/// the same bytes.
const MAX_STORED_TENTHS: i64 = 1_000_000;

/// Largest stored pressure (pressure 1.0).
const PRESSURE_STEPS: f64 = 1023.0;

/// One sample from the platform drawing surface.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StrokePoint {
    /// Horizontal position in surface units (dp on Android, points on iOS), from the
    /// left edge. [`check`] accepts -5 % to 105 % of the surface width.
    pub x: f32,
    /// Vertical position in surface units, from the top edge. [`check`] accepts -5 % to
    /// 105 % of the surface height.
    pub y: f32,
    /// Milliseconds since the first point of the signature; never decreasing, at most
    /// [`MAX_T_MS`].
    pub t_ms: u32,
    /// Pen or finger pressure, 0.0..=1.0, when the platform gives it. Values above 1.0
    /// (Android reports them) count as 1.0; negative, NaN or infinite is an error. Within
    /// a stroke either every point has a pressure or none has.
    pub pressure: Option<f32>,
}

/// One continuous touch, from finger down to finger up: 1..=[`MAX_POINTS_PER_STROKE`]
/// points in drawing order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Stroke {
    /// The samples, in the order the platform reported them.
    pub points: Vec<StrokePoint>,
}

/// A whole signature as drawn on the pad.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureStrokes {
    /// Width of the drawing surface, in surface units,
    /// [`MIN_SURFACE_SIDE`]..=[`MAX_SURFACE_SIDE`].
    pub surface_width: f32,
    /// Height of the drawing surface, in surface units, same bounds.
    pub surface_height: f32,
    /// The strokes in drawing order, at most [`MAX_STROKES`] with at most
    /// [`MAX_POINTS`] points in all.
    pub strokes: Vec<Stroke>,
}

/// How strict the blank check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InkRule {
    /// The signer's own signature or a witness's: not blank, not a single dot, at least
    /// [`MIN_INK_FRACTION`] of ink and a box of at least [`MIN_BOX_FRACTION`] on one side.
    Signature,
    /// A mark by a resident who cannot write (a cross, a circle): only not blank and not
    /// a single dot.
    Mark,
}

/// What the check measured, for the UI. Lengths are in surface units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InkStats {
    /// Number of strokes.
    pub strokes: usize,
    /// Number of points over all strokes.
    pub points: usize,
    /// Sum of the lengths of all segments between consecutive points of each stroke,
    /// in surface units.
    pub ink_length: f32,
    /// Width of the box around all points, in surface units (0 without points).
    pub bbox_width: f32,
    /// Height of the box around all points, in surface units (0 without points).
    pub bbox_height: f32,
}

/// A signature drawn as an 8-bit grayscale PNG of [`PNG_WIDTH`] × [`PNG_HEIGHT`]
/// pixels, black ink on white.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedSignature {
    /// The PNG file's bytes.
    pub png: Vec<u8>,
    /// Width of the image in pixels, always [`PNG_WIDTH`].
    pub width: u32,
    /// Height of the image in pixels, always [`PNG_HEIGHT`].
    pub height: u32,
}

impl fmt::Debug for RenderedSignature {
    /// Sizes only: a signature image is personal data and never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedSignature")
            .field("png_bytes", &self.png.len())
            .field("width", &self.width)
            .field("height", &self.height)
            .finish()
    }
}

/// Why strokes were refused. Messages name fields and bounds, never coordinates.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// No strokes at all, or only a single dot, or too little ink for the rule
    /// (the campaign's rule that a notice or pledge carries a real signature, issue 3).
    /// `reason` is a short English sentence a developer reads; `ink` carries what was
    /// measured.
    #[error("the signature is blank or too small: {reason}")]
    Blank {
        /// "no strokes", "a single dot", "too little ink" or "too small".
        reason: &'static str,
        /// What was measured, lengths in surface units.
        ink: InkStats,
    },
    /// A field is out of its bounds (names the field, e.g. "surface_width",
    /// `strokes[3].points[10].x`).
    #[error("invalid signature {field}: {reason}")]
    Invalid {
        /// Path of the field, as in `strokes[3].points[10].x`.
        field: String,
        /// The bound it breaks.
        reason: String,
    },
    /// Stored stroke bytes could not be decoded.
    #[error("the stored strokes could not be read: {0}")]
    Decode(String),
    /// Rendering or PNG encoding failed.
    #[error("the signature image could not be made: {0}")]
    Render(String),
}

/// Checks strokes from the signature pad before they are stored: bounds first, then the
/// blank rule for `rule`. Returns what was measured.
///
/// Bounds: surface sides finite and [`MIN_SURFACE_SIDE`]..=[`MAX_SURFACE_SIDE`]; at most
/// [`MAX_STROKES`] strokes, each of 1..=[`MAX_POINTS_PER_STROKE`] points, at most
/// [`MAX_POINTS`] in all; `x` and `y` finite and within the surface extended by
/// [`EDGE_MARGIN`] on each side; `t_ms` at most [`MAX_T_MS`] and never decreasing,
/// neither within a stroke nor from one stroke to the next; pressure finite and >= 0
/// (above 1.0 counts as 1.0), given for all points of a stroke or for none.
///
/// Blank rule (the campaign's rule that a notice or pledge must carry a real signature,
/// issue 3), with D the surface's longer side: no strokes is "no strokes"; all points
/// within D × [`DOT_RADIUS_FRACTION`] of the first is "a single dot". For
/// [`InkRule::Signature`] also: total ink below D × [`MIN_INK_FRACTION`] is "too little
/// ink", and a box narrower and lower than D × [`MIN_BOX_FRACTION`] is "too small".
///
/// # Errors
/// [`SignatureError::Invalid`] naming the first field out of bounds;
/// [`SignatureError::Blank`] with the reason and the measured [`InkStats`].
pub fn check(strokes: &SignatureStrokes, rule: InkRule) -> Result<InkStats, SignatureError> {
    check_bounds(strokes)?;
    let ink = measure(strokes);
    let blank = |reason| Err(SignatureError::Blank { reason, ink });

    let Some(first) = strokes.strokes.first().and_then(|s| s.points.first()) else {
        return blank("no strokes");
    };
    let longer_side = strokes.surface_width.max(strokes.surface_height);
    let dot_radius = longer_side * DOT_RADIUS_FRACTION;
    let all_in_dot = strokes
        .strokes
        .iter()
        .flat_map(|s| &s.points)
        .all(|p| distance(p, first) <= dot_radius);
    if all_in_dot {
        return blank("a single dot");
    }
    if rule == InkRule::Signature {
        if ink.ink_length < longer_side * MIN_INK_FRACTION {
            return blank("too little ink");
        }
        let min_side = longer_side * MIN_BOX_FRACTION;
        if ink.bbox_width < min_side && ink.bbox_height < min_side {
            return blank("too small");
        }
    }
    Ok(ink)
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SignatureError {
    SignatureError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn check_side(name: &str, value: f32) -> Result<(), SignatureError> {
    if !value.is_finite() {
        return Err(invalid(name, "is not a finite number"));
    }
    if !(MIN_SURFACE_SIDE..=MAX_SURFACE_SIDE).contains(&value) {
        return Err(invalid(
            name,
            format!("must be {MIN_SURFACE_SIDE} to {MAX_SURFACE_SIDE} surface units"),
        ));
    }
    Ok(())
}

fn check_bounds(s: &SignatureStrokes) -> Result<(), SignatureError> {
    check_side("surface_width", s.surface_width)?;
    check_side("surface_height", s.surface_height)?;
    if s.strokes.len() > MAX_STROKES {
        return Err(invalid(
            "strokes",
            format!(
                "{} strokes, at most {MAX_STROKES} are accepted",
                s.strokes.len()
            ),
        ));
    }
    let x_range = (-EDGE_MARGIN * s.surface_width)..=(s.surface_width * (1.0 + EDGE_MARGIN));
    let y_range = (-EDGE_MARGIN * s.surface_height)..=(s.surface_height * (1.0 + EDGE_MARGIN));
    let mut total_points = 0usize;
    let mut last_t = 0u32;
    for (i, stroke) in s.strokes.iter().enumerate() {
        let n = stroke.points.len();
        if n == 0 || n > MAX_POINTS_PER_STROKE {
            return Err(invalid(
                format!("strokes[{i}].points"),
                format!("{n} points, a stroke must have 1 to {MAX_POINTS_PER_STROKE}"),
            ));
        }
        total_points += n;
        if total_points > MAX_POINTS {
            return Err(invalid(
                "strokes",
                format!("more than {MAX_POINTS} points in all"),
            ));
        }
        let has_pressure = stroke.points[0].pressure.is_some();
        for (j, p) in stroke.points.iter().enumerate() {
            let field = |name: &str| format!("strokes[{i}].points[{j}].{name}");
            for (name, value, range) in [("x", p.x, &x_range), ("y", p.y, &y_range)] {
                if !value.is_finite() {
                    return Err(invalid(field(name), "is not a finite number"));
                }
                if !range.contains(&value) {
                    return Err(invalid(
                        field(name),
                        "lies beyond the surface extended by 5 % on each side",
                    ));
                }
            }
            if p.t_ms > MAX_T_MS {
                return Err(invalid(
                    field("t_ms"),
                    format!("is more than {MAX_T_MS} ms after the first point"),
                ));
            }
            if p.t_ms < last_t {
                return Err(invalid(
                    field("t_ms"),
                    "is earlier than the point drawn before it",
                ));
            }
            last_t = p.t_ms;
            match p.pressure {
                Some(pressure) if !pressure.is_finite() => {
                    return Err(invalid(field("pressure"), "is not a finite number"));
                }
                Some(pressure) if pressure < 0.0 => {
                    return Err(invalid(field("pressure"), "is negative"));
                }
                _ => {}
            }
            if p.pressure.is_some() != has_pressure {
                return Err(invalid(
                    field("pressure"),
                    "is given for some points of the stroke but not for others",
                ));
            }
        }
    }
    Ok(())
}

fn distance(a: &StrokePoint, b: &StrokePoint) -> f32 {
    (a.x - b.x).hypot(a.y - b.y)
}

fn measure(s: &SignatureStrokes) -> InkStats {
    let mut ink = 0.0f64;
    let (mut min_x, mut min_y) = (f32::INFINITY, f32::INFINITY);
    let (mut max_x, mut max_y) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    let mut points = 0;
    for stroke in &s.strokes {
        points += stroke.points.len();
        for pair in stroke.points.windows(2) {
            ink += f64::from(distance(&pair[0], &pair[1]));
        }
        for p in &stroke.points {
            min_x = min_x.min(p.x);
            min_y = min_y.min(p.y);
            max_x = max_x.max(p.x);
            max_y = max_y.max(p.y);
        }
    }
    let (bbox_width, bbox_height) = if points == 0 {
        (0.0, 0.0)
    } else {
        (max_x - min_x, max_y - min_y)
    };
    InkStats {
        strokes: s.strokes.len(),
        points,
        ink_length: ink as f32,
        bbox_width,
        bbox_height,
    }
}

/// The stored form's CBOR map. Fields are declared in the order of their encoded keys,
/// so ciborium writes them in the deterministic order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredStrokes {
    h: u32,
    s: Vec<Vec<i64>>,
    v: u64,
    w: u32,
}

/// Only the version, read first so that another version is refused as such.
#[derive(Deserialize)]
struct StoredVersion {
    v: u64,
}

fn tenths(value: f32) -> i64 {
    // NaN becomes 0 and infinities saturate: `check` refuses both before storing.
    (f64::from(value) * 10.0)
        .round()
        .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i64
}

fn pressure_steps(pressure: f32) -> i64 {
    (f64::from(pressure).clamp(0.0, 1.0) * PRESSURE_STEPS).round() as i64
}

/// Encodes strokes in the compact stored form (version 1, laid out in the module
/// documentation): deterministic CBOR of integers, coordinates in tenths of a surface
/// unit, times in milliseconds, pressure in 1/1023 steps, each delta-coded within a
/// stroke. The same strokes always give the same bytes; those bytes are hashed into
/// the signed evidence record.
///
/// Meant for strokes that passed [`check`]. Anything else still encodes without
/// panicking: pressure is clamped to 0..=1, a NaN becomes 0, and a stroke whose points
/// do not all have a pressure is stored without pressure; such bytes may then be
/// refused by [`decode_strokes`].
pub fn encode_strokes(s: &SignatureStrokes) -> Vec<u8> {
    let mut last_t = 0i64;
    let strokes = s
        .strokes
        .iter()
        .map(|stroke| {
            let with_pressure =
                !stroke.points.is_empty() && stroke.points.iter().all(|p| p.pressure.is_some());
            let stride = if with_pressure { 4 } else { 3 };
            let mut out = Vec::with_capacity(1 + stride * stroke.points.len());
            out.push(i64::from(with_pressure));
            let (mut last_x, mut last_y, mut last_p) = (0i64, 0i64, 0i64);
            for p in &stroke.points {
                let (x, y, t) = (tenths(p.x), tenths(p.y), i64::from(p.t_ms));
                out.extend([x - last_x, y - last_y, t - last_t]);
                (last_x, last_y, last_t) = (x, y, t);
                if with_pressure {
                    let pressure = pressure_steps(p.pressure.unwrap_or(0.0));
                    out.push(pressure - last_p);
                    last_p = pressure;
                }
            }
            out
        })
        .collect();
    let stored = StoredStrokes {
        h: side_tenths(s.surface_height),
        s: strokes,
        v: STROKES_VERSION,
        w: side_tenths(s.surface_width),
    };
    let mut bytes = Vec::new();
    // Writing integers and arrays into a Vec cannot fail.
    ciborium::into_writer(&stored, &mut bytes).expect("CBOR encoding into a Vec");
    bytes
}

fn side_tenths(value: f32) -> u32 {
    (f64::from(value) * 10.0).round() as u32
}

fn decode_error(what: impl Into<String>) -> SignatureError {
    SignatureError::Decode(what.into())
}

/// Reads the stored form written by [`encode_strokes`] back into strokes. The values
/// are the quantised ones: coordinates and surface sides in steps of 0.1 surface unit,
/// pressure in steps of 1/1023.
///
/// # Errors
/// [`SignatureError::Decode`] when the input is over [`MAX_ENCODED_BYTES`], is not
/// CBOR or not this layout, has a version other than [`STROKES_VERSION`], holds more
/// strokes or points than [`check`] allows or an empty stroke, holds a value out of
/// its range (a time outside `u32`, a pressure outside 0..=1023, a coordinate or side
/// beyond 100,000 surface units), or is not exactly the bytes [`encode_strokes`] writes
/// for what it holds. Never panics. It does not apply the rest of [`check`]; call it
/// on the result when the bytes come from elsewhere.
pub fn decode_strokes(bytes: &[u8]) -> Result<SignatureStrokes, SignatureError> {
    if bytes.len() > MAX_ENCODED_BYTES {
        return Err(decode_error(format!(
            "{} bytes, more than the limit of {MAX_ENCODED_BYTES}",
            bytes.len()
        )));
    }
    let version: StoredVersion = ciborium::from_reader(bytes)
        .map_err(|e| decode_error(format!("not a stored signature: {e}")))?;
    if version.v != STROKES_VERSION {
        return Err(decode_error(format!(
            "version {} is not supported, only {STROKES_VERSION}",
            version.v
        )));
    }
    let stored: StoredStrokes = ciborium::from_reader(bytes)
        .map_err(|e| decode_error(format!("not a version-1 stored signature: {e}")))?;
    let side = |name: &str, v: u32| {
        if i64::from(v) > MAX_STORED_TENTHS {
            return Err(decode_error(format!("{name} is out of range")));
        }
        Ok(tenths_to_f32(i64::from(v)))
    };
    let surface_width = side("the surface width", stored.w)?;
    let surface_height = side("the surface height", stored.h)?;
    if stored.s.len() > MAX_STROKES {
        return Err(decode_error(format!(
            "{} strokes, more than {MAX_STROKES}",
            stored.s.len()
        )));
    }
    let mut strokes = Vec::with_capacity(stored.s.len());
    let mut total_points = 0usize;
    let mut t = 0i64;
    for (i, raw) in stored.s.iter().enumerate() {
        let (with_pressure, values) = match raw.split_first() {
            Some((0, values)) => (false, values),
            Some((1, values)) => (true, values),
            _ => return Err(decode_error(format!("stroke {i} has no valid flag"))),
        };
        let stride = if with_pressure { 4 } else { 3 };
        let n = values.len() / stride;
        if values.len() % stride != 0 || n == 0 || n > MAX_POINTS_PER_STROKE {
            return Err(decode_error(format!(
                "stroke {i} does not hold 1 to {MAX_POINTS_PER_STROKE} whole points"
            )));
        }
        total_points += n;
        if total_points > MAX_POINTS {
            return Err(decode_error(format!("more than {MAX_POINTS} points")));
        }
        let out_of_range = || decode_error(format!("a value of stroke {i} is out of range"));
        let (mut x, mut y, mut p) = (0i64, 0i64, 0i64);
        let mut points = Vec::with_capacity(n);
        for chunk in values.chunks_exact(stride) {
            x = x.checked_add(chunk[0]).ok_or_else(out_of_range)?;
            y = y.checked_add(chunk[1]).ok_or_else(out_of_range)?;
            t = t.checked_add(chunk[2]).ok_or_else(out_of_range)?;
            let bound = -MAX_STORED_TENTHS..=MAX_STORED_TENTHS;
            if !bound.contains(&x) || !bound.contains(&y) {
                return Err(out_of_range());
            }
            let t_ms = u32::try_from(t).map_err(|_| out_of_range())?;
            let pressure = if with_pressure {
                p = p.checked_add(chunk[3]).ok_or_else(out_of_range)?;
                if !(0..=1023).contains(&p) {
                    return Err(out_of_range());
                }
                Some((p as f64 / PRESSURE_STEPS) as f32)
            } else {
                None
            };
            points.push(StrokePoint {
                x: tenths_to_f32(x),
                y: tenths_to_f32(y),
                t_ms,
                pressure,
            });
        }
        strokes.push(Stroke { points });
    }
    let decoded = SignatureStrokes {
        surface_width,
        surface_height,
        strokes,
    };
    if encode_strokes(&decoded) != bytes {
        return Err(decode_error(
            "the bytes are not the canonical encoding of the strokes they hold",
        ));
    }
    Ok(decoded)
}

fn tenths_to_f32(tenths: i64) -> f32 {
    (tenths as f64 / 10.0) as f32
}

/// Draws strokes as an 8-bit grayscale PNG of [`PNG_WIDTH`] × [`PNG_HEIGHT`] pixels:
/// black anti-aliased ink on white. The surface is scaled to fit inside the image less
/// a [`PNG_MARGIN`] border, keeping its aspect ratio, and centred; ink that ran off the
/// surface may be cut at the image edge. Lines are [`MAX_LINE_WIDTH`] pixels wide at
/// pressure 1.0 or without pressure and [`MIN_LINE_WIDTH`] at pressure 0 (linear
/// between, each segment by its endpoints' mean, rounded to 1/4 px), with round caps and
/// joins; a one-point stroke, or one whose points all coincide, is a dot of that width.
/// The same input always gives the same bytes from the same build.
///
/// The bounds of [`check`] apply, but not the blank rule: a mark or an empty pad can be
/// drawn too.
///
/// # Errors
/// [`SignatureError::Invalid`] when a field is out of bounds (as [`check`]);
/// [`SignatureError::Render`] when the image cannot be made or encoded.
pub fn render_png(s: &SignatureStrokes) -> Result<RenderedSignature, SignatureError> {
    check_bounds(s)?;
    let (w, h) = (PNG_WIDTH as f32, PNG_HEIGHT as f32);
    let scale =
        ((w - 2.0 * PNG_MARGIN) / s.surface_width).min((h - 2.0 * PNG_MARGIN) / s.surface_height);
    let offset_x = (w - s.surface_width * scale) / 2.0;
    let offset_y = (h - s.surface_height * scale) / 2.0;
    let map = |p: &StrokePoint| (offset_x + p.x * scale, offset_y + p.y * scale);

    let mut pixmap = sk::Pixmap::new(PNG_WIDTH, PNG_HEIGHT)
        .ok_or_else(|| SignatureError::Render("no canvas of that size".into()))?;
    pixmap.fill(sk::Color::WHITE);
    let mut paint = sk::Paint::default();
    paint.set_color_rgba8(0, 0, 0, 255);
    paint.anti_alias = true;

    for stroke in &s.strokes {
        let mapped: Vec<(f32, f32)> = stroke.points.iter().map(map).collect();
        let widths: Vec<f32> = stroke.points.iter().map(line_width).collect();
        let Some(&(x0, y0)) = mapped.first() else {
            continue;
        };
        if mapped.iter().all(|&(x, y)| x == x0 && y == y0) {
            let radius = widths[0] / 2.0;
            if let Some(dot) = sk::PathBuilder::from_circle(x0, y0, radius) {
                pixmap.fill_path(
                    &dot,
                    &paint,
                    sk::FillRule::Winding,
                    sk::Transform::identity(),
                    None,
                );
            }
            continue;
        }
        // One path per run of segments of the same width, so joins inside a run are
        // true round joins and overlaps (which darken anti-aliased edges) stay few.
        let segment_width = |i: usize| ((widths[i] + widths[i + 1]) / 2.0 * 4.0).round() / 4.0;
        let segments = mapped.len() - 1;
        let mut start = 0;
        while start < segments {
            let width = segment_width(start);
            let mut end = start + 1;
            while end < segments && segment_width(end) == width {
                end += 1;
            }
            let mut path = sk::PathBuilder::new();
            path.move_to(mapped[start].0, mapped[start].1);
            for &(x, y) in &mapped[start + 1..=end] {
                path.line_to(x, y);
            }
            if let Some(path) = path.finish() {
                let line = sk::Stroke {
                    width,
                    line_cap: sk::LineCap::Round,
                    line_join: sk::LineJoin::Round,
                    ..sk::Stroke::default()
                };
                pixmap.stroke_path(&path, &paint, &line, sk::Transform::identity(), None);
            }
            start = end;
        }
    }

    // Every pixel is opaque (white ground, opaque black ink), so premultiplied red is the
    // gray level.
    let gray: Vec<u8> = pixmap.pixels().iter().map(|p| p.red()).collect();
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&gray, PNG_WIDTH, PNG_HEIGHT, image::ExtendedColorType::L8)
        .map_err(|e| SignatureError::Render(e.to_string()))?;
    Ok(RenderedSignature {
        png,
        width: PNG_WIDTH,
        height: PNG_HEIGHT,
    })
}

/// Ink width in pixels for one point's pressure.
fn line_width(p: &StrokePoint) -> f32 {
    match p.pressure {
        Some(pressure) => {
            MIN_LINE_WIDTH + (MAX_LINE_WIDTH - MIN_LINE_WIDTH) * pressure.clamp(0.0, 1.0)
        }
        None => MAX_LINE_WIDTH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn point(x: f32, y: f32, t_ms: u32, pressure: Option<f32>) -> StrokePoint {
        StrokePoint {
            x,
            y,
            t_ms,
            pressure,
        }
    }

    fn surface(strokes: Vec<Stroke>) -> SignatureStrokes {
        SignatureStrokes {
            surface_width: 360.0,
            surface_height: 160.0,
            strokes,
        }
    }

    fn stroke(points: &[(f32, f32, u32)]) -> Stroke {
        Stroke {
            points: points
                .iter()
                .map(|&(x, y, t)| point(x, y, t, None))
                .collect(),
        }
    }

    /// `n` points along the polyline `ctrl` (in a unit box placed at `origin` with side
    /// `size`), evenly spaced by arc length, with a small hand tremor, one sample every
    /// 8-10 ms from `t0`, and a pressure that rises and falls.
    fn brush(ctrl: &[(f32, f32)], n: usize, origin: (f32, f32), size: f32, t0: u32) -> Stroke {
        let ctrl: Vec<(f32, f32)> = ctrl
            .iter()
            .map(|&(x, y)| (origin.0 + x * size, origin.1 + y * size))
            .collect();
        let lengths: Vec<f32> = ctrl
            .windows(2)
            .map(|w| (w[1].0 - w[0].0).hypot(w[1].1 - w[0].1))
            .collect();
        let total: f32 = lengths.iter().sum();
        let points = (0..n)
            .map(|i| {
                let along = total * i as f32 / (n - 1) as f32;
                let (mut seg, mut rest) = (0, along);
                while seg + 1 < lengths.len() && rest > lengths[seg] {
                    rest -= lengths[seg];
                    seg += 1;
                }
                let f = (rest / lengths[seg]).min(1.0);
                let (a, b) = (ctrl[seg], ctrl[seg + 1]);
                let tremor = (i as f32 * 1.7 + origin.0).sin() * 0.3;
                let phase = std::f32::consts::PI * i as f32 / (n - 1) as f32;
                point(
                    a.0 + (b.0 - a.0) * f + tremor,
                    a.1 + (b.1 - a.1) * f - tremor,
                    t0 + i as u32 * 8 + (i as u32 % 3),
                    Some(0.35 + 0.45 * phase.sin()),
                )
            })
            .collect();
        Stroke { points }
    }

    /// Three Chinese-character-like clusters (a box with a cross, a 大, a 王 with a hook)
    /// on a 360 x 160 pad: 13 strokes, 211 points, with pressure.
    fn sample_signature() -> SignatureStrokes {
        type Glyph = &'static [(&'static [(f32, f32)], usize)];
        let glyphs: [Glyph; 3] = [
            &[
                (&[(0.15, 0.25), (0.2, 0.8)], 12),
                (&[(0.15, 0.25), (0.85, 0.25), (0.8, 0.8)], 24),
                (&[(0.2, 0.78), (0.8, 0.78)], 12),
                (&[(0.5, 0.02), (0.5, 0.98)], 26),
            ],
            &[
                (&[(0.08, 0.35), (0.92, 0.33)], 18),
                (&[(0.5, 0.05), (0.48, 0.45), (0.35, 0.75), (0.08, 0.95)], 24),
                (&[(0.5, 0.42), (0.7, 0.7), (0.95, 0.92)], 20),
                (&[(0.72, 0.08), (0.78, 0.16)], 5),
            ],
            &[
                (&[(0.15, 0.12), (0.85, 0.12)], 14),
                (&[(0.2, 0.5), (0.8, 0.5)], 12),
                (&[(0.1, 0.9), (0.9, 0.88)], 18),
                (&[(0.5, 0.12), (0.5, 0.9)], 16),
                (&[(0.9, 0.2), (0.92, 0.7), (0.82, 0.62)], 10),
            ],
        ];
        let mut strokes = Vec::new();
        let mut t = 0;
        for (g, glyph) in glyphs.iter().enumerate() {
            let origin = (30.0 + 105.0 * g as f32, 35.0);
            for &(ctrl, n) in glyph.iter() {
                let s = brush(ctrl, n, origin, 90.0, t);
                t = s.points.last().map_or(t, |p| p.t_ms) + 180;
                strokes.push(s);
            }
            t += 400;
        }
        surface(strokes)
    }

    fn quantised(s: &SignatureStrokes) -> SignatureStrokes {
        let q = |v: f32| ((f64::from(v) * 10.0).round() / 10.0) as f32;
        SignatureStrokes {
            surface_width: q(s.surface_width),
            surface_height: q(s.surface_height),
            strokes: s
                .strokes
                .iter()
                .map(|stroke| Stroke {
                    points: stroke
                        .points
                        .iter()
                        .map(|p| StrokePoint {
                            x: q(p.x),
                            y: q(p.y),
                            t_ms: p.t_ms,
                            pressure: p.pressure.map(|v| {
                                ((f64::from(v.min(1.0)) * 1023.0).round() / 1023.0) as f32
                            }),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn blank_reason(result: Result<InkStats, SignatureError>) -> &'static str {
        match result {
            Err(SignatureError::Blank { reason, .. }) => reason,
            other => panic!("expected Blank, got {other:?}"),
        }
    }

    fn invalid_field(result: Result<InkStats, SignatureError>) -> String {
        match result {
            Err(SignatureError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn sample_signature_passes_and_round_trips() {
        let sample = sample_signature();
        let ink = check(&sample, InkRule::Signature).unwrap();
        assert_eq!((ink.strokes, ink.points), (13, 211));
        assert!(
            ink.ink_length > 360.0 / 4.0 && ink.bbox_width > 250.0,
            "{ink:?}"
        );

        let bytes = encode_strokes(&sample);
        assert_eq!(bytes, encode_strokes(&sample.clone()));
        let decoded = decode_strokes(&bytes).unwrap();
        assert_eq!(decoded, quantised(&sample));
        assert_eq!(encode_strokes(&decoded), bytes);
        check(&decoded, InkRule::Signature).unwrap();

        let per_point = bytes.len() as f64 / ink.points as f64;
        assert!(
            per_point < 7.0,
            "{} bytes, {per_point:.2} per point",
            bytes.len()
        );
    }

    #[test]
    fn documented_example_bytes() {
        let example = SignatureStrokes {
            surface_width: 100.0,
            surface_height: 50.0,
            strokes: vec![Stroke {
                points: vec![point(1.0, 2.0, 0, Some(0.5)), point(1.5, 2.0, 8, Some(0.5))],
            }],
        };
        let bytes = encode_strokes(&example);
        assert_eq!(
            hex::encode(&bytes),
            "a4616819_01f4_6173_81_89_010a1400_190200_05000800_6176_01_6177_1903e8"
                .replace('_', "")
        );
        assert_eq!(decode_strokes(&bytes).unwrap(), quantised(&example));
    }

    #[test]
    fn blank_pads_are_refused() {
        let empty = surface(vec![]);
        assert_eq!(blank_reason(check(&empty, InkRule::Mark)), "no strokes");
        assert_eq!(
            blank_reason(check(&empty, InkRule::Signature)),
            "no strokes"
        );

        let tap = surface(vec![stroke(&[(100.0, 80.0, 0)])]);
        assert_eq!(blank_reason(check(&tap, InkRule::Mark)), "a single dot");

        let wobble: Vec<(f32, f32, u32)> = (0..30)
            .map(|i| {
                let a = i as f32;
                (100.0 + 1.5 * a.sin(), 80.0 + 1.5 * a.cos(), i * 8)
            })
            .collect();
        let dot = surface(vec![stroke(&wobble[..15]), stroke(&wobble[15..])]);
        match check(&dot, InkRule::Mark) {
            Err(SignatureError::Blank { reason, ink }) => {
                assert_eq!(reason, "a single dot");
                assert_eq!((ink.strokes, ink.points), (2, 30));
                assert!(ink.ink_length > 3.6, "{ink:?}");
            }
            other => panic!("expected Blank, got {other:?}"),
        }
    }

    #[test]
    fn a_tick_is_a_mark_but_not_a_signature() {
        let tick = surface(vec![stroke(&[
            (100.0, 80.0, 0),
            (108.0, 90.0, 40),
            (125.0, 65.0, 90),
        ])]);
        let ink = check(&tick, InkRule::Mark).unwrap();
        assert!(ink.ink_length > 40.0 && ink.ink_length < 90.0, "{ink:?}");
        assert_eq!(
            blank_reason(check(&tick, InkRule::Signature)),
            "too little ink"
        );
    }

    #[test]
    fn a_tiny_scribble_is_not_a_signature() {
        // Ten passes across a 20 x 20 box: 200 units of ink, more than 360 / 4.
        let zigzag: Vec<(f32, f32, u32)> = (0..11)
            .map(|i| {
                let x = if i % 2 == 0 { 100.0 } else { 120.0 };
                (x, 70.0 + 2.0 * i as f32, i * 30)
            })
            .collect();
        let scribble = surface(vec![stroke(&zigzag)]);
        match check(&scribble, InkRule::Signature) {
            Err(SignatureError::Blank { reason, ink }) => {
                assert_eq!(reason, "too small");
                assert!(ink.ink_length >= 90.0, "{ink:?}");
                assert_eq!((ink.bbox_width, ink.bbox_height), (20.0, 20.0));
            }
            other => panic!("expected Blank, got {other:?}"),
        }
        check(&scribble, InkRule::Mark).unwrap();
    }

    #[test]
    fn a_cross_is_a_mark() {
        let cross = surface(vec![
            stroke(&[(150.0, 60.0, 0), (165.0, 75.0, 60), (180.0, 90.0, 120)]),
            stroke(&[(180.0, 60.0, 400), (150.0, 90.0, 520)]),
        ]);
        let ink = check(&cross, InkRule::Mark).unwrap();
        assert_eq!((ink.strokes, ink.points), (2, 5));
        assert_eq!((ink.bbox_width, ink.bbox_height), (30.0, 30.0));
    }

    #[test]
    fn out_of_bounds_fields_are_named() {
        let base = sample_signature();

        let mut s = base.clone();
        s.strokes[1].points[2].x = f32::NAN;
        assert_eq!(
            invalid_field(check(&s, InkRule::Mark)),
            "strokes[1].points[2].x"
        );

        let mut s = base.clone();
        s.strokes[0].points[0].x = 1000.0;
        assert_eq!(
            invalid_field(check(&s, InkRule::Mark)),
            "strokes[0].points[0].x"
        );
        // 5 % beyond the edge is a finger running off the pad, and accepted.
        let mut s = base.clone();
        s.strokes[0].points[0].y = 160.0 * 1.049;
        check(&s, InkRule::Signature).unwrap();

        let mut s = base.clone();
        s.strokes = (0..65)
            .map(|i| {
                stroke(&[
                    (10.0 + i as f32, 10.0, i * 10),
                    (10.0 + i as f32, 90.0, i * 10 + 5),
                ])
            })
            .collect();
        assert_eq!(invalid_field(check(&s, InkRule::Mark)), "strokes");

        let mut s = base.clone();
        s.strokes[0].points[3].t_ms = s.strokes[0].points[2].t_ms - 1;
        assert_eq!(
            invalid_field(check(&s, InkRule::Mark)),
            "strokes[0].points[3].t_ms"
        );
        let mut s = base.clone();
        s.strokes[4].points[0].t_ms = 0;
        assert_eq!(
            invalid_field(check(&s, InkRule::Mark)),
            "strokes[4].points[0].t_ms"
        );

        let mut s = base.clone();
        s.surface_width = 0.0;
        assert_eq!(invalid_field(check(&s, InkRule::Mark)), "surface_width");
        // Bounds come before the blank rule.
        let mut s = surface(vec![]);
        s.surface_height = f32::INFINITY;
        assert_eq!(invalid_field(check(&s, InkRule::Mark)), "surface_height");

        let mut s = base.clone();
        s.strokes[0].points[1].pressure = Some(-0.1);
        assert_eq!(
            invalid_field(check(&s, InkRule::Mark)),
            "strokes[0].points[1].pressure"
        );
        // Android's pressure above 1.0 is accepted and stored as 1.0.
        let mut s = base.clone();
        s.strokes[0].points[1].pressure = Some(1.3);
        check(&s, InkRule::Signature).unwrap();
        let decoded = decode_strokes(&encode_strokes(&s)).unwrap();
        assert_eq!(decoded.strokes[0].points[1].pressure, Some(1.0));

        let mut s = base.clone();
        s.strokes[2].points[5].pressure = None;
        assert_eq!(
            invalid_field(check(&s, InkRule::Mark)),
            "strokes[2].points[5].pressure"
        );

        let mut s = base;
        s.strokes[3].points.clear();
        assert_eq!(invalid_field(check(&s, InkRule::Mark)), "strokes[3].points");
    }

    fn is_decode_error(result: Result<SignatureStrokes, SignatureError>) -> bool {
        matches!(result, Err(SignatureError::Decode(_)))
    }

    #[test]
    fn damaged_or_foreign_bytes_are_refused() {
        assert!(is_decode_error(decode_strokes(b"")));
        assert!(is_decode_error(decode_strokes(b"\xff\x00 not cbor at all")));
        assert!(is_decode_error(decode_strokes(&[0xa1, 0x61, 0x76, 0x01])));

        let bytes = encode_strokes(&sample_signature());
        for len in 0..bytes.len() {
            assert!(
                is_decode_error(decode_strokes(&bytes[..len])),
                "{len} bytes"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(is_decode_error(decode_strokes(&trailing)));

        let mut other_version = Vec::new();
        let stored = StoredStrokes {
            h: 1600,
            s: vec![vec![0, 10, 10, 0]],
            v: 2,
            w: 3600,
        };
        ciborium::into_writer(&stored, &mut other_version).unwrap();
        match decode_strokes(&other_version) {
            Err(SignatureError::Decode(msg)) => assert!(msg.contains("version 2"), "{msg}"),
            other => panic!("expected Decode, got {other:?}"),
        }

        // Same content, keys in another order: not the canonical form.
        let mut reordered = Vec::new();
        let value = ciborium::Value::Map(vec![
            ("v".into(), 1.into()),
            ("w".into(), 3600.into()),
            ("h".into(), 1600.into()),
            ("s".into(), ciborium::Value::Array(vec![])),
        ]);
        ciborium::into_writer(&value, &mut reordered).unwrap();
        assert!(is_decode_error(decode_strokes(&reordered)));

        let too_big = vec![0u8; MAX_ENCODED_BYTES + 1];
        assert!(is_decode_error(decode_strokes(&too_big)));
    }

    fn luma(png: &[u8]) -> image::GrayImage {
        let img = image::load_from_memory(png).unwrap();
        assert_eq!((img.width(), img.height()), (PNG_WIDTH, PNG_HEIGHT));
        img.to_luma8()
    }

    /// Darkest pixel within 1 px of the image position of surface point `p`, for a
    /// 360 x 160 surface: scale min(624 / 360, 240 / 160) = 1.5, offset (50, 8).
    fn darkest_near(img: &image::GrayImage, p: &StrokePoint) -> u8 {
        let (cx, cy) = (
            (50.0 + p.x * 1.5).round() as u32,
            (8.0 + p.y * 1.5).round() as u32,
        );
        (cx - 1..=cx + 1)
            .flat_map(|x| (cy - 1..=cy + 1).map(move |y| img.get_pixel(x, y).0[0]))
            .min()
            .unwrap()
    }

    #[test]
    fn renders_ink_on_white() {
        let sample = sample_signature();
        let rendered = render_png(&sample).unwrap();
        assert_eq!((rendered.width, rendered.height), (PNG_WIDTH, PNG_HEIGHT));
        let img = luma(&rendered.png);
        for stroke in [0, 3, 5, 12] {
            let points = &sample.strokes[stroke].points;
            let mid = &points[points.len() / 2];
            assert!(darkest_near(&img, mid) < 128, "stroke {stroke}");
        }
        for (x, y) in [(0, 0), (639, 0), (0, 255), (639, 255)] {
            assert_eq!(img.get_pixel(x, y).0[0], 255, "corner {x},{y}");
        }
        // Between the first two glyphs there is no ink.
        assert_eq!(img.get_pixel(50 + (132.0f32 * 1.5) as u32, 128).0[0], 255);

        assert_eq!(render_png(&sample).unwrap().png, rendered.png);
        assert!(format!("{rendered:?}").contains("png_bytes"));
    }

    #[test]
    fn a_one_point_stroke_is_a_dot() {
        let tap = point(200.0, 100.0, 0, None);
        let s = surface(vec![Stroke { points: vec![tap] }]);
        let img = luma(&render_png(&s).unwrap().png);
        assert!(darkest_near(&img, &tap) < 128);
        // Nothing else is drawn.
        let dark = img.pixels().filter(|p| p.0[0] < 250).count();
        assert!(dark > 0 && dark < 30, "{dark} dark pixels");
    }

    #[test]
    fn render_checks_bounds() {
        let mut s = sample_signature();
        s.strokes[0].points[0].y = f32::NAN;
        assert!(matches!(
            render_png(&s),
            Err(SignatureError::Invalid { field, .. }) if field == "strokes[0].points[0].y"
        ));
    }

    /// Strokes within every bound of `check`, on any accepted surface.
    fn bounded_strokes() -> impl Strategy<Value = SignatureStrokes> {
        let raw_point = (0.0f32..=1.0, 0.0f32..=1.0, 0u32..=40, 0.0f32..=1.5);
        let raw_stroke = (prop::collection::vec(raw_point, 1..=40), any::<bool>());
        (
            16.0f32..=4096.0,
            16.0f32..=4096.0,
            prop::collection::vec(raw_stroke, 0..=8),
        )
            .prop_map(|(w, h, raw)| {
                let mut t = 0;
                let strokes = raw
                    .into_iter()
                    .map(|(points, with_pressure)| Stroke {
                        points: points
                            .into_iter()
                            .map(|(fx, fy, dt, p)| {
                                t += dt;
                                point(
                                    -0.04 * w + fx * 1.08 * w,
                                    -0.04 * h + fy * 1.08 * h,
                                    t,
                                    with_pressure.then_some(p),
                                )
                            })
                            .collect(),
                    })
                    .collect();
                SignatureStrokes {
                    surface_width: w,
                    surface_height: h,
                    strokes,
                }
            })
    }

    /// Anything at all, NaN and infinities included.
    fn wild_strokes() -> impl Strategy<Value = SignatureStrokes> {
        let raw_point = (
            any::<f32>(),
            any::<f32>(),
            any::<u32>(),
            any::<Option<f32>>(),
        );
        let raw_stroke = prop::collection::vec(raw_point, 0..=10);
        (
            any::<f32>(),
            any::<f32>(),
            prop::collection::vec(raw_stroke, 0..=4),
        )
            .prop_map(|(w, h, raw)| SignatureStrokes {
                surface_width: w,
                surface_height: h,
                strokes: raw
                    .into_iter()
                    .map(|points| Stroke {
                        points: points
                            .into_iter()
                            .map(|(x, y, t_ms, pressure)| point(x, y, t_ms, pressure))
                            .collect(),
                    })
                    .collect(),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn bounded_strokes_round_trip(s in bounded_strokes()) {
            let checked = check(&s, InkRule::Mark);
            prop_assert!(!matches!(checked, Err(SignatureError::Invalid { .. })), "{checked:?}");
            let bytes = encode_strokes(&s);
            let decoded = decode_strokes(&bytes).unwrap();
            prop_assert_eq!(&decoded, &quantised(&s));
            prop_assert_eq!(encode_strokes(&decoded), bytes);
            let rendered = render_png(&s).unwrap();
            prop_assert_eq!((rendered.width, rendered.height), (PNG_WIDTH, PNG_HEIGHT));
        }

        #[test]
        fn wild_strokes_never_panic(s in wild_strokes()) {
            let _ = check(&s, InkRule::Signature);
            let bytes = encode_strokes(&s);
            if let Ok(decoded) = decode_strokes(&bytes) {
                prop_assert_eq!(encode_strokes(&decoded), bytes);
            }
            let _ = render_png(&s);
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_strokes(&bytes);
        }
    }

    /// Extreme deltas are a decode error, not an overflow panic.
    #[test]
    fn extreme_stored_values_are_refused_without_panicking() {
        use ciborium::Value;
        for v in [i64::MIN, i64::MAX] {
            let item = Value::Map(vec![
                (Value::Text("h".into()), Value::from(1600)),
                (
                    Value::Text("s".into()),
                    Value::Array(vec![Value::Array(vec![
                        Value::from(0),
                        Value::from(v),
                        Value::from(0),
                        Value::from(0),
                    ])]),
                ),
                (Value::Text("v".into()), Value::from(1)),
                (Value::Text("w".into()), Value::from(3600)),
            ]);
            let bytes = crate::evidence::encode_canonical(&item);
            assert!(matches!(
                decode_strokes(&bytes),
                Err(SignatureError::Decode(_))
            ));
        }
    }
}
