//! Sign-ups as they reach the service: one tenant at a time through [`Tenancy::provision`]
//! (what the Clerk webhook and the admin API call), arriving a fixed gap apart, with or
//! without the schema pool that `serve` keeps filled (src/tenancy/schema_pool.rs). The
//! tenancy bench's `signup` and the scale runner's sign-up step.

use std::time::{Duration, Instant};

use capliquify::audit::Actor;
use capliquify::tenancy::{NewTenant, Tenancy, Tenant, schema_pool};

/// What one path of sign-ups measured.
pub struct Signups {
    /// Milliseconds of each [`Tenancy::provision`] call, in arrival order.
    pub ms: Vec<f64>,
    /// How many of them took a pooled schema (their audit row says so).
    pub from_pool: usize,
    /// The tenants made, in arrival order.
    pub tenants: Vec<Tenant>,
}

/// `n` sign-ups `gap` apart, each tenant from `new_tenant`. With `pool_size` > 0 the pool is
/// filled first, as `serve` fills it at start, the service's refill loop runs while the
/// sign-ups arrive, and the pool is drained afterwards (untimed), so the fleet holds no
/// unclaimed schemas; with 0 each sign-up makes its schema.
pub async fn run(
    tenancy: &Tenancy,
    n: usize,
    gap: Duration,
    pool_size: u32,
    mut new_tenant: impl FnMut() -> anyhow::Result<NewTenant>,
) -> anyhow::Result<Signups> {
    let pool = tenancy.pool().clone();
    let refill = if pool_size > 0 {
        schema_pool::fill(&pool, pool_size, |_| {}).await?;
        Some(tokio::spawn(schema_pool::refill_loop(
            pool.clone(),
            pool_size,
        )))
    } else {
        None
    };
    let measured = arrivals(tenancy, n, gap, &mut new_tenant).await;
    if let Some(refill) = refill {
        refill.abort();
        // The loop may be inside a batch: wait for the abort before draining.
        let _ = refill.await;
        schema_pool::drain(&pool, |_| {}).await?;
    }
    measured
}

async fn arrivals(
    tenancy: &Tenancy,
    n: usize,
    gap: Duration,
    new_tenant: &mut impl FnMut() -> anyhow::Result<NewTenant>,
) -> anyhow::Result<Signups> {
    let actor = Actor::operator();
    let mut out = Signups {
        ms: Vec::with_capacity(n),
        from_pool: 0,
        tenants: Vec::with_capacity(n),
    };
    for _ in 0..n {
        tokio::time::sleep(gap).await;
        let new = new_tenant()?;
        let started = Instant::now();
        let tenant = tenancy.provision(&new, &actor).await?;
        out.ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let from_pool: bool = sqlx::query_scalar(
            "SELECT coalesce((metadata->>'schema_from_pool')::boolean, false)
               FROM public.audit_logs
              WHERE tenant_id = $1 AND action = 'tenant.provisioned'",
        )
        .bind(tenant.id)
        .fetch_one(tenancy.pool())
        .await?;
        out.from_pool += usize::from(from_pool);
        out.tenants.push(tenant);
    }
    Ok(out)
}

/// Nearest-rank percentile of `xs`, `p` in 0..=1 (NaN when empty).
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (p * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}
