//! Passwords (argon2id), device tokens (random, stored as SHA-256) and the bearer-token
//! extractor for the sync routes.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A valid argon2id hash of a random password, checked against when the account does
/// not exist so that a sign-in takes the same time either way.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1V3Dm5sRU3u1dF3aGRZ0k1qb5QG6TlqTmmsDWm3vZ0o";

/// Hashes a password with argon2id at the crate's defaults (m = 19 MiB, t = 2, p = 1:
/// OWASP's Password Storage Cheat Sheet), as a PHC string.
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| Error::Internal(e.to_string()))?
        .to_string())
}

/// True when `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> Result<bool> {
    let parsed = PasswordHash::new(hash).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

/// The server's secret for keyed lookups: ID numbers are found through
/// `HMAC-SHA256(key, normalised ID)`, never a plain index, and enrolment codes are
/// stored the same way, so a copy of the database alone cannot brute-force either.
/// Kept in the data folder as [`LOOKUP_KEY_FILE`] (32 random bytes, mode 0600).
#[derive(Clone)]
pub struct LookupKey([u8; 32]);

/// File in the data folder holding the [`LookupKey`].
pub const LOOKUP_KEY_FILE: &str = "lookup-key";

impl std::fmt::Debug for LookupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LookupKey(<secret>)")
    }
}

impl LookupKey {
    /// Loads the key from `dir`, creating it on first use.
    ///
    /// Errors: [`Error::Io`]; [`Error::Internal`] when the file is not 32 bytes.
    pub fn load_or_create(dir: &std::path::Path) -> Result<Self> {
        Ok(Self(crate::db::evidence::load_or_create_secret(
            &dir.join(LOOKUP_KEY_FILE),
        )?))
    }

    /// A key from its bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// `HMAC-SHA256(key, purpose || 0x00 || value)`: 32 bytes.
    pub fn mac(&self, purpose: &str, value: &str) -> [u8; 32] {
        use hmac::{Mac, SimpleHmac};
        let mut mac = <SimpleHmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The lookup hash of a national ID number: trimmed, the check character `x`
    /// upper-cased, so that the ways it is typed find the same person.
    pub fn id_number(&self, id: &str) -> [u8; 32] {
        self.mac("id-number", &id.trim().to_uppercase())
    }
}

/// A new device token: 32 random bytes as 64 hex digits.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the database keeps of a token: its SHA-256.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_the_dummy_hash_is_a_real_argon2id_hash() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password("correct horse", &h).unwrap());
        assert!(!verify_password("wrong horse", &h).unwrap());
        // It must parse, or an unknown account would answer faster than a known one.
        assert!(!verify_password("anything", DUMMY_HASH).unwrap());
    }

    #[test]
    fn id_lookups_are_keyed_and_normalised() {
        let a = LookupKey::from_bytes([1; 32]);
        let b = LookupKey::from_bytes([2; 32]);
        assert_eq!(
            a.id_number("11010119900101123x"),
            a.id_number(" 11010119900101123X")
        );
        assert_ne!(
            a.id_number("110101199001011234"),
            b.id_number("110101199001011234")
        );
        assert_ne!(
            a.id_number("110101199001011234"),
            a.mac("enrolment", "110101199001011234")
        );
        assert!(!format!("{a:?}").contains('1'));
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(token_hash(&a).len(), 32);
        assert_ne!(token_hash(&a), a.as_bytes());
    }
}
