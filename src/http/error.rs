//! The one error type of the HTTP layer, answered as `application/problem+json` (RFC 9457)
//! with a stable `code`. Client errors say what is wrong and, where there is one, which
//! field; server errors are logged with the request id and answered with a bare 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Base of the `type` URIs; the code is appended.
const TYPE_BASE: &str = "https://docs.capliquify.com/problems/";

/// A problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// URI naming the kind of problem: the base followed by `code`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    /// Stable machine-readable code, e.g. `validation_failed`, `plan_limit_reached`.
    pub code: &'static str,
    pub detail: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub field: Option<String>,
    /// Headers the response must carry (e.g. `WWW-Authenticate`).
    pub www_authenticate: bool,
    /// Seconds for a `Retry-After` header (503 while a tenant moves).
    pub retry_after: Option<u32>,
    /// A member beside the standard ones (RFC 9457 extension), e.g. a refused import's
    /// report.
    pub extension: Option<Box<(&'static str, serde_json::Value)>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            field: None,
            www_authenticate: false,
            retry_after: None,
            extension: None,
        }
    }

    /// Adds the member `name` to the problem document.
    pub fn with_extension(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.extension = Some(Box::new((name, value)));
        self
    }

    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            detail,
        )
        .with_field(field)
    }

    /// A rule between fields, or between a new value and a stored one, is broken: each
    /// field is valid on its own (so no schema can say it), the combination is not.
    pub fn rule(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "rule_violated", detail).with_field(field)
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self {
            www_authenticate: true,
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
        }
    }

    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// A fault on our side: logged in full, answered without detail.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server could not complete the request; it has been logged",
        )
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_busy",
                "the database is busy; retry shortly",
            ),
            _ => Self::internal(err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: format!("{TYPE_BASE}{}", self.code),
            title: self.title(),
            status: self.status.as_u16(),
            code: self.code,
            detail: self.detail,
            field: self.field,
        };
        let mut response = match self.extension {
            None => (self.status, axum::Json(problem)).into_response(),
            Some(extension) => {
                let (name, value) = *extension;
                let mut document = serde_json::to_value(&problem).unwrap_or_default();
                if let serde_json::Value::Object(members) = &mut document {
                    members.insert(name.to_owned(), value);
                }
                (self.status, axum::Json(document)).into_response()
            }
        };
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.www_authenticate {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
