//! The bookkeeping of `capliquify forecasts refresh` (public migration 0013): its runs, and
//! the product batches each run has refreshed, so that an interrupted or failed run is
//! resumed by the next invocation asking for the same thing, skipping what it already did.
//!
//! A run is identified by its options (what it regenerates, and the tenant it is limited
//! to) and its `as_of` date; it is resumable while unfinished and while the period holding
//! its `as_of` is still the current one (the caller decides that: it knows the
//! granularity). A batch is a range of a tenant's active products in id order; it is
//! recorded here after its tenant transaction committed, so a crash between the two redoes
//! that batch, which is harmless (a refresh replaces the products' previous forecasts).
//! Only one refresh runs at a time (a session-level advisory lock).

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use uuid::Uuid;

/// The advisory lock's key text (hashed by `hashtextextended`).
const LOCK: &str = "capliquify:forecasts-refresh";

/// A run being worked on.
#[derive(Debug, Clone)]
pub struct RefreshRun {
    pub id: Uuid,
    pub as_of: NaiveDate,
    pub started_at: DateTime<Utc>,
    /// Whether it was started by an earlier invocation.
    pub resumed: bool,
}

/// The one-refresh-at-a-time lock: held by a connection of its own until released (or until
/// the process ends and PostgreSQL closes the session).
pub struct RefreshLock(PoolConnection<sqlx::Postgres>);

/// Takes the lock, or `None` when another refresh holds it.
pub async fn lock(pool: &PgPool) -> sqlx::Result<Option<RefreshLock>> {
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(LOCK)
        .fetch_one(&mut *conn)
        .await?;
    Ok(locked.then_some(RefreshLock(conn)))
}

impl RefreshLock {
    pub async fn release(mut self) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(LOCK)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }
}

/// The newest unfinished run with exactly `options` for which `resumable(as_of)` holds,
/// unless `fresh`; else a new run as of `as_of`.
pub async fn open(
    pool: &PgPool,
    options: &serde_json::Value,
    as_of: NaiveDate,
    fresh: bool,
    resumable: impl Fn(NaiveDate) -> bool,
) -> sqlx::Result<RefreshRun> {
    if !fresh {
        let open: Option<(Uuid, NaiveDate, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, as_of, started_at FROM public.forecast_refresh_runs
              WHERE finished_at IS NULL AND options = $1
              ORDER BY started_at DESC LIMIT 1",
        )
        .bind(options)
        .fetch_optional(pool)
        .await?;
        if let Some((id, as_of, started_at)) = open
            && resumable(as_of)
        {
            return Ok(RefreshRun {
                id,
                as_of,
                started_at,
                resumed: true,
            });
        }
    }
    let (id, started_at): (Uuid, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO public.forecast_refresh_runs (options, as_of) VALUES ($1, $2)
         RETURNING id, started_at",
    )
    .bind(options)
    .bind(as_of)
    .fetch_one(pool)
    .await?;
    Ok(RefreshRun {
        id,
        as_of,
        started_at,
        resumed: false,
    })
}

/// The product ranges (first, last; both included) of `tenant` that `run` has refreshed.
pub async fn done_ranges(
    pool: &PgPool,
    run: Uuid,
    tenant: Uuid,
) -> sqlx::Result<Vec<(Uuid, Uuid)>> {
    sqlx::query_as(
        "SELECT first_product, last_product FROM public.forecast_refresh_batches
          WHERE run_id = $1 AND tenant_id = $2",
    )
    .bind(run)
    .bind(tenant)
    .fetch_all(pool)
    .await
}

/// Records that `run` refreshed `products` products of `tenant`, `first` to `last`.
pub async fn record_batch(
    pool: &PgPool,
    run: Uuid,
    tenant: Uuid,
    first: Uuid,
    last: Uuid,
    products: usize,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO public.forecast_refresh_batches
                (run_id, tenant_id, first_product, last_product, products)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (run_id, tenant_id, first_product) DO NOTHING",
    )
    .bind(run)
    .bind(tenant)
    .bind(first)
    .bind(last)
    .bind(i32::try_from(products).unwrap_or(i32::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks `run` finished: nothing is left to resume.
pub async fn finish(pool: &PgPool, run: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE public.forecast_refresh_runs SET finished_at = now() WHERE id = $1")
        .bind(run)
        .execute(pool)
        .await?;
    Ok(())
}
