//! API credentials of a tenant's integrations (accounting systems, ERPs): stored only as
//! sealed envelopes ([`crate::crypto`]) bound to tenant, row and field. The HTTP API never
//! returns a secret; [`reveal`] is the one internal way to read one back (for sync jobs),
//! and it is audited. [`rotate_keys`] re-seals a tenant's credentials under the newest key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, Actor, Entry};
use crate::crypto::{Binding, CryptoError, Envelope, Keyring};
use crate::db::{TenantScope, scope};

/// What the API shows of a credential: never a secret, only a fingerprint of it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Credential {
    pub id: Uuid,
    pub company_id: Uuid,
    pub service: String,
    pub service_display_name: Option<String>,
    pub is_active: bool,
    pub has_oauth_tokens: bool,
    pub oauth_token_expires_at: Option<DateTime<Utc>>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_sync_status: Option<String>,
    pub last_sync_error: Option<String>,
    pub sync_frequency: Option<String>,
    pub auto_sync_enabled: bool,
    /// `hmac:` and 8 hex digits, keyed (see [`Keyring::fingerprint`]), to tell versions of
    /// the sealed credentials apart.
    pub fingerprint: Option<String>,
    /// The key the secrets are sealed with.
    pub key_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The secret parts, as a sync job needs them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Secrets {
    pub credentials: Value,
    pub oauth_access_token: Option<String>,
    pub oauth_refresh_token: Option<String>,
}

pub(crate) const COLUMNS: &str = "id, company_id, service::text, service_display_name::text, is_active,
    (oauth_access_token IS NOT NULL OR oauth_refresh_token IS NOT NULL) AS has_oauth_tokens,
    oauth_token_expires_at, last_sync_at, last_sync_status::text, last_sync_error, sync_frequency::text,
    auto_sync_enabled, credentials->>'fp' AS fingerprint, credentials->>'kid' AS key_id, created_at, updated_at";

/// The stored form of the `credentials` column: the envelope plus the fingerprint of its
/// plaintext (kept beside it so listing never needs the key).
fn stored(envelope: &Envelope, fp: &str) -> Value {
    let mut value = serde_json::to_value(envelope).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("fp".into(), json!(fp));
    }
    value
}

fn binding<'a>(scope: &TenantScope, row: Uuid, field: &'a str) -> Binding<'a> {
    Binding {
        tenant_id: scope.id,
        row_id: row,
        field,
    }
}

/// Seals `secrets` for row `row` of `scope`: (credentials column, access token, refresh token).
pub fn seal(
    keys: &Keyring,
    scope: &TenantScope,
    row: Uuid,
    secrets: &Secrets,
) -> Result<(Value, Option<String>, Option<String>), CryptoError> {
    let plain = serde_json::to_vec(&secrets.credentials).unwrap_or_default();
    let creds = stored(
        &keys.seal(&plain, binding(scope, row, "credentials"))?,
        &keys.fingerprint(scope.id, &plain),
    );
    let token = |value: &Option<String>, field: &str| -> Result<Option<String>, CryptoError> {
        value
            .as_ref()
            .map(|t| {
                keys.seal(t.as_bytes(), binding(scope, row, field))
                    .map(|e| serde_json::to_string(&e).unwrap_or_default())
            })
            .transpose()
    };
    Ok((
        creds,
        token(&secrets.oauth_access_token, "oauth_access_token")?,
        token(&secrets.oauth_refresh_token, "oauth_refresh_token")?,
    ))
}

/// Opens the three sealed fields of a row.
pub fn open(
    keys: &Keyring,
    scope: &TenantScope,
    row: Uuid,
    creds: &Value,
    access: Option<&str>,
    refresh: Option<&str>,
) -> Result<Secrets, CryptoError> {
    let envelope = Keyring::parse(creds)?;
    let plain = keys.open(&envelope, binding(scope, row, "credentials"))?;
    let credentials = serde_json::from_slice(&plain).map_err(|_| CryptoError::NotAnEnvelope)?;
    let token = |value: Option<&str>, field: &str| -> Result<Option<String>, CryptoError> {
        value
            .map(|t| {
                let envelope: Envelope =
                    serde_json::from_str(t).map_err(|_| CryptoError::NotAnEnvelope)?;
                let plain = keys.open(&envelope, binding(scope, row, field))?;
                String::from_utf8(plain).map_err(|_| CryptoError::NotAnEnvelope)
            })
            .transpose()
    };
    Ok(Secrets {
        credentials,
        oauth_access_token: token(access, "oauth_access_token")?,
        oauth_refresh_token: token(refresh, "oauth_refresh_token")?,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RevealError {
    #[error("no credential {0} in this tenant")]
    NotFound(Uuid),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Reads a credential's secrets back, for sync jobs: the one way out, and audited
/// (`api_credential.read`) in the same transaction.
pub async fn reveal(
    pool: &PgPool,
    keys: &Keyring,
    tenant: &TenantScope,
    id: Uuid,
    actor: &Actor,
    purpose: &str,
) -> Result<Secrets, RevealError> {
    let mut tx = scope::begin(pool, tenant).await?;
    let row: Option<(Value, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT credentials, oauth_access_token, oauth_refresh_token FROM api_credentials WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let (creds, access, refresh) = row.ok_or(RevealError::NotFound(id))?;
    let secrets = open(
        keys,
        tenant,
        id,
        &creds,
        access.as_deref(),
        refresh.as_deref(),
    )?;
    audit::record_in_tenant(
        &mut tx,
        tenant,
        actor,
        Entry {
            tenant_id: Some(tenant.id),
            action: "api_credential.read",
            resource_type: "api_credential",
            resource_id: id.to_string(),
            metadata: json!({ "purpose": purpose }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(secrets)
}

/// What [`rotate_keys`] did in one tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rotation {
    /// Credentials re-sealed under the sealing key.
    pub resealed: u64,
    /// Switched-off credentials whose envelopes do not open here, left as they are: a
    /// clone's copies (bound to the original tenant, docs/operations.md) or envelopes
    /// under a key no longer configured. They cannot be used either way; re-entering the
    /// secrets (`POST /api/v1/credentials/{id}/rotate`) seals them afresh.
    pub skipped_switched_off: u64,
}

/// One credential's sealed fields, as rotation reads them.
#[derive(sqlx::FromRow)]
struct SealedRow {
    id: Uuid,
    is_active: bool,
    credentials: Value,
    oauth_access_token: Option<String>,
    oauth_refresh_token: Option<String>,
}

/// Re-seals every credential of `tenant` that is not under the sealing key, or still has
/// an unkeyed fingerprint of older versions (`sha256:…`). One transaction per tenant,
/// audited; rows already re-sealed are skipped, so an interrupted
/// rotation resumes where it stopped. A switched-off credential that does not open is
/// skipped and counted rather than failing the tenant: otherwise a clone, whose copies are
/// sealed to the original and switched off on purpose, could never finish a rotation. An
/// active one that does not open still fails (its sync would fail too).
pub async fn rotate_keys(
    pool: &PgPool,
    keys: &Keyring,
    tenant: &TenantScope,
    actor: &Actor,
) -> Result<Rotation, RevealError> {
    let mut tx = scope::begin(pool, tenant).await?;
    let rows: Vec<SealedRow> = sqlx::query_as(
        "SELECT id, is_active, credentials, oauth_access_token, oauth_refresh_token FROM api_credentials
          WHERE credentials->>'kid' IS DISTINCT FROM $1
             OR credentials->>'fp' NOT LIKE 'hmac:%' FOR UPDATE",
    )
    .bind(keys.sealing_key_id())
    .fetch_all(&mut *tx)
    .await?;
    let mut done = Rotation::default();
    for SealedRow {
        id,
        is_active,
        credentials: creds,
        oauth_access_token: access,
        oauth_refresh_token: refresh,
    } in rows
    {
        let secrets = match open(
            keys,
            tenant,
            id,
            &creds,
            access.as_deref(),
            refresh.as_deref(),
        ) {
            Ok(secrets) => secrets,
            Err(_) if !is_active => {
                done.skipped_switched_off += 1;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        update_secrets(&mut tx, keys, tenant, id, &secrets).await?;
        done.resealed += 1;
    }
    if done.resealed > 0 {
        audit::record_in_tenant(
            &mut tx,
            tenant,
            actor,
            Entry {
                tenant_id: Some(tenant.id),
                action: "api_credential.keys_rotated",
                resource_type: "api_credential",
                resource_id: String::new(),
                metadata: json!({ "resealed": done.resealed, "key_id": keys.sealing_key_id(),
                                  "skipped_switched_off": done.skipped_switched_off }),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(done)
}

/// Seals `secrets` for row `id` and stores them.
pub(crate) async fn update_secrets(
    conn: &mut PgConnection,
    keys: &Keyring,
    tenant: &TenantScope,
    id: Uuid,
    secrets: &Secrets,
) -> Result<(), RevealError> {
    let (creds, access, refresh) = seal(keys, tenant, id, secrets)?;
    sqlx::query("UPDATE api_credentials SET credentials = $2, oauth_access_token = $3, oauth_refresh_token = $4 WHERE id = $1")
        .bind(id)
        .bind(creds)
        .bind(access)
        .bind(refresh)
        .execute(conn)
        .await?;
    Ok(())
}
