//! What handlers take from a request, parsed once: the typed JSON body ([`Body`]), a UUID
//! path id ([`Id`]), the caller ([`super::context::Caller`] implements the extractor) and a
//! resource writer ([`Writer`]). Each rejection is a problem document naming what is
//! wrong, so handlers hold only valid values.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::context::Caller;
use super::error::ApiError;
use super::resource::Resource;
use crate::access::Act;

/// A JSON request body parsed into `T`: malformed JSON is a 400, a body of the wrong
/// shape a 422 naming the field, a body over the limit a 413.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = super::resource::body_bytes(Bytes::from_request(req, state).await)?;
        parse_json(&bytes).map(Self)
    }
}

/// Reads `body` as `T`: malformed JSON is a 400, JSON of the wrong shape a 422 naming the
/// field (`sku: must be at most 100 characters`).
///
/// Every request body of the API is a JSON object. serde's derived structs also accept an
/// array of their fields in order (`[null, null]` would be read as an empty run request),
/// so an array at the top is refused here, before serde sees it.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "the body must be a JSON object, not an array",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {inner}"),
            );
        }
        // serde_json appends the position; the field's name says more.
        let message = inner.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m)
            .to_owned();
        if path == "." {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                message,
            )
        } else {
            ApiError::validation(path.clone(), format!("{path}: {message}"))
        }
    })
}

/// The `{id}` of a path: a UUID in its hyphenated form (`format: uuid`), else a 400.
#[derive(Debug, Clone, Copy)]
pub struct Id(pub Uuid);

/// Parses a path id: only the 36-character hyphenated form the document promises.
pub fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Some(raw)
        .filter(|r| r.len() == 36)
        .and_then(|r| Uuid::try_parse(r).ok())
        .ok_or_else(|| {
            ApiError::bad_request("invalid_id", "the id in the path must be a UUID")
                .with_field("id")
        })
}

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                ApiError::bad_request("invalid_id", "the id in the path must be a UUID")
                    .with_field("id")
            })?;
        parse_id(&raw).map(Self)
    }
}

/// The caller, allowed to write resource `R`: the role may write data and the plan has
/// `R`'s feature. Checked before the body is read.
pub struct Writer<R>(pub Caller, pub std::marker::PhantomData<R>);

impl<R> Writer<R> {
    pub fn caller(&self) -> &Caller {
        &self.0
    }
}

impl<S: Send + Sync, R: Resource> FromRequestParts<S> for Writer<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Act::WriteData)?;
        if let Some(feature) = R::WRITE_FEATURE
            && !(feature.enabled)(&caller.tenant.features)
        {
            return Err(ApiError::forbidden(
                "feature_not_in_plan",
                format!(
                    "the {} plan does not include {}",
                    caller.tenant.tier.as_str(),
                    feature.name
                ),
            ));
        }
        Ok(Self(caller, std::marker::PhantomData))
    }
}

/// The one shape of a paginated response: `{"data": [...], "next_cursor": "..." | null}`.
/// Written row by row into one buffer, so a list never holds its rows twice.
pub struct PageWriter {
    buf: Vec<u8>,
    rows: usize,
}

/// A page stops growing once its JSON passes this many bytes (the next page starts at
/// the row after): a list's memory is bounded whatever its rows hold.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

impl Default for PageWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PageWriter {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(b"{\"data\":[");
        Self { buf, rows: 0 }
    }

    /// Appends one row.
    pub fn push<T: Serialize>(&mut self, row: &T) -> Result<(), ApiError> {
        if self.rows > 0 {
            self.buf.push(b',');
        }
        serde_json::to_writer(&mut self.buf, row).map_err(ApiError::internal)?;
        self.rows += 1;
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// True once the page holds [`MAX_PAGE_BYTES`]: stop and give a cursor.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= MAX_PAGE_BYTES
    }

    /// The document: the rows and the cursor of the next page (null on the last).
    pub fn into_json(mut self, next_cursor: Option<String>) -> Vec<u8> {
        self.buf.extend_from_slice(b"],\"next_cursor\":");
        // A cursor is base64url text; serializing a string cannot fail.
        let cursor = serde_json::to_vec(&next_cursor).unwrap_or_else(|_| b"null".to_vec());
        self.buf.extend_from_slice(&cursor);
        self.buf.push(b'}');
        self.buf
    }

    /// The response: `200` with [`PageWriter::into_json`].
    pub fn finish(self, next_cursor: Option<String>) -> axum::response::Response {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            self.into_json(next_cursor),
        )
            .into_response()
    }
}

use axum::response::IntoResponse as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_are_hyphenated_uuids_only() {
        assert!(parse_id("67e55044-10b1-426f-9247-bb680e5fe0c8").is_ok());
        assert!(parse_id("67E55044-10B1-426F-9247-BB680E5FE0C8").is_ok());
        assert!(parse_id("67e5504410b1426f9247bb680e5fe0c8").is_err());
        assert!(parse_id("{67e55044-10b1-426f-9247-bb680e5fe0c8}").is_err());
        assert!(parse_id("x").is_err());
    }

    #[test]
    fn a_wrong_field_is_named_without_the_parsers_position() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct In {
            n: crate::http::fields::Count,
        }
        let err = parse_json::<In>(br#"{"n": -1}"#).unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.field.as_deref(), Some("n"));
        assert_eq!(err.detail, "n: must be a whole number of at least 0");
        let err = parse_json::<In>(b"{").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn an_array_is_not_read_as_a_struct() {
        #[derive(serde::Deserialize, Debug, Default)]
        #[allow(dead_code)]
        struct Optional {
            a: Option<u8>,
            b: Option<u8>,
        }
        // serde alone would take it: the struct's fields in order.
        assert!(serde_json::from_slice::<Optional>(b"[null, null]").is_ok());
        for body in [&b"[null, null]"[..], b" \n [1]", b"[]"] {
            let err = parse_json::<Optional>(body).unwrap_err();
            assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(err.detail, "the body must be a JSON object, not an array");
        }
        assert!(parse_json::<Optional>(b"{}").is_ok());
    }

    #[test]
    fn a_page_is_one_json_document() {
        let mut page = PageWriter::new();
        page.push(&serde_json::json!({"a": 1})).unwrap();
        page.push(&serde_json::json!({"a": 2})).unwrap();
        assert_eq!(page.rows(), 2);
        assert!(!page.is_full());
        let doc: serde_json::Value =
            serde_json::from_slice(&page.into_json(Some("c1".into()))).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"data": [{"a": 1}, {"a": 2}], "next_cursor": "c1"})
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&PageWriter::new().into_json(None)).unwrap();
        assert_eq!(doc, serde_json::json!({"data": [], "next_cursor": null}));
    }
}
