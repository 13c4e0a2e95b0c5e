//! Evidence: the phone's ed25519 device key, the canonical encoding of a signed notice
//! or pledge ([`EvidenceRecord`]), and the checks that make any later change of a record
//! or of the server's evidence log detectable (DESIGN.md section 6, issue 3).
//!
//! No I/O here: the store keeps the key and the counter, the server keeps the log.
//! The byte layouts are specified in `docs/evidence.md`; a change to them is a new
//! format version, never an edit of version 1.
//!
//! - A record is encoded as deterministic CBOR (RFC 8949 section 4.2.1: definite
//!   lengths, shortest integers, map keys sorted by their encoded bytes) with integers
//!   only, no floats, so that one record has exactly one encoding. Decoding re-encodes
//!   and refuses any input that is not that one encoding.
//! - The device signs `"doorstep-evidence-v1\0" || record` with ed25519; everyone
//!   verifies with `verify_strict` (no malleable or small-order signatures).
//! - The server appends each accepted record to a log whose entries are chained by
//!   SHA-256 ([`LogEntry`]) and countersigns each entry's hash with its own key; the
//!   countersignature goes back into the household document as a [`crate::model::Receipt`],
//!   so copies of it sit on phones, out of reach of whoever holds the server's files.

use std::fmt;

use ciborium::Value;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::model::{
    DeviceId, EvidenceId, EvidenceKind, GeoPoint, HouseholdId, ResidentId, VisitId,
};

/// Version of the record layout written by this build.
pub const RECORD_VERSION: u64 = 1;

/// Largest encoded record accepted, in bytes. A record with 32 photos is about 1.6 KB.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// Most photo hashes one record may cite (200 × 34 bytes keeps a record near 7 KB).
pub const MAX_RECORD_PHOTOS: usize = 200;

/// Prefix of the message a device signs: domain separation, so a record signature can
/// never be replayed as anything else.
pub const RECORD_DOMAIN: &[u8] = b"doorstep-evidence-v1\0";

/// Prefix of a log entry's hashed bytes.
pub const LOG_DOMAIN: &[u8] = b"doorstep-log-v1\0";

/// Prefix of the message the server signs for a receipt.
pub const RECEIPT_DOMAIN: &[u8] = b"doorstep-receipt-v1\0";
/// Domain prefix of the server's signature of an audit log entry's hash (the
/// server's audit log, `server/src/audit.rs`).
pub const AUDIT_DOMAIN: &[u8] = b"doorstep-audit-sig-v1\0";

/// A SHA-256 digest, 32 bytes.
pub type Sha256Digest = [u8; 32];

/// Errors reading, signing or checking evidence.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvidenceError {
    /// The record bytes are not a well-formed version-1 record; `field` names the part.
    #[error("malformed evidence record ({field}): {reason}")]
    Malformed {
        /// The CBOR field, or `record` for the whole.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The bytes decode, but are not the one canonical encoding of what they hold.
    #[error("the evidence record is not in canonical form")]
    NotCanonical,
    /// The signature does not verify under the record's key (the record, the key or
    /// the signature was changed).
    #[error("the signature does not match the record")]
    BadSignature,
    /// The record names a key that is not the one expected for its device.
    #[error("the record is signed with a key not registered for its device")]
    WrongKey,
    /// A log entry or receipt does not hash or verify as it should.
    #[error("{0}")]
    Chain(String),
    /// The operating system gave no randomness for a new key.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// The phone's ed25519 signing key. Created when the store is first opened and kept in
/// it; its public half is registered with the server at sign-in. `Debug` shows only
/// the public half.
#[derive(Clone)]
pub struct DeviceKey {
    signing: SigningKey,
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey(public {})", hex::encode(self.public()))
    }
}

impl DeviceKey {
    /// A new key from 32 bytes of operating-system randomness.
    ///
    /// Errors: [`EvidenceError::Random`] when the OS has no randomness to give.
    pub fn generate() -> Result<Self, EvidenceError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| EvidenceError::Random(e.to_string()))?;
        Ok(Self::from_seed(&seed))
    }

    /// The key for a stored 32-byte seed (RFC 8032 secret key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte seed, for the store to keep. Never send it anywhere.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The 32-byte public key (RFC 8032 encoding).
    pub fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs a record's canonical bytes (prefixed with [`RECORD_DOMAIN`]); 64 bytes.
    pub fn sign_record(&self, canonical: &[u8]) -> [u8; 64] {
        self.signing
            .sign(&domain(RECORD_DOMAIN, canonical))
            .to_bytes()
    }

    /// Signs a log entry hash (prefixed with [`RECEIPT_DOMAIN`]): the server's
    /// countersignature. 64 bytes.
    pub fn sign_receipt(&self, entry_hash: &Sha256Digest) -> [u8; 64] {
        self.signing
            .sign(&domain(RECEIPT_DOMAIN, entry_hash))
            .to_bytes()
    }

    /// Signs an audit log entry's hash (prefixed with [`AUDIT_DOMAIN`]). 64 bytes.
    pub fn sign_audit(&self, entry_hash: &Sha256Digest) -> [u8; 64] {
        self.signing
            .sign(&domain(AUDIT_DOMAIN, entry_hash))
            .to_bytes()
    }
}

fn domain(prefix: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(prefix.len() + body.len());
    m.extend_from_slice(prefix);
    m.extend_from_slice(body);
    m
}

/// Checks an ed25519 signature with `verify_strict` (RFC 8032 plus the rejection of
/// small-order keys and non-canonical signatures).
fn verify_strict(key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    let Ok(sig) = <[u8; 64]>::try_from(signature) else {
        return false;
    };
    key.verify_strict(message, &Signature::from_bytes(&sig))
        .is_ok()
}

/// A witness to a mark made by a resident who cannot write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    /// The witness's name, as they gave it.
    pub name: String,
    /// Why the resident gave a mark instead of a signature.
    pub reason: String,
    /// SHA-256 of the witness's signature strokes blob.
    pub strokes_sha256: Sha256Digest,
    /// SHA-256 of the witness's signature PNG blob.
    pub png_sha256: Sha256Digest,
}

/// Where the phone was when the record was signed, in integers so that the encoding is
/// exact: degrees times 10^7 (about 1 cm) and the accuracy radius in decimetres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Latitude, WGS 84, degrees × 10^7.
    pub lat_e7: i32,
    /// Longitude, WGS 84, degrees × 10^7.
    pub lon_e7: i32,
    /// Horizontal accuracy radius in decimetres, when known.
    pub accuracy_dm: Option<u32>,
}

impl From<GeoPoint> for Place {
    fn from(p: GeoPoint) -> Self {
        Self {
            lat_e7: (p.lat * 1e7).round() as i32,
            lon_e7: (p.lon * 1e7).round() as i32,
            accuracy_dm: p.accuracy_m.map(|a| (a * 10.0).round() as u32),
        }
    }
}

/// A signed notice (告知书) or pledge (承诺书): what the phone signs and the server
/// verifies, countersigns and logs. Written once into the household document, never
/// changed. Hashes are SHA-256 of the blobs' bytes (their addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRecord {
    /// The record's ID, also its key in the household's `evidence` map.
    pub id: EvidenceId,
    /// Notice or pledge.
    pub kind: EvidenceKind,
    /// The household the visit was to.
    pub household: HouseholdId,
    /// The visit during which it was signed.
    pub visit: VisitId,
    /// The resident who signed (or made the mark).
    pub signer: ResidentId,
    /// The signer's name as the household document held it when signing.
    pub signer_name: String,
    /// The template's ID in the organisation document.
    pub template_id: String,
    /// The template version shown.
    pub template_version: u32,
    /// SHA-256 of the exact text shown (UTF-8 of `title + "\n\n" + body`).
    pub text_sha256: Sha256Digest,
    /// SHA-256 of the signature strokes blob (the mark's strokes for a witnessed mark).
    pub strokes_sha256: Sha256Digest,
    /// SHA-256 of the signature PNG blob.
    pub png_sha256: Sha256Digest,
    /// The witness, for a mark by a resident who cannot write.
    pub witness: Option<Witness>,
    /// SHA-256 of each photo of the visit at signing time, sorted, no duplicates.
    pub photos: Vec<Sha256Digest>,
    /// Where the phone was, when it knew.
    pub place: Option<Place>,
    /// Device clock at signing, milliseconds since the Unix epoch (UTC). Not trusted
    /// alone: the server's receipt time sits beside it.
    pub signed_at_ms: i64,
    /// The signing device.
    pub device: DeviceId,
    /// The device's public key that signed (32 bytes).
    pub key: [u8; 32],
    /// The device's evidence counter: each record gets the next number, never reused.
    pub counter: u64,
}

impl EvidenceRecord {
    /// The canonical CBOR encoding (layout in `docs/evidence.md`).
    pub fn to_canonical(&self) -> Vec<u8> {
        let fields = vec![
            ("v", Value::from(RECORD_VERSION)),
            ("id", uuid_value(self.id.0)),
            ("kind", Value::Text(self.kind.as_str().into())),
            ("household", uuid_value(self.household.0)),
            ("visit", uuid_value(self.visit.0)),
            ("signer", uuid_value(self.signer.0)),
            ("signer_name", Value::Text(self.signer_name.clone())),
            ("template", Value::Text(self.template_id.clone())),
            ("template_version", Value::from(self.template_version)),
            ("text_sha256", Value::Bytes(self.text_sha256.to_vec())),
            ("strokes_sha256", Value::Bytes(self.strokes_sha256.to_vec())),
            ("png_sha256", Value::Bytes(self.png_sha256.to_vec())),
            (
                "witness",
                match &self.witness {
                    None => Value::Null,
                    Some(w) => map(vec![
                        ("name", Value::Text(w.name.clone())),
                        ("reason", Value::Text(w.reason.clone())),
                        ("strokes_sha256", Value::Bytes(w.strokes_sha256.to_vec())),
                        ("png_sha256", Value::Bytes(w.png_sha256.to_vec())),
                    ]),
                },
            ),
            (
                "photos",
                Value::Array(
                    self.photos
                        .iter()
                        .map(|h| Value::Bytes(h.to_vec()))
                        .collect(),
                ),
            ),
            (
                "place",
                match &self.place {
                    None => Value::Null,
                    Some(p) => map(vec![
                        ("lat_e7", Value::from(p.lat_e7)),
                        ("lon_e7", Value::from(p.lon_e7)),
                        (
                            "accuracy_dm",
                            p.accuracy_dm.map(Value::from).unwrap_or(Value::Null),
                        ),
                    ]),
                },
            ),
            ("signed_at_ms", Value::from(self.signed_at_ms)),
            ("device", uuid_value(self.device.0)),
            ("key", Value::Bytes(self.key.to_vec())),
            ("counter", Value::from(self.counter)),
        ];
        encode_canonical(&map(fields))
    }

    /// Decodes a record, refusing anything but the canonical encoding of a version-1
    /// record: unknown or missing fields, wrong types or lengths, unsorted photos,
    /// trailing bytes, more than [`MAX_RECORD_BYTES`].
    ///
    /// Errors: [`EvidenceError::Malformed`] naming the field; [`EvidenceError::NotCanonical`].
    pub fn from_canonical(bytes: &[u8]) -> Result<Self, EvidenceError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(malformed("record", "larger than 16 KiB"));
        }
        let mut rest = bytes;
        let value: Value = ciborium::from_reader(&mut rest)
            .map_err(|e| malformed("record", &format!("not CBOR: {e}")))?;
        if !rest.is_empty() {
            return Err(malformed("record", "bytes after the record"));
        }
        let mut f = Fields::of(value, "record")?;
        let v = f.uint("v")?;
        if v != RECORD_VERSION {
            return Err(malformed("v", &format!("version {v} is not supported")));
        }
        let record = Self {
            id: EvidenceId(f.uuid("id")?),
            kind: EvidenceKind::parse(&f.text("kind")?)
                .ok_or_else(|| malformed("kind", "neither notice nor pledge"))?,
            household: HouseholdId(f.uuid("household")?),
            visit: VisitId(f.uuid("visit")?),
            signer: ResidentId(f.uuid("signer")?),
            signer_name: f.text("signer_name")?,
            template_id: f.text("template")?,
            template_version: u32::try_from(f.uint("template_version")?)
                .map_err(|_| malformed("template_version", "too large"))?,
            text_sha256: f.hash("text_sha256")?,
            strokes_sha256: f.hash("strokes_sha256")?,
            png_sha256: f.hash("png_sha256")?,
            witness: match f.take("witness")? {
                Value::Null => None,
                other => {
                    let mut w = Fields::of(other, "witness")?;
                    let witness = Witness {
                        name: w.text("name")?,
                        reason: w.text("reason")?,
                        strokes_sha256: w.hash("strokes_sha256")?,
                        png_sha256: w.hash("png_sha256")?,
                    };
                    w.done()?;
                    Some(witness)
                }
            },
            photos: {
                let Value::Array(items) = f.take("photos")? else {
                    return Err(malformed("photos", "not an array"));
                };
                if items.len() > MAX_RECORD_PHOTOS {
                    return Err(malformed("photos", "more than 200 photos"));
                }
                let photos = items
                    .into_iter()
                    .map(|v| hash_of(v, "photos"))
                    .collect::<Result<Vec<_>, _>>()?;
                if photos.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(malformed("photos", "not sorted, or repeated"));
                }
                photos
            },
            place: match f.take("place")? {
                Value::Null => None,
                other => {
                    let mut p = Fields::of(other, "place")?;
                    let place = Place {
                        lat_e7: i32::try_from(p.int("lat_e7")?)
                            .map_err(|_| malformed("lat_e7", "out of range"))?,
                        lon_e7: i32::try_from(p.int("lon_e7")?)
                            .map_err(|_| malformed("lon_e7", "out of range"))?,
                        accuracy_dm: match p.take("accuracy_dm")? {
                            Value::Null => None,
                            other => Some(
                                u32::try_from(int_of(other, "accuracy_dm")?)
                                    .map_err(|_| malformed("accuracy_dm", "out of range"))?,
                            ),
                        },
                    };
                    p.done()?;
                    Some(place)
                }
            },
            signed_at_ms: i64::try_from(f.int("signed_at_ms")?)
                .map_err(|_| malformed("signed_at_ms", "out of range"))?,
            device: DeviceId(f.uuid("device")?),
            key: f.bytes_n::<32>("key")?,
            counter: f.uint("counter")?,
        };
        f.done()?;
        if record.to_canonical() != bytes {
            return Err(EvidenceError::NotCanonical);
        }
        Ok(record)
    }

    /// Checks the values the format alone does not bound, as the phone's store enforces
    /// them: counter 1 to 2^63 - 1 (it is kept in SQLite's signed integers); device time
    /// between 2000 and 2100 (UTC); template ID 1 to 40 characters and version at least
    /// 1; signer's name 1 to 200 characters; a witness's name 1 to 50 and reason 1 to 200
    /// characters, no control characters, and a signature that is not the signer's; the
    /// place within -90..=90 and -180..=180 degrees and an accuracy of at most 100 km.
    ///
    /// Errors: [`EvidenceError::Malformed`] naming the field.
    pub fn check_values(&self) -> Result<(), EvidenceError> {
        const Y2000: i64 = 946_684_800_000;
        const Y2100: i64 = 4_102_444_800_000;
        let text = |field: &'static str, t: &str, max: usize| {
            let n = t.chars().count();
            if n == 0 || n > max || t.chars().any(char::is_control) {
                Err(malformed(
                    field,
                    &format!("1 to {max} characters, no control characters"),
                ))
            } else {
                Ok(())
            }
        };
        if self.counter == 0 || self.counter > i64::MAX as u64 {
            return Err(malformed("counter", "out of range 1 to 2^63 - 1"));
        }
        if !(Y2000..Y2100).contains(&self.signed_at_ms) {
            return Err(malformed(
                "signed_at_ms",
                "not between the years 2000 and 2100",
            ));
        }
        text("template", &self.template_id, 40)?;
        if self.template_version == 0 {
            return Err(malformed("template_version", "versions start at 1"));
        }
        text("signer_name", &self.signer_name, 200)?;
        if let Some(w) = &self.witness {
            text("witness.name", &w.name, 50)?;
            text("witness.reason", &w.reason, 200)?;
            if w.png_sha256 == self.png_sha256 || w.strokes_sha256 == self.strokes_sha256 {
                return Err(malformed(
                    "witness",
                    "the witness's signature is the signer's own",
                ));
            }
        }
        if let Some(p) = &self.place {
            if !(-900_000_000..=900_000_000).contains(&p.lat_e7) {
                return Err(malformed("place.lat_e7", "latitude is -90 to 90 degrees"));
            }
            if !(-1_800_000_000..=1_800_000_000).contains(&p.lon_e7) {
                return Err(malformed(
                    "place.lon_e7",
                    "longitude is -180 to 180 degrees",
                ));
            }
            if p.accuracy_dm.is_some_and(|a| a > 1_000_000) {
                return Err(malformed("place.accuracy_dm", "accuracy is at most 100 km"));
            }
        }
        Ok(())
    }

    /// Every blob the record cites, with what it is: signature strokes and image, the
    /// witness's, and the photos.
    pub fn blobs(&self) -> Vec<(&'static str, Sha256Digest)> {
        let mut out = vec![
            ("signature strokes", self.strokes_sha256),
            ("signature image", self.png_sha256),
        ];
        if let Some(w) = &self.witness {
            out.push(("witness strokes", w.strokes_sha256));
            out.push(("witness signature image", w.png_sha256));
        }
        out.extend(self.photos.iter().map(|p| ("photo", *p)));
        out
    }
}

/// A record and its device signature, as written into the household document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    /// The canonical bytes.
    pub record: Vec<u8>,
    /// The device's ed25519 signature over [`RECORD_DOMAIN`] `||` `record` (64 bytes).
    pub signature: Vec<u8>,
}

/// Encodes and signs a record with the device key. The record's `key` must be this
/// key's public half.
///
/// Errors: [`EvidenceError::WrongKey`] when it is not.
pub fn sign_record(
    key: &DeviceKey,
    record: &EvidenceRecord,
) -> Result<SignedRecord, EvidenceError> {
    if record.key != key.public() {
        return Err(EvidenceError::WrongKey);
    }
    let bytes = record.to_canonical();
    let signature = key.sign_record(&bytes).to_vec();
    Ok(SignedRecord {
        record: bytes,
        signature,
    })
}

/// Decodes a record and verifies its signature (`verify_strict`) under the key the
/// record names. When `expected_key` is given, the record must name that key.
///
/// Errors: as [`EvidenceRecord::from_canonical`]; [`EvidenceError::WrongKey`];
/// [`EvidenceError::BadSignature`].
pub fn verify_record(
    record: &[u8],
    signature: &[u8],
    expected_key: Option<&[u8; 32]>,
) -> Result<EvidenceRecord, EvidenceError> {
    let decoded = EvidenceRecord::from_canonical(record)?;
    if expected_key.is_some_and(|k| k != &decoded.key) {
        return Err(EvidenceError::WrongKey);
    }
    if !verify_strict(&decoded.key, &domain(RECORD_DOMAIN, record), signature) {
        return Err(EvidenceError::BadSignature);
    }
    Ok(decoded)
}

/// One entry of the server's evidence log. Its hash ([`LogEntry::hash`]) covers the
/// hash of the entry before it, so changing, inserting or removing any entry breaks
/// every later link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// Hash of entry `seq - 1`; 32 zero bytes for the first.
    pub prev: Sha256Digest,
    /// The record's ID.
    pub evidence: EvidenceId,
    /// SHA-256 of the record's canonical bytes.
    pub record_sha256: Sha256Digest,
    /// The device's signature of the record (64 bytes).
    pub device_signature: Vec<u8>,
    /// Server clock at receipt, milliseconds since the Unix epoch (UTC).
    pub received_at_ms: i64,
}

impl LogEntry {
    /// SHA-256 of [`LOG_DOMAIN`] `||` the entry's canonical CBOR.
    pub fn hash(&self) -> Sha256Digest {
        let body = encode_canonical(&map(vec![
            ("seq", Value::from(self.seq)),
            ("prev", Value::Bytes(self.prev.to_vec())),
            ("evidence", uuid_value(self.evidence.0)),
            ("record_sha256", Value::Bytes(self.record_sha256.to_vec())),
            (
                "device_signature",
                Value::Bytes(self.device_signature.clone()),
            ),
            ("received_at_ms", Value::from(self.received_at_ms)),
        ]));
        let mut h = Sha256::new();
        h.update(LOG_DOMAIN);
        h.update(&body);
        h.finalize().into()
    }
}

/// The log entry a household document's receipt describes, rebuilt from the document's
/// own copy of the record (`entry`), so that its hash can be compared with the
/// receipt's `entry_sha256`.
///
/// Errors: [`EvidenceError::Chain`] when `key` is not a UUID or the receipt's `prev`
/// is not 32 bytes.
pub fn receipt_log_entry(
    key: &str,
    entry: &crate::model::EvidenceEntry,
    receipt: &crate::model::Receipt,
) -> Result<LogEntry, EvidenceError> {
    let evidence = EvidenceId::parse(key)
        .ok_or_else(|| EvidenceError::Chain("the record's ID is not a UUID".into()))?;
    let prev = receipt
        .prev
        .0
        .as_slice()
        .try_into()
        .map_err(|_| EvidenceError::Chain("the receipt's prev is not 32 bytes".into()))?;
    Ok(LogEntry {
        seq: receipt.seq,
        prev,
        evidence,
        record_sha256: sha256(&entry.record.0),
        device_signature: entry.signature.0.clone(),
        received_at_ms: receipt.received_at_ms,
    })
}

/// Checks the server's countersignature of a log entry hash under `server_key`.
pub fn verify_receipt(server_key: &[u8; 32], entry_hash: &Sha256Digest, signature: &[u8]) -> bool {
    verify_strict(server_key, &domain(RECEIPT_DOMAIN, entry_hash), signature)
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Sha256Digest {
    Sha256::digest(bytes).into()
}

/// Parses 64 lowercase or uppercase hex digits into a digest.
pub fn parse_sha256(hex_text: &str) -> Option<Sha256Digest> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}

// ---- deterministic CBOR ------------------------------------------------------------

/// Encodes a value in RFC 8949 core deterministic form: map keys sorted by the bytes
/// of their encodings (ciborium already writes shortest integers and definite lengths).
pub fn encode_canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail, and the value holds no floats or tags that ciborium
    // could refuse.
    ciborium::into_writer(&sorted(value), &mut out).expect("CBOR into a Vec");
    out
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Map(entries) => {
            let mut keyed: Vec<(Vec<u8>, Value, Value)> = entries
                .iter()
                .map(|(k, v)| {
                    let k = sorted(k);
                    let mut kb = Vec::new();
                    ciborium::into_writer(&k, &mut kb).expect("CBOR into a Vec");
                    (kb, k, sorted(v))
                })
                .collect();
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Map(keyed.into_iter().map(|(_, k, v)| (k, v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        Value::Tag(t, inner) => Value::Tag(*t, Box::new(sorted(inner))),
        other => other.clone(),
    }
}

fn map(fields: Vec<(&str, Value)>) -> Value {
    Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    )
}

fn uuid_value(id: Uuid) -> Value {
    Value::Bytes(id.as_bytes().to_vec())
}

fn malformed(field: &'static str, reason: &str) -> EvidenceError {
    EvidenceError::Malformed {
        field,
        reason: reason.into(),
    }
}

fn int_of(v: Value, field: &'static str) -> Result<i128, EvidenceError> {
    match v {
        Value::Integer(i) => Ok(i128::from(i)),
        _ => Err(malformed(field, "not an integer")),
    }
}

fn hash_of(v: Value, field: &'static str) -> Result<Sha256Digest, EvidenceError> {
    match v {
        Value::Bytes(b) => b.try_into().map_err(|_| malformed(field, "not 32 bytes")),
        _ => Err(malformed(field, "not a byte string")),
    }
}

/// The fields of one CBOR map, taken one by one; `done` refuses any left over.
struct Fields {
    entries: Vec<(String, Value)>,
    what: &'static str,
}

impl Fields {
    fn of(v: Value, what: &'static str) -> Result<Self, EvidenceError> {
        let Value::Map(entries) = v else {
            return Err(malformed(what, "not a map"));
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Value::Text(k) = k else {
                return Err(malformed(what, "a key is not text"));
            };
            out.push((k, v));
        }
        Ok(Self { entries: out, what })
    }

    fn take(&mut self, field: &'static str) -> Result<Value, EvidenceError> {
        let i = self
            .entries
            .iter()
            .position(|(k, _)| k == field)
            .ok_or_else(|| malformed(field, "missing"))?;
        Ok(self.entries.swap_remove(i).1)
    }

    fn done(self) -> Result<(), EvidenceError> {
        match self.entries.first() {
            None => Ok(()),
            Some(_) => Err(malformed(
                self.what,
                "has a field this version does not define",
            )),
        }
    }

    fn int(&mut self, field: &'static str) -> Result<i128, EvidenceError> {
        int_of(self.take(field)?, field)
    }

    fn uint(&mut self, field: &'static str) -> Result<u64, EvidenceError> {
        u64::try_from(self.int(field)?).map_err(|_| malformed(field, "not an unsigned integer"))
    }

    fn text(&mut self, field: &'static str) -> Result<String, EvidenceError> {
        match self.take(field)? {
            Value::Text(s) => Ok(s),
            _ => Err(malformed(field, "not text")),
        }
    }

    fn hash(&mut self, field: &'static str) -> Result<Sha256Digest, EvidenceError> {
        hash_of(self.take(field)?, field)
    }

    fn bytes_n<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], EvidenceError> {
        match self.take(field)? {
            Value::Bytes(b) => b.try_into().map_err(|_| malformed(field, "wrong length")),
            _ => Err(malformed(field, "not a byte string")),
        }
    }

    fn uuid(&mut self, field: &'static str) -> Result<Uuid, EvidenceError> {
        Ok(Uuid::from_bytes(self.bytes_n::<16>(field)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DeviceKey {
        DeviceKey::from_seed(&[7u8; 32])
    }

    /// A record with every optional part present, fixed so its encoding is stable.
    pub(crate) fn sample(key: &DeviceKey) -> EvidenceRecord {
        EvidenceRecord {
            id: EvidenceId(Uuid::from_u128(0x0123_4567_89ab_4def_8123_4567_89ab_cdef)),
            kind: EvidenceKind::Pledge,
            household: HouseholdId(Uuid::from_u128(1)),
            visit: VisitId(Uuid::from_u128(2)),
            signer: ResidentId(Uuid::from_u128(3)),
            signer_name: "张三".into(),
            template_id: "pledge".into(),
            template_version: 1,
            text_sha256: [0x11; 32],
            strokes_sha256: [0x22; 32],
            png_sha256: [0x33; 32],
            witness: Some(Witness {
                name: "李四".into(),
                reason: "右手受伤，按手印".into(),
                strokes_sha256: [0x44; 32],
                png_sha256: [0x55; 32],
            }),
            photos: vec![[0x66; 32], [0x77; 32]],
            place: Some(Place {
                lat_e7: 302_700_000,
                lon_e7: 1_201_500_000,
                accuracy_dm: Some(120),
            }),
            signed_at_ms: 1_780_000_000_000,
            device: DeviceId(Uuid::from_u128(4)),
            key: key.public(),
            counter: 42,
        }
    }

    /// One change per field of the record, nested fields included: each must break the
    /// signature. Adding a field to the record without adding it here fails
    /// `every_field_is_covered`.
    type Mutation = (&'static str, fn(&mut EvidenceRecord));

    fn mutations() -> Vec<Mutation> {
        vec![
            ("id", |r| r.id = EvidenceId(Uuid::from_u128(9))),
            ("kind", |r| r.kind = EvidenceKind::Notice),
            ("household", |r| {
                r.household = HouseholdId(Uuid::from_u128(9))
            }),
            ("visit", |r| r.visit = VisitId(Uuid::from_u128(9))),
            ("signer", |r| r.signer = ResidentId(Uuid::from_u128(9))),
            ("signer_name", |r| r.signer_name = "张山".into()),
            ("template", |r| r.template_id = "notice".into()),
            ("template_version", |r| r.template_version = 2),
            ("text_sha256", |r| r.text_sha256[31] ^= 1),
            ("strokes_sha256", |r| r.strokes_sha256[0] ^= 1),
            ("png_sha256", |r| r.png_sha256[5] ^= 1),
            ("witness", |r| r.witness = None),
            ("witness.name", |r| {
                r.witness.as_mut().unwrap().name = "王五".into()
            }),
            ("witness.reason", |r| {
                r.witness.as_mut().unwrap().reason = "不识字".into()
            }),
            ("witness.strokes_sha256", |r| {
                r.witness.as_mut().unwrap().strokes_sha256[1] ^= 1
            }),
            ("witness.png_sha256", |r| {
                r.witness.as_mut().unwrap().png_sha256[2] ^= 1
            }),
            ("photos", |r| {
                r.photos.pop();
            }),
            ("photos[0]", |r| r.photos[0][3] ^= 1),
            ("place", |r| r.place = None),
            ("place.lat_e7", |r| r.place.as_mut().unwrap().lat_e7 += 1),
            ("place.lon_e7", |r| r.place.as_mut().unwrap().lon_e7 -= 1),
            ("place.accuracy_dm", |r| {
                r.place.as_mut().unwrap().accuracy_dm = None
            }),
            ("signed_at_ms", |r| r.signed_at_ms += 1),
            ("device", |r| r.device = DeviceId(Uuid::from_u128(9))),
            ("key", |r| r.key = DeviceKey::from_seed(&[8u8; 32]).public()),
            ("counter", |r| r.counter = 41),
        ]
    }

    #[test]
    fn a_record_round_trips_and_verifies() {
        let k = key();
        let r = sample(&k);
        let signed = sign_record(&k, &r).unwrap();
        assert_eq!(EvidenceRecord::from_canonical(&signed.record).unwrap(), r);
        assert_eq!(
            verify_record(&signed.record, &signed.signature, Some(&k.public())).unwrap(),
            r
        );
        assert_eq!(r.to_canonical(), signed.record, "deterministic");
    }

    /// The encoding is pinned: a change of layout shows here as a diff, and the docs'
    /// example (docs/evidence.md) is this record.
    #[test]
    fn the_encoding_is_pinned() {
        let bytes = sample(&key()).to_canonical();
        let hex = hex::encode(&bytes);
        assert_eq!(sha256(&bytes).len(), 32);
        assert_eq!(&hex[..2], "b3", "a map of 19 fields");
        // Keys in RFC 8949 order: shorter first, then bytewise.
        let Value::Map(entries) = ciborium::from_reader::<Value, _>(&bytes[..]).unwrap() else {
            panic!("not a map");
        };
        let keys: Vec<String> = entries
            .iter()
            .map(|(k, _)| k.as_text().unwrap().to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "v",
                "id",
                "key",
                "kind",
                "place",
                "visit",
                "device",
                "photos",
                "signer",
                "counter",
                "witness",
                "template",
                "household",
                "png_sha256",
                "signer_name",
                "text_sha256",
                "signed_at_ms",
                "strokes_sha256",
                "template_version"
            ]
        );
        assert_eq!(hex::encode(sha256(&bytes)), PINNED_SHA256);
    }

    const PINNED_SHA256: &str = "25f72369f495373b99e7ec72833fd75d4cd81a772e15280a8af6a450166c10f7";

    #[test]
    fn every_field_is_covered() {
        let Value::Map(entries) =
            ciborium::from_reader::<Value, _>(&sample(&key()).to_canonical()[..]).unwrap()
        else {
            panic!("not a map");
        };
        let names: Vec<&str> = mutations().iter().map(|(n, _)| *n).collect();
        for (k, _) in &entries {
            let k = k.as_text().unwrap();
            assert!(k == "v" || names.contains(&k), "no mutation for field {k}");
        }
    }

    #[test]
    fn changing_any_field_breaks_the_signature() {
        let k = key();
        let r = sample(&k);
        let signed = sign_record(&k, &r).unwrap();
        for (name, mutate) in mutations() {
            let mut changed = r.clone();
            mutate(&mut changed);
            assert_ne!(changed, r, "{name}: the mutation changed nothing");
            let bytes = changed.to_canonical();
            let got = verify_record(&bytes, &signed.signature, None);
            assert!(
                matches!(got, Err(EvidenceError::BadSignature)),
                "{name}: {got:?}"
            );
        }
    }

    #[test]
    fn changing_any_byte_of_record_or_signature_is_refused() {
        let k = key();
        let signed = sign_record(&k, &sample(&k)).unwrap();
        for i in 0..signed.record.len() {
            let mut bytes = signed.record.clone();
            bytes[i] ^= 0x01;
            assert!(
                verify_record(&bytes, &signed.signature, None).is_err(),
                "record byte {i}"
            );
        }
        for i in 0..signed.signature.len() {
            let mut sig = signed.signature.clone();
            sig[i] ^= 0x80;
            assert_eq!(
                verify_record(&signed.record, &sig, None),
                Err(EvidenceError::BadSignature),
                "signature byte {i}"
            );
        }
        assert_eq!(
            verify_record(&signed.record, &signed.signature[..63], None),
            Err(EvidenceError::BadSignature)
        );
    }

    #[test]
    fn other_encodings_of_the_same_record_are_refused() {
        let k = key();
        let r = sample(&k);
        let canonical = r.to_canonical();
        // The same map with its keys in another order.
        let Value::Map(mut entries) = ciborium::from_reader::<Value, _>(&canonical[..]).unwrap()
        else {
            panic!("not a map");
        };
        entries.reverse();
        let mut reordered = Vec::new();
        ciborium::into_writer(&Value::Map(entries.clone()), &mut reordered).unwrap();
        assert_eq!(
            EvidenceRecord::from_canonical(&reordered),
            Err(EvidenceError::NotCanonical)
        );
        // A trailing byte, an unknown field, a missing field, unsorted photos.
        let mut trailing = canonical.clone();
        trailing.push(0);
        assert!(matches!(
            EvidenceRecord::from_canonical(&trailing),
            Err(EvidenceError::Malformed {
                field: "record",
                ..
            })
        ));
        let mut extra = entries.clone();
        extra.push((Value::Text("extra".into()), Value::Null));
        assert!(matches!(
            EvidenceRecord::from_canonical(&encode_canonical(&Value::Map(extra))),
            Err(EvidenceError::Malformed { .. })
        ));
        let missing: Vec<_> = entries
            .iter()
            .filter(|(k, _)| k.as_text() != Some("counter"))
            .cloned()
            .collect();
        assert!(matches!(
            EvidenceRecord::from_canonical(&encode_canonical(&Value::Map(missing))),
            Err(EvidenceError::Malformed {
                field: "counter",
                ..
            })
        ));
        let mut unsorted = r.clone();
        unsorted.photos.reverse();
        assert!(matches!(
            EvidenceRecord::from_canonical(&unsorted.to_canonical()),
            Err(EvidenceError::Malformed {
                field: "photos",
                ..
            })
        ));
        assert!(EvidenceRecord::from_canonical(b"").is_err());
        assert!(EvidenceRecord::from_canonical(&[0xff; 40]).is_err());
    }

    #[test]
    fn values_out_of_their_bounds_are_named() {
        let k = key();
        assert_eq!(sample(&k).check_values(), Ok(()));
        let cases: Vec<Mutation> = vec![
            ("counter", |r| r.counter = 0),
            ("counter", |r| r.counter = u64::MAX),
            ("signed_at_ms", |r| r.signed_at_ms = i64::MIN),
            ("template", |r| r.template_id = String::new()),
            ("template_version", |r| r.template_version = 0),
            ("signer_name", |r| r.signer_name = "名".repeat(201)),
            ("witness.name", |r| {
                r.witness.as_mut().unwrap().name = "\u{7}".into()
            }),
            ("witness.reason", |r| {
                r.witness.as_mut().unwrap().reason = String::new()
            }),
            ("witness", |r| {
                r.witness.as_mut().unwrap().png_sha256 = r.png_sha256
            }),
            ("place.lat_e7", |r| {
                r.place.as_mut().unwrap().lat_e7 = 950_000_000
            }),
            ("place.lon_e7", |r| {
                r.place.as_mut().unwrap().lon_e7 = -1_900_000_000
            }),
            ("place.accuracy_dm", |r| {
                r.place.as_mut().unwrap().accuracy_dm = Some(u32::MAX)
            }),
        ];
        for (field, mutate) in cases {
            let mut r = sample(&k);
            mutate(&mut r);
            match r.check_values() {
                Err(EvidenceError::Malformed { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_record_names_the_key_that_signed_it() {
        let (a, b) = (key(), DeviceKey::from_seed(&[9u8; 32]));
        assert_eq!(sign_record(&b, &sample(&a)), Err(EvidenceError::WrongKey));
        let signed = sign_record(&a, &sample(&a)).unwrap();
        assert_eq!(
            verify_record(&signed.record, &signed.signature, Some(&b.public())),
            Err(EvidenceError::WrongKey)
        );
    }

    #[test]
    fn log_entries_chain_and_receipts_verify() {
        let server = DeviceKey::from_seed(&[1u8; 32]);
        let e = LogEntry {
            seq: 1,
            prev: [0; 32],
            evidence: EvidenceId(Uuid::from_u128(5)),
            record_sha256: [2; 32],
            device_signature: vec![3; 64],
            received_at_ms: 1_780_000_000_000,
        };
        let h = e.hash();
        let sig = server.sign_receipt(&h);
        assert!(verify_receipt(&server.public(), &h, &sig));
        assert!(!verify_receipt(&key().public(), &h, &sig));
        let changed: [LogEntry; 6] = [
            LogEntry {
                seq: 2,
                ..e.clone()
            },
            LogEntry {
                prev: [1; 32],
                ..e.clone()
            },
            LogEntry {
                evidence: EvidenceId(Uuid::from_u128(6)),
                ..e.clone()
            },
            LogEntry {
                record_sha256: [4; 32],
                ..e.clone()
            },
            LogEntry {
                device_signature: vec![5; 64],
                ..e.clone()
            },
            LogEntry {
                received_at_ms: 1,
                ..e.clone()
            },
        ];
        for (i, c) in changed.iter().enumerate() {
            assert_ne!(c.hash(), h, "field {i} is not covered by the entry hash");
        }
        // A record signature is not a receipt, and the other way round.
        assert!(!verify_receipt(
            &server.public(),
            &h,
            &server.sign_record(&h)
        ));
    }

    #[test]
    fn keys_debug_without_their_secret() {
        let k = key();
        let shown = format!("{k:?}");
        assert!(shown.contains(&hex::encode(k.public())));
        assert!(!shown.contains(&hex::encode(k.seed())));
        assert_ne!(
            DeviceKey::generate().unwrap().public(),
            DeviceKey::generate().unwrap().public()
        );
    }
}
