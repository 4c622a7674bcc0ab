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
//! `--clients` reqwest tasks inside this process, `--warmup` seconds then a `--duration`
//! window; request `i` goes to tenant `i mod set`:
//!
//! 1. the first `--hot` tenants (default 100), recycling off: the baseline;
//! 2. every tenant, recycling off: what the catalog cache does to memory and speed;
//! 3. every tenant, recycling at `--budget-mb` (default 48, as `serve`).
//!
//! Reported per run: requests/s and its ratio to the baseline, and the private memory
//! (`Private_Clean + Private_Dirty` of `/proc/<pid>/smaps_rollup`) of the service's backends,
//! sampled every second during the window: the largest backend at any sample, and the mean
//! at the end; plus the connections recycled. Memory needs the server on this machine
//! (the embedded cluster, or a local `DATABASE_URL`) and the right to read its processes'
//! `/proc` (root or the server's user); otherwise it prints `n/a`.
//!
//! Goals (issue 16): run 2 ≥ 0.8× run 1 is not expected without recycling; run 3's largest
//! backend ≤ 64 MiB, at ≥ 0.8× run 1's requests/s.
//!
//! Run (release profile):
//!
//! ```text
//! cargo bench --bench fleet -- [--tenants N] [--hot N] [--clients N] [--warmup SECS]
//!     [--duration SECS] [--budget-mb MIB]
//! ```
//!
//! The server is `DATABASE_URL` when set (the benchmark creates and drops the database
//! `capliquify_bench_fleet` on it), otherwise a durable embedded cluster under
//! `target/bench-fleet-pg`, stopped at the end if this run started it.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use capliquify::audit::Actor;
use capliquify::billing::Tier;
use capliquify::db::recycle::Recycler;
use capliquify::db::{PoolConfig, connect, connect_with, roles};
use capliquify::http::auth::{AuthConfig, Authenticator, jwks_for, sign_rs256};
use capliquify::http::cursor::CursorCodec;
use capliquify::http::{AppState, HttpConfig, launch};
use capliquify::tenancy::{NewTenant, Tenancy, migrate};
use serde_json::json;
use sqlx::{AssertSqlSafe, PgPool};
use support::{BenchArgs, BenchServer};

const BENCH_DB: &str = "capliquify_bench_fleet";
const TEST_KEY: &str = include_str!("../tests/fixtures/test-signing-key.pem");
const KID: &str = "bench-key";
const ISSUER: &str = "https://clerk.bench.capliquify";
/// Concurrent provisioning tasks: enough to overlap commits' fsyncs on two cores.
const PROVISIONERS: usize = 4;
const PRODUCTS: i32 = 60;

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
    /// Concurrent requests, and the service's pool size.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    clients: usize,
    /// Seconds of load before each window.
    #[arg(long, value_name = "SECS", default_value_t = 3)]
    warmup: u64,
    /// Seconds of each measured window.
    #[arg(long, value_name = "SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..))]
    duration: u64,
    /// The recycling run's memory budget per backend, in MiB (CAPLIQUIFY_DB_BACKEND_MEMORY_MB).
    #[arg(long, value_name = "MIB", default_value_t = 48,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    budget_mb: u32,
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

/// One tenant's bearer token.
struct BenchTenant {
    token: String,
}

/// What one run measured.
struct Run {
    name: String,
    per_second: f64,
    failed: usize,
    memory: Option<Memory>,
    recycled: Option<u64>,
}

/// Private memory of the service's backends, in MiB.
#[derive(Clone, Copy)]
struct Memory {
    largest: f64,
    mean_at_end: f64,
    backends: usize,
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
        args.tenants, args.hot, args.clients, args.clients, args.warmup, args.duration
    );

    let started = Instant::now();
    let tenants = provision(args, &setup).await?;
    sqlx::raw_sql("VACUUM ANALYZE").execute(&setup).await?;
    println!("  setup:    {:.1} s", started.elapsed().as_secs_f64());

    let mut runs = Vec::new();
    let plans = [
        (
            format!("{} hot tenants, no recycling", args.hot),
            args.hot,
            0,
        ),
        (
            format!("all {} tenants, no recycling", args.tenants),
            args.tenants,
            0,
        ),
        (
            format!(
                "all {} tenants, recycling at {} MiB",
                args.tenants, args.budget_mb
            ),
            args.tenants,
            args.budget_mb,
        ),
    ];
    for (name, set, budget) in plans {
        println!("== {name}");
        runs.push(measure(args, server, &setup, &tenants[..set], name, budget).await?);
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

/// Provisions the fleet with a few concurrent tasks, printing progress to stderr.
async fn provision(args: &Args, pool: &PgPool) -> anyhow::Result<Vec<BenchTenant>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..PROVISIONERS {
        let (next, pool, total) = (next.clone(), pool.clone(), args.tenants);
        tasks.spawn(async move {
            let tenancy = Tenancy::new(pool.clone(), 30);
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(made);
                }
                if i % 500 == 0 {
                    eprintln!("  provisioning: {i}/{total}");
                }
                made.push((i, provision_one(&tenancy, &pool, i).await?));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

async fn provision_one(tenancy: &Tenancy, pool: &PgPool, i: usize) -> anyhow::Result<BenchTenant> {
    let slug = format!("fleet-{i:05}");
    let org = format!("org_{slug}");
    let user = format!("user_{slug}");
    let new = NewTenant::parse(&slug, &format!("Fleet {slug}"), Tier::Professional, &org)?;
    let tenant = tenancy.provision(&new, &Actor::operator()).await?;
    let schema = &tenant.schema_name;
    // Setup only: schema-qualified SQL in one transaction per tenant.
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO public.users (clerk_user_id, email, tenant_id, role)
         VALUES ($1, $2, $3, 'member')",
    )
    .bind(&user)
    .bind(format!("member@{slug}.bench"))
    .bind(tenant.id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "WITH c AS (INSERT INTO \"{schema}\".companies (name) VALUES ($1) RETURNING id)
         INSERT INTO \"{schema}\".products (company_id, sku, name, unit_cost, unit_price)
         SELECT c.id, 'SKU-' || lpad(n::text, 5, '0'), 'Product ' || n, 5 + n % 50, 12.5 + n % 90
           FROM c, generate_series(1, $2) AS n"
    )))
    .bind(format!("{slug} Co"))
    .bind(PRODUCTS)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "sub": user, "iss": ISSUER, "iat": now, "nbf": now - 5, "exp": now + 4 * 3600,
        "azp": "https://app.bench", "o": { "id": org, "rol": "member" },
    });
    Ok(BenchTenant {
        token: sign_rs256(TEST_KEY, KID, &claims)?,
    })
}

/// One run on a fresh service: warm-up, then the window, sampling backend memory.
async fn measure(
    args: &Args,
    server: &BenchServer,
    setup: &PgPool,
    tenants: &[BenchTenant],
    name: String,
    budget_mb: u32,
) -> anyhow::Result<Run> {
    let recycler = Recycler::new(budget_mb);
    let pools = PoolConfig::new(args.clients as u32).with_recycler(recycler.clone());
    let service_url = server.bench_url_as(roles::DEFAULT_LOGIN)?;
    let pool = connect_with(&service_url, &pools).await?;
    let jwks = std::env::temp_dir().join(format!(
        "capliquify-bench-fleet-jwks-{}.json",
        std::process::id()
    ));
    std::fs::write(&jwks, jwks_for(TEST_KEY, KID)?.to_string())?;
    let auth = Arc::new(
        Authenticator::new(AuthConfig {
            jwks_url: format!("file://{}", jwks.display()),
            issuer: ISSUER.into(),
        })
        .await?,
    );
    let keys = capliquify::crypto::Keyring::from_settings(
        Some("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
        "k1",
        None,
    )?;
    let state = AppState::new(
        capliquify::db::Clusters::single(pool.clone()),
        auth,
        keys,
        HttpConfig::default(),
    )
    .with_cursors(CursorCodec::new(b"benchmark cursor secret, 32+ chars"))
    .with_caller_cache(Duration::from_secs(2));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api/v1/products?limit=50", listener.local_addr()?);
    let (shutdown, rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(launch(listener, state, async {
        let _ = rx.await;
    }));

    let tokens: Arc<Vec<String>> = Arc::new(tenants.iter().map(|t| t.token.clone()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let (tokens, next, stop, counting, ok, failed, url) = (
            tokens.clone(),
            next.clone(),
            stop.clone(),
            counting.clone(),
            ok.clone(),
            failed.clone(),
            url.clone(),
        );
        load.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed) % tokens.len();
                let good = match client.get(&url).bearer_auth(&tokens[i]).send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::OK => r.bytes().await.is_ok(),
                    _ => false,
                };
                if counting.load(Ordering::Relaxed) {
                    (if good { &ok } else { &failed }).fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    counting.store(true, Ordering::Relaxed);
    let window = Instant::now();
    let mut largest: Option<f64> = None;
    let mut last = None;
    while window.elapsed() < Duration::from_secs(args.duration) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = backend_memory(setup).await?;
        if let Some(m) = last {
            largest = Some(largest.map_or(m.largest, |l: f64| l.max(m.largest)));
        }
    }
    counting.store(false, Ordering::Relaxed);
    let elapsed = window.elapsed();
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    let _ = shutdown.send(());
    serving.await.context("the service task")??;
    pool.close().await;
    let _ = std::fs::remove_file(&jwks);

    let run = Run {
        name,
        per_second: ok.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        failed: failed.load(Ordering::Relaxed),
        memory: last.zip(largest).map(|(m, l)| Memory { largest: l, ..m }),
        recycled: recycler.map(|r| r.stats().recycled),
    };
    println!(
        "  {:.0} req/s, {} failed{}",
        run.per_second,
        run.failed,
        run.memory.map_or_else(String::new, |m| format!(
            ", largest backend {:.1} MiB",
            m.largest
        ))
    );
    Ok(run)
}

/// The service's backends (its login role, this database) and their private memory, read
/// from `/proc`; `None` when the server's processes cannot be read here.
async fn backend_memory(setup: &PgPool) -> anyhow::Result<Option<Memory>> {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
          WHERE usename = $1 AND datname = current_database() AND backend_type = 'client backend'",
    )
    .bind(roles::DEFAULT_LOGIN)
    .fetch_all(setup)
    .await?;
    let mut sizes = Vec::new();
    for pid in pids {
        match private_mib(&PathBuf::from(format!("/proc/{pid}/smaps_rollup"))) {
            Some(mib) => sizes.push(mib),
            // A backend that ended between the query and the read (recycled).
            None if !PathBuf::from(format!("/proc/{pid}")).exists() => {}
            None => return Ok(None),
        }
    }
    if sizes.is_empty() {
        return Ok(None);
    }
    Ok(Some(Memory {
        largest: sizes.iter().copied().fold(0.0, f64::max),
        mean_at_end: sizes.iter().sum::<f64>() / sizes.len() as f64,
        backends: sizes.len(),
    }))
}

/// `Private_Clean + Private_Dirty` of a process, in MiB.
fn private_mib(smaps_rollup: &PathBuf) -> Option<f64> {
    let text = std::fs::read_to_string(smaps_rollup).ok()?;
    let kib: u64 = text
        .lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Some(kib as f64 / 1024.0)
}
