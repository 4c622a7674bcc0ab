//! Opaque, tamper-evident pagination cursors.
//!
//! A cursor is `base64url(json) "." base64url(hmac)`: the sort it belongs to, the last row's
//! sort key and id. The HMAC (SHA-256, key from `CAPLIQUIFY_CURSOR_SECRET` or random per
//! process) lets us answer an edited cursor with a 400 instead of silently paging from
//! wherever it points.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use super::error::ApiError;

type HmacSha256 = Hmac<Sha256>;

/// Longest cursor the server issues (a 255-character sort key of 4-byte characters,
/// encoded) and so accepts.
pub const MAX_CURSOR_LEN: usize = 4096;

/// Where the previous page ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The sort parameter the cursor was made for (e.g. `-created_at`).
    pub sort: String,
    /// The last row's sort key, as PostgreSQL text.
    pub key: String,
    pub id: Uuid,
}

#[derive(Clone)]
pub struct CursorCodec {
    key: Vec<u8>,
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorCodec(..)")
    }
}

impl CursorCodec {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
    }

    pub fn encode(&self, position: &Position) -> String {
        let payload = serde_json::to_vec(position).unwrap_or_default();
        let mut mac = self.mac();
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(&tag[..16])
        )
    }

    pub fn decode(&self, cursor: &str, sort: &str) -> Result<Position, ApiError> {
        let invalid = || {
            ApiError::bad_request("invalid_cursor", "the cursor is not one this API issued")
                .with_field("cursor")
        };
        if cursor.len() > MAX_CURSOR_LEN {
            return Err(invalid());
        }
        let (payload, tag) = cursor.split_once('.').ok_or_else(invalid)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_truncated_left(&tag).map_err(|_| invalid())?;
        let position: Position = serde_json::from_slice(&payload).map_err(|_| invalid())?;
        if position.sort != sort {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                format!(
                    "the cursor belongs to sort={}, not sort={sort}",
                    position.sort
                ),
            )
            .with_field("cursor"));
        }
        Ok(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_tampering() {
        let codec = CursorCodec::new(b"secret");
        let pos = Position {
            sort: "name".into(),
            key: "Widget".into(),
            id: Uuid::nil(),
        };
        let cursor = codec.encode(&pos);
        assert_eq!(codec.decode(&cursor, "name").unwrap(), pos);
        assert_eq!(
            codec.decode(&cursor, "-name").unwrap_err().code,
            "invalid_cursor"
        );
        let forged = codec.encode(&Position {
            key: "Zebra".into(),
            ..pos.clone()
        });
        let (payload, _) = forged.split_once('.').unwrap();
        let (_, tag) = cursor.split_once('.').unwrap();
        assert!(codec.decode(&format!("{payload}.{tag}"), "name").is_err());
        assert!(CursorCodec::new(b"other").decode(&cursor, "name").is_err());
        for junk in ["", ".", "abc", "a.b", "!!!.???"] {
            assert!(codec.decode(junk, "name").is_err(), "{junk:?}");
        }
    }
}
