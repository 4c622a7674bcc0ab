//! Connection recycling: a pooled connection whose PostgreSQL backend has grown past a memory
//! budget is closed when it comes back to the pool, and the pool opens a fresh one.
//!
//! Why: a backend keeps catalog and relation cache for every schema it has touched and frees
//! none of it while it lives (~40 KiB per tenant schema served, measured by benches/fleet.rs).
//! With one schema per tenant, a pooled connection serving requests spread over 10,000
//! tenants would grow to ~400 MiB, and the service holds `CAPLIQUIFY_DB_MAX_CONNECTIONS` of them. Closing the connection is the only
//! way PostgreSQL gives that memory back.
//!
//! How: sqlx's `after_release` hook runs when a connection returns to the pool, off the
//! request's path. One release in [`CHECK_EVERY`] asks the released backend its size
//! (`public.backend_memory_bytes()`, public migration 0016), so each connection is measured
//! about once per `CHECK_EVERY` of its own uses, and a backend can overshoot the budget by at
//! most what that many requests add. A recycled connection carries nothing into the next
//! one: tenant settings are transaction-local (`db::scope`), so a new backend starts clean.
//!
//! May touch: the pool options and the one function of migration 0016; nothing tenant-scoped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::postgres::PgPoolOptions;

/// One release in this many measures its backend. Measuring costs ~1 ms of the database's
/// time per thousand memory contexts (a backend at the budget has a few thousand); one in
/// 256 keeps that under ~20 µs per request, and bounds the overshoot to 256 requests' growth
/// (~10 MiB when every one of them reaches a tenant the backend has never seen).
pub const CHECK_EVERY: u64 = 256;

/// The budget and what recycling has done, shared by every pool of the process (the metrics
/// endpoint reports the counters).
#[derive(Debug)]
pub struct Recycler {
    budget_bytes: u64,
    releases: AtomicU64,
    checks: AtomicU64,
    recycled: AtomicU64,
    /// Set once the function turned out to be unusable (migration not applied, or an owner
    /// that cannot read the view): recycling then stays off for this process.
    unavailable: AtomicBool,
}

/// What recycling has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecycleStats {
    pub budget_bytes: u64,
    pub checks: u64,
    pub recycled: u64,
    pub available: bool,
}

impl Recycler {
    /// A recycler closing connections over `budget_mib` MiB; `None` when 0 (recycling off).
    pub fn new(budget_mib: u32) -> Option<Arc<Self>> {
        (budget_mib > 0).then(|| {
            Arc::new(Self {
                budget_bytes: u64::from(budget_mib) * 1024 * 1024,
                releases: AtomicU64::new(0),
                checks: AtomicU64::new(0),
                recycled: AtomicU64::new(0),
                unavailable: AtomicBool::new(false),
            })
        })
    }

    pub fn stats(&self) -> RecycleStats {
        RecycleStats {
            budget_bytes: self.budget_bytes,
            checks: self.checks.load(Ordering::Relaxed),
            recycled: self.recycled.load(Ordering::Relaxed),
            available: !self.unavailable.load(Ordering::Relaxed),
        }
    }

    /// `options` with the release hook installed.
    pub fn install(self: &Arc<Self>, options: PgPoolOptions) -> PgPoolOptions {
        let recycler = Arc::clone(self);
        options.after_release(move |conn, _meta| {
            let recycler = Arc::clone(&recycler);
            Box::pin(async move {
                if recycler.unavailable.load(Ordering::Relaxed)
                    || recycler.releases.fetch_add(1, Ordering::Relaxed) % CHECK_EVERY
                        != CHECK_EVERY - 1
                {
                    return Ok(true);
                }
                recycler.checks.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("db_backend_memory_checks_total").increment(1);
                match backend_memory(conn).await {
                    Ok(bytes) if bytes > recycler.budget_bytes => {
                        recycler.recycled.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("db_connections_recycled_total").increment(1);
                        tracing::debug!(
                            backend_bytes = bytes,
                            budget_bytes = recycler.budget_bytes,
                            "closing a pooled connection whose backend outgrew the memory budget"
                        );
                        Ok(false)
                    }
                    Ok(_) => Ok(true),
                    // No such function (migration 0016 not applied) or an owner that
                    // cannot read the view: the measurement will never work in this process.
                    Err(e) if is_unavailable(&e) => {
                        if !recycler.unavailable.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                error = %e,
                                "connection recycling is off: public.backend_memory_bytes() failed \
                                 (run `capliquify migrate`; its owner needs to read \
                                 pg_backend_memory_contexts: a superuser or pg_read_all_stats)"
                            );
                        }
                        Ok(true)
                    }
                    // Any other database error leaves the connection usable; skip this
                    // measurement. A broken connection: let the pool drop it.
                    Err(e) if e.as_database_error().is_some() => Ok(true),
                    Err(e) => Err(e),
                }
            })
        })
    }
}

/// Undefined function (42883) or insufficient privilege (42501).
fn is_unavailable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "42883" || code == "42501")
}

/// The memory of `conn`'s backend, in bytes (all its memory contexts).
pub async fn backend_memory(conn: &mut sqlx::PgConnection) -> sqlx::Result<u64> {
    let bytes: Option<i64> = sqlx::query_scalar("SELECT public.backend_memory_bytes()")
        .fetch_one(conn)
        .await?;
    Ok(bytes.unwrap_or(0).max(0).unsigned_abs())
}

/// A connection of `pool` that is closed when dropped instead of going back to the pool: for
/// work that reads the catalog of many cold tenant schemas at once (a slice of tenant checks
/// or size measurements). The backend would keep those catalog entries for its whole life:
/// one that measured 5,000 tenants' sizes held 1.2 GiB, and a tenant provisioned on it took
/// two to three times as long (docs/benchmarks.md, ninth scale run). The pool opens a fresh connection when it next needs one; the
/// recycler's sampled check would notice such a backend only after up to [`CHECK_EVERY`]
/// releases.
pub async fn acquire_for_once(
    pool: &sqlx::PgPool,
) -> sqlx::Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
    let mut conn = pool.acquire().await?;
    conn.close_on_drop();
    Ok(conn)
}
