//! User preferences: `/api/v1/me/preferences` for the caller's own settings (any member),
//! `/api/v1/user-preferences/{user_id}` for admins managing other members' settings.
//! Preferences are keyed by the Clerk user id (`user_preferences.user_id`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::AppState;
use super::context::Caller;
use super::error::ApiError;
use super::resource::{body_bytes, parse_body};
use crate::access::Act;
use crate::db::scope;

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Preferences {
    /// The member's Clerk user id.
    pub user_id: String,
    pub preferences: serde_json::Value,
    /// Absent until the member first saves preferences.
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesInput {
    /// A JSON object. PUT replaces the stored object; PATCH merges its top-level keys.
    pub preferences: serde_json::Value,
}

/// The routes of this module (under `/api/v1`).
pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route(
            "/me/preferences",
            get(get_mine)
                .put(put_mine)
                .patch(patch_mine)
                .delete(delete_mine),
        )
        .route(
            "/user-preferences/{user_id}",
            get(get_member).put(put_member).delete(delete_member),
        )
}

/// Largest preferences document accepted (they are UI settings, not data).
const MAX_PREFERENCES_BYTES: usize = 64 * 1024;

fn input(body: Result<Bytes, BytesRejection>) -> Result<serde_json::Value, ApiError> {
    let body = body_bytes(body)?;
    if body.len() > MAX_PREFERENCES_BYTES {
        return Err(ApiError::validation(
            "preferences",
            "preferences must be at most 64 KiB",
        ));
    }
    let PreferencesInput { preferences } = parse_body(&body)?;
    super::validate::storable_json("preferences", &preferences)?;
    if !preferences.is_object() {
        return Err(ApiError::validation(
            "preferences",
            "preferences must be a JSON object",
        ));
    }
    Ok(preferences)
}

async fn read(conn: &mut PgConnection, user_id: &str) -> Result<Preferences, ApiError> {
    let row: Option<Preferences> = sqlx::query_as(
        "SELECT user_id::text, preferences, updated_at FROM user_preferences WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.unwrap_or_else(|| Preferences {
        user_id: user_id.to_owned(),
        preferences: serde_json::json!({}),
        updated_at: None,
    }))
}

/// Stores `value` for `user_id`: replacing the document, or merging into it.
async fn write(
    conn: &mut PgConnection,
    user_id: &str,
    value: serde_json::Value,
    merge: bool,
) -> Result<Preferences, ApiError> {
    let sql = if merge {
        "INSERT INTO user_preferences (user_id, preferences) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET preferences = user_preferences.preferences || EXCLUDED.preferences
         RETURNING user_id::text, preferences, updated_at"
    } else {
        "INSERT INTO user_preferences (user_id, preferences) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET preferences = EXCLUDED.preferences
         RETURNING user_id::text, preferences, updated_at"
    };
    Ok(sqlx::query_as(sql)
        .bind(user_id)
        .bind(value)
        .fetch_one(conn)
        .await?)
}

async fn remove(conn: &mut PgConnection, user_id: &str) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM user_preferences WHERE user_id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// For admins: `user_id` must be a member of the caller's tenant, else 404 (members of
/// other tenants are not even acknowledged). Runs as the service, before the tenant
/// transaction: the tenant's role cannot read `public.users`.
async fn require_member(state: &AppState, caller: &Caller, user_id: &str) -> Result<(), ApiError> {
    caller.require(Act::Administer)?;
    let member: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM public.users WHERE tenant_id = $1 AND clerk_user_id = $2 AND removed_at IS NULL)",
    )
    .bind(caller.tenant.scope.id)
    .bind(user_id)
    // Members are in the home registry, wherever the tenant's schema is placed.
    .fetch_one(&state.pool)
    .await?;
    if member {
        Ok(())
    } else {
        Err(ApiError::not_found("member"))
    }
}

async fn get_mine(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<Preferences>, ApiError> {
    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    let prefs = read(&mut tx, &caller.member.clerk_user_id).await?;
    tx.commit().await?;
    Ok(Json(prefs))
}

async fn put_mine(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Preferences>, ApiError> {
    let value = input(body)?;
    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    let prefs = write(&mut tx, &caller.member.clerk_user_id, value, false).await?;
    tx.commit().await?;
    Ok(Json(prefs))
}

async fn patch_mine(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Preferences>, ApiError> {
    let value = input(body)?;
    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    let prefs = write(&mut tx, &caller.member.clerk_user_id, value, true).await?;
    tx.commit().await?;
    Ok(Json(prefs))
}

async fn delete_mine(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<StatusCode, ApiError> {
    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    remove(&mut tx, &caller.member.clerk_user_id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_member(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(user_id): Path<String>,
) -> Result<Json<Preferences>, ApiError> {
    require_member(&state, &caller, &user_id).await?;
    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    let prefs = read(&mut tx, &user_id).await?;
    tx.commit().await?;
    Ok(Json(prefs))
}

async fn put_member(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(user_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Preferences>, ApiError> {
    let value = input(body)?;
    require_member(&state, &caller, &user_id).await?;
    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    let prefs = write(&mut tx, &user_id, value, false).await?;
    tx.commit().await?;
    Ok(Json(prefs))
}

async fn delete_member(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(user_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_member(&state, &caller, &user_id).await?;
    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    remove(&mut tx, &user_id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
