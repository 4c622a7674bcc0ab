//! The guide's monitoring queries, made to work at fleet size: the largest tenant schemas,
//! the tenants with their usage against their limits, and the slowest statements per tenant
//! (attributed by the tenant's database role, not by query text).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use std::collections::HashMap;
use std::time::Duration;

use crate::billing::{SubscriptionStatus, Tier};
use crate::db::Clusters;
use crate::tenancy::{TenancyError, census, fleet, registry};

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

/// Schemas measured exactly for every one shown: the candidates are the `limit × 3` (at
/// least 30) largest by the catalog's page counts.
const CANDIDATES_PER_SHOWN: i64 = 3;
const MIN_CANDIDATES: i64 = 30;

/// The `limit` largest tenant schemas. Same figures as the guide's query (tables with their
/// indexes and TOAST, `pg_total_relation_size`), read from `pg_class` instead of
/// `information_schema.tables` (which checks privileges row by row).
///
/// Measuring a relation opens it (its files and its relcache entry), so measuring every
/// tenant's tables took seconds at a few thousand tenants and grew with the fleet (issue
/// 16: 2.9 s at 2,000 tenants, 20× its time at 100). The schemas are first ranked by the
/// page counts `pg_class` keeps (`relpages`, refreshed by VACUUM, ANALYZE and autovacuum)
/// with no file touched, and only the `limit × 3` (at least 30) largest are measured. A
/// schema that grew a lot since autovacuum last saw it can be missed; `--limit` at or above
/// the number of tenant schemas measures them all.
///
/// In Citus mode the coordinator's tables are empty shells: the distributed tenant schemas
/// are measured by Citus (`citus_shards.shard_size`, one round trip per worker), and a
/// schema not distributed yet by its tables here.
pub async fn sizes(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<SchemaSize>> {
    if crate::db::citus::is_on(pool).await? {
        return citus_sizes(pool, limit).await;
    }
    sqlx::query_as(
        "WITH ranked AS (
             SELECT n.oid AS nsp, n.nspname,
                    coalesce(sum(c.relpages::bigint + coalesce(tc.relpages, 0)), 0) AS pages
               FROM pg_namespace n
               LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'i', 'm')
               LEFT JOIN pg_class tc ON tc.oid = c.reltoastrelid
              WHERE n.nspname LIKE 'tenant\\_%'
                -- (the schema pool's unclaimed schemas are nobody's yet)
                AND NOT EXISTS (SELECT 1 FROM public.tenant_schema_pool p
                                 WHERE p.schema_name = n.nspname)
              GROUP BY n.oid, n.nspname
              ORDER BY pages DESC, n.nspname
              LIMIT greatest($1 * $2, $3)
         )
         SELECT r.nspname::text AS schema_name, t.slug::text AS slug,
                count(c.oid) AS table_count,
                coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint AS total_bytes,
                pg_size_pretty(coalesce(sum(pg_total_relation_size(c.oid)), 0)) AS size
           FROM ranked r
           LEFT JOIN pg_class c ON c.relnamespace = r.nsp AND c.relkind IN ('r', 'p')
           LEFT JOIN public.tenants t ON t.schema_name = r.nspname
          GROUP BY r.nspname, t.slug
          ORDER BY total_bytes DESC, r.nspname
          LIMIT $1",
    )
    .bind(limit)
    .bind(CANDIDATES_PER_SHOWN)
    .bind(MIN_CANDIDATES)
    .fetch_all(pool)
    .await
}

async fn citus_sizes(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<SchemaSize>> {
    sqlx::query_as(
        "WITH shards AS (
             SELECT s.table_name::regclass AS rel, sum(s.shard_size)::bigint AS bytes
               FROM citus_shards s WHERE s.citus_table_type = 'schema'
              GROUP BY s.table_name
         ), measured AS (
             SELECT c.relnamespace AS nsp, count(*) AS tables,
                    sum(coalesce(sh.bytes, pg_total_relation_size(c.oid)))::bigint AS bytes
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname LIKE 'tenant\\_%'
               LEFT JOIN shards sh ON sh.rel = c.oid
              WHERE c.relkind IN ('r', 'p')
              GROUP BY c.relnamespace
         )
         SELECT n.nspname::text AS schema_name, t.slug::text AS slug,
                coalesce(m.tables, 0) AS table_count, coalesce(m.bytes, 0) AS total_bytes,
                pg_size_pretty(coalesce(m.bytes, 0)) AS size
           FROM pg_namespace n
           LEFT JOIN measured m ON m.nsp = n.oid
           LEFT JOIN public.tenants t ON t.schema_name = n.nspname
          WHERE n.nspname LIKE 'tenant\\_%'
          ORDER BY total_bytes DESC, n.nspname
          LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A live tenant with its usage against its plan's limits (the guide's "Active Tenant
/// Queries", plus entities).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TenantActivity {
    pub slug: String,
    pub name: String,
    pub subscription_tier: Tier,
    pub subscription_status: SubscriptionStatus,
    pub user_count: i64,
    pub max_users: Option<i32>,
    /// Companies in the tenant's schema; `None` when it could not be counted (no schema).
    pub entity_count: Option<i64>,
    pub max_entities: Option<i32>,
    pub created_at: DateTime<Utc>,
}

/// One page of live tenants, newest first, with their members (home) and entities counted
/// in each tenant's own schema by [`fleet::query`] — its role, its cluster, a short
/// read-only transaction each, a few tenants at a time. The page walks the registry's
/// (created_at, slug) index from `after` (see [`census::After`]) and only its tenants are
/// counted, so a page costs the same at any fleet size. `limit` 0 is every tenant. Returns
/// the page and the position of the next one, if any.
pub async fn tenants(
    clusters: &Clusters,
    limit: i64,
    after: Option<&census::After>,
) -> Result<(Vec<TenantActivity>, Option<String>), TenancyError> {
    let home = clusters.home();
    let page = if limit <= 0 { i64::MAX - 1 } else { limit };
    let (at, slug) = match after {
        Some(census::After::Newest(at, slug)) => (Some(*at), Some(slug.clone())),
        Some(census::After::Slug(slug)) => (None, Some(slug.clone())),
        None => (None, None),
    };
    let mut rows: Vec<TenantActivity> = sqlx::query_as(
        "SELECT t.slug::text, t.name::text, t.subscription_tier, t.subscription_status,
                (SELECT count(*) FROM public.users u
                  WHERE u.tenant_id = t.id AND u.removed_at IS NULL) AS user_count,
                t.max_users, NULL::bigint AS entity_count, t.max_entities, t.created_at
           FROM public.tenants t
          WHERE t.deleted_at IS NULL
            AND ($2::timestamptz IS NULL OR (t.created_at, t.slug) < ($2, $3))
          ORDER BY t.created_at DESC, t.slug DESC
          LIMIT $1",
    )
    .bind(page + 1)
    .bind(at)
    .bind(slug)
    .fetch_all(home)
    .await?;
    let next = if rows.len() as i64 > page {
        rows.truncate(page as usize);
        rows.last()
            .map(|r| census::After::Newest(r.created_at, r.slug.clone()).encode())
    } else {
        None
    };
    let slugs: Vec<String> = rows.iter().map(|r| r.slug.clone()).collect();
    let live: Vec<registry::Tenant> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM public.tenants WHERE slug = ANY($1)",
        registry::TENANT_COLUMNS
    )))
    .bind(&slugs)
    .fetch_all(home)
    .await?;
    let by_slug = entity_counts(clusters, live).await;
    for row in &mut rows {
        row.entity_count = by_slug.get(&row.slug).copied().flatten();
    }
    Ok((rows, next))
}

/// Companies (entities) of each of `tenants`, by slug, counted in each tenant's own schema
/// by [`fleet::query`]; `None` for a tenant whose schema could not answer.
pub async fn entity_counts(
    clusters: &Clusters,
    tenants: Vec<registry::Tenant>,
) -> HashMap<String, Option<i64>> {
    let counts = fleet::query(
        clusters.clone(),
        tenants,
        "SELECT count(*) AS n FROM companies",
        4,
        Duration::from_secs(30),
    )
    .await;
    counts
        .into_iter()
        .map(|t| {
            let n = t
                .rows
                .first()
                .and_then(|r| r.get("n"))
                .and_then(|n| n.as_i64());
            (t.tenant, n)
        })
        .collect()
}

/// The total size of one schema's tables (with indexes and TOAST), as [`sizes`] measures
/// it, in bytes and written for people; `None` when the schema does not exist.
pub async fn schema_size(pool: &PgPool, schema: &str) -> sqlx::Result<Option<(i64, String)>> {
    sqlx::query_as(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint,
                pg_size_pretty(coalesce(sum(pg_total_relation_size(c.oid)), 0))
           FROM pg_namespace n
           LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
          WHERE n.nspname = $1
          GROUP BY n.oid",
    )
    .bind(schema)
    .fetch_optional(pool)
    .await
}

/// The size of the whole database, in bytes and written for people.
pub async fn database_size(pool: &PgPool) -> sqlx::Result<(i64, String)> {
    sqlx::query_as(
        "SELECT pg_database_size(current_database()),
                pg_size_pretty(pg_database_size(current_database()))",
    )
    .fetch_one(pool)
    .await
}

/// One statement's statistics, attributed to the tenant whose role ran it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SlowQuery {
    pub tenant: String,
    pub queryid: Option<i64>,
    pub query: String,
    pub calls: i64,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
    pub rows: i64,
}

/// The `limit` statements with the most total execution time, of every tenant or of
/// `tenant` (an id). Fails with SQLSTATE 0A000 and a hint when pg_stat_statements is not
/// installed.
pub async fn slow_queries(
    pool: &PgPool,
    tenant: Option<uuid::Uuid>,
    limit: i32,
) -> sqlx::Result<Vec<SlowQuery>> {
    sqlx::query_as(
        "SELECT slug AS tenant, queryid, query, calls, total_ms, mean_ms, max_ms, rows
           FROM public.tenant_query_stats($1, $2)",
    )
    .bind(tenant)
    .bind(limit)
    .fetch_all(pool)
    .await
}
