//! `/api/v1/api-credentials`: integrations' credentials, for admins and owners. Secrets go
//! in sealed ([`crate::credentials`]) and never come back out through the API — responses
//! carry a fingerprint instead.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use uuid::Uuid;

use super::AppState;
use super::columns::ObjectSchema;
use super::context::Caller;
use super::error::ApiError;
use super::extract::{Body, Id};
use super::fields::{Field, Instant, JsonObject, Text};
use super::resource::{Bind, db_error};
use crate::access::Act;
use crate::audit::{self, Entry};
use crate::credentials::{self as creds, COLUMNS, Credential, Secrets};

/// Largest secret object accepted.
const MAX_SECRET_BYTES: usize = 16 * 1024;

/// The integration's name, e.g. `xero`: lower case letters, digits, `_` and `-`, 1 to 50.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceName(String);

impl TryFrom<String> for ServiceName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let ok = (1..=50).contains(&value.len())
            && value
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(value))
        } else {
            Err("must be 1 to 50 of a-z, 0-9, '_' and '-', starting with a letter or digit".into())
        }
    }
}

impl<'de> Deserialize<'de> for ServiceName {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(de)?).map_err(serde::de::Error::custom)
    }
}

impl Field for ServiceName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[a-z0-9][a-z0-9_-]{0,49}$"))
            .into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Text(value.map(|v| v.0))
    }
}

crate::words! {
    /// How often the integration syncs.
    SyncFrequency { Hourly = "hourly", Daily = "daily", Weekly = "weekly", Manual = "manual" }
}

/// An OAuth token: 1 to 8,192 characters.
type Token = Text<8192>;
/// The secret object (API keys, client secrets…), sealed before storage.
type SecretObject = JsonObject<MAX_SECRET_BYTES>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    pub company_id: Uuid,
    pub service: ServiceName,
    #[serde(default)]
    pub service_display_name: Option<Text<255>>,
    pub credentials: SecretObject,
    #[serde(default)]
    pub oauth_access_token: Option<Token>,
    #[serde(default)]
    pub oauth_refresh_token: Option<Token>,
    #[serde(default)]
    pub oauth_token_expires_at: Option<Instant>,
    #[serde(default)]
    pub sync_frequency: Option<SyncFrequency>,
    #[serde(default, deserialize_with = "crate::http::fields::present")]
    pub auto_sync_enabled: Option<bool>,
}

impl utoipa::PartialSchema for NewCredential {
    fn schema() -> RefOr<Schema> {
        ObjectSchema::new("NewCredential", true)
            .property::<Uuid>("company_id", false, true, "")
            .property::<ServiceName>(
                "service",
                false,
                true,
                "The integration, e.g. `xero`, `quickbooks`, `netsuite`; one per company.",
            )
            .property::<Text<255>>("service_display_name", true, false, "")
            .property::<SecretObject>(
                "credentials",
                false,
                true,
                "The secret: a JSON object (API keys, client secrets…). Sealed before storage.",
            )
            .property::<Token>("oauth_access_token", true, false, "")
            .property::<Token>("oauth_refresh_token", true, false, "")
            .property::<Instant>("oauth_token_expires_at", true, false, "")
            .property::<SyncFrequency>("sync_frequency", true, false, "")
            .property::<bool>("auto_sync_enabled", false, false, "Default true.")
            .build()
    }
}
impl utoipa::ToSchema for NewCredential {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSecrets {
    pub credentials: SecretObject,
    #[serde(default)]
    pub oauth_access_token: Option<Token>,
    #[serde(default)]
    pub oauth_refresh_token: Option<Token>,
    #[serde(default)]
    pub oauth_token_expires_at: Option<Instant>,
}

impl utoipa::PartialSchema for NewSecrets {
    fn schema() -> RefOr<Schema> {
        ObjectSchema::new("NewSecrets", true)
            .property::<SecretObject>("credentials", false, true, "The replacement secret object.")
            .property::<Token>("oauth_access_token", true, false, "")
            .property::<Token>("oauth_refresh_token", true, false, "")
            .property::<Instant>("oauth_token_expires_at", true, false, "")
            .build()
    }
}
impl utoipa::ToSchema for NewSecrets {}

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api-credentials", get(list).post(create))
        .route("/api-credentials/{id}", get(show).delete(remove))
        .route("/api-credentials/{id}/rotate", post(rotate))
        .route("/api-credentials/{id}/deactivate", post(deactivate))
}

fn secrets(credentials: SecretObject, access: Option<Token>, refresh: Option<Token>) -> Secrets {
    Secrets {
        credentials: credentials.into_value(),
        oauth_access_token: access.map(Text::into_string),
        oauth_refresh_token: refresh.map(Text::into_string),
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

async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Act::Administer)?;
    let mut tx = state.begin(&caller).await?;
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
    caller: Caller,
    Id(id): Id,
) -> Result<Json<Credential>, ApiError> {
    caller.require(Act::Administer)?;
    let mut tx = state.begin(&caller).await?;
    let row = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(row))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(input): Body<NewCredential>,
) -> Result<Response, ApiError> {
    caller.require(Act::Administer)?;
    let service = input.service.0;
    let display = input.service_display_name.map(Text::into_string);
    let frequency = input.sync_frequency.map(SyncFrequency::as_str);
    let secrets = secrets(
        input.credentials,
        input.oauth_access_token,
        input.oauth_refresh_token,
    );
    let id = Uuid::new_v4();
    let (sealed, access, refresh) =
        creds::seal(&state.keys, &caller.tenant.scope, id, &secrets).map_err(ApiError::internal)?;
    let mut tx = state.begin(&caller).await?;
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
    .bind(input.oauth_token_expires_at.map(|at| at.0))
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
    caller: Caller,
    Id(id): Id,
    Body(input): Body<NewSecrets>,
) -> Result<Json<Credential>, ApiError> {
    caller.require(Act::Administer)?;
    let secrets = secrets(
        input.credentials,
        input.oauth_access_token,
        input.oauth_refresh_token,
    );
    let mut tx = state.begin(&caller).await?;
    fetch(&mut tx, id).await?;
    creds::update_secrets(&mut tx, &state.keys, &caller.tenant.scope, id, &secrets)
        .await
        .map_err(ApiError::internal)?;
    sqlx::query("UPDATE api_credentials SET oauth_token_expires_at = $2 WHERE id = $1")
        .bind(id)
        .bind(input.oauth_token_expires_at.map(|at| at.0))
        .execute(&mut *tx)
        .await?;
    audit_act(&mut tx, &caller, "api_credential.rotated", id, json!({})).await?;
    let row = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(row))
}

async fn deactivate(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<Json<Credential>, ApiError> {
    caller.require(Act::Administer)?;
    let mut tx = state.begin(&caller).await?;
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
    caller: Caller,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    caller.require(Act::Administer)?;
    let mut tx = state.begin(&caller).await?;
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
