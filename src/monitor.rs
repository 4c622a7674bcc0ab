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

/// Schemas measured again for every one shown: the candidates are the `limit × 3` (at
/// least 30) largest recorded sizes.
const CANDIDATES_PER_SHOWN: i64 = 3;
const MIN_CANDIDATES: i64 = 30;

/// Tenants [`measure_slice`] measures at a time: serve measures one slice a minute, and
/// `monitor sizes` one before it ranks when nobody else is measuring
/// ([`SizeCoverage::kept_current`]).
pub const SIZE_SLICE: u32 = 100;
/// Sizes count as kept current while the newest measurement is younger than this: serve
/// measures a slice every minute.
pub const KEPT_WITHIN: Duration = Duration::from_secs(120);
/// Tenants measured per transaction by [`measure_all`].
const FULL_SIZE_SLICE: u32 = 500;

/// The `limit` largest tenant schemas. Same figures as the guide's query (tables with their
/// indexes and TOAST, `pg_total_relation_size`).
///
/// Ranking every schema by what the catalog knows reads all of `pg_class` (~560,000 rows at
/// 10,000 tenants): 5-8× its time at 100 tenants (issue 16). Each tenant's size is instead
/// measured a slice at a time ([`measure_slice`]: serve measures [`SIZE_SLICE`] a minute)
/// and kept in `public.tenant_sizes` (public migration 0021); the ranking reads the `limit ×
/// 3` (at least 30) largest recorded sizes through an index, and measures those schemas
/// again, so every figure shown is exact and current. A tenant that grew past them since it
/// was last measured is missed until its next measurement; [`coverage`] says how old the
/// oldest is. Only registered tenants are ranked: a schema without a registry row is
/// `doctor`'s (`no_orphan_schemas`).
///
/// In Citus mode the coordinator's tables are empty shells: the distributed tenant schemas
/// are measured by Citus (`citus_shards.shard_size`, one round trip per worker, read through
/// `public.citus_schema_shards()` (public migration 0022) so that the console and the admin
/// API, as the service's login, see the sizes too), and a schema not distributed yet by its
/// tables here.
pub async fn sizes(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<SchemaSize>> {
    if crate::db::citus::is_on(pool).await? {
        return citus_sizes(pool, limit).await;
    }
    sqlx::query_as(
        "WITH candidates AS (
             SELECT t.slug::text AS slug, t.schema_name::text AS schema_name
               FROM public.tenant_sizes s
               JOIN public.tenants t ON t.id = s.tenant_id
              WHERE t.deleted_at IS NULL
              ORDER BY s.total_bytes DESC
              LIMIT greatest($1 * $2, $3)
         )
         SELECT c.schema_name, c.slug, m.table_count::bigint AS table_count,
                m.total_bytes, pg_size_pretty(m.total_bytes) AS size
           FROM candidates c
          CROSS JOIN LATERAL public.tenant_schema_size(c.schema_name) m
          ORDER BY m.total_bytes DESC, c.schema_name
          LIMIT $1",
    )
    .bind(limit)
    .bind(CANDIDATES_PER_SHOWN)
    .bind(MIN_CANDIDATES)
    .fetch_all(pool)
    .await
}

/// How much of the fleet [`sizes`] ranks: the live tenants of this cluster, how many have
/// never been measured, when the least recently measured one was, and whether one was
/// measured within [`KEPT_WITHIN`] (by the database's clock, which wrote `measured_at`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SizeCoverage {
    pub tenants: i64,
    pub never_measured: i64,
    pub oldest_measurement: Option<DateTime<Utc>>,
    pub measured_recently: bool,
}

impl SizeCoverage {
    /// Whether someone keeps the recorded sizes current — every live tenant measured, and
    /// one measured within [`KEPT_WITHIN`] (serve measures a slice a minute) — so that a
    /// reader need not measure a slice itself. At 10,000 tenants a slice of the least
    /// recently measured opens files nobody touched for an hour and costs several times
    /// what it costs at 100 (docs/benchmarks.md), for 1 % of the fleet.
    pub fn kept_current(&self) -> bool {
        self.never_measured == 0 && self.measured_recently
    }
}

/// See [`SizeCoverage`].
pub async fn coverage(pool: &PgPool) -> sqlx::Result<SizeCoverage> {
    sqlx::query_as(
        "SELECT count(*) AS tenants, count(*) FILTER (WHERE s.tenant_id IS NULL) AS never_measured,
                min(s.measured_at) AS oldest_measurement,
                coalesce(max(s.measured_at) > now() - make_interval(secs => $1), false)
                    AS measured_recently
           FROM public.tenants t
           LEFT JOIN public.tenant_sizes s ON s.tenant_id = t.id
          WHERE t.deleted_at IS NULL AND t.cluster = 'home' AND t.moving_to IS NULL",
    )
    .bind(KEPT_WITHIN.as_secs_f64())
    .fetch_one(pool)
    .await
}

/// Measures the `n` least recently measured tenants (never measured first) in one
/// transaction and records their sizes; how many it measured. Nothing to do in Citus mode,
/// where [`sizes`] asks Citus. On a connection closed afterwards: measuring opens every
/// relation of `n` cold schemas, whose entries a pooled backend would keep
/// ([`crate::db::recycle::acquire_for_once`]).
pub async fn measure_slice(pool: &PgPool, n: u32) -> sqlx::Result<u64> {
    if n == 0 || crate::db::citus::is_on(pool).await? {
        return Ok(0);
    }
    let mut conn = crate::db::recycle::acquire_for_once(pool).await?;
    let done: i32 = sqlx::query_scalar("SELECT public.measure_tenant_slice($1)")
        .bind(i32::try_from(n).unwrap_or(i32::MAX))
        .fetch_one(&mut *conn)
        .await?;
    Ok(u64::try_from(done).unwrap_or(0))
}

/// Measures every live tenant now, a slice at a time, calling `progress(done, total)`.
pub async fn measure_all(pool: &PgPool, mut progress: impl FnMut(u64, u64)) -> sqlx::Result<u64> {
    let total = u64::try_from(coverage(pool).await?.tenants).unwrap_or(0);
    let mut done = 0;
    progress(0, total);
    while done < total {
        let n = measure_slice(pool, FULL_SIZE_SLICE).await?;
        if n == 0 {
            break;
        }
        done += n;
        progress(done.min(total), total);
    }
    Ok(done)
}

/// serve's background measurement: one slice of [`SIZE_SLICE`] tenants a minute, so the
/// console's and the admin API's largest tenants stay current without anyone measuring.
/// While some tenants were never measured (the first start after public migration 0021, or
/// a burst of sign-ups) it catches up a slice a second, so the ranking covers the fleet in
/// minutes rather than in one minute per hundred tenants.
pub async fn measure_loop(pool: PgPool) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        loop {
            match measure_slice(&pool, SIZE_SLICE).await {
                Ok(n) if n == u64::from(SIZE_SLICE) => {}
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "measuring a slice of tenants' sizes failed");
                    break;
                }
            }
            match coverage(&pool).await {
                Ok(c) if c.never_measured > 0 => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                _ => break,
            }
        }
    }
}

async fn citus_sizes(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<SchemaSize>> {
    sqlx::query_as(
        "WITH shards AS (
             SELECT s.table_name AS rel, sum(s.shard_size)::bigint AS bytes
               FROM public.citus_schema_shards() s
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
    // The page's registry rows (what fleet::query needs to reach each schema) and their
    // member counts, in one round trip.
    let mut page_rows: Vec<(registry::Tenant, i64)> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {}, (SELECT count(*) FROM public.users u
                      WHERE u.tenant_id = t.id AND u.removed_at IS NULL) AS user_count
           FROM public.tenants t
          WHERE t.deleted_at IS NULL
            AND ($2::timestamptz IS NULL OR (t.created_at, t.slug) < ($2, $3))
          ORDER BY t.created_at DESC, t.slug DESC
          LIMIT $1",
        registry::TENANT_COLUMNS
    )))
    .bind(page + 1)
    .bind(at)
    .bind(slug)
    .try_map(|row: sqlx::postgres::PgRow| {
        use sqlx::{FromRow as _, Row as _};
        Ok((
            registry::Tenant::from_row(&row)?,
            row.try_get("user_count")?,
        ))
    })
    .fetch_all(home)
    .await?;
    let next = if page_rows.len() as i64 > page {
        page_rows.truncate(page as usize);
        page_rows
            .last()
            .map(|(t, _)| census::After::Newest(t.created_at, t.slug.clone()).encode())
    } else {
        None
    };
    let mut rows: Vec<TenantActivity> = page_rows
        .iter()
        .map(|(t, users)| TenantActivity {
            slug: t.slug.clone(),
            name: t.name.clone(),
            subscription_tier: t.subscription_tier,
            subscription_status: t.subscription_status,
            user_count: *users,
            max_users: t.max_users,
            entity_count: None,
            max_entities: t.max_entities,
            created_at: t.created_at,
        })
        .collect();
    let live: Vec<registry::Tenant> = page_rows.into_iter().map(|(t, _)| t).collect();
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
        "SELECT m.total_bytes, pg_size_pretty(m.total_bytes)
           FROM public.tenant_schema_size($1) m",
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
