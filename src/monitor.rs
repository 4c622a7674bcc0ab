//! The guide's monitoring queries: the largest tenant schemas and the tenants with their
//! user counts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::billing::{SubscriptionStatus, Tier};

/// Size of one tenant schema.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SchemaSize {
    pub schema_name: String,
    /// The owning tenant's slug; `None` for a schema without a registry row (an orphan).
    pub slug: Option<String>,
    pub table_count: i64,
    pub total_bytes: i64,
    pub size: String,
}

/// The `limit` largest tenant schemas. Same figures as the guide's query, read from
/// `pg_class` instead of `information_schema.tables` (which checks privileges row by row
/// and is slow with thousands of schemas).
pub async fn sizes(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<SchemaSize>> {
    sqlx::query_as(
        "SELECT n.nspname::text AS schema_name, t.slug::text AS slug,
                count(c.oid) AS table_count,
                coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint AS total_bytes,
                pg_size_pretty(coalesce(sum(pg_total_relation_size(c.oid)), 0)) AS size
           FROM pg_namespace n
           LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
           LEFT JOIN public.tenants t ON t.schema_name = n.nspname
          WHERE n.nspname LIKE 'tenant\\_%'
          GROUP BY n.nspname, t.slug
          ORDER BY total_bytes DESC, n.nspname
          LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A live tenant with its user count (the guide's "Active Tenant Queries").
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TenantActivity {
    pub slug: String,
    pub name: String,
    pub subscription_tier: Tier,
    pub subscription_status: SubscriptionStatus,
    pub user_count: i64,
    pub max_users: Option<i32>,
    pub created_at: DateTime<Utc>,
}

pub async fn tenants(pool: &PgPool) -> sqlx::Result<Vec<TenantActivity>> {
    sqlx::query_as(
        "SELECT t.slug::text, t.name::text, t.subscription_tier, t.subscription_status,
                count(u.id) AS user_count, t.max_users, t.created_at
           FROM public.tenants t
           LEFT JOIN public.users u ON u.tenant_id = t.id AND u.removed_at IS NULL
          WHERE t.deleted_at IS NULL
          GROUP BY t.id
          ORDER BY t.created_at DESC",
    )
    .fetch_all(pool)
    .await
}
