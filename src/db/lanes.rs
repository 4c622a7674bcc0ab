//! Tenant lanes: connection affinity for tenant transactions.
//!
//! Why: a PostgreSQL backend caches the catalog entries of every tenant schema it has
//! served (~40 KiB each) and frees none of it while it lives. With one pool, requests spread
//! over 10,000 tenants reach every connection, so each backend would hold the whole fleet's
//! cache; the recycler ([`super::recycle`]) bounds that by closing connections, but then
//! nearly every request lands on a backend that has never seen its tenant and loads its
//! catalog first (0.35 of the hot rate at 10,000 tenants, docs/benchmarks.md).
//!
//! How: the service's tenant transactions on the home cluster go to one of `n` small pools
//! (lanes) chosen by the tenant's id, so each backend serves about `1/n` of the fleet and
//! keeps its cache warm within the memory budget. A transaction waits at most
//! [`SPILL_AFTER`] for a connection of its lane; past that (a lane held by one busy tenant,
//! or by long queries) it runs on the shared pool instead, as it would without lanes
//! (counted in `db_lane_spills_total`), so no tenant waits long behind its lane while
//! other connections are free. The recycler stays installed on every lane. The lanes hold
//! `CAPLIQUIFY_DB_MAX_CONNECTIONS` connections between them (at least one each); the shared
//! pool (registry, sign-in, webhooks, console, background jobs, spilled transactions) keeps
//! its own, so the service opens up to twice that many.
//!
//! Written by hand: sqlx's pool has no notion of affinity, and a few lines over its
//! per-pool counters are all this needs.
//!
//! May touch: pools of the home cluster's service role; nothing tenant-scoped is kept here
//! (tenant settings are transaction-local, `db::scope`).

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::PoolConfig;
use super::scope::{TenantScope, begin_bounded};

/// How long a tenant transaction waits for a connection of its own lane before it runs on
/// the shared pool: a few requests' time, so lanes queue briefly under load (keeping their
/// caches) but never hold a request back for long.
pub const SPILL_AFTER: Duration = Duration::from_millis(50);

/// The tenant lanes of one cluster.
#[derive(Debug)]
pub struct Lanes {
    pools: Vec<PgPool>,
}

impl Lanes {
    /// `n` lanes connecting as `home` does, sharing `pools.max_connections` between them;
    /// `None` when `n` is 0 or 1 (every tenant on the shared pool).
    pub fn new(home: &PgPool, n: u32, pools: &PoolConfig) -> Option<Self> {
        if n <= 1 {
            return None;
        }
        let per_lane = (pools.max_connections / n).max(1);
        let options = (*home.connect_options()).clone();
        let pools = (0..n)
            .map(|_| {
                pools
                    .options()
                    .max_connections(per_lane)
                    .connect_lazy_with(options.clone())
            })
            .collect();
        Some(Self { pools })
    }

    /// The lane `tenant` belongs to (by the low bits of its id, which are random in a
    /// UUIDv7).
    pub fn home_lane(&self, tenant: Uuid) -> usize {
        (tenant.as_u128() % self.pools.len() as u128) as usize
    }

    /// Begins `scope`'s transaction as [`begin_bounded`] does, on its lane, or on `shared`
    /// when every connection of the lane is busy and none comes free within
    /// [`SPILL_AFTER`]. A lane that may still open a connection is waited for as a pool
    /// is (opening one can take longer than the spill delay).
    pub async fn begin(
        &self,
        shared: &PgPool,
        scope: &TenantScope,
        timeout: Duration,
    ) -> sqlx::Result<Transaction<'static, Postgres>> {
        let own = &self.pools[self.home_lane(scope.id)];
        let full = own.num_idle() == 0 && own.size() >= own.options().get_max_connections();
        if !full {
            return begin_bounded(own, scope, timeout).await;
        }
        // Dropping `begin_bounded` on the deadline is safe: while it waits for a
        // connection nothing is begun, and a transaction begun as the deadline passes is
        // rolled back when the connection returns to the lane (sqlx's `Transaction`).
        match tokio::time::timeout(SPILL_AFTER, begin_bounded(own, scope, timeout)).await {
            Ok(begun) => begun,
            Err(_) => {
                metrics::counter!("db_lane_spills_total").increment(1);
                begin_bounded(shared, scope, timeout).await
            }
        }
    }

    /// The lane pools, in lane order.
    pub fn pools(&self) -> &[PgPool] {
        &self.pools
    }

    pub async fn close(&self) {
        for pool in &self.pools {
            pool.close().await;
        }
    }
}
