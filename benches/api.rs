//! API throughput benchmark: `GET /api/v1/products?limit=50` through the real service,
//! against `pgbench` running the same transaction on the same server in the same run.
//!
//! Setup: 100 tenants (`--tenants`) provisioned through [`Tenancy::provision`], each with
//! one member, one company and 100 products (`--products`). The service runs in-process on
//! `127.0.0.1:0` with the production router ([`app`]), an RS256 authenticator reading a
//! `file://` JWKS, and a pool of 8 connections (`--clients`).
//!
//! Measured, each with 8 concurrent connections (`--clients`) for a 2 s warm-up followed by
//! a 10 s window (`--warmup`, `--duration`):
//!
//! - **API**: `wrk -t2 -c8 -d10s --latency -s <script>` (after a separate 2 s warm-up run of
//!   the same command), a C load generator in its own process, as pgbench is for the
//!   database. The generated Lua script gives each request the next tenant's bearer token
//!   (the 100 tenants in rotation, each wrk thread from its own offset) and counts non-200
//!   responses in `response()`, summed over the threads in `done()`. Requests/s is wrk's
//!   `Requests/sec`; p50/p99 come from its `--latency` histogram. Before any load, one
//!   request per tenant checks for a 200 with 50 rows (wrk only looks at statuses). When
//!   wrk is not installed (`apt-get install wrk`), or with `--load reqwest`, the fallback is
//!   8 reqwest tasks inside this process, windowed as pgbench is below; their CPU competes
//!   with the server's, so that row understates the API.
//! - **pgbench**: `pgbench -n -c 8 -j 2 -T 12 -l -f t0.sql@1 … -f t99.sql@1`, one script per
//!   tenant (picked at random per transaction), each the transaction the API runs:
//!   `BEGIN \; SET LOCAL search_path TO "tenant_…";` (one round trip, as
//!   [`capliquify::db::scope::begin`] sends it), the list handler's SELECT with the same
//!   columns, sort and `LIMIT 51`, and `COMMIT;`. pgbench's default simple query protocol;
//!   the API's driver (sqlx) sends `BEGIN; SET LOCAL` as a simple query and the SELECT as a
//!   cached prepared statement. A transaction counts when it started after the 2 s warm-up
//!   and completed within the window; p50/p99 are nearest-rank percentiles of their
//!   latencies, read from pgbench's per-transaction `-l` logs (`time` column in µs, epoch
//!   columns the completion time). pgbench's own `tps` is printed as a cross-check.
//! - Two decomposition rows (information, no goal), windowed as pgbench: the database work
//!   of a request through sqlx alone from tasks in this process — the auth middleware's
//!   caller lookup plus the scoped transaction (a request with the caller cache off), and
//!   the scoped transaction alone (what pgbench runs).
//!
//! Goal: API requests/s ÷ pgbench requests/s ≥ 0.8. The service's caller cache is on (2 s,
//! its default), as in production; `--no-auth-cache` turns it off
//! (`CallerCache::disabled()`), so every request runs the caller lookup query.
//!
//! Finally one caller, sequentially, times each phase of a request (JWT verification, the
//! caller lookup, the scoped transaction, row decoding plus JSON encoding, and the whole HTTP
//! request) to show where the time goes.
//!
//! Everything (server, load generators, PostgreSQL) shares the machine's cores; the CPU
//! time per transaction of this process and of the external load generator is printed.
//!
//! Run (release profile):
//!
//! ```text
//! cargo bench --bench api -- [--tenants N] [--products N] [--clients N]
//!     [--warmup SECS] [--duration SECS] [--no-auth-cache] [--load wrk|reqwest]
//! ```
//!
//! The server is `DATABASE_URL` when set (the benchmark creates and drops the database
//! `capliquify_bench_api` on it, and needs `pgbench` on `PATH`), otherwise a durable embedded
//! cluster under `target/bench-api-pg`, stopped at the end if this run started it. The
//! database is dropped and recreated at the start of every run. wrk is `$WRK` or found on
//! `PATH`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use capliquify::db::TenantScope;
use capliquify::db::scope;
use capliquify::http::auth::{AuthConfig, Authenticator, jwks_for};
use capliquify::http::cursor::CursorCodec;
use capliquify::http::extract::PageWriter;
use capliquify::http::resources::products::Product;
use capliquify::http::{AppState, HttpConfig, launch};
use capliquify::tenancy::migrate;
use capliquify::tenancy::{SchemaName, TenantSlug};
use serde::Deserialize;
use serde::de::IgnoredAny;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, FromRow, PgPool};
use tokio::process::Command;

const BENCH_DB: &str = "capliquify_bench_api";
/// Rows per page, as the goal states it.
const LIMIT: usize = 50;
/// Concurrent provisioning tasks: enough to overlap commits' fsyncs on two cores.
const PROVISIONERS: usize = 4;
/// pgbench accepts at most this many `-f` scripts.
const PGBENCH_MAX_SCRIPTS: usize = 128;
/// Sequential repetitions of each phase in the profile.
const PROFILE_REPS: u32 = 500;
/// The service's default caller cache (`CAPLIQUIFY_AUTH_CACHE_MS`).
const AUTH_CACHE: Duration = Duration::from_secs(2);
/// Threads of the C load generator: one per core of the machine this was written for.
const WRK_THREADS: usize = 2;

/// What generates the API's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Load {
    /// wrk, a C load generator in its own process (the in-process fallback when it is not
    /// installed).
    Wrk,
    /// Tasks with reqwest inside this process, sharing its CPU with the service.
    Reqwest,
}

/// API throughput: `GET /api/v1/products?limit=50` through the real service against pgbench
/// running the same transaction on the same server in the same run (docs/benchmarks.md).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "api", bin_name = "cargo bench --bench api --")]
struct Args {
    /// Tenants, each with one member and one company; 1 to 128 (one pgbench script each).
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(1..=PGBENCH_MAX_SCRIPTS as u64))]
    tenants: usize,
    /// Products per tenant; more than 50, so every page is full.
    #[arg(long, value_name = "N", default_value_t = 100)]
    products: usize,
    /// Concurrent connections of every load (and the service's pool size).
    #[arg(long, value_name = "N", default_value_t = 8)]
    clients: usize,
    /// Seconds of load before the measured window.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    warmup: usize,
    /// Seconds of the measured window.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    duration: usize,
    /// The caller cache off (`CallerCache::disabled()`): every request looks its caller up.
    #[arg(long)]
    no_auth_cache: bool,
    /// What generates the API's load.
    #[arg(long, value_enum, default_value_t = Load::Wrk)]
    load: Load,
}

impl BenchArgs for Args {
    fn check(&self) -> Result<(), String> {
        if self.products <= LIMIT {
            return Err(format!(
                "--products must exceed {LIMIT} so every page is full"
            ));
        }
        if self.clients < 1 || self.duration < 1 {
            return Err("--clients and --duration must be at least 1".into());
        }
        Ok(())
    }
}

impl Args {
    /// The in-process reqwest load even when wrk is installed.
    fn force_reqwest(&self) -> bool {
        self.load == Load::Reqwest
    }

    fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup as u64)
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.duration as u64)
    }
}

/// Where the benchmark database lives and how to reach it.
/// One provisioned tenant and its member's credentials.
#[derive(Debug, Clone)]
struct BenchTenant {
    scope: TenantScope,
    org: String,
    user: String,
    token: String,
}

/// What one load run produced.
struct Measured {
    name: String,
    /// Transactions counted (in the window, or wrk's completed requests).
    count: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// Counted transactions whose answer was not the expected one (or errors).
    bad: usize,
    /// Extra text for the report line (pgbench's own tps, wrk's distribution).
    note: String,
    /// CPU time of this process per transaction over the whole run (the server, plus the
    /// clients for the in-process loads).
    cpu_per_tx: Option<Duration>,
    /// CPU time of the external load generator (wrk, pgbench) per transaction.
    client_cpu_per_tx: Option<Duration>,
    /// CPU time of the PostgreSQL server (postmaster and backends) per transaction, when
    /// its processes are readable here (an embedded or local cluster).
    db_cpu_per_tx: Option<Duration>,
}

impl Measured {
    /// Windowed latencies of one run: count, rate and nearest-rank percentiles.
    fn from_latencies(name: &str, latencies: &[Duration], window: Duration, bad: usize) -> Self {
        Self {
            name: name.to_owned(),
            count: latencies.len(),
            per_second: latencies.len() as f64 / window.as_secs_f64(),
            p50: percentile(latencies, 0.5),
            p99: percentile(latencies, 0.99),
            bad,
            note: String::new(),
            cpu_per_tx: None,
            client_cpu_per_tx: None,
            db_cpu_per_tx: None,
        }
    }
}

/// Nearest-rank percentile (`p` in 0..=1) of unsorted durations.
fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

mod support;

use support::cpu::{CpuTimes, ServerCpu};
use support::fleet::{ISSUER, KID, Naming, Shape, TEST_KEY, provision_many};
use support::pgbench;
use support::{BenchArgs, BenchServer};

fn main() -> anyhow::Result<()> {
    let args: Args = support::args();
    support::run_on_server(BENCH_DB, "bench-api-pg", async |server| {
        run(&args, server).await
    })
}

async fn run(args: &Args, server: &BenchServer) -> anyhow::Result<()> {
    server.recreate_database().await?;
    let setup_pool = capliquify::db::connect(&server.bench_url, PROVISIONERS as u32).await?;
    migrate::migrate_public(&setup_pool, migrate::tenant_migrations()).await?;
    // The service, the sqlx loads and pgbench all log in as the service's login role.
    // With the bench URL's password: the embedded cluster admits no login without one.
    let password = url::Url::parse(&server.bench_url)?
        .password()
        .map(str::to_owned);
    capliquify::db::roles::init(
        &setup_pool,
        capliquify::db::roles::DEFAULT_LOGIN,
        password.as_deref(),
        &capliquify::audit::Actor::operator(),
    )
    .await?;
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&setup_pool)
        .await?;
    let pgbench_version = Command::new(server.tool("pgbench"))
        .arg("--version")
        .output()
        .await
        .with_context(|| format!("running {} --version", server.tool("pgbench").display()))?;
    server.print_header("API", &version);
    println!(
        "  pgbench:  {}",
        String::from_utf8_lossy(&pgbench_version.stdout).trim()
    );
    println!(
        "  load:     {} tenants x {} products, {} connections, {} s warm-up + {} s window",
        args.tenants, args.products, args.clients, args.warmup, args.duration
    );
    let wrk = if args.force_reqwest() {
        None
    } else {
        find_wrk().await
    };
    match &wrk {
        Some((path, version)) => println!(
            "  API load: wrk -t{} -c{} ({}; {version})",
            WRK_THREADS.min(args.clients),
            args.clients,
            path.display()
        ),
        None => {
            if !args.force_reqwest() {
                println!(
                    "  wrk not found (install it: `apt-get install wrk`); falling back to the \
                     in-process load"
                );
            }
            println!(
                "  API load: {} reqwest tasks inside this process (their CPU competes with the \
                 server's)",
                args.clients
            );
        }
    }
    println!(
        "  auth cache: {}",
        if args.no_auth_cache {
            "off (--no-auth-cache: every request runs the caller lookup)".to_owned()
        } else {
            format!(
                "on, {} ms (the service's default, CAPLIQUIFY_AUTH_CACHE_MS)",
                AUTH_CACHE.as_millis()
            )
        }
    );

    let started = Instant::now();
    let tenants = provision(args, &setup_pool).await?;
    // Fresh statistics and visibility maps for both sides alike; no autovacuum mid-run.
    sqlx::raw_sql("VACUUM ANALYZE").execute(&setup_pool).await?;
    let postmaster = ServerCpu::postmaster(&setup_pool).await;
    setup_pool.close().await;
    println!("  setup:    {:.1} s", started.elapsed().as_secs_f64());

    let service = Service::start(server, args).await?;
    let mut rows = Vec::new();
    println!("\n== API: GET /api/v1/products?limit={LIMIT}");
    check_every_tenant(&service, &tenants).await?;
    rows.push(match &wrk {
        Some((path, _)) => load_api_wrk(args, &service, &tenants, path, postmaster).await?,
        None => load_api_reqwest(args, &service, &tenants).await?,
    });
    println!("== pgbench: the same transaction");
    rows.push(load_pgbench(args, server, &tenants, postmaster).await?);
    println!("== sqlx alone (decomposition)");
    let pool = capliquify::db::connect(&service_url(server)?, args.clients as u32).await?;
    rows.push(load_sqlx(args, &pool, &tenants, true).await?);
    rows.push(load_sqlx(args, &pool, &tenants, false).await?);
    println!("== phases of one request, one caller, {PROFILE_REPS} times each");
    let phases = profile(&service, &pool, &tenants[0]).await?;
    pool.close().await;
    service.stop().await;

    print_table(args, &rows, &phases);
    Ok(())
}

/// Provisions the tenants with a few concurrent tasks; returns them in slug order.
async fn provision(args: &Args, pool: &PgPool) -> anyhow::Result<Vec<BenchTenant>> {
    let naming: Naming = Arc::new(|i| {
        let slug = format!("bench-{i:03}");
        (
            slug.clone(),
            format!("Bench {slug}"),
            format!("user_bench_{i:03}"),
        )
    });
    let shape = Shape {
        products: args.products as i32,
        detailed: true,
    };
    let made = provision_many(
        pool,
        0..args.tenants,
        PROVISIONERS,
        naming,
        shape,
        Arc::new(|_| {}),
    )
    .await?;
    made.into_iter()
        .map(|t| {
            Ok(BenchTenant {
                scope: TenantScope {
                    id: t.id,
                    slug: TenantSlug::parse(&t.slug)?,
                    schema: SchemaName::parse(&t.schema)?,
                    cluster: capliquify::db::ClusterName::home(),
                },
                token: t.token(3600)?,
                org: t.org,
                user: t.user,
            })
        })
        .collect()
}

/// The service on a loopback port, as `capliquify serve` builds it.
struct Service {
    addr: SocketAddr,
    auth: Arc<Authenticator>,
    jwks: PathBuf,
    shutdown: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Service {
    async fn start(server: &BenchServer, args: &Args) -> anyhow::Result<Self> {
        let jwks =
            std::env::temp_dir().join(format!("capliquify-bench-jwks-{}.json", std::process::id()));
        std::fs::write(&jwks, jwks_for(TEST_KEY, KID)?.to_string())?;
        let auth = Arc::new(
            Authenticator::new(AuthConfig {
                jwks_url: format!("file://{}", jwks.display()),
                issuer: ISSUER.into(),
            })
            .await?,
        );
        // The pool as the service makes it, one connection per client, as its login role.
        let pool = capliquify::db::connect(&service_url(server)?, args.clients as u32).await?;
        let keys = capliquify::crypto::Keyring::from_settings(
            // Any key that is not trivial (all-alike bytes are refused).
            Some("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
            "k1",
            None,
        )?;
        // No webhook secrets: the webhook endpoints are off, as nothing here calls them.
        let mut state = AppState::new(
            capliquify::db::Clusters::single(pool),
            auth.clone(),
            keys,
            HttpConfig::default(),
        )
        .with_cursors(CursorCodec::new(b"benchmark cursor secret, 32+ chars"));
        if !args.no_auth_cache {
            state = state.with_caller_cache(AUTH_CACHE);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(launch(listener, state, async {
            let _ = rx.await;
        }));
        Ok(Self {
            addr,
            auth,
            jwks,
            shutdown,
            serving,
        })
    }

    fn url(&self) -> String {
        format!("http://{}/api/v1/products?limit={LIMIT}", self.addr)
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.serving.await;
        let _ = std::fs::remove_file(&self.jwks);
    }
}

/// Only the row count of a page is looked at: cheap on the client side.
#[derive(Deserialize)]
struct PageShape {
    data: Vec<IgnoredAny>,
}

/// The window's bounds, shared by the tasks of one load run.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    to: Instant,
}

impl Window {
    fn after_warmup(args: &Args) -> Self {
        let from = Instant::now() + args.warmup();
        Self {
            from,
            to: from + args.window(),
        }
    }

    fn holds(&self, start: Instant, end: Instant) -> bool {
        start >= self.from && end <= self.to
    }
}

/// Runs `clients` tasks of `one` (which answers whether the transaction was good) over the
/// tenants, round-robin from each task's offset, and windows the results.
async fn load<F, Fut>(name: &str, args: &Args, tenants: &[BenchTenant], one: F) -> Measured
where
    F: Fn(usize, BenchTenant) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let cpu_before = CpuTimes::now();
    let window = Window::after_warmup(args);
    let clients = args.clients;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..args.clients {
        let (one, tenants) = (one.clone(), tenants.to_vec());
        tasks.spawn(async move {
            let (mut latencies, mut bad, mut total) = (Vec::new(), 0, 0);
            // Each task starts at its own offset so they do not march in step.
            let mut i = task * tenants.len() / clients;
            while Instant::now() < window.to {
                let tenant = tenants[i % tenants.len()].clone();
                i += 1;
                let start = Instant::now();
                let good = one(task, tenant).await;
                let end = Instant::now();
                total += 1;
                if window.holds(start, end) {
                    latencies.push(end - start);
                    bad += usize::from(!good);
                }
            }
            (latencies, bad, total)
        });
    }
    let (mut latencies, mut bad, mut total) = (Vec::new(), 0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (l, b, t) = joined.expect("a load task panicked");
        latencies.extend(l);
        bad += b;
        total += t;
    }
    let mut measured = Measured::from_latencies(name, &latencies, args.window(), bad);
    measured.cpu_per_tx = Some(cpu_before.per_tx(total).0);
    report(&measured);
    measured
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(m: &Measured) {
    println!(
        "  {}: {} transactions, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {} bad{}",
        m.name,
        m.count,
        m.per_second,
        ms(m.p50),
        ms(m.p99),
        m.bad,
        if m.note.is_empty() {
            String::new()
        } else {
            format!(" {}", m.note)
        }
    );
}

/// The API load from 8 reqwest tasks inside this process (the fallback when wrk is
/// missing): their CPU competes with the server's.
async fn load_api_reqwest(
    args: &Args,
    service: &Service,
    tenants: &[BenchTenant],
) -> anyhow::Result<Measured> {
    // One client per task: each keeps its own keep-alive connection, as pgbench does.
    let clients: Vec<reqwest::Client> = (0..args.clients)
        .map(|_| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
        })
        .collect::<Result<_, _>>()?;
    let clients = Arc::new(clients);
    let url: Arc<str> = service.url().into();
    let measured = load("API (reqwest)", args, tenants, move |task, tenant| {
        let (clients, url) = (clients.clone(), url.clone());
        async move {
            let Ok(response) = clients[task]
                .get(&*url)
                .bearer_auth(&tenant.token)
                .send()
                .await
            else {
                return false;
            };
            if response.status() != reqwest::StatusCode::OK {
                return false;
            }
            match response.bytes().await {
                Ok(body) => serde_json::from_slice::<PageShape>(&body)
                    .is_ok_and(|page| page.data.len() == LIMIT),
                Err(_) => false,
            }
        }
    })
    .await;
    Ok(measured)
}

/// Checks every tenant's token gets a full page (200, 50 rows) before any load runs: wrk
/// only looks at statuses.
async fn check_every_tenant(service: &Service, tenants: &[BenchTenant]) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for tenant in tenants {
        let response = client
            .get(service.url())
            .bearer_auth(&tenant.token)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        let rows = serde_json::from_slice::<PageShape>(&body).map_or(0, |p| p.data.len());
        ensure!(
            status == reqwest::StatusCode::OK && rows == LIMIT,
            "{}: {status} with {rows} rows: {}",
            tenant.org,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// `wrk` on `PATH` (or `$WRK`), with its version line.
async fn find_wrk() -> Option<(PathBuf, String)> {
    let path = match std::env::var_os("WRK") {
        Some(p) => PathBuf::from(p),
        None => std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join("wrk"))
            .find(|p| p.is_file())?,
    };
    // `wrk -v` prints its version and usage, and exits non-zero.
    let out = Command::new(&path).arg("-v").output().await.ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let version = text.lines().next().unwrap_or("wrk").trim().to_owned();
    Some((path, version))
}

/// wrk's Lua script: each request carries the next tenant's token (each thread starts at
/// its own offset), and non-200 responses are counted per thread and summed in `done()`,
/// which also prints wrk's exact p50/p99 in µs.
fn wrk_script(tenants: &[BenchTenant]) -> String {
    let tokens: Vec<String> = tenants
        .iter()
        .map(|t| format!("  \"{}\",", t.token))
        .collect();
    format!(
        r#"-- Generated by benches/api.rs.
local tokens = {{
{}
}}
local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  bad = 0
  reqs = {{}}
  for k, token in ipairs(tokens) do
    reqs[k] = wrk.format(nil, nil, {{ ["Authorization"] = "Bearer " .. token }})
  end
  i = (id - 1) * math.floor(#tokens / {WRK_THREADS})
end

function request()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end

function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do
    b = b + t:get("bad")
  end
  io.write(string.format("BENCH bad=%d p50_us=%d p99_us=%d\n",
    b, latency:percentile(50), latency:percentile(99)))
end
"#,
        tokens.join("\n")
    )
}

/// One wrk run of `secs` seconds.
struct WrkRun {
    requests: usize,
    per_second: f64,
    /// wrk's `--latency` distribution: (percent, latency) for 50/75/90/99.
    distribution: Vec<(String, Duration)>,
    p50: Duration,
    p99: Duration,
    /// Non-200 responses (counted by the script) plus socket errors.
    bad: usize,
}

async fn run_wrk(
    wrk: &Path,
    script: &Path,
    args: &Args,
    url: &str,
    secs: usize,
) -> anyhow::Result<WrkRun> {
    let output = Command::new(wrk)
        .args(["-t", &WRK_THREADS.min(args.clients).to_string()])
        .args(["-c", &args.clients.to_string()])
        .args(["-d", &format!("{secs}s")])
        .args(["--timeout", "10s", "--latency", "-s"])
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", wrk.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "wrk failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_wrk(&stdout).with_context(|| format!("unexpected wrk output:\n{stdout}"))
}

/// A wrk duration such as `812.00us`, `1.23ms` or `2.01s`.
fn wrk_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let secs = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

fn parse_wrk(stdout: &str) -> Option<WrkRun> {
    let mut run = WrkRun {
        requests: 0,
        per_second: 0.0,
        distribution: Vec::new(),
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        bad: 0,
    };
    let (mut per_second, mut requests, mut done) = (None, None, None);
    let mut in_distribution = false;
    for line in stdout.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let [percent, latency] = words[..]
                && percent.ends_with('%')
            {
                run.distribution
                    .push((percent.to_owned(), wrk_duration(latency)?));
                continue;
            }
            in_distribution = false;
        }
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            per_second = rest.trim().parse().ok();
        } else if words.get(1) == Some(&"requests") && words.get(2) == Some(&"in") {
            // "123456 requests in 10.00s, 1.23GB read"
            requests = words[0].parse().ok();
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "Socket errors: connect 0, read 0, write 0, timeout 0"
            run.bad += rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<usize>().ok())
                .sum::<usize>();
        } else if let Some(rest) = line.strip_prefix("BENCH ") {
            let field = |name: &str| -> Option<u64> {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            };
            done = Some((field("bad")?, field("p50_us")?, field("p99_us")?));
        }
    }
    let (bad, p50_us, p99_us) = done?;
    run.per_second = per_second?;
    run.requests = requests?;
    run.bad += usize::try_from(bad).ok()?;
    run.p50 = Duration::from_micros(p50_us);
    run.p99 = Duration::from_micros(p99_us);
    Some(run)
}

/// The API load from wrk, a separate C process (as pgbench is for the database): a
/// warm-up run, then the measured run.
async fn load_api_wrk(
    args: &Args,
    service: &Service,
    tenants: &[BenchTenant],
    wrk: &Path,
    postmaster: Option<i32>,
) -> anyhow::Result<Measured> {
    let script =
        std::env::temp_dir().join(format!("capliquify-bench-api-{}.lua", std::process::id()));
    std::fs::write(&script, wrk_script(tenants))?;
    let url = service.url();
    if args.warmup > 0 {
        let warm = run_wrk(wrk, &script, args, &url, args.warmup).await?;
        ensure!(warm.bad == 0, "wrk warm-up: {} bad responses", warm.bad);
    }
    let cpu_before = CpuTimes::now();
    let db_before = postmaster.and_then(ServerCpu::now);
    let run = run_wrk(wrk, &script, args, &url, args.duration).await;
    let _ = std::fs::remove_file(&script);
    let run = run?;
    let (own, children) = cpu_before.per_tx(run.requests);
    let measured = Measured {
        name: "API (wrk)".into(),
        count: run.requests,
        per_second: run.per_second,
        p50: run.p50,
        p99: run.p99,
        bad: run.bad,
        note: format!(
            "(wrk --latency: {})",
            run.distribution
                .iter()
                .map(|(p, d)| format!("{p} {:.2} ms", ms(*d)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        cpu_per_tx: Some(own),
        client_cpu_per_tx: Some(children),
        db_cpu_per_tx: db_before.and_then(|db| db.per_tx(run.requests)),
    };
    report(&measured);
    Ok(measured)
}

async fn load_pgbench(
    args: &Args,
    server: &BenchServer,
    tenants: &[BenchTenant],
    postmaster: Option<i32>,
) -> anyhow::Result<Measured> {
    let dir = std::env::temp_dir().join(format!("capliquify-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let select = pgbench::products_page_sql(&(LIMIT + 1).to_string());
    let mut command = pgbench::command(server);
    command
        .arg("-n")
        .args(["-c", &args.clients.to_string()])
        .args(["-j", &args.clients.min(2).to_string()])
        .args(["-T", &(args.warmup + args.duration).to_string()]);
    for (i, tenant) in tenants.iter().enumerate() {
        let script = dir.join(format!("t{i}.sql"));
        // `\;` sends BEGIN and both SET LOCALs as one query, as scope::begin does.
        std::fs::write(
            &script,
            format!(
                "BEGIN \\; SET LOCAL search_path TO {} \\; SET LOCAL ROLE \"{}\";\n{select};\nCOMMIT;\n",
                tenant.scope.schema.quoted(),
                tenant.scope.role()
            ),
        )?;
        command.arg("-f").arg(format!("{}@1", script.display()));
    }
    let cpu_before = CpuTimes::now();
    let db_before = postmaster.and_then(ServerCpu::now);
    let logged = pgbench::run_logged(command, &service_url(server)?, &dir.join("logs")).await?;
    let _ = std::fs::remove_dir_all(&dir);
    let first_start = logged.first_start();
    let from = first_start + args.warmup();
    let to = from + args.window();
    let latencies: Vec<Duration> = logged
        .transactions
        .iter()
        .filter(|t| t.start >= from && t.end <= to)
        .map(|t| t.latency())
        .collect();
    let mut measured =
        Measured::from_latencies("pgbench", &latencies, args.window(), logged.unparsed);
    measured.note = format!(
        "(pgbench's own tps over {} s: {}; connected in {:.0} ms)",
        args.warmup + args.duration,
        logged.own_tps,
        first_start.saturating_sub(logged.launched).as_secs_f64() * 1e3
    );
    let all = logged.transactions.len();
    measured.client_cpu_per_tx = Some(cpu_before.per_tx(all).1);
    measured.db_cpu_per_tx = db_before.and_then(|db| db.per_tx(all));
    report(&measured);
    Ok(measured)
}

/// The database work of one request through sqlx alone: with `lookup`, the auth
/// middleware's caller query first; then the scoped transaction with the list SELECT.
async fn load_sqlx(
    args: &Args,
    pool: &PgPool,
    tenants: &[BenchTenant],
    lookup: bool,
) -> anyhow::Result<Measured> {
    let pool = pool.clone();
    let name = if lookup {
        "sqlx: lookup + scoped tx"
    } else {
        "sqlx: scoped tx only"
    };
    let sql: Arc<str> = pgbench::products_page_sql("$1").into();
    Ok(load(name, args, tenants, move |_, tenant| {
        let (pool, sql) = (pool.clone(), sql.clone());
        async move {
            let run = async {
                if lookup {
                    sqlx::query(capliquify::http::context::RESOLVE_CALLER_SQL)
                        .bind(&tenant.org)
                        .bind(&tenant.user)
                        .fetch_optional(&pool)
                        .await?;
                }
                let mut tx = scope::begin(&pool, &tenant.scope).await?;
                let rows = sqlx::query(AssertSqlSafe(sql.to_string()))
                    .bind((LIMIT + 1) as i64)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(rows.len())
            };
            run.await.is_ok_and(|n| n == LIMIT + 1)
        }
    })
    .await)
}

/// Mean time of each phase of one request, measured sequentially by one caller.
async fn profile(
    service: &Service,
    pool: &PgPool,
    tenant: &BenchTenant,
) -> anyhow::Result<Vec<(&'static str, Duration)>> {
    async fn mean<F, Fut, T>(mut f: F) -> anyhow::Result<Duration>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        for _ in 0..PROFILE_REPS / 10 {
            f().await?;
        }
        let start = Instant::now();
        for _ in 0..PROFILE_REPS {
            f().await?;
        }
        Ok(start.elapsed() / PROFILE_REPS)
    }
    let sql = pgbench::products_page_sql("$1");
    let mut phases = Vec::new();
    phases.push((
        "JWT verification (RS256)",
        mean(|| async { Ok(service.auth.verify(&tenant.token).await?) }).await?,
    ));
    phases.push((
        "caller lookup query",
        mean(|| async {
            Ok(sqlx::query(capliquify::http::context::RESOLVE_CALLER_SQL)
                .bind(&tenant.org)
                .bind(&tenant.user)
                .fetch_optional(pool)
                .await?)
        })
        .await?,
    ));
    let scoped_tx = || async {
        let mut tx = scope::begin(pool, &tenant.scope).await?;
        let rows: Vec<PgRow> = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind((LIMIT + 1) as i64)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows)
    };
    phases.push((
        "scoped transaction (BEGIN+SET, SELECT, COMMIT)",
        mean(scoped_tx).await?,
    ));
    let rows = scoped_tx().await?;
    phases.push((
        "decode 50 rows + JSON encode the page",
        mean(|| async {
            // The handler's own page writer: row by row into one buffer.
            let mut page = PageWriter::new();
            for row in &rows[..LIMIT] {
                page.push(&Product::from_row(row)?)
                    .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
            }
            Ok(page.into_json(Some("x".repeat(120))))
        })
        .await?,
    ));
    let client = reqwest::Client::new();
    let url = service.url();
    phases.push((
        "whole HTTP request (client included)",
        mean(|| async {
            let response = client
                .get(&url)
                .bearer_auth(&tenant.token)
                .send()
                .await?
                .error_for_status()?;
            Ok(response.bytes().await?)
        })
        .await?,
    ));
    for (name, d) in &phases {
        println!("  {name}: {:.1} µs", d.as_secs_f64() * 1e6);
    }
    Ok(phases)
}

fn print_table(args: &Args, rows: &[Measured], phases: &[(&'static str, Duration)]) {
    let name_width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(8);
    println!(
        "\n== results ({} s window, auth cache {})",
        args.duration,
        if args.no_auth_cache { "off" } else { "on" }
    );
    println!(
        "  {:<name_width$}  {:>10}  {:>8}  {:>8}  {:>5}  {:>14}  {:>17}",
        "", "requests/s", "p50 ms", "p99 ms", "bad", "our CPU µs/tx", "client CPU µs/tx"
    );
    let micros =
        |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.0}", d.as_secs_f64() * 1e6));
    for r in rows {
        println!(
            "  {:<name_width$}  {:>10.0}  {:>8.2}  {:>8.2}  {:>5}  {:>14}  {:>17}",
            r.name,
            r.per_second,
            ms(r.p50),
            ms(r.p99),
            r.bad,
            micros(r.cpu_per_tx),
            micros(r.client_cpu_per_tx),
        );
    }
    let ratio = rows[0].per_second / rows[1].per_second;
    println!(
        "\n  ratio {}/pgbench (requests/s): {ratio:.2}   goal >= 0.80   met: {}",
        rows[0].name,
        if ratio >= 0.8 { "yes" } else { "no" }
    );
    for r in &rows[2..] {
        println!(
            "  ratio {}/pgbench: {:.2}",
            r.name,
            r.per_second / rows[1].per_second
        );
    }
    cpu_ceiling(&rows[0], &rows[1], &rows[3]);
    println!("\n  one caller, mean per phase:");
    for (name, d) in phases {
        println!("    {name:<48} {:>8.1} µs", d.as_secs_f64() * 1e6);
    }
}

/// Where each side's CPU goes per transaction, and what that allows. With every process on
/// the same cores and all of them busy, a load's rate is about the cores' time divided by
/// the CPU one transaction costs all processes together, so the API's ratio to pgbench
/// cannot exceed pgbench's total CPU per transaction over the API's. From the same totals:
/// the most CPU the service may spend per request for a ratio of 0.8, set beside what
/// sqlx alone spends driving the transaction (`driver`, the "scoped tx only" row).
fn cpu_ceiling(api: &Measured, pgbench: &Measured, driver: &Measured) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (Some(service), Some(wrk), Some(api_db), Some(pg_client), Some(pg_db)) = (
        api.cpu_per_tx,
        api.client_cpu_per_tx,
        api.db_cpu_per_tx,
        pgbench.client_cpu_per_tx,
        pgbench.db_cpu_per_tx,
    ) else {
        println!("\n  (the database server's CPU is not readable here: no CPU ceiling)");
        return;
    };
    let api_total = us(service) + us(wrk) + us(api_db);
    let pg_total = us(pg_client) + us(pg_db);
    println!("\n  CPU per transaction, µs (every process shares the same cores):");
    println!(
        "    {:<12} {:>9} {:>9} {:>9} {:>9}",
        "", "service", "database", "load gen", "total"
    );
    println!(
        "    {:<12} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
        api.name,
        us(service),
        us(api_db),
        us(wrk),
        api_total
    );
    println!(
        "    {:<12} {:>9} {:>9.0} {:>9.0} {:>9.0}",
        pgbench.name,
        "-",
        us(pg_db),
        us(pg_client),
        pg_total
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "    cores busy: API {:.2}, pgbench {:.2} of {cores:.0}",
        api_total * api.per_second / 1e6,
        pg_total * pgbench.per_second / 1e6
    );
    println!(
        "  CPU ceiling of the ratio (pgbench's total / the API's): {:.2} (measured {:.2})",
        pg_total / api_total,
        api.per_second / pgbench.per_second
    );
    println!(
        "  for 0.80 the service could spend at most {:.0} µs per request (pgbench's total / \
         0.8 - the API's database and load generator); sqlx alone driving the transaction \
         spends {}",
        pg_total / 0.8 - us(api_db) - us(wrk),
        driver
            .cpu_per_tx
            .map_or("?".to_owned(), |d| format!("{:.0} µs", us(d)))
    );
}

/// The bench database as the service's least-privilege login role (`db init-roles`).
fn service_url(server: &BenchServer) -> anyhow::Result<String> {
    server.bench_url_as(capliquify::db::roles::DEFAULT_LOGIN)
}
