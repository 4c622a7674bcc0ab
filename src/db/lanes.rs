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

/// How many lanes `serve` opens (`CAPLIQUIFY_DB_TENANT_LANES`): a number, or `auto`, which
/// counts the home cluster's tenants at start ([`auto_lanes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneCount {
    Fixed(u32),
    Auto,
}

/// The most lanes a number may ask for.
pub const MAX_LANES: u32 = 256;

impl std::str::FromStr for LaneCount {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        match s.parse::<u32>() {
            Ok(n) if (1..=MAX_LANES).contains(&n) => Ok(Self::Fixed(n)),
            _ => Err(format!(
                "{s:?} is not a lane count: give 1 to {MAX_LANES} (1 = off), or auto"
            )),
        }
    }
}

impl std::fmt::Display for LaneCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

/// Tenants one lane's backend can keep cached within a memory budget of `budget_mib`
/// (`CAPLIQUIFY_DB_BACKEND_MEMORY_MB`; 0, no recycling, counts as the default 48).
///
/// Measured at 10,000 tenants (docs/benchmarks.md, the scale runner's fourth and sixth
/// runs): a lane's backend holds ~16 MiB of its own and ~43 KiB per tenant it serves
/// (16 lanes: 42–44 MiB; 24 lanes: 32–37 MiB). 64 KiB a tenant leaves room for tenants
/// with more catalog than the benchmark's: 512 tenants a lane at 48 MiB.
pub fn tenants_per_lane(budget_mib: u32) -> u64 {
    let budget = if budget_mib == 0 { 48 } else { budget_mib };
    (u64::from(budget.saturating_sub(16)) * 1024 / 64).max(100)
}

/// `auto`'s lanes for `tenants` tenants on the home cluster: (wanted, opened). One lane per
/// [`tenants_per_lane`], at least 1 (off); opened is at most `max_connections`, since every
/// lane needs a connection of its own (see [`Lanes::new`]).
pub fn auto_lanes(tenants: u64, budget_mib: u32, max_connections: u32) -> (u32, u32) {
    let wanted = tenants
        .div_ceil(tenants_per_lane(budget_mib))
        .clamp(1, u64::from(MAX_LANES)) as u32;
    (wanted, wanted.min(max_connections.max(1)))
}

/// The lane count `setting` means on `home` now: `auto` counts the registry's live tenants
/// on the home cluster (logged, with a warning when `max_connections` caps it).
pub async fn resolve(
    setting: LaneCount,
    home: &PgPool,
    budget_mib: u32,
    max_connections: u32,
) -> sqlx::Result<u32> {
    if let LaneCount::Fixed(n) = setting {
        return Ok(n);
    }
    let tenants: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.tenants WHERE cluster = 'home' AND deleted_at IS NULL",
    )
    .fetch_one(home)
    .await?;
    let tenants = u64::try_from(tenants).unwrap_or(0);
    let (wanted, opened) = auto_lanes(tenants, budget_mib, max_connections);
    if opened < wanted {
        tracing::warn!(
            tenants,
            wanted,
            opened,
            "tenant lanes (auto): {tenants} tenants want {wanted} lanes, but CAPLIQUIFY_DB_MAX_CONNECTIONS ({max_connections}) caps them at {opened}; raise it to {wanted} so each lane has a connection"
        );
    } else {
        tracing::info!(tenants, lanes = opened, "tenant lanes (auto)");
    }
    Ok(opened)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_counts_parse_as_numbers_or_auto() {
        assert_eq!("auto".parse(), Ok(LaneCount::Auto));
        assert_eq!("AUTO".parse(), Ok(LaneCount::Auto));
        assert_eq!("1".parse(), Ok(LaneCount::Fixed(1)));
        assert_eq!("256".parse(), Ok(LaneCount::Fixed(256)));
        for bad in ["0", "257", "-1", "", "four", "4.5"] {
            let err = bad.parse::<LaneCount>().unwrap_err();
            assert!(
                err.contains("1 to 256") && err.contains("auto"),
                "{bad}: {err}"
            );
        }
        assert_eq!(LaneCount::Auto.to_string(), "auto");
        assert_eq!(LaneCount::Fixed(24).to_string(), "24");
    }

    #[test]
    fn auto_gives_a_lane_per_share_of_the_fleet_within_the_connections() {
        // 48 MiB: (48 - 16) MiB at 64 KiB a tenant.
        assert_eq!(tenants_per_lane(48), 512);
        assert_eq!(
            tenants_per_lane(0),
            512,
            "no recycling counts as the default budget"
        );
        assert_eq!(tenants_per_lane(96), 1280);
        assert_eq!(
            tenants_per_lane(16),
            100,
            "a tiny budget still serves 100 a lane"
        );
        assert_eq!(auto_lanes(0, 48, 10), (1, 1), "an empty fleet: off");
        assert_eq!(auto_lanes(512, 48, 10), (1, 1));
        assert_eq!(auto_lanes(513, 48, 10), (2, 2));
        // 10,000 tenants: 20 lanes, as measured (16 lanes ran at 42–44 MiB, 24 at 34).
        assert_eq!(auto_lanes(10_000, 48, 24), (20, 20));
        assert_eq!(
            auto_lanes(10_000, 48, 10),
            (20, 10),
            "capped by the connections"
        );
        assert_eq!(auto_lanes(10_000_000, 48, 1_000), (256, 256));
    }
}
