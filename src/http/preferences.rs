//! User preferences: `/api/v1/me/preferences` for the caller's own settings (any member),
//! `/api/v1/user-preferences/{user_id}` for admins managing other members' settings.
//! Preferences are keyed by the Clerk user id (`user_preferences.user_id`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use super::AppState;
use super::columns::ObjectSchema;
use super::context::Caller;
use super::error::ApiError;
use super::extract::Body;
use super::fields::{JsonObject, Text};
use crate::access::Act;

/// Largest preferences document accepted (they are UI settings, not data).
pub const MAX_PREFERENCES_BYTES: usize = 64 * 1024;

/// A member's preferences document.
pub type PreferencesDocument = JsonObject<MAX_PREFERENCES_BYTES>;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Preferences {
    /// The member's Clerk user id.
    pub user_id: String,
    pub preferences: PreferencesDocument,
    /// Absent until the member first saves preferences.
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesInput {
    /// A JSON object. PUT replaces the stored object; PATCH merges its top-level keys.
    pub preferences: PreferencesDocument,
}

impl utoipa::PartialSchema for Preferences {
    fn schema() -> RefOr<Schema> {
        ObjectSchema::new("Preferences", false)
            .property::<ClerkUserId>("user_id", false, true, "The member's Clerk user id.")
            .property::<PreferencesDocument>("preferences", false, true, "")
            .property::<DateTime<Utc>>(
                "updated_at",
                true,
                true,
                "Null until the member first saves preferences.",
            )
            .build()
    }
}
impl utoipa::ToSchema for Preferences {}

impl utoipa::PartialSchema for PreferencesInput {
    fn schema() -> RefOr<Schema> {
        ObjectSchema::new("PreferencesInput", true)
            .property::<PreferencesDocument>(
                "preferences",
                false,
                true,
                "A JSON object. PUT replaces the stored object; PATCH merges its top-level keys.",
            )
            .build()
    }
}
impl utoipa::ToSchema for PreferencesInput {}

/// A Clerk user id in a path (`user_…`): the schema of `{user_id}`.
pub type ClerkUserId = Text<255>;

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

async fn read(conn: &mut PgConnection, user_id: &str) -> Result<Preferences, ApiError> {
    let row: Option<Preferences> = sqlx::query_as(
        "SELECT user_id::text, preferences, updated_at FROM user_preferences WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.unwrap_or_else(|| Preferences {
        user_id: user_id.to_owned(),
        preferences: PreferencesDocument::default(),
        updated_at: None,
    }))
}

/// Stores `value` for `user_id`: replacing the document, or merging into it.
async fn write(
    conn: &mut PgConnection,
    user_id: &str,
    value: PreferencesDocument,
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
        .bind(value.into_value())
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
    caller: Caller,
) -> Result<Json<Preferences>, ApiError> {
    let mut tx = state.begin(&caller).await?;
    let prefs = read(&mut tx, &caller.member.clerk_user_id).await?;
    tx.commit().await?;
    Ok(Json(prefs))
}

async fn put_mine(
    State(state): State<AppState>,
    caller: Caller,
    Body(PreferencesInput { preferences: value }): Body<PreferencesInput>,
) -> Result<Json<Preferences>, ApiError> {
    let mut tx = state.begin(&caller).await?;
    let prefs = write(&mut tx, &caller.member.clerk_user_id, value, false).await?;
    tx.commit().await?;
    Ok(Json(prefs))
}

async fn patch_mine(
    State(state): State<AppState>,
    caller: Caller,
    Body(PreferencesInput { preferences: value }): Body<PreferencesInput>,
) -> Result<Json<Preferences>, ApiError> {
    let mut tx = state.begin(&caller).await?;
    let prefs = write(&mut tx, &caller.member.clerk_user_id, value, true).await?;
    tx.commit().await?;
    Ok(Json(prefs))
}

async fn delete_mine(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.begin(&caller).await?;
    remove(&mut tx, &caller.member.clerk_user_id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<Json<Preferences>, ApiError> {
    require_member(&state, &caller, &user_id).await?;
    let mut tx = state.begin(&caller).await?;
    let prefs = read(&mut tx, &user_id).await?;
    tx.commit().await?;
    Ok(Json(prefs))
}

async fn put_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    Body(PreferencesInput { preferences: value }): Body<PreferencesInput>,
) -> Result<Json<Preferences>, ApiError> {
    require_member(&state, &caller, &user_id).await?;
    let mut tx = state.begin(&caller).await?;
    let prefs = write(&mut tx, &user_id, value, false).await?;
    tx.commit().await?;
    Ok(Json(prefs))
}

async fn delete_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_member(&state, &caller, &user_id).await?;
    let mut tx = state.begin(&caller).await?;
    remove(&mut tx, &user_id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
