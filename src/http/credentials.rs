//! `/api/v1/api-credentials`: integrations' credentials, for admins and owners. Secrets go
//! in sealed ([`crate::credentials`]) and never come back out through the API — responses
//! carry a fingerprint instead.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::context::Caller;
use super::error::ApiError;
use super::resource::{body_bytes, db_error, parse_body, parse_id};
use super::validate as v;
use crate::access::Act;
use crate::audit::{self, Entry};
use crate::credentials::{self as creds, COLUMNS, Credential, Secrets};
use crate::db::scope;

const MAX_SECRET_BYTES: usize = 16 * 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    pub company_id: Uuid,
    /// The integration, e.g. `xero`, `quickbooks`, `netsuite` (lower case).
    pub service: String,
    pub service_display_name: Option<String>,
    /// The secret: a JSON object (API keys, client secrets…). Sealed before storage.
    pub credentials: Value,
    pub oauth_access_token: Option<String>,
    pub oauth_refresh_token: Option<String>,
    pub oauth_token_expires_at: Option<DateTime<Utc>>,
    /// hourly, daily, weekly or manual.
    pub sync_frequency: Option<String>,
    pub auto_sync_enabled: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSecrets {
    /// The replacement secret object.
    pub credentials: Value,
    pub oauth_access_token: Option<String>,
    pub oauth_refresh_token: Option<String>,
    pub oauth_token_expires_at: Option<DateTime<Utc>>,
}

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api-credentials", get(list).post(create))
        .route("/api-credentials/{id}", get(show).delete(remove))
        .route("/api-credentials/{id}/rotate", post(rotate))
        .route("/api-credentials/{id}/deactivate", post(deactivate))
}

fn secrets(
    credentials: Value,
    access: Option<String>,
    refresh: Option<String>,
) -> Result<Secrets, ApiError> {
    if !credentials.is_object() {
        return Err(ApiError::validation(
            "credentials",
            "credentials must be a JSON object",
        ));
    }
    if credentials.to_string().len() > MAX_SECRET_BYTES {
        return Err(ApiError::validation(
            "credentials",
            "credentials must be at most 16 KiB",
        ));
    }
    for (field, token) in [
        ("oauth_access_token", &access),
        ("oauth_refresh_token", &refresh),
    ] {
        if token
            .as_ref()
            .is_some_and(|t| t.is_empty() || t.len() > 8192)
        {
            return Err(ApiError::validation(
                field,
                format!("{field} must be 1 to 8192 characters"),
            ));
        }
    }
    Ok(Secrets {
        credentials,
        oauth_access_token: access,
        oauth_refresh_token: refresh,
    })
}

fn service(value: String) -> Result<String, ApiError> {
    let ok = (1..=50).contains(&value.len())
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(value)
    } else {
        Err(ApiError::validation(
            "service",
            "service must be 1 to 50 of a-z, 0-9, '_' and '-'",
        ))
    }
}

async fn audit_act(
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
    action: &str,
    id: Uuid,
    metadata: Value,
) -> Result<(), ApiError> {
    audit::record_in_tenant(
        conn,
        &caller.tenant.scope,
        &caller.actor(),
        Entry {
            tenant_id: Some(caller.tenant.scope.id),
            action,
            resource_type: "api_credential",
            resource_id: id.to_string(),
            metadata,
        },
    )
    .await?;
    Ok(())
}

async fn fetch(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<Credential, ApiError> {
    sqlx::query_as::<_, Credential>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_credentials WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ApiError::not_found("api credential"))
}

async fn list(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Act::Administer)?;
    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    let rows: Vec<Credential> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_credentials ORDER BY service, id LIMIT 500"
    )))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(json!({ "data": rows })))
}

async fn show(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Credential>, ApiError> {
    caller.require(Act::Administer)?;
    let id = parse_id(&id)?;
    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    let row = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(row))
}

async fn create(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Act::Administer)?;
    let input: NewCredential = parse_body(&body_bytes(body)?)?;
    let service = service(input.service)?;
    let display = v::optional_text("service_display_name", input.service_display_name, 255)?;
    let frequency = v::one_of(
        "sync_frequency",
        input.sync_frequency,
        &["hourly", "daily", "weekly", "manual"],
    )?;
    let secrets = secrets(
        input.credentials,
        input.oauth_access_token,
        input.oauth_refresh_token,
    )?;
    let id = Uuid::new_v4();
    let (sealed, access, refresh) =
        creds::seal(&state.keys, &caller.tenant.scope, id, &secrets).map_err(ApiError::internal)?;
    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    sqlx::query(
        "INSERT INTO api_credentials (id, company_id, service, service_display_name, credentials, oauth_access_token,
             oauth_refresh_token, oauth_token_expires_at, sync_frequency, auto_sync_enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($10, true))",
    )
    .bind(id)
    .bind(input.company_id)
    .bind(&service)
    .bind(display)
    .bind(sealed)
    .bind(access)
    .bind(refresh)
    .bind(input.oauth_token_expires_at)
    .bind(frequency)
    .bind(input.auto_sync_enabled)
    .execute(&mut *tx)
    .await
    .map_err(|e| {
        let err = db_error(e, "api_credentials", "credential");
        // The (company, service) pair is unique: name the field a client can change.
        // The constraint's name (company_id_service) means nothing to a client: say it.
        if err.code == "already_exists" {
            let mut err = err.with_field("service");
            err.detail = "this company already has a credential for this service".to_owned();
            err
        } else {
            err
        }
    })?;
    audit_act(
        &mut tx,
        &caller,
        "api_credential.created",
        id,
        json!({ "service": service }),
    )
    .await?;
    let row = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

async fn rotate(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Credential>, ApiError> {
    caller.require(Act::Administer)?;
    let id = parse_id(&id)?;
    let input: NewSecrets = parse_body(&body_bytes(body)?)?;
    let secrets = secrets(
        input.credentials,
        input.oauth_access_token,
        input.oauth_refresh_token,
    )?;
    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    fetch(&mut tx, id).await?;
    creds::update_secrets(&mut tx, &state.keys, &caller.tenant.scope, id, &secrets)
        .await
        .map_err(ApiError::internal)?;
    sqlx::query("UPDATE api_credentials SET oauth_token_expires_at = $2 WHERE id = $1")
        .bind(id)
        .bind(input.oauth_token_expires_at)
        .execute(&mut *tx)
        .await?;
    audit_act(&mut tx, &caller, "api_credential.rotated", id, json!({})).await?;
    let row = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(row))
}

async fn deactivate(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Credential>, ApiError> {
    caller.require(Act::Administer)?;
    let id = parse_id(&id)?;
    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    fetch(&mut tx, id).await?;
    sqlx::query("UPDATE api_credentials SET is_active = false WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit_act(
        &mut tx,
        &caller,
        "api_credential.deactivated",
        id,
        json!({}),
    )
    .await?;
    let row = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(row))
}

async fn remove(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Act::Administer)?;
    let id = parse_id(&id)?;
    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    let deleted = sqlx::query("DELETE FROM api_credentials WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found("api credential"));
    }
    audit_act(&mut tx, &caller, "api_credential.deleted", id, json!({})).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
