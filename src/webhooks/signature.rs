//! Webhook signatures, checked on the raw body before anything parses it.
//!
//! Written here rather than taken from a crate: the `svix` crate (2.9) does not compile
//! beside the hyper-util our HTTP stack uses (its HTTP connector), and Stripe's Rust crates
//! bring hundreds of generated API types for what is one HMAC. Both schemes are small and are
//! checked against the providers' own signing libraries by `scripts/webhook-acceptance`.
//! Comparisons are constant-time (`Mac::verify_slice`).

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a signature's timestamp may be from now, both ways (both providers use 5 min).
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is malformed")]
    MalformedHeader(&'static str),
    #[error("the signature timestamp is more than 5 minutes old")]
    TooOld,
    #[error("the signature timestamp is more than 5 minutes in the future")]
    InTheFuture,
    #[error("no signature matches the body")]
    Mismatch,
}

fn header<'a>(headers: &'a HeaderMap, names: &[&'static str]) -> Result<&'a str, SignatureError> {
    let Some((name, value)) = names.iter().find_map(|n| headers.get(*n).map(|v| (*n, v))) else {
        return Err(SignatureError::MissingHeader(names[0]));
    };
    value
        .to_str()
        .map_err(|_| SignatureError::MalformedHeader(name))
}

fn check_timestamp(ts: i64, now: i64) -> Result<(), SignatureError> {
    if ts < now - TOLERANCE_SECS {
        Err(SignatureError::TooOld)
    } else if ts > now + TOLERANCE_SECS {
        Err(SignatureError::InTheFuture)
    } else {
        Ok(())
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// A Svix (Clerk) signing secret, `whsec_<base64>`.
#[derive(Clone)]
pub struct SvixSecret(Vec<u8>);

impl std::fmt::Debug for SvixSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SvixSecret(..)")
    }
}

/// Fewest key bytes a signing secret may have: Svix issues 24 (`whsec_` + 32 base64
/// characters). A shorter or empty one would let anyone who guesses it sign events.
pub const MIN_SVIX_KEY_BYTES: usize = 24;

/// Fewest characters after `whsec_` of a Stripe endpoint secret (Stripe issues 32).
pub const MIN_STRIPE_SECRET_CHARS: usize = 24;

impl SvixSecret {
    /// Clerk's signing secret, `whsec_` followed by the base64 of at least
    /// [`MIN_SVIX_KEY_BYTES`] bytes; anything else (an empty one included) is refused.
    pub fn parse(secret: &str) -> Result<Self, String> {
        const EXPECTED: &str =
            "must be Clerk's signing secret: `whsec_` followed by the base64 of at least 24 bytes";
        let encoded = secret
            .trim()
            .strip_prefix("whsec_")
            .unwrap_or(secret.trim());
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| format!("{EXPECTED} (it is not base64)"))?;
        if key.len() < MIN_SVIX_KEY_BYTES {
            return Err(format!("{EXPECTED} (it holds {} bytes)", key.len()));
        }
        if crate::config::is_trivial(&key) {
            return Err(format!("{EXPECTED} (its bytes are all alike)"));
        }
        Ok(Self(key))
    }

    /// `v1,<base64>` for `id.timestamp.body` (what Svix puts in `svix-signature`).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut m = mac(&self.0);
        m.update(format!("{id}.{timestamp}.").as_bytes());
        m.update(body);
        format!("v1,{}", STANDARD.encode(m.finalize().into_bytes()))
    }

    /// Verifies `svix-id`/`svix-timestamp`/`svix-signature` (or the unbranded `webhook-*`
    /// names); the signature header may list several space-separated `v1,<base64>` entries.
    /// Returns the message id.
    pub fn verify<'a>(
        &self,
        headers: &'a HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<&'a str, SignatureError> {
        let id = header(headers, &["svix-id", "webhook-id"])?;
        let ts_raw = header(headers, &["svix-timestamp", "webhook-timestamp"])?;
        let signatures = header(headers, &["svix-signature", "webhook-signature"])?;
        let ts: i64 = ts_raw
            .parse()
            .map_err(|_| SignatureError::MalformedHeader("svix-timestamp"))?;
        check_timestamp(ts, now)?;
        for entry in signatures.split(' ') {
            let Some(("v1", sig)) = entry.split_once(',') else {
                continue;
            };
            let Ok(sig) = STANDARD.decode(sig) else {
                continue;
            };
            let mut m = mac(&self.0);
            m.update(format!("{id}.{ts_raw}.").as_bytes());
            m.update(body);
            if m.verify_slice(&sig).is_ok() {
                return Ok(id);
            }
        }
        Err(SignatureError::Mismatch)
    }
}

/// A Stripe endpoint secret (`whsec_…`), used whole as the HMAC key.
#[derive(Clone)]
pub struct StripeSecret(String);

impl std::fmt::Debug for StripeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StripeSecret(..)")
    }
}

impl StripeSecret {
    /// A secret as given, unchecked: for signing test events. The service takes its secret
    /// through [`StripeSecret::parse`].
    pub fn new(secret: &str) -> Self {
        Self(secret.to_owned())
    }

    /// Stripe's endpoint secret: `whsec_` followed by at least [`MIN_STRIPE_SECRET_CHARS`]
    /// printable characters that are not all alike; anything else (an empty one included)
    /// is refused, since it would make the HMAC key guessable.
    pub fn parse(secret: &str) -> Result<Self, String> {
        let rest = secret
            .strip_prefix("whsec_")
            .ok_or_else(|| "must be Stripe's endpoint secret, starting with `whsec_`".to_owned())?;
        if rest.len() < MIN_STRIPE_SECRET_CHARS
            || !rest.bytes().all(|b| b.is_ascii_graphic())
            || crate::config::is_trivial(rest.as_bytes())
        {
            return Err(format!(
                "must be Stripe's endpoint secret: `whsec_` followed by at least {MIN_STRIPE_SECRET_CHARS} printable characters, not all alike"
            ));
        }
        Ok(Self(secret.to_owned()))
    }

    /// `t=<ts>,v1=<hex>` for `body` (what Stripe puts in `Stripe-Signature`).
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        let mut m = mac(self.0.as_bytes());
        m.update(format!("{timestamp}.").as_bytes());
        m.update(body);
        let hex: String = m
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("t={timestamp},v1={hex}")
    }

    /// Verifies `Stripe-Signature: t=…,v1=…[,v1=…][,v0=…]`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), SignatureError> {
        let value = header(headers, &["stripe-signature"])?;
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in value.split(',') {
            match part.trim().split_once('=') {
                Some(("t", t)) => timestamp = Some(t),
                Some(("v1", sig)) => signatures.push(sig),
                _ => {}
            }
        }
        let ts_raw = timestamp.ok_or(SignatureError::MalformedHeader("stripe-signature"))?;
        let ts: i64 = ts_raw
            .parse()
            .map_err(|_| SignatureError::MalformedHeader("stripe-signature"))?;
        if signatures.is_empty() {
            return Err(SignatureError::MalformedHeader("stripe-signature"));
        }
        check_timestamp(ts, now)?;
        for sig in signatures {
            let Some(sig) = crate::crypto::decode_hex(sig) else {
                continue;
            };
            let mut m = mac(self.0.as_bytes());
            m.update(format!("{ts_raw}.").as_bytes());
            m.update(body);
            if m.verify_slice(&sig).is_ok() {
                return Ok(());
            }
        }
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn svix_headers(id: &str, ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("svix-id", HeaderValue::from_str(id).unwrap());
        h.insert(
            "svix-timestamp",
            HeaderValue::from_str(&ts.to_string()).unwrap(),
        );
        h.insert("svix-signature", HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn svix_matches_the_documented_example() {
        // Svix's published test vector.
        let secret = SvixSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let headers = svix_headers(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            &format!("v1,bm9ub3RyZWFs {sig}"),
        );
        assert_eq!(
            secret.verify(&headers, body, 1614265330 + 10),
            Ok("msg_p5jXN8AQM9LWM0D4loKWxJek")
        );
    }

    #[test]
    fn svix_refuses_tampering_staleness_and_missing_headers() {
        let secret = SvixSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let now = 1_700_000_000;
        let sig = secret.sign("msg_1", now, b"{}");
        assert_eq!(
            secret.verify(&svix_headers("msg_1", now, &sig), b"{ }", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            secret.verify(&svix_headers("msg_2", now, &sig), b"{}", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            secret.verify(&svix_headers("msg_1", now, &sig), b"{}", now + 301),
            Err(SignatureError::TooOld)
        );
        assert_eq!(
            secret.verify(&svix_headers("msg_1", now, &sig), b"{}", now - 301),
            Err(SignatureError::InTheFuture)
        );
        let other = SvixSecret::parse("whsec_dGhpcyBpcyB5ZXQgYW5vdGhlciBzZWNyZXQ=").unwrap();
        assert_eq!(
            other.verify(&svix_headers("msg_1", now, &sig), b"{}", now),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            secret.verify(&HeaderMap::new(), b"{}", now),
            Err(SignatureError::MissingHeader(_))
        ));
        let mut unbranded = HeaderMap::new();
        unbranded.insert("webhook-id", HeaderValue::from_static("msg_1"));
        unbranded.insert(
            "webhook-timestamp",
            HeaderValue::from_str(&now.to_string()).unwrap(),
        );
        unbranded.insert("webhook-signature", HeaderValue::from_str(&sig).unwrap());
        assert_eq!(secret.verify(&unbranded, b"{}", now), Ok("msg_1"));
    }

    #[test]
    fn blank_short_or_trivial_secrets_are_refused() {
        for bad in [
            "",
            "whsec_",
            "whsec_ ",
            "whsec_c2hvcnQ=",
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "whsec_not base64!",
        ] {
            assert!(SvixSecret::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(SvixSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        for bad in [
            "",
            "whsec_",
            "whsec_short",
            "whsec_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "whsec_has a space in the middle of it",
            "sk_test_0123456789abcdefghijklmnop",
        ] {
            assert!(StripeSecret::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(StripeSecret::parse("whsec_test_stripe_endpoint_secret").is_ok());
    }

    #[test]
    fn stripe_signatures_verify_and_refuse() {
        let secret = StripeSecret::new("whsec_test_secret");
        let now = 1_700_000_000;
        let body = br#"{"id":"evt_1"}"#;
        let header_value = secret.sign(now, body);
        let mut h = HeaderMap::new();
        h.insert(
            "stripe-signature",
            HeaderValue::from_str(&format!("{header_value},v1=deadbeef,v0=abc")).unwrap(),
        );
        assert_eq!(secret.verify(&h, body, now), Ok(()));
        assert_eq!(secret.verify(&h, b"{}", now), Err(SignatureError::Mismatch));
        assert_eq!(
            secret.verify(&h, body, now + 301),
            Err(SignatureError::TooOld)
        );
        assert_eq!(
            StripeSecret::new("whsec_other").verify(&h, body, now),
            Err(SignatureError::Mismatch)
        );
        h.insert("stripe-signature", HeaderValue::from_static("v1=00"));
        assert_eq!(
            secret.verify(&h, body, now),
            Err(SignatureError::MalformedHeader("stripe-signature"))
        );
    }
}
