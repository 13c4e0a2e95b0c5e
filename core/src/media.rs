//! Photo intake: turns a phone camera JPEG (or a PNG) into the stored evidence photo,
//! upright, at most 1600 px on the long edge, re-encoded as a JPEG that carries no
//! metadata at all, plus a thumbnail, each with its SHA-256.
//!
//! Every input is bounded before it costs anything: the byte size first, then the pixel
//! count read from the file header, then the memory the decoder would need. HEIC/HEIF
//! (an iPhone gallery's default) is recognised and refused with a message the field
//! worker can act on. Why this decoder, resizer and encoder: `docs/adr/0003-photo-pipeline.md`.

use std::fmt;
use std::io::Cursor;

use fast_image_resize as fir;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};
use sha2::{Digest, Sha256};

pub mod signature;

const MIB: u64 = 1024 * 1024;

/// Bounds on what [`intake_photo`] accepts and the sizes it produces.
///
/// The defaults ([`PhotoLimits::default`]) fit phone photos of 3-12 MP and several MB
/// with a wide margin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoLimits {
    /// Largest accepted input file, in bytes; checked before anything else.
    /// Default 30 MiB.
    pub max_input_bytes: usize,
    /// Largest accepted image, in pixels (width × height as the file header declares
    /// them), checked before any pixel is decoded. Default 50 000 000 (50 MP).
    pub max_input_pixels: u64,
    /// Most memory, in bytes, that decoding may take (the decoded pixel buffer and the
    /// decoder's own tables); passed to `image::Limits::max_alloc` as well.
    /// Default 512 MiB.
    pub max_alloc_bytes: u64,
    /// Long edge of the stored photo, in pixels. Larger images are scaled down to it
    /// keeping the aspect ratio; smaller ones keep their size (never upscaled).
    /// Default 1600.
    pub long_edge_px: u32,
    /// Long edge of the thumbnail, in pixels, scaled the same way. Default 320.
    pub thumb_long_edge_px: u32,
    /// JPEG quality of the photo and the thumbnail, 1-100 on the libjpeg scale (values
    /// outside are clamped). Default 80.
    pub jpeg_quality: u8,
}

impl Default for PhotoLimits {
    /// 30 MiB, 50 MP, 512 MiB of decoder memory, 1600 px photo, 320 px thumbnail,
    /// quality 80.
    fn default() -> Self {
        Self {
            max_input_bytes: 30 * 1024 * 1024,
            max_input_pixels: 50_000_000,
            max_alloc_bytes: 512 * MIB,
            long_edge_px: 1600,
            thumb_long_edge_px: 320,
            jpeg_quality: 80,
        }
    }
}

/// The stored form of one photo, as [`intake_photo`] makes it.
///
/// Both JPEGs are baseline, 8-bit sRGB-as-is (any ICC profile is dropped), upright,
/// and contain no APPn segment except the JFIF APP0 header: no EXIF, GPS, XMP, ICC or
/// comment. The same input and limits always give the same bytes and hashes.
#[derive(Clone, PartialEq, Eq)]
pub struct IntakePhoto {
    /// The stored photo: JPEG bytes, long edge at most [`PhotoLimits::long_edge_px`].
    pub jpeg: Vec<u8>,
    /// SHA-256 of [`Self::jpeg`], 64 lowercase hex characters.
    pub sha256: String,
    /// Width of the stored photo in pixels, after turning it upright.
    pub width: u32,
    /// Height of the stored photo in pixels, after turning it upright.
    pub height: u32,
    /// The thumbnail: JPEG bytes, long edge at most [`PhotoLimits::thumb_long_edge_px`],
    /// scaled from the stored photo.
    pub thumbnail: Vec<u8>,
    /// SHA-256 of [`Self::thumbnail`], 64 lowercase hex characters.
    pub thumb_sha256: String,
    /// Width of the thumbnail in pixels.
    pub thumb_width: u32,
    /// Height of the thumbnail in pixels.
    pub thumb_height: u32,
}

impl fmt::Debug for IntakePhoto {
    /// Sizes and hashes only: the pixels are personal data and never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntakePhoto")
            .field("jpeg_bytes", &self.jpeg.len())
            .field("sha256", &self.sha256)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("thumbnail_bytes", &self.thumbnail.len())
            .field("thumb_sha256", &self.thumb_sha256)
            .field("thumb_width", &self.thumb_width)
            .field("thumb_height", &self.thumb_height)
            .finish()
    }
}

/// Why a photo was refused. Messages describe the file's shape, never its content.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The input is larger than [`PhotoLimits::max_input_bytes`].
    #[error("the photo file is {bytes} bytes, more than the limit of {max_bytes} bytes")]
    TooLarge {
        /// Size of the input, in bytes.
        bytes: usize,
        /// The limit, in bytes.
        max_bytes: usize,
    },
    /// The file header declares more pixels than [`PhotoLimits::max_input_pixels`].
    #[error("the photo is {width}x{height} pixels, more than the limit of {max_pixels} pixels")]
    TooManyPixels {
        /// Width declared by the header, in pixels.
        width: u32,
        /// Height declared by the header, in pixels.
        height: u32,
        /// The limit, in pixels.
        max_pixels: u64,
    },
    /// Decoding would need more memory than [`PhotoLimits::max_alloc_bytes`].
    #[error("decoding the photo needs more than the limit of {max_alloc_bytes} bytes of memory")]
    TooMuchMemory {
        /// The limit, in bytes.
        max_alloc_bytes: u64,
    },
    /// The input is HEIC/HEIF (an ISO-BMFF `ftyp` box with a HEIF brand), which is not
    /// decoded.
    #[error(
        "HEIC/HEIF photos are not supported: set the camera to 'Most Compatible' \
         (iPhone: Settings > Camera > Formats) or share the photo as JPEG"
    )]
    Heic,
    /// The input is neither JPEG nor PNG (nor HEIC), judged by its first bytes.
    #[error("unsupported image format: only JPEG and PNG photos are accepted")]
    UnsupportedFormat,
    /// The JPEG ends before its image data does (no end-of-image marker after the
    /// scan data): usually a transfer that was cut short.
    #[error("the photo file is incomplete (its image data is cut short); share it again")]
    Truncated,
    /// The decoder rejected the data; the text says what it found wrong.
    #[error("the photo file is damaged: {0}")]
    Corrupt(String),
    /// Scaling or re-encoding failed; only possible with limits beyond what JPEG can
    /// hold (an edge over 65 535 px).
    #[error("could not encode the stored photo: {0}")]
    Encode(String),
}

/// SHA-256 of `bytes` as 64 lowercase hex characters.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Turns a photo file as a phone hands it over into the stored evidence photo.
///
/// `input` is the whole file: JPEG or PNG, detected by its first bytes (the name or
/// MIME type is not trusted). Steps: bound the byte size; detect the format; read the
/// dimensions from the header and bound the pixel count and memory; decode; scale so
/// the long edge is at most [`PhotoLimits::long_edge_px`] (never upscaled); turn it
/// upright by its EXIF orientation (a malformed EXIF block is logged and ignored, the
/// pixels are then kept as stored); re-encode as JPEG at [`PhotoLimits::jpeg_quality`]
/// without any metadata; scale that to the thumbnail; hash both. Transparent PNG
/// pixels are laid on white.
///
/// # Errors
/// [`MediaError::TooLarge`], [`MediaError::TooManyPixels`] and
/// [`MediaError::TooMuchMemory`] when a bound in `limits` is exceeded;
/// [`MediaError::Heic`] for HEIC/HEIF; [`MediaError::UnsupportedFormat`] for anything
/// else that is not JPEG or PNG; [`MediaError::Truncated`] for a JPEG cut short;
/// [`MediaError::Corrupt`] when the decoder rejects the data. It does not panic on
/// any input.
pub fn intake_photo(input: &[u8], limits: &PhotoLimits) -> Result<IntakePhoto, MediaError> {
    if input.len() > limits.max_input_bytes {
        return Err(MediaError::TooLarge {
            bytes: input.len(),
            max_bytes: limits.max_input_bytes,
        });
    }
    if input.is_empty() {
        return Err(MediaError::Corrupt("the file is empty".into()));
    }
    let format = sniff_format(input)?;
    if format == ImageFormat::Jpeg && !jpeg_has_end_marker(input) {
        return Err(MediaError::Truncated);
    }
    let decoded = decode(input, format, limits)?;

    let scaled = scaled_to_fit(&decoded.pixels, limits.long_edge_px)?.unwrap_or(decoded.pixels);
    let mut upright = DynamicImage::ImageRgb8(scaled);
    upright.apply_orientation(decoded.orientation);
    let photo = upright.into_rgb8();
    let thumb = scaled_to_fit(&photo, limits.thumb_long_edge_px)?;
    let thumb = thumb.as_ref().unwrap_or(&photo);

    let quality = limits.jpeg_quality.clamp(1, 100);
    let jpeg = encode_jpeg(&photo, quality)?;
    let thumbnail = encode_jpeg(thumb, quality)?;
    Ok(IntakePhoto {
        sha256: sha256_hex(&jpeg),
        jpeg,
        width: photo.width(),
        height: photo.height(),
        thumb_sha256: sha256_hex(&thumbnail),
        thumbnail,
        thumb_width: thumb.width(),
        thumb_height: thumb.height(),
    })
}

/// JPEG or PNG by magic bytes; HEIC/HEIF recognised by its `ftyp` brands.
fn sniff_format(input: &[u8]) -> Result<ImageFormat, MediaError> {
    const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if input.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok(ImageFormat::Jpeg)
    } else if input.starts_with(PNG_SIGNATURE) {
        Ok(ImageFormat::Png)
    } else if is_heif(input) {
        Err(MediaError::Heic)
    } else {
        Err(MediaError::UnsupportedFormat)
    }
}

/// True when `input` opens with an ISO-BMFF `ftyp` box whose major or compatible
/// brands name HEIF (HEIC, HEVC image sequences, or the generic `mif1`/`msf1`), unless
/// a brand says AVIF, which shares `mif1` but is a different codec.
fn is_heif(input: &[u8]) -> bool {
    const HEIF_BRANDS: [&[u8; 4]; 10] = [
        b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1",
    ];
    const AVIF_BRANDS: [&[u8; 4]; 2] = [b"avif", b"avis"];
    if input.len() < 12 || &input[4..8] != b"ftyp" {
        return false;
    }
    let declared = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
    let box_end = declared.clamp(12, input.len().min(4096));
    // Major brand at 8..12, minor version at 12..16, compatible brands from 16 on.
    let brands = std::iter::once(&input[8..12])
        .chain(input.get(16..box_end).unwrap_or_default().chunks_exact(4));
    let mut heif = false;
    for brand in brands {
        if AVIF_BRANDS.iter().any(|b| b.as_slice() == brand) {
            return false;
        }
        heif |= HEIF_BRANDS.iter().any(|b| b.as_slice() == brand);
    }
    heif
}

/// Whether a JPEG's scan data is followed by an end-of-image marker (`FF D9`).
///
/// Walks the marker segments by their lengths up to the first start-of-scan, so an
/// EXIF thumbnail's own end marker is skipped, then looks for `FF D9` in the rest.
/// In entropy-coded data `FF` is always followed by `00` or a restart marker, so an
/// `FF D9` there is a real end marker. A file cut short lacks it; zune-jpeg would
/// decode such a file anyway and fill the missing rows with grey.
fn jpeg_has_end_marker(input: &[u8]) -> bool {
    let mut i = 2; // after SOI
    loop {
        // Like libjpeg, skip stray bytes before a marker, then the 0xFF fill bytes.
        while input.get(i).is_some_and(|&b| b != 0xFF) {
            i += 1;
        }
        while input.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = input.get(i) else {
            return false;
        };
        i += 1;
        match marker {
            0xD9 => return true,
            0x01 | 0xD0..=0xD8 => {}
            // Searched from the end: the marker is normally in the last bytes, or just
            // before data that phones append (such as MPF depth or HDR images).
            0xDA => return input[i..].windows(2).rev().any(|w| w == [0xFF, 0xD9]),
            _ => {
                let Some(len) = input.get(i..i + 2) else {
                    return false;
                };
                i += usize::from(u16::from_be_bytes([len[0], len[1]]));
            }
        }
    }
}

/// Decoded pixels as stored in the file, and how to turn them upright.
struct Decoded {
    pixels: RgbImage,
    orientation: Orientation,
}

/// Header, bounds, orientation, then the pixels as 8-bit RGB.
fn decode(input: &[u8], format: ImageFormat, limits: &PhotoLimits) -> Result<Decoded, MediaError> {
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(limits.max_alloc_bytes);
    let mut reader = ImageReader::with_format(Cursor::new(input), format);
    // The PNG decoder takes its limits when it is made; the JPEG one only reads headers.
    reader.limits(decoder_limits.clone());
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| from_image_error(e, limits))?;

    let (width, height) = decoder.dimensions();
    let pixel_count = u64::from(width) * u64::from(height);
    if pixel_count > limits.max_input_pixels {
        return Err(MediaError::TooManyPixels {
            width,
            height,
            max_pixels: limits.max_input_pixels,
        });
    }
    if pixel_count == 0 {
        return Err(MediaError::Corrupt("the image has no pixels".into()));
    }
    // The decoded buffer, plus the 8-bit RGB copy when the file holds another pixel
    // layout (and an 8-bit RGBA step before it when there is transparency to flatten).
    let color = decoder.color_type();
    let conversion = match color {
        image::ColorType::Rgb8 => 0,
        _ if color.has_alpha() => pixel_count * 7,
        _ => pixel_count * 3,
    };
    if decoder.total_bytes().saturating_add(conversion) > limits.max_alloc_bytes {
        return Err(MediaError::TooMuchMemory {
            max_alloc_bytes: limits.max_alloc_bytes,
        });
    }
    let edge_limit = u32::try_from(limits.max_input_pixels).unwrap_or(u32::MAX);
    decoder_limits.max_image_width = Some(edge_limit);
    decoder_limits.max_image_height = Some(edge_limit);
    decoder
        .set_limits(decoder_limits)
        .map_err(|e| from_image_error(e, limits))?;

    let orientation = read_orientation(&mut decoder);
    let image = DynamicImage::from_decoder(decoder).map_err(|e| from_image_error(e, limits))?;
    let pixels = match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other if other.color().has_alpha() => flatten_on_white(other),
        other => other.into_rgb8(),
    };
    Ok(Decoded {
        pixels,
        orientation,
    })
}

/// The EXIF orientation, or none when the file has no readable one. A malformed EXIF
/// block is logged (without its content) and ignored rather than failing the intake.
fn read_orientation(decoder: &mut impl ImageDecoder) -> Orientation {
    match decoder.exif_metadata() {
        Ok(None) => Orientation::NoTransforms,
        Ok(Some(exif)) => Orientation::from_exif_chunk(&exif).unwrap_or_else(|| {
            // A valid TIFF header without an orientation tag is normal; anything else
            // is a damaged block.
            let tiff_header = exif.starts_with(b"II*\0") || exif.starts_with(b"MM\0*");
            if !tiff_header {
                tracing::warn!(
                    exif_bytes = exif.len(),
                    "photo has a malformed EXIF block; keeping the pixels as stored"
                );
            }
            Orientation::NoTransforms
        }),
        Err(error) => {
            tracing::warn!(%error, "could not read the photo's EXIF block; keeping the pixels as stored");
            Orientation::NoTransforms
        }
    }
}

/// RGB with transparent pixels laid on white, as a viewer would show them.
fn flatten_on_white(image: DynamicImage) -> RgbImage {
    let rgba = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    let mut rgb = Vec::with_capacity(rgba.as_raw().len() / 4 * 3);
    for px in rgba.as_raw().chunks_exact(4) {
        let alpha = u16::from(px[3]);
        for &channel in &px[..3] {
            let blended = (u16::from(channel) * alpha + 255 * (255 - alpha) + 127) / 255;
            rgb.push(blended as u8);
        }
    }
    RgbImage::from_raw(width, height, rgb).expect("buffer length is width * height * 3")
}

/// Size with the long edge at most `long_edge` px, aspect ratio kept, never upscaled,
/// never below 1 px.
fn fit_long_edge(width: u32, height: u32, long_edge: u32) -> (u32, u32) {
    let long_edge = long_edge.max(1);
    let long = width.max(height);
    if long <= long_edge {
        return (width, height);
    }
    let shrink = |edge: u32| -> u32 {
        let scaled =
            (u64::from(edge) * u64::from(long_edge) + u64::from(long) / 2) / u64::from(long);
        u32::try_from(scaled).unwrap_or(long_edge).max(1)
    };
    if width >= height {
        (long_edge, shrink(height))
    } else {
        (shrink(width), long_edge)
    }
}

/// `src` scaled so its long edge is `long_edge` px, or `None` when it already fits
/// (never upscaled). Convolution with [`RESIZE_FILTER`] (fast_image_resize, SIMD).
fn scaled_to_fit(src: &RgbImage, long_edge: u32) -> Result<Option<RgbImage>, MediaError> {
    let (width, height) = fit_long_edge(src.width(), src.height(), long_edge);
    if src.dimensions() == (width, height) {
        return Ok(None);
    }
    let resize_failed = |e: &dyn fmt::Display| MediaError::Encode(format!("scaling failed: {e}"));
    let src_view = fir::images::ImageRef::new(
        src.width(),
        src.height(),
        src.as_raw(),
        fir::PixelType::U8x3,
    )
    .map_err(|e| resize_failed(&e))?;
    let mut dst = fir::images::Image::new(width, height, fir::PixelType::U8x3);
    let options = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(RESIZE_FILTER));
    fir::Resizer::new()
        .resize(&src_view, &mut dst, &options)
        .map_err(|e| resize_failed(&e))?;
    RgbImage::from_raw(width, height, dst.into_vec())
        .map(Some)
        .ok_or_else(|| resize_failed(&"output buffer has the wrong length"))
}

/// Hamming: as fast as bilinear, closer to Lanczos3 (measured in
/// `docs/adr/0003-photo-pipeline.md`).
const RESIZE_FILTER: fir::FilterType = fir::FilterType::Hamming;

/// Baseline JPEG with 4:2:0 chroma and only the JFIF APP0 header (jpeg-encoder).
fn encode_jpeg(image: &RgbImage, quality: u8) -> Result<Vec<u8>, MediaError> {
    let too_wide = |_| MediaError::Encode("an edge is longer than 65535 px".into());
    let width = u16::try_from(image.width()).map_err(too_wide)?;
    let height = u16::try_from(image.height()).map_err(too_wide)?;
    let mut out = Vec::with_capacity(image.as_raw().len() / 8);
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality);
    encoder.set_chroma_subsampling_method(jpeg_encoder::ChromaSubsamplingMethod::Average);
    encoder
        .encode(image.as_raw(), width, height, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| MediaError::Encode(e.to_string()))?;
    Ok(out)
}

/// Maps the `image` crate's errors onto ours.
fn from_image_error(error: ImageError, limits: &PhotoLimits) -> MediaError {
    match error {
        ImageError::Limits(_) => MediaError::TooMuchMemory {
            max_alloc_bytes: limits.max_alloc_bytes,
        },
        ImageError::Unsupported(e) => MediaError::Corrupt(e.to_string()),
        other => MediaError::Corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::PathBuf;

    /// `../shared/fixtures` beside the workspace, or `DOORSTEP_FIXTURES`. Missing
    /// fixtures fail the test (under `CI=true` and locally alike), naming the path.
    fn fixtures() -> PathBuf {
        let dir = std::env::var_os("DOORSTEP_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../shared/fixtures"
                ))
            });
        if !dir.join("photos").is_dir() {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            panic!(
                "photo fixtures missing: {} has no photos/ folder{}; set DOORSTEP_FIXTURES to the shared fixtures folder",
                dir.display(),
                if ci {
                    " (CI=true: fixtures are required)"
                } else {
                    ""
                }
            );
        }
        dir
    }

    fn read_fixture(relative: &str) -> Vec<u8> {
        let path = fixtures().join("photos").join(relative);
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("fixture {} unreadable: {e}", path.display()))
    }

    /// The marker bytes of every segment before the first scan.
    fn header_markers(jpeg: &[u8]) -> Vec<u8> {
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "output starts with SOI");
        let mut markers = Vec::new();
        let mut i = 2;
        loop {
            assert_eq!(jpeg[i], 0xFF, "segment starts with a marker at byte {i}");
            let marker = jpeg[i + 1];
            markers.push(marker);
            if marker == 0xDA {
                return markers;
            }
            i += 2 + usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        }
    }

    /// No APPn except APP0 (JFIF), no comment, and no EXIF header anywhere.
    fn assert_no_metadata(jpeg: &[u8], what: &str) {
        for marker in header_markers(jpeg) {
            assert!(
                !(0xE1..=0xEF).contains(&marker) && marker != 0xFE,
                "{what}: output has metadata segment FF{marker:02X}"
            );
        }
        let exif_header = jpeg.windows(6).any(|w| w == b"Exif\0\0");
        assert!(!exif_header, "{what}: output contains an EXIF header");
    }

    fn dims_of(jpeg: &[u8]) -> (u32, u32) {
        let img =
            image::load_from_memory_with_format(jpeg, ImageFormat::Jpeg).expect("output decodes");
        (img.width(), img.height())
    }

    fn check_output(photo: &IntakePhoto, limits: &PhotoLimits, what: &str) {
        assert!(
            photo.width.max(photo.height) <= limits.long_edge_px,
            "{what}: {photo:?}"
        );
        assert!(
            photo.thumb_width.max(photo.thumb_height) <= limits.thumb_long_edge_px,
            "{what}: {photo:?}"
        );
        assert_eq!(dims_of(&photo.jpeg), (photo.width, photo.height), "{what}");
        assert_eq!(
            dims_of(&photo.thumbnail),
            (photo.thumb_width, photo.thumb_height),
            "{what}"
        );
        assert_eq!(photo.sha256, sha256_hex(&photo.jpeg), "{what}");
        assert_eq!(photo.thumb_sha256, sha256_hex(&photo.thumbnail), "{what}");
        assert_no_metadata(&photo.jpeg, what);
        assert_no_metadata(&photo.thumbnail, what);
    }

    #[test]
    fn orientation_fixtures_come_out_upright() {
        let limits = PhotoLimits::default();
        for shape in ["landscape", "portrait"] {
            for n in 1..=8 {
                let name = format!("orientation/{shape}_{n}.jpg");
                let photo = intake_photo(&read_fixture(&name), &limits)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                check_output(&photo, &limits, &name);
                let landscape = photo.width > photo.height;
                assert_eq!(
                    landscape,
                    shape == "landscape",
                    "{name} is {}x{}",
                    photo.width,
                    photo.height
                );
                assert_eq!(
                    photo.thumb_width > photo.thumb_height,
                    landscape,
                    "{name} thumbnail"
                );
            }
        }
    }

    fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
        assert_eq!(a.dimensions(), b.dimensions());
        let total: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&x, &y)| u64::from(x.abs_diff(y)))
            .sum();
        total as f64 / a.as_raw().len() as f64
    }

    /// Each orientation of the same scene must show the same picture as orientation 1
    /// once upright: closer to it than any mirrored or half-turned version is. Checks
    /// the direction of the turn, not just the aspect ratio. (The fixtures carry their
    /// number drawn in, so they never match exactly.)
    #[test]
    fn rotated_fixtures_match_the_unrotated_one() {
        let limits = PhotoLimits::default();
        for shape in ["landscape", "portrait"] {
            let decode = |n: u32| {
                let name = format!("orientation/{shape}_{n}.jpg");
                let photo = intake_photo(&read_fixture(&name), &limits).unwrap();
                image::load_from_memory(&photo.jpeg).unwrap().into_rgb8()
            };
            let reference = decode(1);
            let wrong = [
                image::imageops::flip_horizontal(&reference),
                image::imageops::flip_vertical(&reference),
                image::imageops::rotate180(&reference),
            ];
            for n in 2..=8 {
                let img = decode(n);
                let right = mean_abs_diff(&img, &reference);
                let nearest_wrong = wrong
                    .iter()
                    .map(|w| mean_abs_diff(&img, w))
                    .fold(f64::INFINITY, f64::min);
                assert!(
                    right < nearest_wrong * 0.7,
                    "{shape}_{n}: {right:.1} from upright, {nearest_wrong:.1} from a wrong turn"
                );
            }
        }
    }

    #[test]
    fn phone_photos_are_scaled_to_the_long_edge() {
        let limits = PhotoLimits::default();
        for (name, expect) in [
            ("phone/HMD_Nokia_8.3_5G.jpg", (1600, 686)),
            ("phone/jolla.jpg", (1600, 1200)),
            ("phone/no_exif.jpg", (322, 466)),
        ] {
            let photo = intake_photo(&read_fixture(name), &limits)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            check_output(&photo, &limits, name);
            let long = photo.width.max(photo.height);
            let short = photo.width.min(photo.height);
            assert_eq!(
                (long, short),
                (expect.0.max(expect.1), expect.0.min(expect.1)),
                "{name}"
            );
        }
    }

    /// Whether the EXIF block of `jpeg` has a GPS IFD (tag 0x8825 in IFD0).
    fn has_gps_ifd(jpeg: &[u8]) -> bool {
        let mut decoder = image::codecs::jpeg::JpegDecoder::new(Cursor::new(jpeg)).unwrap();
        let Some(tiff) = decoder.exif_metadata().unwrap() else {
            return false;
        };
        let little = match &tiff[..4] {
            b"II*\0" => true,
            b"MM\0*" => false,
            _ => return false,
        };
        let u16_at = |i: usize| {
            let b = [tiff[i], tiff[i + 1]];
            if little {
                u16::from_le_bytes(b)
            } else {
                u16::from_be_bytes(b)
            }
        };
        let u32_at = |i: usize| {
            let b = [tiff[i], tiff[i + 1], tiff[i + 2], tiff[i + 3]];
            if little {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            }
        };
        let ifd0 = u32_at(4) as usize;
        (0..usize::from(u16_at(ifd0))).any(|entry| u16_at(ifd0 + 2 + 12 * entry) == 0x8825)
    }

    #[test]
    fn gps_is_removed() {
        let limits = PhotoLimits::default();
        for name in ["gps/DSCN0010.jpg", "gps/DSCN0012.jpg"] {
            let input = read_fixture(name);
            assert!(
                has_gps_ifd(&input),
                "{name} should carry GPS tags to begin with"
            );
            let photo = intake_photo(&input, &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
            check_output(&photo, &limits, name);
            assert!(
                !has_gps_ifd(&photo.jpeg) && !has_gps_ifd(&photo.thumbnail),
                "{name}"
            );
        }
    }

    #[test]
    fn output_is_deterministic() {
        let input = read_fixture("gps/DSCN0010.jpg");
        let a = intake_photo(&input, &PhotoLimits::default()).unwrap();
        let b = intake_photo(&input, &PhotoLimits::default()).unwrap();
        assert_eq!(a, b);
    }

    /// corrupted.jpg has damaged scan data but intact headers and end marker: the
    /// lenient decoder yields an image (damaged area filled), which is accepted.
    /// What matters is that it never panics.
    #[test]
    fn corrupted_jpeg_gives_an_image_without_panicking() {
        let limits = PhotoLimits::default();
        let photo =
            intake_photo(&read_fixture("broken/corrupted.jpg"), &limits).expect("lenient decode");
        check_output(&photo, &limits, "corrupted.jpg");
    }

    #[test]
    fn malformed_exif_is_ignored() {
        let limits = PhotoLimits::default();
        let photo = intake_photo(&read_fixture("broken/bad_exif.jpg"), &limits)
            .expect("bad EXIF must not fail");
        check_output(&photo, &limits, "bad_exif.jpg");
        assert_eq!(
            (photo.width, photo.height),
            (636, 227),
            "no rotation applied"
        );
    }

    #[test]
    fn heic_is_refused_with_a_clear_message() {
        let err =
            intake_photo(&read_fixture("heic/IMG_5195.HEIC"), &PhotoLimits::default()).unwrap_err();
        assert!(matches!(err, MediaError::Heic), "{err:?}");
        assert!(err.to_string().contains("Most Compatible"), "{err}");
    }

    #[test]
    fn heif_brands_are_told_apart_from_avif() {
        let ftyp = |major: &[u8; 4], compat: &[&[u8; 4]]| {
            let mut b = Vec::new();
            b.extend_from_slice(&(16 + 4 * compat.len() as u32).to_be_bytes());
            b.extend_from_slice(b"ftyp");
            b.extend_from_slice(major);
            b.extend_from_slice(&[0; 4]);
            for c in compat {
                b.extend_from_slice(*c);
            }
            b.extend_from_slice(&[0; 64]);
            b
        };
        let limits = PhotoLimits::default();
        for major in [b"heic", b"heix", b"mif1", b"msf1", b"hevc"] {
            assert!(matches!(
                intake_photo(&ftyp(major, &[]), &limits),
                Err(MediaError::Heic)
            ));
        }
        assert!(matches!(
            intake_photo(&ftyp(b"isom", &[b"heic"]), &limits),
            Err(MediaError::Heic)
        ));
        assert!(matches!(
            intake_photo(&ftyp(b"avif", &[b"mif1", b"miaf"]), &limits),
            Err(MediaError::UnsupportedFormat)
        ));
        assert!(matches!(
            intake_photo(&ftyp(b"isom", &[b"mp41"]), &limits),
            Err(MediaError::UnsupportedFormat)
        ));
    }

    #[test]
    fn other_formats_are_unsupported() {
        let limits = PhotoLimits::default();
        assert!(matches!(
            intake_photo(b"", &limits),
            Err(MediaError::Corrupt(m)) if m == "the file is empty"
        ));
        for input in [
            &b"GIF89a\x01\x00\x01\x00"[..],
            b"RIFF\0\0\0\0WEBPVP8 ",
            b"\xFF\xD8",
            b"%PDF-1.7",
        ] {
            assert!(
                matches!(
                    intake_photo(input, &limits),
                    Err(MediaError::UnsupportedFormat)
                ),
                "{input:?}"
            );
        }
    }

    #[test]
    fn truncated_jpeg_is_an_error() {
        let input = read_fixture("phone/jolla.jpg");
        for keep in [3, 20, 1000, input.len() / 2, input.len() - 2] {
            let result = intake_photo(&input[..keep], &PhotoLimits::default());
            assert!(result.is_err(), "first {keep} bytes gave {result:?}");
        }
    }

    #[test]
    fn truncated_png_is_an_error() {
        let png = encode_png(&DynamicImage::ImageRgb8(RgbImage::from_fn(
            64,
            48,
            |x, y| image::Rgb([x as u8, y as u8, 7]),
        )));
        for keep in [8, 30, png.len() / 2, png.len() - 12] {
            let result = intake_photo(&png[..keep], &PhotoLimits::default());
            assert!(result.is_err(), "first {keep} bytes gave {result:?}");
        }
    }

    #[test]
    fn too_many_bytes_is_refused_before_anything_else() {
        let limits = PhotoLimits {
            max_input_bytes: 1000,
            ..PhotoLimits::default()
        };
        let err = intake_photo(&read_fixture("gps/DSCN0010.jpg"), &limits).unwrap_err();
        assert!(
            matches!(
                err,
                MediaError::TooLarge {
                    max_bytes: 1000,
                    ..
                }
            ),
            "{err:?}"
        );
        // Even HEIC: the size is checked first.
        let err = intake_photo(&read_fixture("heic/IMG_5195.HEIC"), &limits).unwrap_err();
        assert!(matches!(err, MediaError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn too_many_pixels_is_refused_from_the_header() {
        let limits = PhotoLimits {
            max_input_pixels: 640 * 480 - 1,
            ..PhotoLimits::default()
        };
        let err = intake_photo(&read_fixture("gps/DSCN0010.jpg"), &limits).unwrap_err();
        assert!(
            matches!(
                err,
                MediaError::TooManyPixels {
                    width: 640,
                    height: 480,
                    max_pixels: 307_199
                }
            ),
            "{err:?}"
        );
        // A header claiming 65535 x 65535 is refused without decoding anything.
        let mut huge = read_fixture("orientation/landscape_1.jpg");
        let sof = huge.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        huge[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        let err = intake_photo(&huge, &PhotoLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                MediaError::TooManyPixels {
                    width: 65535,
                    height: 65535,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn too_much_memory_is_refused() {
        let limits = PhotoLimits {
            max_alloc_bytes: 100_000,
            ..PhotoLimits::default()
        };
        let err = intake_photo(&read_fixture("gps/DSCN0010.jpg"), &limits).unwrap_err();
        assert!(
            matches!(
                err,
                MediaError::TooMuchMemory {
                    max_alloc_bytes: 100_000
                }
            ),
            "{err:?}"
        );
    }

    fn encode_png(image: &DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn small_png_is_kept_at_its_size_and_transparency_becomes_white() {
        let rgba = image::RgbaImage::from_fn(200, 100, |x, _| {
            if x < 100 {
                image::Rgba([0, 0, 255, 255])
            } else {
                image::Rgba([0, 0, 0, 0])
            }
        });
        let photo = intake_photo(
            &encode_png(&DynamicImage::ImageRgba8(rgba)),
            &PhotoLimits::default(),
        )
        .unwrap();
        check_output(&photo, &PhotoLimits::default(), "png");
        assert_eq!((photo.width, photo.height), (200, 100), "never upscaled");
        assert_eq!((photo.thumb_width, photo.thumb_height), (200, 100));
        let out = image::load_from_memory(&photo.jpeg).unwrap().into_rgb8();
        let opaque = out.get_pixel(50, 50).0;
        let transparent = out.get_pixel(150, 50).0;
        assert!(opaque[2] > 200 && opaque[0] < 50, "{opaque:?}");
        assert!(transparent.iter().all(|&c| c > 240), "{transparent:?}");
    }

    #[test]
    fn sixteen_bit_grey_png_is_accepted() {
        let grey = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(2000, 500, |x, _| {
            image::Luma([(x * 30) as u16])
        });
        let limits = PhotoLimits::default();
        let photo = intake_photo(&encode_png(&DynamicImage::ImageLuma16(grey)), &limits).unwrap();
        check_output(&photo, &limits, "16-bit png");
        assert_eq!((photo.width, photo.height), (1600, 400));
        assert_eq!((photo.thumb_width, photo.thumb_height), (320, 80));
    }

    #[test]
    fn fit_long_edge_keeps_aspect_and_never_upscales() {
        assert_eq!(fit_long_edge(4608, 1976, 1600), (1600, 686));
        assert_eq!(fit_long_edge(2448, 3264, 1600), (1200, 1600));
        assert_eq!(fit_long_edge(1600, 1200, 1600), (1600, 1200));
        assert_eq!(fit_long_edge(100, 50, 1600), (100, 50));
        assert_eq!(fit_long_edge(50_000, 1, 1600), (1600, 1));
        assert_eq!(fit_long_edge(10, 10, 0), (1, 1));
    }

    #[test]
    fn sha256_hex_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Random bytes, bare or behind a JPEG or PNG signature, are an error.
        #[test]
        fn random_bytes_are_an_error(prefix in 0usize..3, body in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut input = match prefix {
                0 => Vec::new(),
                1 => vec![0xFF, 0xD8, 0xFF],
                _ => b"\x89PNG\r\n\x1a\n".to_vec(),
            };
            input.extend_from_slice(&body);
            prop_assert!(intake_photo(&input, &PhotoLimits::default()).is_err());
        }

        /// A real JPEG with bytes overwritten anywhere gives a photo or an error,
        /// never a panic.
        #[test]
        fn damaged_jpeg_never_panics(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16)) {
            let mut input = read_fixture("orientation/portrait_6.jpg");
            let len = input.len();
            for (at, byte) in edits {
                input[at.index(len)] = byte;
            }
            let _ = intake_photo(&input, &PhotoLimits::default());
        }
    }
}
