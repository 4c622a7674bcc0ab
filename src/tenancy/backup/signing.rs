//! Archive signatures: an HMAC-SHA256 of `manifest.json` under the operator's key
//! (`CAPLIQUIFY_BACKUP_KEY`), stored as the entry `manifest.sig` right after it.
//!
//! The manifest holds the size, row count and SHA-256 of every other part, so signing it
//! covers the whole archive: a part, a public row or the manifest changed by anyone without
//! the key makes [`super::restore`] refuse the file. The checksums alone catch damage, not
//! tampering (anyone can recompute them).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The setting that holds the key.
pub const SETTING: &str = "CAPLIQUIFY_BACKUP_KEY";
const PREFIX: &str = "hmac-sha256:";

/// The key that signs and checks archives.
#[derive(Clone)]
pub struct BackupKey(Vec<u8>);

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupKey(..)")
    }
}

impl BackupKey {
    /// The operator's key: at least 32 printable characters, not trivial (a blank or weak
    /// value is an error naming the setting, never "no key").
    pub fn parse(value: &str) -> anyhow::Result<Self> {
        crate::config::check_secret(SETTING, value, 32)?;
        Ok(Self(value.as_bytes().to_vec()))
    }

    /// A random key for an archive that never leaves this process (`tenant clone`).
    pub fn ephemeral() -> std::io::Result<Self> {
        let mut key = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut key)
            .map_err(|_| std::io::Error::other("the system random generator failed"))?;
        Ok(Self(key))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        HmacSha256::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    /// The content of `manifest.sig` for `manifest`.
    pub fn sign(&self, manifest: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(manifest);
        format!(
            "{PREFIX}{}\n",
            super::archive::hex(&mac.finalize().into_bytes())
        )
    }

    /// Whether `signature` (the content of `manifest.sig`) signs `manifest` under this key;
    /// compared in constant time.
    pub fn signed(&self, manifest: &[u8], signature: &[u8]) -> bool {
        let Some(hex) = std::str::from_utf8(signature)
            .ok()
            .and_then(|s| s.trim().strip_prefix(PREFIX))
        else {
            return false;
        };
        let Some(tag) = crate::crypto::decode_hex(hex) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(manifest);
        mac.verify_slice(&tag).is_ok()
    }
}

/// What a restore accepts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trust<'a> {
    /// Checks the signature; `None`: a signed archive cannot be checked.
    pub key: Option<&'a BackupKey>,
    /// `--insecure-unsigned`: restore an unsigned or mis-signed archive anyway.
    pub allow_unsigned: bool,
}

impl<'a> Trust<'a> {
    /// Only archives signed with `key`.
    pub fn key(key: &'a BackupKey) -> Self {
        Self {
            key: Some(key),
            allow_unsigned: false,
        }
    }
}

/// Why an archive's signature is not accepted, or `None` when it is.
pub fn refusal(trust: Trust<'_>, manifest: &[u8], signature: Option<&[u8]>) -> Option<String> {
    let problem = match (signature, trust.key) {
        (Some(sig), Some(key)) if key.signed(manifest, sig) => return None,
        (Some(_), Some(_)) => format!(
            "is not signed with this {SETTING}: its manifest was altered, or it was signed with another key"
        ),
        (Some(_), None) => format!("is signed, but {SETTING} is not set to check it"),
        (None, _) => {
            format!("is not signed (written without {SETTING}, or its manifest.sig was removed)")
        }
    };
    if trust.allow_unsigned {
        tracing::warn!(%problem, "restoring an archive whose signature is not checked (--insecure-unsigned)");
        None
    } else {
        Some(problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_check_the_manifest_under_the_key() {
        let key = BackupKey::parse("0123456789abcdef0123456789abcdef").unwrap();
        let other = BackupKey::parse("fedcba9876543210fedcba9876543210").unwrap();
        let sig = key.sign(b"{\"parts\":[]}");
        assert!(key.signed(b"{\"parts\":[]}", sig.as_bytes()));
        assert!(!key.signed(b"{\"parts\":[1]}", sig.as_bytes()));
        assert!(!other.signed(b"{\"parts\":[]}", sig.as_bytes()));
        assert!(!key.signed(b"{\"parts\":[]}", b"hmac-sha256:zz"));
        let trust = Trust::key(&key);
        assert_eq!(
            refusal(trust, b"{\"parts\":[]}", Some(sig.as_bytes())),
            None
        );
        assert!(refusal(trust, b"{}", None).is_some_and(|r| r.contains("not signed")));
        assert!(refusal(Trust::key(&other), b"{\"parts\":[]}", Some(sig.as_bytes())).is_some());
        let insecure = Trust {
            key: None,
            allow_unsigned: true,
        };
        assert_eq!(refusal(insecure, b"{}", None), None);
        for bad in ["", "short", &"k".repeat(40)] {
            let err = BackupKey::parse(bad).unwrap_err().to_string();
            assert!(err.contains(SETTING), "{err}");
        }
    }
}
