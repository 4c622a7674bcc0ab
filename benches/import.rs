//! Import benchmark: a large sales CSV through `capliquify import` (parsed, validated,
//! streamed with `COPY` into a staging table and merged by natural key) against
//! `psql \copy` of the same rows into the same table, in the same run, on the same server;
//! and the peak resident memory of the importing process.
//!
//! 1. One tenant (enterprise) with one company and 50 products.
//! 2. Two files of the same `--rows` sales: ours as a person's export (external id, date,
//!    SKU, quantity, unit price, channel, customer), psql's as the table's columns (company
//!    and product ids, the total computed).
//! 3. `--reps` times, alternating: `TRUNCATE sales`, `CHECKPOINT`, then `psql -c '\copy …'`;
//!    `TRUNCATE sales`, `CHECKPOINT`, then `capliquify import SLUG FILE --table sales`
//!    (the release binary Cargo builds with the bench), its `VmHWM` read from
//!    `/proc/<pid>/status` every 20 ms. Each run checks that `sales` then holds `--rows`.
//!
//! Printed: medians, the speed ratio psql/ours (goal ≥ 0.5), and our peak RSS (the
//! largest `VmHWM` seen; PostgreSQL's processes are not counted).
//!
//! ```text
//! cargo bench --bench import -- [--rows 1000000] [--reps 3]
//! ```
//!
//! The server is `DATABASE_URL` when set (database `capliquify_bench_import`, dropped at the
//! end), otherwise the durable embedded cluster under `target/bench-pg`.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use capliquify::audit::Actor;
use capliquify::billing::Tier;
use capliquify::tenancy::migrate;
use capliquify::tenancy::{NewTenant, Tenancy};
use sqlx::PgPool;
use support::{BenchArgs, BenchServer, median};

const BENCH_DB: &str = "capliquify_bench_import";
const SLUG: &str = "importer";
const PRODUCTS: usize = 50;

/// A large sales CSV through `capliquify import` against `psql \copy` of the same rows
/// (docs/benchmarks.md).
#[derive(Debug, clap::Parser)]
#[command(name = "import", bin_name = "cargo bench --bench import --")]
struct Args {
    /// Sales rows in the file.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    rows: usize,
    /// Runs of each (medians reported).
    #[arg(long, value_name = "N", default_value_t = 3)]
    reps: usize,
}

impl BenchArgs for Args {
    fn check(&self) -> Result<(), String> {
        if self.rows < 1 {
            return Err("--rows must be at least 1".into());
        }
        if self.reps < 1 {
            return Err("--reps must be at least 1".into());
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let args: Args = support::args();
    support::run_on_server(BENCH_DB, "bench-pg", async |server| {
        run(&args, server).await
    })
}

async fn run(args: &Args, server: &BenchServer) -> anyhow::Result<()> {
    server.recreate_database().await?;
    let pool = capliquify::db::connect(&server.bench_url, 4).await?;
    migrate::migrate_public(&pool, migrate::tenant_migrations()).await?;
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&pool)
        .await?;
    let psql = server.tool("psql");
    let psql_version = Command::new(&psql).arg("--version").output()?;
    server.print_header("import", &version);
    println!(
        "  psql:     {}",
        String::from_utf8_lossy(&psql_version.stdout).trim()
    );

    let tenant = Tenancy::new(pool.clone(), 30)
        .provision(
            &NewTenant::parse(SLUG, "Importer Co", Tier::Enterprise, "org_importer")?,
            &Actor::operator(),
        )
        .await?;
    let schema = tenant.schema_name.clone();
    let (company, products) = fill(&pool, &schema).await?;
    let folder = tempfile::Builder::new()
        .prefix("capliquify-bench-import-")
        .tempdir()?;
    let ours_file = folder.path().join("sales.csv");
    let psql_file = folder.path().join("sales-columns.csv");
    write_files(args.rows, &company, &products, &ours_file, &psql_file)?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!(
        "  files:    {} rows; ours {:.1} MB, psql's {:.1} MB",
        args.rows,
        size(&ours_file) as f64 / 1e6,
        size(&psql_file) as f64 / 1e6
    );

    let copy = format!(
        "\\copy {schema}.sales (company_id, product_id, sale_date, quantity, unit_price, total_amount, channel, external_id, customer_name) FROM '{}' WITH (FORMAT csv, HEADER)",
        psql_file.display()
    );
    let (mut ours, mut theirs, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..args.reps {
        reset(&pool, &schema).await?;
        let started = Instant::now();
        let out = Command::new(&psql)
            .arg(&server.bench_url)
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", &copy])
            .output()
            .context("running psql")?;
        let psql_ms = started.elapsed().as_secs_f64() * 1e3;
        ensure!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        check_rows(&pool, &schema, args.rows).await?;

        reset(&pool, &schema).await?;
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_capliquify"))
            .args(["import", SLUG])
            .arg(&ours_file)
            .args(["--table", "sales", "--json"])
            .env("DATABASE_URL", &server.bench_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running capliquify import")?;
        let mut peak_kib = 0u64;
        let status_path = format!("/proc/{}/status", child.id());
        let status = loop {
            if let Ok(status) = std::fs::read_to_string(&status_path)
                && let Some(hwm) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(hwm);
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let ours_ms = started.elapsed().as_secs_f64() * 1e3;
        let output = child.wait_with_output()?;
        ensure!(
            status.success(),
            "capliquify import failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        check_rows(&pool, &schema, args.rows).await?;
        println!(
            "  run {}: psql \\copy {psql_ms:.0} ms, capliquify import {ours_ms:.0} ms (peak RSS {:.1} MiB)",
            rep + 1,
            peak_kib as f64 / 1024.0
        );
        theirs.push(psql_ms);
        ours.push(ours_ms);
        peaks.push(peak_kib as f64 / 1024.0);
    }
    pool.close().await;

    let (o, t) = (median(&ours), median(&theirs));
    let peak = peaks.iter().copied().fold(0.0, f64::max);
    let ratio = t / o;
    println!();
    println!(
        "| rows | capliquify import ms (median) | psql \\copy ms (median) | speed ratio psql/ours | peak RSS of the import MiB |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {o:.0} | {t:.0} | {ratio:.2} | {peak:.1} |",
        args.rows
    );
    println!();
    println!(
        "speed ratio {ratio:.2} (goal ≥ 0.5: {})",
        if ratio >= 0.5 { "met" } else { "NOT met" }
    );
    Ok(())
}

/// One company and the products; returns the company id and the products' (sku, id).
async fn fill(pool: &PgPool, schema: &str) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let company: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.companies (name) VALUES ('Importer Co') RETURNING id::text"
    )))
    .fetch_one(pool)
    .await?;
    let products: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.products (company_id, sku, name, unit_cost, unit_price)
         SELECT '{company}', 'P-' || g, 'Product ' || g, 5, 10 FROM generate_series(0, {}) g
         RETURNING sku, id::text",
        PRODUCTS - 1
    )))
    .fetch_all(pool)
    .await?;
    let mut products = products;
    products.sort_by_key(|(sku, _)| sku[2..].parse::<usize>().unwrap_or(0));
    Ok((company, products))
}

fn write_files(
    rows: usize,
    company: &str,
    products: &[(String, String)],
    ours: &Path,
    theirs: &Path,
) -> anyhow::Result<()> {
    let mut a = std::io::BufWriter::new(std::fs::File::create(ours)?);
    let mut b = std::io::BufWriter::new(std::fs::File::create(theirs)?);
    writeln!(
        a,
        "Transaction ID,Order date,Item code,Qty,Unit price,Channel,Customer"
    )?;
    writeln!(
        b,
        "company_id,product_id,sale_date,quantity,unit_price,total_amount,channel,external_id,customer_name"
    )?;
    let channels = ["web", "amazon", "retail", "distributor"];
    for i in 0..rows {
        let (sku, id) = &products[i % products.len()];
        let date = format!("2026-{:02}-{:02}", i % 12 + 1, i % 28 + 1);
        let quantity = i % 9 + 1;
        let cents = 100 + (i * 37) % 9_900;
        let price = format!("{}.{:02}", cents / 100, cents % 100);
        let total_cents = cents * quantity;
        let total = format!("{}.{:02}", total_cents / 100, total_cents % 100);
        let channel = channels[i % channels.len()];
        let customer = format!("Customer {:05} Trading Ltd", i % 9_973);
        writeln!(
            a,
            "ORD-{i:08}-L1,{date},{sku},{quantity},{price},{channel},{customer}"
        )?;
        writeln!(
            b,
            "{company},{id},{date},{quantity},{price},{total},{channel},ORD-{i:08}-L1,{customer}"
        )?;
    }
    a.flush()?;
    b.flush()?;
    Ok(())
}

async fn reset(pool: &PgPool, schema: &str) -> anyhow::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE {schema}.sales")))
        .execute(pool)
        .await?;
    sqlx::query("CHECKPOINT").execute(pool).await?;
    Ok(())
}

async fn check_rows(pool: &PgPool, schema: &str, rows: usize) -> anyhow::Result<()> {
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.sales"
    )))
    .fetch_one(pool)
    .await?;
    ensure!(n as usize == rows, "sales holds {n} rows, not {rows}");
    Ok(())
}
