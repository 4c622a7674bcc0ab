//! Reading the tenant registry (`public.tenants`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::TenancyError;
use super::ident::{SchemaName, TenantSlug};
use super::suspension::SuspendedBy;
use crate::billing::{SubscriptionStatus, Tier};
use crate::db::{ClusterName, TenantScope};

/// One row of `public.tenants`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub schema_name: String,
    pub clerk_organization_id: String,
    pub subscription_tier: Tier,
    pub subscription_status: SubscriptionStatus,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub max_users: Option<i32>,
    pub max_entities: Option<i32>,
    pub features: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub status_before_suspension: Option<SubscriptionStatus>,
    /// Who suspended it (operator, lifecycle job or billing); `None` unless suspended.
    pub suspended_by: Option<SuspendedBy>,
    pub schema_version: Option<i64>,
    /// The cluster holding the schema (`home` unless moved).
    pub cluster: String,
    /// Set while the tenant is being moved to this cluster: its data is read-only.
    pub moving_to: Option<String>,
}

/// Where a tenant stands in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    /// Usable (trial, active, past due or cancelled: billing decides what it may do).
    Live,
    /// Switched off by an operator or by billing; data kept.
    Suspended,
    /// Soft-deleted: unusable, data kept until purged.
    Deleted,
}

impl TenantState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }
}

impl Tenant {
    pub fn state(&self) -> TenantState {
        if self.deleted_at.is_some() {
            TenantState::Deleted
        } else if self.subscription_status == SubscriptionStatus::Suspended {
            TenantState::Suspended
        } else {
            TenantState::Live
        }
    }

    /// The typed scope for tenant work. Registry rows are written through the same parsers
    /// and guarded by CHECK constraints, so a failure here means the row was edited by hand.
    pub fn scope(&self) -> Result<TenantScope, TenancyError> {
        Ok(TenantScope {
            id: self.id,
            slug: TenantSlug::parse(&self.slug)?,
            schema: SchemaName::parse(&self.schema_name)?,
            cluster: ClusterName::parse(&self.cluster)?,
        })
    }
}

pub(crate) const TENANT_COLUMNS: &str = "id, slug, name, schema_name, clerk_organization_id, \
     subscription_tier, subscription_status, trial_ends_at, max_users, max_entities, features, \
     created_at, updated_at, deleted_at, status_before_suspension, suspended_by, schema_version, cluster, moving_to";

/// The tenant with `slug`, deleted or not.
pub async fn find(pool: &PgPool, slug: &str) -> Result<Tenant, TenancyError> {
    let mut conn = pool.acquire().await?;
    fetch(&mut conn, slug, false).await
}

/// The tenant with `slug`, locked `FOR UPDATE` when `lock` (use inside the act's transaction).
pub(crate) async fn fetch(
    conn: &mut PgConnection,
    slug: &str,
    lock: bool,
) -> Result<Tenant, TenancyError> {
    let sql = if lock {
        sqlx::AssertSqlSafe(format!(
            "SELECT {TENANT_COLUMNS} FROM public.tenants WHERE slug = $1 FOR UPDATE"
        ))
    } else {
        sqlx::AssertSqlSafe(format!(
            "SELECT {TENANT_COLUMNS} FROM public.tenants WHERE slug = $1"
        ))
    };
    sqlx::query_as::<_, Tenant>(sql)
        .bind(slug)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| TenancyError::UnknownTenant(slug.to_owned()))
}

/// All tenants, newest first; soft-deleted ones only when `include_deleted`.
pub async fn list(pool: &PgPool, include_deleted: bool) -> Result<Vec<Tenant>, TenancyError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {TENANT_COLUMNS} FROM public.tenants
          WHERE $1 OR deleted_at IS NULL
          ORDER BY created_at DESC, slug"
    ));
    Ok(sqlx::query_as::<_, Tenant>(sql)
        .bind(include_deleted)
        .fetch_all(pool)
        .await?)
}
