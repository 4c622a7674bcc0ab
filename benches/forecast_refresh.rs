//! `capliquify forecasts refresh` of one large tenant: wall time, series per second and the
//! process's peak memory, beside statsforecast's AutoETS on the same monthly series in the
//! same run.
//!
//! 1. Recreates the bench database (`DATABASE_URL`'s server, or the embedded cluster under
//!    `target/bench-refresh`, durable), migrates it and provisions one professional tenant
//!    with `--products` products and `--days` days of daily sales each (weekly and yearly
//!    seasonality, a trend and deterministic noise, different per product), ending yesterday,
//!    then `VACUUM (ANALYZE)` of the sales (as autovacuum leaves a table of past sales).
//! 2. Runs the real binary (built by Cargo with the bench, same profile):
//!    `capliquify forecasts refresh --tenant bench --jobs N --batch-size B --json`, as its
//!    own process, twice: first of a tenant without forecasts, then again, replacing them
//!    (what a recurring refresh does; the delete of the previous run is part of its cost).
//!    Wall time is the process's, start to exit; its peak resident memory is the kernel's
//!    `ru_maxrss` of the waited-for children (`getrusage(RUSAGE_CHILDREN)`, read after each
//!    refresh, before any other child runs). The refresh's own JSON gives the products
//!    refreshed and the time spent refreshing (without start-up and planning).
//! 3. Where the time goes: the same monthly series (read back from the database with the
//!    refresh's aggregation) forecast in this process by the same function on one core
//!    (`forecast::forecast`, `auto`: four models backtested on three origins, then the
//!    chosen one fitted): the fitting alone; the rest of the refresh is database work.
//! 4. The peer: `benches/peer/statsforecast_peer.py` with statsforecast's
//!    `AutoETS(season_length=12)` (the issue's peer) and its `MSTL` (AutoETS trend) on the
//!    same series, the same horizon, one core, after an untimed warm-up series. Printed: the
//!    rates and our ratio to each.
//!
//! ```text
//! python3 -m venv /tmp/st-venv && /tmp/st-venv/bin/pip install statsforecast
//! CAPLIQUIFY_PEER_PYTHON=/tmp/st-venv/bin/python \
//!     cargo bench --bench forecast_refresh -- [--products N] [--days N] [--jobs N]
//! ```

// Not every helper in support is this bench's (the client tools are the others').
#[allow(dead_code)]
mod support;

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, ensure};
use capliquify::audit::Actor;
use capliquify::billing::Tier;
use capliquify::domain::forecast::{self, ModelChoice};
use capliquify::tenancy::{NewTenant, Tenancy, migrate};
use serde_json::Value;
use sqlx::AssertSqlSafe;
use support::{BenchArgs, BenchServer};

/// `capliquify forecasts refresh` of one tenant with many products (docs/benchmarks.md),
/// beside statsforecast's AutoETS on the same series.
#[derive(Debug, clap::Parser)]
#[command(
    name = "forecast_refresh",
    bin_name = "cargo bench --bench forecast_refresh --"
)]
struct Args {
    /// Products in the tenant, each one series.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    products: u32,
    /// Days of daily sales per product, ending yesterday.
    #[arg(long, value_name = "N", default_value_t = 1095)]
    days: u32,
    /// The refresh's --jobs: batches refreshed at the same time.
    #[arg(long, value_name = "N", default_value_t = 2)]
    jobs: u32,
    /// The refresh's --batch-size: products per tenant transaction.
    #[arg(long, value_name = "N", default_value_t = 100)]
    batch_size: u32,
    /// Months ahead (the refresh's --horizon and the peer's h).
    #[arg(long, value_name = "N", default_value_t = 12)]
    horizon: u32,
    /// The Python with statsforecast; without one the peer is left out.
    #[arg(long, env = "CAPLIQUIFY_PEER_PYTHON", default_value = "python3")]
    peer_python: String,
}

impl BenchArgs for Args {
    fn check(&self) -> Result<(), String> {
        if self.products < 1 || self.days < 62 {
            return Err("--products must be at least 1 and --days at least 62".into());
        }
        if !(1..=64).contains(&self.jobs) || !(1..=100).contains(&self.batch_size) {
            return Err("--jobs must be 1 to 64 and --batch-size 1 to 100".into());
        }
        if !(1..=36).contains(&self.horizon) {
            return Err("--horizon must be 1 to 36 (months)".into());
        }
        Ok(())
    }
}

/// The largest resident set of any waited-for child so far, in KiB (Linux: `ru_maxrss`).
fn children_peak_rss_kib() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable rusage; getrusage only writes it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    if rc != 0 {
        return f64::NAN;
    }
    // SAFETY: getrusage returned 0, so it filled the struct.
    unsafe { usage.assume_init() }.ru_maxrss as f64
}

/// The peer's seconds for the series, per model (AutoETS, then MSTL).
fn peer(python: &str, horizon: u32, series: &[Vec<f64>]) -> anyhow::Result<Vec<(String, f64)>> {
    let job = serde_json::json!({
        "season": 12, "horizon": horizon, "series": series, "models": ["AutoETS", "MSTL"],
    });
    let result = support::statsforecast_peer(python, &job)?;
    ["AutoETS", "MSTL"]
        .iter()
        .map(|m| {
            let secs = result["models"][m]["seconds"]
                .as_f64()
                .context("peer seconds")?;
            Ok((m.to_string(), secs))
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args: Args = support::args();
    let server = BenchServer::open("capliquify_bench_refresh", "bench-refresh")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(run(&args, &server));
    drop(runtime);
    server.stop()?;
    outcome
}

async fn run(args: &Args, server: &BenchServer) -> anyhow::Result<()> {
    server.recreate_database().await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&server.bench_url)
        .await?;
    migrate::migrate_public(&pool, migrate::tenant_migrations()).await?;
    let tenant = Tenancy::new(pool.clone(), 30)
        .provision(
            &NewTenant::parse("bench", "Bench Demand", Tier::Professional, "org_bench")?,
            &Actor::operator(),
        )
        .await?;
    let s = tenant.schema_name.clone();
    let seeding = Instant::now();
    let (products, days) = (args.products, args.days);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "INSERT INTO \"{s}\".companies (name) VALUES ('Bench Works');
         INSERT INTO \"{s}\".products (company_id, sku, name, unit_cost, unit_price)
              SELECT c.id, 'SKU-' || lpad(g::text, 5, '0'), 'Product ' || g, 2 + g % 7, 5 + g % 11
                FROM generate_series(1, {products}) g, \"{s}\".companies c;
         INSERT INTO \"{s}\".sales (company_id, product_id, sale_date, quantity, unit_price, total_amount)
              SELECT p.company_id, p.id, d, q, p.unit_price, q * p.unit_price
                FROM \"{s}\".products p
               CROSS JOIN generate_series(current_date - {days}, current_date - 1, interval '1 day') AS t(ts)
               CROSS JOIN LATERAL (SELECT t.ts::date AS d, substr(p.sku, 5)::int AS k) AS x
               CROSS JOIN LATERAL (SELECT greatest(0, round(
                      (5 + k % 40)
                      * (1 + 0.3 * sin(2 * pi() * (extract(doy FROM d) + k) / 365.25))
                      * (1 + 0.15 * (extract(isodow FROM d) IN (6, 7))::int)
                      * (1 + (k % 5 - 2) * 0.0002 * (d - (current_date - {days})))
                      + (abs(hashint4(k * 100003 + (d - date '2000-01-01'))) % 7 - 3)))::int AS q) AS y;
         ANALYZE \"{s}\".products;"
    )))
    .execute(&pool)
    .await?;
    // As autovacuum leaves a table whose rows are older than a day: statistics and the
    // visibility map (index-only scans) up to date. Its own statement: VACUUM cannot run in
    // the implicit transaction of a multi-statement query.
    sqlx::raw_sql(AssertSqlSafe(format!("VACUUM (ANALYZE) \"{s}\".sales")))
        .execute(&pool)
        .await?;
    let rows: i64 =
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM \"{s}\".sales")))
            .fetch_one(&pool)
            .await?;
    eprintln!(
        "seeded {products} products × {days} days = {rows} sales rows in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    // The monthly series the refresh forecasts: its aggregation, complete months only.
    let monthly: Vec<(uuid::Uuid, f64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT product_id, sum(quantity)::float8 FROM \"{s}\".sales
          WHERE sale_date < date_trunc('month', current_date)
          GROUP BY product_id, date_trunc('month', sale_date)
          ORDER BY product_id, date_trunc('month', sale_date)"
    )))
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    let mut series: Vec<Vec<f64>> = Vec::new();
    let mut last = None;
    for (product, value) in monthly {
        if last != Some(product) {
            series.push(Vec::new());
            last = Some(product);
        }
        series.last_mut().expect("pushed").push(value);
    }

    // The refresh, as its own process: first of a tenant without forecasts, then again,
    // replacing them (what a nightly refresh does). The peak RSS is read after each.
    let mut refreshes = Vec::new();
    for name in [
        "first refresh (no forecasts yet)",
        "second refresh (replaces them)",
    ] {
        let wall = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
            .args(["forecasts", "refresh", "--tenant", "bench", "--json"])
            .args(["--jobs", &args.jobs.to_string()])
            .args(["--batch-size", &args.batch_size.to_string()])
            .args(["--horizon", &args.horizon.to_string()])
            .env("DATABASE_URL", &server.bench_url)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit())
            .output()
            .context("run capliquify forecasts refresh")?;
        let wall = wall.elapsed().as_secs_f64();
        let peak_kib = children_peak_rss_kib();
        ensure!(out.status.success(), "the refresh failed: {:?}", out.status);
        let report: Value = serde_json::from_slice(&out.stdout)?;
        let refreshed = report["products"].as_u64().context("products")?;
        ensure!(
            refreshed == u64::from(args.products),
            "refreshed {refreshed} of {} products",
            args.products
        );
        let refresh_secs = report["seconds"].as_f64().context("seconds")?;
        let models = report["tenants"][0]["models"].clone();
        refreshes.push((name, wall, refresh_secs, peak_kib, models));
    }

    // The fitting alone, on one core, in this process.
    let h = args.horizon as usize;
    let fit = Instant::now();
    for y in &series {
        std::hint::black_box(forecast::forecast(y, 12, h, ModelChoice::Auto, 0.95));
    }
    let fit_secs = fit.elapsed().as_secs_f64();

    let peer = peer(&args.peer_python, args.horizon, &series);
    let n = series.len() as f64;
    let months = series.iter().map(Vec::len).max().unwrap_or(0);
    println!(
        "one tenant, {products} products × {days} days of daily sales ({rows} rows), monthly series of up to {months} months, horizon {}; database: {}",
        args.horizon,
        server.describe()
    );
    println!(
        "capliquify forecasts refresh --tenant bench --jobs {} --batch-size {} (its own process):",
        args.jobs, args.batch_size
    );
    for (name, wall, refresh_secs, peak_kib, models) in &refreshes {
        println!(
            "  {name}: process wall {wall:.2} s, refreshing {refresh_secs:.2} s, peak RSS so far {:.1} MiB; models chosen {models}",
            peak_kib / 1024.0
        );
    }
    println!("{:<56} {:>10} {:>10}", "", "seconds", "series/s");
    for (name, wall, refresh_secs, _, _) in &refreshes {
        println!(
            "{:<56} {wall:>10.2} {:>10.1}",
            format!("{name}, whole process"),
            n / wall
        );
        println!(
            "{:<56} {refresh_secs:>10.2} {:>10.1}",
            format!("{name}, refreshing only"),
            n / refresh_secs
        );
    }
    println!(
        "{:<56} {fit_secs:>10.2} {:>10.1}",
        "capliquify auto, fitting only, one core in-process",
        n / fit_secs
    );
    match peer {
        Ok(peers) => {
            for (model, peer_secs) in &peers {
                let label = if model == "MSTL" {
                    "statsforecast MSTL(12, AutoETS ZZN trend), one core".to_owned()
                } else {
                    "statsforecast AutoETS(season_length=12), one core".to_owned()
                };
                println!("{label:<56} {peer_secs:>10.2} {:>10.1}", n / peer_secs);
            }
            for (model, peer_secs) in &peers {
                let peer_rate = n / peer_secs;
                for (name, wall, _, _, _) in &refreshes {
                    println!(
                        "ratio, our throughput / statsforecast {model}'s, {name}, whole process: {:.2}×",
                        (n / wall) / peer_rate
                    );
                }
                println!(
                    "ratio, our throughput / statsforecast {model}'s, fitting only: {:.2}×",
                    (n / fit_secs) / peer_rate
                );
            }
        }
        Err(err) => println!(
            "peer not run ({err:#}); set CAPLIQUIFY_PEER_PYTHON to a Python with statsforecast"
        ),
    }
    Ok(())
}
