//! Fleet benchmark: requests spread over every tenant of a large fleet against requests over
//! a few hot tenants, with and without connection recycling (src/db/recycle.rs), and the
//! private memory of the service's PostgreSQL backends throughout.
//!
//! Setup: `--tenants` tenants (default 2,000) provisioned through [`Tenancy::provision`],
//! each with one member, one company and 60 products. The service runs in-process on
//! `127.0.0.1:0` with the production router ([`launch`]), an RS256 authenticator reading a
//! `file://` JWKS, the caller cache on (its default), and a pool of `--clients` connections
//! made as `serve` makes it ([`PoolConfig`]).
//!
//! Three runs of `GET /api/v1/products?limit=50`, each on a fresh service (fresh backends),
//! `--clients` reqwest tasks inside this process, `--warmup` seconds (and at least until
//! every tenant of the run has been asked for twice) then a `--duration` window; request
//! `i` goes to tenant `i mod set`:
//!
//! 1. the first `--hot` tenants (default 100), recycling off: the baseline;
//! 2. every tenant, recycling off: what the catalog cache does to memory and speed;
//! 3. every tenant, recycling at `--budget-mb` (default 48, as `serve`);
//! 4. the same with `--lanes` tenant lanes (default 8, or `auto` as serve resolves it;
//!    `CAPLIQUIFY_DB_TENANT_LANES`, src/db/lanes.rs); `--lanes 1` skips it.
//!
//! Reported per run: requests/s and its ratio to the baseline, and the private memory
//! (`Private_Clean + Private_Dirty` of `/proc/<pid>/smaps_rollup`) of the service's backends,
//! sampled every second during the window: the largest backend at any sample, and the mean
//! at the end; plus the connections recycled. Memory needs the server on this machine
//! (the embedded cluster, or a local `DATABASE_URL`) and the right to read its processes'
//! `/proc` (root or the server's user); otherwise it prints `n/a`.
//!
//! Goals (issue 16): run 2 ≥ 0.8× run 1 is not expected without recycling; the largest
//! backend ≤ 64 MiB, at ≥ 0.8× run 1's requests/s, in run 3 or (with lanes) run 4.
//!
//! Run (release profile):
//!
//! ```text
//! cargo bench --bench fleet -- [--tenants N] [--hot N] [--clients N] [--warmup SECS]
//!     [--duration SECS] [--budget-mb MIB] [--lanes N|auto] [--pool N]
//!     [--auth-cache-ms MS]
//! ```
//!
//! The server is `DATABASE_URL` when set (the benchmark creates and drops the database
//! `capliquify_bench_fleet` on it), otherwise a durable embedded cluster under
//! `target/bench-fleet-pg`, stopped at the end if this run started it.

mod support;

use std::sync::Arc;
use std::time::Instant;

use capliquify::audit::Actor;
use capliquify::db::lanes::LaneCount;
use capliquify::db::{connect, roles};
use capliquify::tenancy::migrate;
use sqlx::PgPool;
use support::fleet::{FLEET_SHAPE, Load, fleet_naming, measure, provision_many};
use support::{BenchArgs, BenchServer};

const BENCH_DB: &str = "capliquify_bench_fleet";
/// Concurrent provisioning tasks: enough to overlap commits' fsyncs on two cores.
const PROVISIONERS: usize = 4;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "fleet", bin_name = "cargo bench --bench fleet --")]
/// Requests over a large fleet against a few hot tenants, with and without connection
/// recycling, and the memory of the service's PostgreSQL backends (docs/benchmarks.md).
struct Args {
    /// Tenants in the fleet.
    #[arg(long, value_name = "N", default_value_t = 2000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=100_000))]
    tenants: usize,
    /// Tenants of the baseline run (the first N of the fleet).
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    hot: usize,
    #[command(flatten)]
    load: Load,
}

impl BenchArgs for Args {
    fn check(&self) -> Result<(), String> {
        if self.hot > self.tenants {
            return Err("--hot must not exceed --tenants".into());
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let args: Args = support::args();
    let runtime = tokio::runtime::Runtime::new()?;
    let server = BenchServer::open(BENCH_DB, "bench-fleet-pg")?;
    let result = runtime.block_on(run(&args, &server));
    runtime.block_on(server.drop_database())?;
    server.stop()?;
    result
}

async fn run(args: &Args, server: &BenchServer) -> anyhow::Result<()> {
    server.recreate_database().await?;
    let setup = connect(&server.bench_url, PROVISIONERS as u32).await?;
    migrate::migrate_public(&setup, migrate::tenant_migrations()).await?;
    let password = url::Url::parse(&server.bench_url)?
        .password()
        .map(str::to_owned);
    roles::init(
        &setup,
        roles::DEFAULT_LOGIN,
        password.as_deref(),
        &Actor::operator(),
    )
    .await?;
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&setup)
        .await?;
    server.print_header("fleet", &version);
    println!(
        "  load:     {} tenants ({} hot), {} connections and {} reqwest tasks, {} s warm-up + {} s window per run",
        args.tenants,
        args.hot,
        args.load.clients,
        args.load.clients,
        args.load.warmup,
        args.load.duration
    );

    let started = Instant::now();
    let tenants = provision(args, &setup).await?;
    sqlx::raw_sql("VACUUM ANALYZE").execute(&setup).await?;
    println!("  setup:    {:.1} s", started.elapsed().as_secs_f64());

    let mut runs = Vec::new();
    let mut plans = vec![
        (
            format!("{} hot tenants, no recycling", args.hot),
            args.hot,
            0,
            1,
        ),
        (
            format!("all {} tenants, no recycling", args.tenants),
            args.tenants,
            0,
            1,
        ),
        (
            format!(
                "all {} tenants, recycling at {} MiB",
                args.tenants, args.load.budget_mb
            ),
            args.tenants,
            args.load.budget_mb,
            1,
        ),
    ];
    let lanes = args.load.resolve_lanes(&setup).await?;
    if lanes > 1 {
        plans.push((
            format!(
                "all {} tenants, {} MiB, {lanes} lanes{}",
                args.tenants,
                args.load.budget_mb,
                if args.load.lanes == LaneCount::Auto {
                    " (auto)"
                } else {
                    ""
                }
            ),
            args.tenants,
            args.load.budget_mb,
            lanes,
        ));
    }
    for (name, set, budget, lanes) in plans {
        println!("== {name}");
        let load = args.load;
        runs.push(measure(server, &setup, &tenants[..set], name, budget, lanes, load).await?);
    }
    setup.close().await;

    let base = runs[0].per_second;
    println!();
    println!(
        "{:<48} {:>9} {:>7} {:>8} {:>14} {:>12} {:>9}",
        "run", "req/s", "ratio", "backends", "largest (MiB)", "mean (MiB)", "recycled"
    );
    for r in &runs {
        let (backends, largest, mean) = match r.memory {
            Some(m) => (
                m.backends.to_string(),
                format!("{:.1}", m.largest),
                format!("{:.1}", m.mean_at_end),
            ),
            None => ("n/a".into(), "n/a".into(), "n/a".into()),
        };
        println!(
            "{:<48} {:>9.0} {:>7.2} {:>8} {:>14} {:>12} {:>9}",
            r.name,
            r.per_second,
            r.per_second / base,
            backends,
            largest,
            mean,
            r.recycled.map_or_else(|| "-".into(), |n| n.to_string())
        );
        if r.failed > 0 {
            println!("  ({} requests failed in this run)", r.failed);
        }
    }
    if runs.iter().any(|r| r.failed > 0) {
        anyhow::bail!("some requests failed");
    }
    Ok(())
}

/// Provisions the fleet with a few concurrent tasks, printing progress to stderr; the
/// members' tokens in fleet order.
async fn provision(args: &Args, pool: &PgPool) -> anyhow::Result<Vec<String>> {
    let total = args.tenants;
    let tenants = provision_many(
        pool,
        0..total,
        PROVISIONERS,
        fleet_naming(),
        FLEET_SHAPE,
        Arc::new(move |n| {
            if n % 500 == 0 {
                eprintln!("  provisioning: {n}/{total}");
            }
        }),
    )
    .await?;
    tenants.iter().map(|t| t.token(4 * 3600)).collect()
}
