//! The operators' monitoring endpoints, `/admin/api/...`: the data of `capliquify monitor`
//! over HTTP, for a dashboard. Protected by one shared bearer token
//! (`CAPLIQUIFY_ADMIN_TOKEN`, at least 32 characters); without it the endpoints answer 403.
//! They are not part of the tenant API's OpenAPI document (operators only).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use sha2::{Digest as _, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::monitor;
use crate::tenancy::{TenancyError, migrate::describe_db_error, registry};

/// The shortest admin token `serve` accepts.
pub const MIN_TOKEN_LEN: usize = 32;

/// The admin routes, guarded by `token` (`None`: disabled).
pub fn router(state: AppState, token: Option<Arc<str>>) -> Router<AppState> {
    Router::new()
        .route("/sizes", get(sizes))
        .route("/tenants", get(tenants))
        .route("/slow-queries", get(slow_queries))
        .route_layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let token = token.clone();
                async move { guard(token.as_deref(), req, next).await }
            },
        ))
        .with_state(state)
}

async fn guard(token: Option<&str>, req: Request, next: Next) -> Result<Response, ApiError> {
    let Some(token) = token else {
        return Err(ApiError::forbidden(
            "admin_disabled",
            "the admin API is disabled: set CAPLIQUIFY_ADMIN_TOKEN to enable it",
        ));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| {
            ApiError::unauthorized("the admin API needs `Authorization: Bearer <admin token>`")
        })?;
    // Digests of equal length, compared in constant time: neither the token's content nor
    // its length shows in the time the answer takes.
    let digest = |t: &str| Sha256::digest(t.as_bytes());
    if aws_lc_rs::constant_time::verify_slices_are_equal(&digest(presented), &digest(token))
        .is_err()
    {
        tracing::warn!("admin API: wrong token");
        return Err(ApiError::unauthorized("the admin token is not valid"));
    }
    Ok(next.run(req).await)
}

/// The query parameters `allowed` of a request; anything else is a 400 naming it.
fn params<'a>(
    query: &'a HashMap<String, String>,
    allowed: &[&str],
) -> Result<&'a HashMap<String, String>, ApiError> {
    match query.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::bad_request(
            "invalid_parameter",
            format!("unknown query parameter {unknown:?}"),
        )
        .with_field(unknown.clone())),
        None => Ok(query),
    }
}

fn limit(query: &HashMap<String, String>, default: i64, max: i64) -> Result<i64, ApiError> {
    match query.get("limit") {
        None => Ok(default),
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(
                "invalid_parameter",
                format!("limit must be an integer from 1 to {max}"),
            )
            .with_field("limit")),
        },
    }
}

async fn sizes(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<monitor::SchemaSize>>, ApiError> {
    let limit = limit(params(&query, &["limit"])?, 10, 10_000)?;
    Ok(Json(monitor::sizes(&state.pool, limit).await?))
}

async fn tenants(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<monitor::TenantActivity>>, ApiError> {
    params(&query, &[])?;
    Ok(Json(
        monitor::tenants(&state.clusters, 0, None)
            .await
            .map_err(ApiError::internal)?
            .0,
    ))
}

async fn slow_queries(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<monitor::SlowQuery>>, ApiError> {
    let query = params(&query, &["limit", "tenant"])?;
    let limit = limit(query, 20, 1000)?;
    let tenant = match query.get("tenant") {
        None => None,
        Some(slug) => match registry::find(&state.pool, slug).await {
            Ok(t) => Some(t.id),
            Err(TenancyError::UnknownTenant(_) | TenancyError::Slug(_)) => {
                return Err(ApiError::not_found("tenant").with_field("tenant"));
            }
            Err(e) => return Err(ApiError::internal(e)),
        },
    };
    // `limit` is at most 1000 (checked above).
    match monitor::slow_queries(&state.pool, tenant, limit as i32).await {
        Ok(rows) => Ok(Json(rows)),
        Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("0A000") => {
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "query_stats_unavailable",
                describe_db_error(&e),
            ))
        }
        Err(e) => Err(e.into()),
    }
}
