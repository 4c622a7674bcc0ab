//! A fleet of real tenants and requests over it (the fleet, api and scale benches): tenants
//! provisioned through [`Tenancy::provision`], each with one member, one company and its
//! products, their members' RS256 tokens, and [`measure`]: `GET /api/v1/products?limit=50`
//! spread over a set of tenants on a fresh in-process service, with the private memory of
//! its PostgreSQL backends.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use capliquify::audit::Actor;
use capliquify::billing::Tier;
use capliquify::db::lanes::LaneCount;
use capliquify::db::recycle::Recycler;
use capliquify::db::{PoolConfig, connect_with, roles};
use capliquify::http::auth::{AuthConfig, Authenticator, jwks_for, sign_rs256};
use capliquify::http::cursor::CursorCodec;
use capliquify::http::{AppState, HttpConfig, launch};
use capliquify::tenancy::{NewTenant, Tenancy};
use serde_json::json;
use sqlx::{AssertSqlSafe, PgPool};

use super::BenchServer;

pub const TEST_KEY: &str = include_str!("../../tests/fixtures/test-signing-key.pem");
pub const KID: &str = "bench-key";
pub const ISSUER: &str = "https://clerk.bench.capliquify";

/// What each tenant holds besides its registry row and schema.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Products of its one company.
    pub products: i32,
    /// Every product column filled (description, category, reorder data; the api bench),
    /// else the required ones only (the fleet bench).
    pub detailed: bool,
}

/// The fleet and scale benches' tenant: 60 products with the required columns.
pub const FLEET_SHAPE: Shape = Shape {
    products: 60,
    detailed: false,
};

/// One provisioned tenant and its member.
#[derive(Debug, Clone)]
pub struct FleetTenant {
    pub id: uuid::Uuid,
    pub slug: String,
    pub schema: String,
    /// The Clerk organization id (`org_<slug>`) and the member's user id.
    pub org: String,
    pub user: String,
    /// Milliseconds of the [`Tenancy::provision`] call alone.
    pub provision_ms: f64,
}

impl FleetTenant {
    /// The member's bearer token, valid for `ttl_secs`.
    pub fn token(&self, ttl_secs: i64) -> anyhow::Result<String> {
        token_for(&self.org, &self.user, ttl_secs)
    }
}

/// A bearer token for `user`, a member of the organization `org`, valid for `ttl_secs`.
pub fn token_for(org: &str, user: &str, ttl_secs: i64) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "sub": user, "iss": ISSUER, "iat": now, "nbf": now - 5, "exp": now + ttl_secs,
        "azp": "https://app.bench", "o": { "id": org, "rol": "member" },
    });
    Ok(sign_rs256(TEST_KEY, KID, &claims)?)
}

/// Provisions the tenant `slug` (organization `org_<slug>`) through [`Tenancy::provision`],
/// then (setup, untimed) adds its member `user`, one company and `shape`'s products.
pub async fn provision_one(
    tenancy: &Tenancy,
    pool: &PgPool,
    slug: &str,
    name: &str,
    user: &str,
    shape: Shape,
) -> anyhow::Result<FleetTenant> {
    let org = format!("org_{slug}");
    let new = NewTenant::parse(slug, name, Tier::Professional, &org)?;
    let started = Instant::now();
    let tenant = tenancy.provision(&new, &Actor::operator()).await?;
    let provision_ms = started.elapsed().as_secs_f64() * 1000.0;
    let made = FleetTenant {
        id: tenant.id,
        slug: slug.to_owned(),
        schema: tenant.schema_name.clone(),
        org,
        user: user.to_owned(),
        provision_ms,
    };
    fill(pool, &made, shape).await?;
    Ok(made)
}

/// The member, the company and the products of `tenant`, in one transaction:
/// schema-qualified SQL, setup only.
pub async fn fill(pool: &PgPool, tenant: &FleetTenant, shape: Shape) -> anyhow::Result<()> {
    let (slug, schema) = (&tenant.slug, &tenant.schema);
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO public.users (clerk_user_id, email, tenant_id, role)
         VALUES ($1, $2, $3, 'member')",
    )
    .bind(&tenant.user)
    .bind(format!("member@{slug}.bench"))
    .bind(tenant.id)
    .execute(&mut *tx)
    .await?;
    if shape.detailed {
        let company: uuid::Uuid = sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO \"{schema}\".companies (name) VALUES ($1) RETURNING id"
        )))
        .bind(format!("{slug} Co"))
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO \"{schema}\".products
                 (company_id, sku, name, description, category, unit_cost, unit_price,
                  reorder_point, reorder_quantity, lead_time_days)
             SELECT $1, 'SKU-' || lpad(n::text, 5, '0'), 'Product ' || md5(n::text),
                    'Bench product ' || n, 'category-' || (n % 7), 5 + n % 50, 12.5 + n % 90,
                    n % 20, 10 + n % 40, 1 + n % 30
               FROM generate_series(1, $2) AS n"
        )))
        .bind(company)
        .bind(shape.products)
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query(AssertSqlSafe(format!(
            "WITH c AS (INSERT INTO \"{schema}\".companies (name) VALUES ($1) RETURNING id)
             INSERT INTO \"{schema}\".products (company_id, sku, name, unit_cost, unit_price)
             SELECT c.id, 'SKU-' || lpad(n::text, 5, '0'), 'Product ' || n, 5 + n % 50, 12.5 + n % 90
               FROM c, generate_series(1, $2) AS n"
        )))
        .bind(format!("{slug} Co"))
        .bind(shape.products)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A tenant's slug, name and member's user id from its index in the fleet.
pub type Naming = Arc<dyn Fn(usize) -> (String, String, String) + Send + Sync>;

/// The fleet and scale benches' naming: `fleet-00042`, "Fleet fleet-00042",
/// `user_fleet-00042`.
pub fn fleet_naming() -> Naming {
    Arc::new(|i| {
        let slug = format!("fleet-{i:05}");
        (
            slug.clone(),
            format!("Fleet {slug}"),
            format!("user_{slug}"),
        )
    })
}

/// Provisions the tenants numbered `range` with [`provision_one`] from `tasks` concurrent
/// tasks; `on_done` gets the count made so far after each. Returns them in index order.
pub async fn provision_many(
    pool: &PgPool,
    range: Range<usize>,
    tasks: usize,
    naming: Naming,
    shape: Shape,
    on_done: Arc<dyn Fn(usize) + Send + Sync>,
) -> anyhow::Result<Vec<FleetTenant>> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let done = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (next, done, pool, end) = (next.clone(), done.clone(), pool.clone(), range.end);
        let (naming, on_done) = (naming.clone(), on_done.clone());
        set.spawn(async move {
            let tenancy = Tenancy::new(pool.clone(), 30);
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, anyhow::Error>(made);
                }
                let (slug, name, user) = naming(i);
                made.push((
                    i,
                    provision_one(&tenancy, &pool, &slug, &name, &user, shape).await?,
                ));
                on_done(done.fetch_add(1, Ordering::Relaxed) + 1);
            }
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = set.join_next().await {
        all.extend(joined??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// Rounds of the tokens the warm-up of a [`measure`] run makes at least.
const WARM_ROUNDS: usize = 2;
/// Seconds between two reads of the backends' memory in a [`measure`] window.
const MEMORY_EVERY: u64 = 5;

/// The request load of the [`measure`] runs, as the fleet and scale benches' flags.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Load {
    /// Concurrent requests (and the service's pool size unless --pool).
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub clients: usize,
    /// Seconds of load before each measured window (the warm-up also lasts until every
    /// tenant of the run has been asked for twice).
    #[arg(long, value_name = "SECS", default_value_t = 3)]
    pub warmup: u64,
    /// Seconds of each measured window.
    #[arg(long, value_name = "SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,
    /// The recycling run's memory budget per backend, in MiB (CAPLIQUIFY_DB_BACKEND_MEMORY_MB).
    #[arg(long, value_name = "MIB", default_value_t = 48,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub budget_mb: u32,
    /// The service's pool size (CAPLIQUIFY_DB_MAX_CONNECTIONS, shared by the lanes: at least
    /// one connection each); default: --clients.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pool: Option<u32>,
    /// The service's caller and token cache, in ms (CAPLIQUIFY_AUTH_CACHE_MS, serve's
    /// default 2000). The service hears tenant and membership changes as serve does, so a
    /// caller is kept up to a minute: over 100 hot tenants and over thousands nearly every
    /// request hits it; 0 takes it out of the comparison, leaving the database's part.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub auth_cache_ms: u64,
    /// Tenant lanes of the lanes run (CAPLIQUIFY_DB_TENANT_LANES): a number (1: no lanes
    /// run), or auto, which counts the database's live tenants as serve does at start and
    /// opens at most the pool's size (--pool).
    #[arg(long, value_name = "N|auto", default_value = "8")]
    pub lanes: LaneCount,
}

impl Load {
    /// The service's pool size: `--pool`, else `--clients`.
    pub fn pool_size(&self) -> u32 {
        self.pool.unwrap_or(self.clients as u32)
    }

    /// The lane count `--lanes` means on `pool`'s database now, as serve resolves it.
    pub async fn resolve_lanes(&self, pool: &PgPool) -> sqlx::Result<u32> {
        capliquify::db::lanes::resolve(self.lanes, pool, self.budget_mb, self.pool_size()).await
    }
}

/// What one run measured.
pub struct Run {
    pub name: String,
    pub per_second: f64,
    pub failed: usize,
    pub memory: Option<Memory>,
    pub recycled: Option<u64>,
    /// CPU per request over the window: this process (the service and the load generator,
    /// in-process), and the PostgreSQL server (`None` when it is not local).
    pub cpu: Cpu,
}

/// CPU per request of a [`Run`]'s window, in µs.
#[derive(Clone, Copy)]
pub struct Cpu {
    pub process_us: f64,
    pub server_us: Option<f64>,
}

/// Private memory of the service's backends, in MiB.
#[derive(Clone, Copy)]
pub struct Memory {
    pub largest: f64,
    pub mean_at_end: f64,
    pub backends: usize,
}

/// One run on a fresh service: `GET /api/v1/products?limit=50` from `load.clients` reqwest
/// tasks, request `i` with `tokens[i mod len]`; warm-up (`load.warmup` seconds, and at
/// least [`WARM_ROUNDS`] rounds of the tokens), then the window; the backends' memory is
/// read every second of the warm-up and every [`MEMORY_EVERY`] s of the window, and the CPU
/// each request of the window cost is read from `/proc`. `budget_mb` 0: no recycling;
/// `lanes` 1: no tenant lanes.
pub async fn measure(
    server: &BenchServer,
    setup: &PgPool,
    tokens: &[String],
    name: String,
    budget_mb: u32,
    lanes: u32,
    load: Load,
) -> anyhow::Result<Run> {
    let recycler = Recycler::new(budget_mb);
    let pools = PoolConfig::new(load.pool_size()).with_recycler(recycler.clone());
    let service_url = server.bench_url_as(roles::DEFAULT_LOGIN)?;
    let pool = connect_with(&service_url, &pools).await?;
    let lanes = capliquify::db::lanes::Lanes::new(&pool, lanes, &pools);
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
    .with_caller_cache(Duration::from_millis(load.auth_cache_ms))
    .with_lanes(lanes);
    let lanes = state.lanes.clone();
    // Tenant and membership changes heard, as serve hears them: callers are then kept up to
    // a minute (context::CALLER_TTL_HEARD) instead of the cache's ttl.
    let hearing = capliquify::http::caller_changes::spawn(&pool, state.callers.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api/v1/products?limit=50", listener.local_addr()?);
    let (shutdown, rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(launch(listener, state, async {
        let _ = rx.await;
    }));

    let tokens: Arc<Vec<String>> = Arc::new(tokens.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..load.clients {
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
        tasks.spawn(async move {
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
    // The warm-up lasts `load.warmup` seconds and at least until every tenant has been
    // asked for twice: requests go round the tokens in order, so in the first round nearly
    // every request is a tenant's first on its backend (catalog loaded cold), and in the
    // second many still are (a cold request is slow, its lane queues, and a transaction
    // that waited 50 ms ran on the shared pool: its lane's backend has still not seen the
    // tenant). That is a service's start, not its steady state; the per-5 s rates of the
    // window show whether it was reached.
    //
    // The backends' memory is read from /proc/PID/smaps_rollup, which walks each backend's
    // page tables: ~4 ms of CPU per backend of ~40 MiB, ~90 ms a read with 24. Read every
    // second (as the warm-up does) that took 4.5 % of the machine from the spread run and
    // 0.9 % from the hot one (perf, docs/benchmarks.md); the window reads every
    // MEMORY_EVERY s instead, the same for every run, and once at its end. A backend's
    // memory only grows until it is recycled, so the end's read holds the live ones' peak.
    let mut largest: Option<f64> = None;
    let mut last = None;
    let mut sample = async |largest: &mut Option<f64>, memory: bool| -> anyhow::Result<()> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if memory {
            last = backend_memory(setup).await?;
            if let Some(m) = last {
                *largest = Some(largest.map_or(m.largest, |l: f64| l.max(m.largest)));
            }
        }
        Ok(())
    };
    let warming = Instant::now();
    while warming.elapsed() < Duration::from_secs(load.warmup)
        || next.load(Ordering::Relaxed) < WARM_ROUNDS * tokens.len()
    {
        sample(&mut largest, true).await?;
    }
    if tokens.len() > 1_000 {
        println!(
            "  warm-up: every tenant asked for {WARM_ROUNDS} times in {:.1} s ({:.0} req/s from a cold start)",
            warming.elapsed().as_secs_f64(),
            next.load(Ordering::Relaxed) as f64 / warming.elapsed().as_secs_f64()
        );
    }
    let postmaster = super::cpu::ServerCpu::postmaster(setup).await;
    counting.store(true, Ordering::Relaxed);
    let window = Instant::now();
    let process_before = super::cpu::CpuTimes::now();
    let server_before = postmaster.and_then(super::cpu::ServerCpu::now);
    // The rate every 5 s of the window: a rate that drifts shows in the output.
    let mut rates = Vec::new();
    let mut mark = (Instant::now(), 0);
    let mut ticks = 0_u64;
    while window.elapsed() < Duration::from_secs(load.duration) {
        ticks += 1;
        sample(&mut largest, ticks.is_multiple_of(MEMORY_EVERY)).await?;
        if mark.0.elapsed() >= Duration::from_secs(5) {
            let done = ok.load(Ordering::Relaxed);
            rates.push(format!(
                "{:.0}",
                (done - mark.1) as f64 / mark.0.elapsed().as_secs_f64()
            ));
            mark = (Instant::now(), done);
        }
    }
    counting.store(false, Ordering::Relaxed);
    let elapsed = window.elapsed();
    let served = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let cpu = Cpu {
        process_us: us(process_before.per_tx(served).0),
        server_us: server_before.and_then(|s| s.per_tx(served)).map(us),
    };
    sample(&mut largest, true).await?;
    println!("  req/s every 5 s of the window: {}", rates.join(" "));
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let _ = shutdown.send(());
    serving.await.context("the service task")??;
    if let Some(hearing) = hearing {
        hearing.abort();
    }
    if let Some(lanes) = lanes {
        lanes.close().await;
    }
    pool.close().await;
    let _ = std::fs::remove_file(&jwks);

    let run = Run {
        name,
        per_second: ok.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        failed: failed.load(Ordering::Relaxed),
        memory: last.zip(largest).map(|(m, l)| Memory { largest: l, ..m }),
        recycled: recycler.map(|r| r.stats().recycled),
        cpu,
    };
    println!(
        "  {:.0} req/s, {} failed{}; CPU per request: {:.0} µs in this process (service and load), {}",
        run.per_second,
        run.failed,
        run.memory.map_or_else(String::new, |m| format!(
            ", largest backend {:.1} MiB",
            m.largest
        )),
        run.cpu.process_us,
        run.cpu.server_us.map_or_else(
            || "server n/a".to_owned(),
            |us| format!("{us:.0} µs in PostgreSQL")
        )
    );
    Ok(run)
}

/// The service's backends (its login role, this database) and their private memory, read
/// from `/proc`; `None` when the server's processes cannot be read here.
pub async fn backend_memory(setup: &PgPool) -> anyhow::Result<Option<Memory>> {
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
