//! Encryption at rest of the phone's store (DESIGN.md section 5, ADR 0009). The platform
//! keystore holds one 32-byte store key; two subkeys are derived from it with
//! HKDF-SHA256 (RFC 5869), one per purpose, so neither is ever used for the other:
//! SQLCipher's raw page key (AES-256 pages with HMAC-SHA512, SQLCipher 4 defaults) and
//! the blob key that seals every photo, thumbnail and signature blob with
//! XChaCha20-Poly1305 before it is written, bound to the blob's SHA-256 as associated
//! data. A blob is therefore encrypted twice: once alone and once in its database page.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Length of the store key the platform keystore holds, in bytes.
pub const STORE_KEY_BYTES: usize = 32;

/// HKDF `info` of SQLCipher's page key.
const DB_INFO: &[u8] = b"doorstep/store/sqlcipher-page-key/v1";
/// HKDF `info` of the blob sealing key.
const BLOB_INFO: &[u8] = b"doorstep/store/blob-key/v1";
/// Length of the `PRAGMA key = "x'…'";` statement with 64 hex digits.
const PRAGMA_LEN: usize = 83;
const HEX: &[u8; 16] = b"0123456789abcdef";
/// Bytes before a sealed blob's ciphertext: its random nonce.
const NONCE_BYTES: usize = 24;

/// The two subkeys of a store key.
pub(crate) struct StoreKeys {
    /// SQLCipher's raw key, as the `PRAGMA key` statement that sets it.
    pub pragma: Zeroizing<String>,
    /// Seals and opens blobs.
    pub blobs: BlobSeal,
}

impl StoreKeys {
    /// Derives both subkeys from the platform's store key.
    pub fn derive(store_key: &[u8; STORE_KEY_BYTES]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"doorstep store"), store_key);
        let mut db = Zeroizing::new([0u8; 32]);
        let mut blob = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32: expand cannot fail.
        hk.expand(DB_INFO, db.as_mut())
            .expect("32-byte HKDF output");
        hk.expand(BLOB_INFO, blob.as_mut())
            .expect("32-byte HKDF output");
        // A raw key (x'…', 64 hex digits) skips SQLCipher's PBKDF2: the key is already
        // 256 random bits, and opening stays fast on a slow phone.
        // Built in place at its final size, so no reallocation leaves a copy of the key
        // behind; SQLite's own copy of the statement is freed without wiping
        // (`cipher_memory_security` is off): best effort, not a guarantee.
        let mut pragma = Zeroizing::new(String::with_capacity(PRAGMA_LEN));
        pragma.push_str("PRAGMA key = \"x'");
        for b in db.iter() {
            pragma.push(char::from(HEX[usize::from(b >> 4)]));
            pragma.push(char::from(HEX[usize::from(b & 15)]));
        }
        pragma.push_str("'\";");
        debug_assert_eq!(pragma.len(), PRAGMA_LEN);
        Self {
            pragma,
            blobs: BlobSeal {
                aead: XChaCha20Poly1305::new(blob.as_ref().into()),
            },
        }
    }
}

/// Seals blobs with the store's blob key.
#[derive(Clone)]
pub(crate) struct BlobSeal {
    aead: XChaCha20Poly1305,
}

impl std::fmt::Debug for BlobSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobSeal(..)")
    }
}

impl BlobSeal {
    /// `nonce || ciphertext || tag` of `bytes`, bound to the blob's hash.
    pub fn seal(&self, sha256: &str, bytes: &[u8]) -> Result<Vec<u8>> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .aead
            .encrypt(
                &nonce,
                Payload {
                    msg: bytes,
                    aad: sha256.as_bytes(),
                },
            )
            .map_err(|_| sealing_failed(sha256))?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plain bytes of a sealed blob.
    ///
    /// Errors: [`Error::Invalid`] when the stored bytes were not sealed under this key
    /// for this hash (damaged, or moved from another row).
    pub fn open(&self, sha256: &str, stored: &[u8]) -> Result<Vec<u8>> {
        if stored.len() < NONCE_BYTES {
            return Err(sealing_failed(sha256));
        }
        let (nonce, sealed) = stored.split_at(NONCE_BYTES);
        self.aead
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: sha256.as_bytes(),
                },
            )
            .map_err(|_| sealing_failed(sha256))
    }
}

fn sealing_failed(sha256: &str) -> Error {
    Error::Invalid {
        field: "blob",
        reason: format!("the stored blob {sha256} does not open under this store's key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subkeys_differ_and_depend_on_the_key() {
        let a = StoreKeys::derive(&[1; 32]);
        let b = StoreKeys::derive(&[2; 32]);
        assert_ne!(*a.pragma, *b.pragma);
        assert!(a.pragma.starts_with("PRAGMA key = \"x'") && a.pragma.len() == 83);
        let sealed = a.blobs.seal("abc", b"photo").unwrap();
        assert_eq!(a.blobs.open("abc", &sealed).unwrap(), b"photo");
        // Another key, another hash, a flipped byte or a cut blob: refused.
        assert!(b.blobs.open("abc", &sealed).is_err());
        assert!(a.blobs.open("abd", &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(a.blobs.open("abc", &flipped).is_err());
        assert!(a.blobs.open("abc", &sealed[..10]).is_err());
        // Two seals of the same bytes differ (random nonces) and hide the plain bytes.
        let again = a.blobs.seal("abc", b"photo").unwrap();
        assert_ne!(sealed, again);
        assert!(!sealed.windows(5).any(|w| w == b"photo"));
    }
}
