//! `POST /webhooks/clerk` and `POST /webhooks/stripe`: the axum receivers of the webhook
//! room ([`crate::webhooks`]), which verifies and applies. Outside `/api/v1`: they
//! authenticate by signature, not by token.
//!
//! Answers: 200 `{received, outcome}` (applied, ignored, stale, refused, duplicate); 400
//! `webhook_rejected` for a delivery not signed right or not readable (nothing stored);
//! 503 `webhook_not_configured` while the provider's secret is unset; 500 `webhook_failed`
//! when processing failed (rolled back and recorded), so the provider retries.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::resource::body_bytes;
use crate::webhooks::{self, Delivery, Refusal};

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/webhooks/clerk", axum::routing::post(clerk))
        .route("/webhooks/stripe", axum::routing::post(stripe))
}

async fn clerk(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body_bytes(body) {
        Ok(body) => answer(
            "Clerk",
            webhooks::clerk::receive(&state.pool, &state.webhooks, &headers, &body).await,
        ),
        Err(err) => err.into_response(),
    }
}

async fn stripe(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body_bytes(body) {
        Ok(body) => answer(
            "Stripe",
            webhooks::stripe::receive(&state.pool, &state.webhooks, &headers, &body).await,
        ),
        Err(err) => err.into_response(),
    }
}

fn answer(provider: &str, result: Result<Delivery, Refusal>) -> Response {
    let received = |outcome: &str| {
        (
            StatusCode::OK,
            Json(json!({ "received": true, "outcome": outcome })),
        )
            .into_response()
    };
    match result {
        Ok(Delivery::Processed(outcome)) => received(outcome.as_str()),
        Ok(Delivery::Duplicate) => received("duplicate"),
        Ok(Delivery::Failed) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "webhook_failed",
            "the event could not be processed; it will be retried",
        )
        .into_response(),
        Err(Refusal::NotConfigured(setting)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook_not_configured",
            format!("{provider} webhooks are not configured ({setting})"),
        )
        .into_response(),
        Err(Refusal::Rejected(detail)) => {
            ApiError::bad_request("webhook_rejected", detail).into_response()
        }
    }
}
