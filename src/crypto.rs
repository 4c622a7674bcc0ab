//! Sealed secrets: AES-256-GCM envelopes for API credentials (DESIGN.md §9).
//!
//! An envelope is the JSON object `{"v":1,"kid":…,"nonce":…,"ct":…}` (base64; `ct` holds the
//! ciphertext and the 16-byte tag). The additional data binds it to where it belongs —
//! tenant, row and field — so an envelope copied to another tenant, row or column does not
//! open. Keys come from `ENCRYPTION_KEY` (64 hex characters, sealing; id
//! `ENCRYPTION_KEY_ID`, default `k1`) and `ENCRYPTION_KEYS` (`id=hex,…`, older keys that may
//! still open envelopes until `capliquify keys rotate` has re-sealed everything).

use std::collections::HashMap;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("{0} must be 64 hexadecimal characters (32 bytes), e.g. from `openssl rand -hex 32`")]
    MalformedKey(&'static str),
    #[error("ENCRYPTION_KEYS entry {0:?} is not `id=<64 hex>`")]
    MalformedKeyList(String),
    #[error("key id {0:?} is given twice")]
    DuplicateKeyId(String),
    #[error("ENCRYPTION_KEY is not set: credentials cannot be sealed; set it to 64 hex characters")]
    MissingKey,
    #[error(
        "ENCRYPTION_KEY is set but empty; set it to 64 hex characters (`openssl rand -hex 32`)"
    )]
    EmptyKey,
    #[error(
        "{0} is too simple (fewer than 8 different bytes); use a random key (`openssl rand -hex 32`)"
    )]
    WeakKey(&'static str),
    #[error("the sealed value is not an envelope this service wrote")]
    NotAnEnvelope,
    #[error("the envelope was sealed with key {0:?}, which is not configured (ENCRYPTION_KEYS)")]
    UnknownKey(String),
    #[error(
        "the envelope does not open: it was altered, or it belongs to another tenant, row or field"
    )]
    Tampered,
    #[error("the system random generator failed")]
    Random,
}

/// Where an envelope belongs; its bytes are the additional authenticated data.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub tenant_id: Uuid,
    pub row_id: Uuid,
    /// The column, e.g. `credentials`, `oauth_access_token`.
    pub field: &'a str,
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        format!(
            "capliquify/v1/{}/{}/{}",
            self.tenant_id, self.row_id, self.field
        )
        .into_bytes()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u8,
    pub kid: String,
    pub nonce: String,
    pub ct: String,
}

/// The keys this process can seal and open with.
pub struct Keyring {
    sealing: String,
    keys: HashMap<String, LessSafeKey>,
    /// Keys the fingerprints of secrets (derived from the sealing key): without it a
    /// fingerprint cannot be checked against guesses offline.
    fingerprints: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("Keyring")
            .field("sealing", &self.sealing)
            .field("ids", &ids)
            .finish()
    }
}

fn parse_key_bytes(hex: &str, setting: &'static str) -> Result<Vec<u8>, CryptoError> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return Err(CryptoError::MalformedKey(setting));
    }
    let bytes = decode_hex(hex).ok_or(CryptoError::MalformedKey(setting))?;
    if crate::config::is_trivial(&bytes) {
        return Err(CryptoError::WeakKey(setting));
    }
    Ok(bytes)
}

fn parse_key(hex: &str, setting: &'static str) -> Result<LessSafeKey, CryptoError> {
    let bytes = parse_key_bytes(hex, setting)?;
    let key =
        UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| CryptoError::MalformedKey(setting))?;
    Ok(LessSafeKey::new(key))
}

/// The fingerprint key: HMAC-SHA256 of a fixed label under the sealing key, so it is
/// neither the sealing key nor usable for anything but fingerprints.
fn fingerprint_key(sealing_key: &[u8]) -> aws_lc_rs::hmac::Key {
    use aws_lc_rs::hmac;
    let derived = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, sealing_key),
        b"capliquify/v1/fingerprint",
    );
    hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
}

impl Keyring {
    /// From the settings: `key` (ENCRYPTION_KEY) with id `key_id`, plus `older` (ENCRYPTION_KEYS).
    pub fn from_settings(
        key: Option<&str>,
        key_id: &str,
        older: Option<&str>,
    ) -> Result<Self, CryptoError> {
        let key = key.ok_or(CryptoError::MissingKey)?;
        // Blank is a mistake to report, not a way to say "unset".
        if key.trim().is_empty() {
            return Err(CryptoError::EmptyKey);
        }
        let mut keys = HashMap::new();
        let sealing_bytes = parse_key_bytes(key, "ENCRYPTION_KEY")?;
        keys.insert(key_id.to_owned(), parse_key(key, "ENCRYPTION_KEY")?);
        for entry in older
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (id, hex) = entry
                .split_once('=')
                .ok_or_else(|| CryptoError::MalformedKeyList(entry.chars().take(12).collect()))?;
            let id = id.trim();
            if id.is_empty() {
                return Err(CryptoError::MalformedKeyList(
                    entry.chars().take(12).collect(),
                ));
            }
            if keys
                .insert(id.to_owned(), parse_key(hex, "an ENCRYPTION_KEYS key")?)
                .is_some()
            {
                return Err(CryptoError::DuplicateKeyId(id.to_owned()));
            }
        }
        Ok(Self {
            sealing: key_id.to_owned(),
            keys,
            fingerprints: fingerprint_key(&sealing_bytes),
        })
    }

    /// A short fingerprint of a tenant's secret for display (`hmac:1a2b3c4d`), to tell
    /// versions apart: HMAC-SHA256 keyed from the sealing key over the tenant's id and the
    /// secret, so it cannot be checked against guesses without the key, and the same secret
    /// in two tenants looks different. It changes when the sealing key does.
    pub fn fingerprint(&self, tenant_id: Uuid, plaintext: &[u8]) -> String {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.fingerprints);
        ctx.update(tenant_id.as_bytes());
        ctx.update(plaintext);
        let tag = ctx.sign();
        let hex: String = tag
            .as_ref()
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("hmac:{hex}")
    }

    /// The id new envelopes are sealed with.
    pub fn sealing_key_id(&self) -> &str {
        &self.sealing
    }

    /// Seals `plaintext` for `binding` under the sealing key, with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], binding: Binding<'_>) -> Result<Envelope, CryptoError> {
        let key = self
            .keys
            .get(&self.sealing)
            .ok_or_else(|| CryptoError::UnknownKey(self.sealing.clone()))?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut in_out = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(binding.aad()),
            &mut in_out,
        )
        .map_err(|_| CryptoError::Random)?;
        Ok(Envelope {
            v: 1,
            kid: self.sealing.clone(),
            nonce: STANDARD.encode(nonce),
            ct: STANDARD.encode(in_out),
        })
    }

    /// Opens an envelope sealed for `binding`.
    pub fn open(&self, envelope: &Envelope, binding: Binding<'_>) -> Result<Vec<u8>, CryptoError> {
        if envelope.v != 1 {
            return Err(CryptoError::NotAnEnvelope);
        }
        let key = self
            .keys
            .get(&envelope.kid)
            .ok_or_else(|| CryptoError::UnknownKey(envelope.kid.clone()))?;
        let nonce = STANDARD
            .decode(&envelope.nonce)
            .map_err(|_| CryptoError::NotAnEnvelope)?;
        let nonce =
            Nonce::try_assume_unique_for_key(&nonce).map_err(|_| CryptoError::NotAnEnvelope)?;
        let mut in_out = STANDARD
            .decode(&envelope.ct)
            .map_err(|_| CryptoError::NotAnEnvelope)?;
        let plain = key
            .open_in_place(nonce, Aad::from(binding.aad()), &mut in_out)
            .map_err(|_| CryptoError::Tampered)?;
        Ok(plain.to_vec())
    }

    /// Reads an envelope stored as JSON.
    pub fn parse(value: &serde_json::Value) -> Result<Envelope, CryptoError> {
        serde_json::from_value(value.clone()).map_err(|_| CryptoError::NotAnEnvelope)
    }
}

/// Hex (either case) to bytes; `None` unless every character is a hex digit and the
/// length is even. (`u8::from_str_radix` alone would also take a leading `+`.)
pub(crate) fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1eff";

    fn binding(field: &str) -> Binding<'_> {
        Binding {
            tenant_id: Uuid::from_u128(1),
            row_id: Uuid::from_u128(2),
            field,
        }
    }

    #[test]
    fn sealed_values_open_only_where_they_belong() {
        let ring = Keyring::from_settings(Some(K1), "k1", None).unwrap();
        let env = ring.seal(b"secret-token", binding("credentials")).unwrap();
        assert_eq!(
            ring.open(&env, binding("credentials")).unwrap(),
            b"secret-token"
        );
        assert!(!env.ct.contains("secret"));
        assert_eq!(
            ring.open(&env, binding("oauth_access_token")),
            Err(CryptoError::Tampered)
        );
        let other_tenant = Binding {
            tenant_id: Uuid::from_u128(9),
            ..binding("credentials")
        };
        assert_eq!(ring.open(&env, other_tenant), Err(CryptoError::Tampered));
        let mut flipped = env.clone();
        let mut ct = STANDARD.decode(&flipped.ct).unwrap();
        ct[0] ^= 1;
        flipped.ct = STANDARD.encode(ct);
        assert_eq!(
            ring.open(&flipped, binding("credentials")),
            Err(CryptoError::Tampered)
        );
        // Two seals of the same value differ (fresh nonces).
        assert_ne!(
            ring.seal(b"x", binding("credentials")).unwrap(),
            ring.seal(b"x", binding("credentials")).unwrap()
        );
    }

    #[test]
    fn rotation_keeps_old_envelopes_readable_until_resealed() {
        let old = Keyring::from_settings(Some(K1), "k1", None).unwrap();
        let env = old.seal(b"v", binding("credentials")).unwrap();
        let new = Keyring::from_settings(Some(K2), "k2", Some(&format!("k1={K1}"))).unwrap();
        assert_eq!(new.open(&env, binding("credentials")).unwrap(), b"v");
        assert_eq!(new.seal(b"v", binding("credentials")).unwrap().kid, "k2");
        let only_new = Keyring::from_settings(Some(K2), "k2", None).unwrap();
        assert_eq!(
            only_new.open(&env, binding("credentials")),
            Err(CryptoError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn fingerprints_are_keyed_and_salted_by_tenant() {
        use sha2::{Digest, Sha256};
        let ring = Keyring::from_settings(Some(K1), "k1", None).unwrap();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let fp = ring.fingerprint(a, b"password1");
        assert!(fp.starts_with("hmac:") && fp.len() == 13, "{fp}");
        assert_eq!(fp, ring.fingerprint(a, b"password1"), "stable");
        assert_ne!(fp, ring.fingerprint(a, b"password2"));
        assert_ne!(fp, ring.fingerprint(b, b"password1"), "salted by tenant");
        let other = Keyring::from_settings(Some(K2), "k2", None).unwrap();
        assert_ne!(fp, other.fingerprint(a, b"password1"), "keyed");
        // Not the unsalted SHA-256 prefix anyone could compute from a guess.
        let unsalted: String = Sha256::digest(b"password1")
            .iter()
            .take(4)
            .map(|x| format!("{x:02x}"))
            .collect();
        assert!(!fp.contains(&unsalted));
    }

    #[test]
    fn bad_keys_are_refused_with_the_setting_named() {
        assert_eq!(
            Keyring::from_settings(None, "k1", None).unwrap_err(),
            CryptoError::MissingKey
        );
        assert_eq!(
            Keyring::from_settings(Some("abc"), "k1", None).unwrap_err(),
            CryptoError::MalformedKey("ENCRYPTION_KEY")
        );
        assert_eq!(
            Keyring::from_settings(Some(""), "k1", None).unwrap_err(),
            CryptoError::EmptyKey
        );
        assert_eq!(
            Keyring::from_settings(Some(&"0".repeat(64)), "k1", None).unwrap_err(),
            CryptoError::WeakKey("ENCRYPTION_KEY")
        );
        assert!(matches!(
            Keyring::from_settings(Some(K1), "k1", Some(&format!("k0={}", "ab".repeat(32)))),
            Err(CryptoError::WeakKey(_))
        ));
        let not_hex = "zz".repeat(32);
        assert!(Keyring::from_settings(Some(&not_hex), "k1", None).is_err());
        assert!(matches!(
            Keyring::from_settings(Some(K1), "k1", Some("nokey")),
            Err(CryptoError::MalformedKeyList(_))
        ));
        assert_eq!(
            Keyring::from_settings(Some(K1), "k1", Some(&format!("k1={K2}"))).unwrap_err(),
            CryptoError::DuplicateKeyId("k1".into())
        );
        assert!(
            CryptoError::MalformedKey("ENCRYPTION_KEY")
                .to_string()
                .contains("ENCRYPTION_KEY")
        );
    }
}
