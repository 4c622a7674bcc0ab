//! `GET /api/v1/audit-logs`: the tenant's audit trail, for its admins and owners.
//! Filters: `action`, `resource_type`, `user` (Clerk user id), `from`/`to` (RFC 3339 time or
//! a date); newest first, cursor pagination.

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::context::Caller;
use super::cursor::Position;
use super::error::ApiError;
use super::resource::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::access::Act;
use crate::audit::{self, Filter, Row};

/// The cursor's sort name.
const SORT: &str = "-created_at";

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub data: Vec<Row>,
    /// Pass as `cursor` to get older entries; absent on the last page.
    pub next_cursor: Option<String>,
}

fn bad(field: &str, detail: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_parameter", detail).with_field(field.to_owned())
}

/// A time bound: RFC 3339, or a date meaning its midnight UTC (as `capliquify audit`).
fn instant(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    audit::parse_instant(value).map_err(|why| {
        bad(
            field,
            format!("{field} must be an RFC 3339 time or a date (YYYY-MM-DD): {why}"),
        )
    })
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    caller.require(Act::Administer)?;
    let Query(pairs) = query.map_err(|e| {
        ApiError::bad_request(
            "invalid_parameter",
            format!("the query string is malformed: {e}"),
        )
    })?;
    let mut filter = Filter {
        tenant_id: Some(caller.tenant.scope.id),
        limit: DEFAULT_LIMIT,
        ..Filter::default()
    };
    for (key, value) in pairs {
        if matches!(key.as_str(), "action" | "resource_type" | "user")
            && value.chars().count() > 255
        {
            return Err(bad(&key, format!("{key} must be at most 255 characters")));
        }
        match key.as_str() {
            "action" => filter.action = Some(value),
            "resource_type" => filter.resource_type = Some(value),
            "user" => filter.user = Some(value),
            "from" => filter.from = Some(instant("from", &value)?),
            "to" => filter.to = Some(instant("to", &value)?),
            "limit" => {
                filter.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        bad(
                            "limit",
                            format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
                        )
                    })?;
            }
            "cursor" => {
                let position = state.cursors.decode(&value, SORT)?;
                let at = DateTime::parse_from_rfc3339(&position.key)
                    .map_err(|_| bad("cursor", "the cursor is not one this API issued"))?
                    .with_timezone(&Utc);
                filter.before = Some((at, position.id));
            }
            other => return Err(bad(other, format!("unknown query parameter {other:?}"))),
        }
    }
    let limit = filter.limit;
    filter.limit += 1;
    // Audit rows are public rows: read as the service, filtered to the caller's tenant
    // (`filter.tenant_id`); the tenant's role may append audit rows but read none.
    // The trail lives on the home cluster; rows of acts done on the tenant's own cluster
    // wait in that cluster's outbox until drained, so drain them first (audit::drain).
    // A cluster that cannot be reached does not hide the rows already home: they are
    // served, and the failure is logged (the rows wait in the outbox, nothing is lost).
    let scope = &caller.tenant.scope;
    if !scope.cluster.is_home()
        && let Err(err) = audit::drain(&state.pool, state.tenant_pool(scope)?, Some(scope.id)).await
    {
        tracing::warn!(cluster = %scope.cluster.as_str(), error = %err, "audit outbox not drained; serving the rows already home");
    }
    let mut conn = state.pool.acquire().await?;
    let mut rows: Vec<Row> = audit::list(&mut conn, &filter)
        .await?
        .into_iter()
        .map(Row::for_tenant_api)
        .collect();
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|last| {
            state.cursors.encode(&Position {
                sort: SORT.into(),
                key: last.created_at.to_rfc3339(),
                id: last.id,
            })
        })
    } else {
        None
    };
    Ok(Json(AuditPage {
        data: rows,
        next_cursor,
    }))
}
