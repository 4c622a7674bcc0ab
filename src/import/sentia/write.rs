//! The write of a migration: every mapped row upserted by id in the tenant's transaction,
//! an update only where a value differs (so a re-run counts every row unchanged and
//! touches none), credentials sealed for their row, memberships through
//! [`crate::tenancy::members`]; then the money totals summed in the tenant.

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::map::{Cell, Credential, Member, Plan, Row, Rows};
use super::{Checksum, Report, SentiaError, TableReport};
use crate::access::Role;
use crate::credentials;
use crate::crypto::Keyring;
use crate::db::TenantScope;
use crate::tenancy::members;

/// A member row of `public.users`, as the mapping needs it.
#[derive(Debug, Clone)]
pub struct StoredMember {
    pub id: Uuid,
    pub clerk_user_id: String,
    pub email: String,
    pub tenant_id: Uuid,
    pub role: Role,
    pub removed: bool,
}

/// What the tenant (and `public.users`) hold already, read before the mapping.
#[derive(Debug, Default)]
pub struct Existing {
    /// SKU → product id: a SKU keeps its row.
    pub skus: HashMap<String, Uuid>,
    /// Lower-cased company name → id: a company of that name keeps its row.
    pub company_names: HashMap<String, Uuid>,
    pub company_ids: HashSet<Uuid>,
    /// (company, service) → credential id.
    pub credentials: HashMap<(Uuid, String), Uuid>,
    /// Member's Clerk id → their `user_preferences` row.
    pub preferences: HashMap<String, Uuid>,
    /// Lower-cased email → member, any tenant's (an account belongs to one tenant).
    pub members: HashMap<String, StoredMember>,
    /// Clerk user id → tenant.
    pub clerk_tenants: HashMap<String, Uuid>,
}

impl Existing {
    pub async fn load(
        tx: &mut PgConnection,
        home: &PgPool,
        tenant: Uuid,
    ) -> Result<Self, SentiaError> {
        let mut e = Self::default();
        let skus: Vec<(String, Uuid)> = sqlx::query_as("SELECT sku::text, id FROM products")
            .fetch_all(&mut *tx)
            .await?;
        e.skus = skus.into_iter().collect();
        let companies: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT id, name::text FROM companies ORDER BY created_at, id")
                .fetch_all(&mut *tx)
                .await?;
        for (id, name) in companies {
            e.company_ids.insert(id);
            e.company_names
                .entry(name.trim().to_lowercase())
                .or_insert(id);
        }
        let creds: Vec<(Uuid, String, Uuid)> =
            sqlx::query_as("SELECT company_id, service::text, id FROM api_credentials")
                .fetch_all(&mut *tx)
                .await?;
        e.credentials = creds.into_iter().map(|(c, s, id)| ((c, s), id)).collect();
        let preferences: Vec<(String, Uuid)> =
            sqlx::query_as("SELECT user_id::text, id FROM user_preferences")
                .fetch_all(&mut *tx)
                .await?;
        e.preferences = preferences.into_iter().collect();
        // This tenant's members first, so an email also used elsewhere resolves here.
        let users: Vec<(Uuid, String, String, Uuid, Role, bool)> = sqlx::query_as(
            "SELECT id, clerk_user_id::text, email::text, tenant_id, role, removed_at IS NOT NULL
               FROM public.users WHERE email <> ''
              ORDER BY tenant_id = $1 DESC, removed_at IS NULL DESC, created_at",
        )
        .bind(tenant)
        .fetch_all(home)
        .await?;
        for (id, clerk, email, tenant_id, role, removed) in users {
            e.clerk_tenants.insert(clerk.clone(), tenant_id);
            e.members
                .entry(email.trim().to_lowercase())
                .or_insert(StoredMember {
                    id,
                    clerk_user_id: clerk,
                    email,
                    tenant_id,
                    role,
                    removed,
                });
        }
        Ok(e)
    }

    /// Companies the tenant has after the migration.
    pub fn company_count(&self, plan: &Plan) -> u64 {
        self.company_ids.union(&plan.company_ids).count() as u64
    }
}

/// Writes `plan`: tenant rows on `tx`, memberships on `home`. Returns the report with
/// every count and the checksums.
pub async fn write(
    tx: &mut PgConnection,
    home: &mut PgConnection,
    keys: &Keyring,
    scope: &TenantScope,
    plan: Plan,
) -> Result<Report, SentiaError> {
    let mut tables = Vec::new();
    for part in plan.parts {
        let mut report = part.report;
        match part.rows {
            Rows::Table(table, rows) => {
                for row in &rows {
                    count(&mut report, upsert(tx, table, row).await?);
                }
            }
            Rows::Credentials(creds) => {
                for c in &creds {
                    count(&mut report, credential(tx, keys, scope, c).await?);
                }
            }
            Rows::Members(list) => {
                for m in &list {
                    count(&mut report, member(home, scope.id, m).await?);
                }
                if !list.is_empty() {
                    members::refresh_limits(home, scope.id).await?;
                }
            }
        }
        tables.push(report);
    }
    let mut checksums = Vec::new();
    for c in plan.checksums {
        // `table` and `column` are the mapping's constants, never input.
        let target: Decimal = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(sum({}), 0)::numeric FROM {} WHERE id = ANY($1)",
            c.column, c.table
        )))
        .bind(&c.ids)
        .fetch_one(&mut *tx)
        .await?;
        checksums.push(Checksum {
            name: c.name.to_owned(),
            source: c.source,
            not_carried: c.not_carried,
            target,
            agrees: c.source == target + c.not_carried,
        });
    }
    Ok(Report {
        tenant: String::new(),
        status: String::new(),
        tables,
        missing_tables: plan.missing_tables,
        checksums,
    })
}

/// What the write of one row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Inserted,
    Updated,
    Unchanged,
}

fn count(report: &mut TableReport, outcome: Outcome) {
    match outcome {
        Outcome::Inserted => report.inserted += 1,
        Outcome::Updated => report.updated += 1,
        Outcome::Unchanged => report.unchanged += 1,
    }
}

/// `INSERT … ON CONFLICT (id) DO UPDATE … WHERE` some value differs: no row back means
/// the stored row already held these values.
async fn upsert(conn: &mut PgConnection, table: &str, row: &Row) -> sqlx::Result<Outcome> {
    // Table and column names are the mapping's constants.
    let names: Vec<&str> = row.cells.iter().map(|(c, _)| *c).collect();
    let params: Vec<String> = (2..=names.len() + 1).map(|i| format!("${i}")).collect();
    let sets: Vec<String> = names
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    let old: Vec<String> = names.iter().map(|c| format!("t.{c}")).collect();
    let new: Vec<String> = names.iter().map(|c| format!("EXCLUDED.{c}")).collect();
    let sql = format!(
        "INSERT INTO {table} AS t (id, {}) VALUES ($1, {})
         ON CONFLICT (id) DO UPDATE SET {}
         WHERE ({}) IS DISTINCT FROM ({})
         RETURNING (xmax = 0) AS inserted",
        names.join(", "),
        params.join(", "),
        sets.join(", "),
        old.join(", "),
        new.join(", "),
    );
    let mut query = sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(sql)).bind(row.id);
    for (_, cell) in &row.cells {
        query = match cell {
            Cell::Text(v) => query.bind(v.clone()),
            Cell::Int(v) => query.bind(*v),
            Cell::Dec(v) => query.bind(*v),
            Cell::Date(v) => query.bind(*v),
            Cell::Time(v) => query.bind(*v),
            Cell::Bool(v) => query.bind(*v),
            Cell::Uuid(v) => query.bind(*v),
            Cell::Json(v) => query.bind(v.clone()),
        };
    }
    Ok(match query.fetch_optional(conn).await? {
        Some(true) => Outcome::Inserted,
        Some(false) => Outcome::Updated,
        None => Outcome::Unchanged,
    })
}

/// A stored credential, as the comparison needs it.
#[derive(sqlx::FromRow)]
struct StoredCredential {
    credentials: Value,
    oauth_access_token: Option<String>,
    oauth_refresh_token: Option<String>,
    service: String,
    service_display_name: Option<String>,
    oauth_token_expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A credential: unchanged when the stored envelopes open to the same secrets (a fresh
/// seal would differ in every byte, so comparing ciphertexts says nothing). A stored one
/// gets new secrets only: whether it is active and how its syncs went are CapLiquify's now.
async fn credential(
    conn: &mut PgConnection,
    keys: &Keyring,
    scope: &TenantScope,
    c: &Credential,
) -> Result<Outcome, SentiaError> {
    let stored: Option<StoredCredential> = sqlx::query_as(
        "SELECT credentials, oauth_access_token, oauth_refresh_token, service::text,
                service_display_name::text, oauth_token_expires_at
           FROM api_credentials WHERE id = $1",
    )
    .bind(c.id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(s) = &stored {
        let same = credentials::open(
            keys,
            scope,
            c.id,
            &s.credentials,
            s.oauth_access_token.as_deref(),
            s.oauth_refresh_token.as_deref(),
        )
        .is_ok_and(|secrets| secrets == c.secrets);
        if same
            && s.service == c.service
            && s.service_display_name.as_deref() == Some(&c.display_name)
            && s.oauth_token_expires_at == c.token_expires_at
        {
            return Ok(Outcome::Unchanged);
        }
    }
    let (creds, access, refresh) = credentials::seal(keys, scope, c.id, &c.secrets)?;
    sqlx::query(
        "INSERT INTO api_credentials (id, company_id, service, service_display_name, credentials,
                                      oauth_access_token, oauth_refresh_token, oauth_token_expires_at,
                                      is_active, last_sync_at, last_sync_status, last_sync_error,
                                      sync_frequency)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'manual')
         ON CONFLICT (id) DO UPDATE SET service = EXCLUDED.service,
             service_display_name = EXCLUDED.service_display_name, credentials = EXCLUDED.credentials,
             oauth_access_token = EXCLUDED.oauth_access_token,
             oauth_refresh_token = EXCLUDED.oauth_refresh_token,
             oauth_token_expires_at = EXCLUDED.oauth_token_expires_at",
    )
    .bind(c.id)
    .bind(c.company_id)
    .bind(&c.service)
    .bind(&c.display_name)
    .bind(creds)
    .bind(access)
    .bind(refresh)
    .bind(c.token_expires_at)
    .bind(c.state.is_active)
    .bind(c.state.last_sync_at)
    .bind(&c.state.last_sync_status)
    .bind(&c.state.last_sync_error)
    .execute(&mut *conn)
    .await?;
    Ok(if stored.is_some() {
        Outcome::Updated
    } else {
        Outcome::Inserted
    })
}

/// A membership: a new account joins; an existing member gets the role (the profile is
/// Clerk's).
async fn member(conn: &mut PgConnection, tenant: Uuid, m: &Member) -> sqlx::Result<Outcome> {
    match m.existing {
        Some((_, role)) if role == m.role => Ok(Outcome::Unchanged),
        Some((id, _)) => {
            members::set_role(conn, id, m.role).await?;
            Ok(Outcome::Updated)
        }
        None => {
            let profile = members::Profile {
                clerk_user_id: &m.clerk_user_id,
                email: &m.email,
                full_name: m.full_name.as_deref(),
            };
            members::add(conn, tenant, &profile, m.role).await?;
            Ok(Outcome::Inserted)
        }
    }
}
