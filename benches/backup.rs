//! Backup benchmark: does backing up one tenant stay as fast when the database holds many
//! other tenants? Measured against `pg_dump -n <schema>` in the same run, on the same server.
//!
//! 1. One tenant with `--rows` products (and as many sales and inventory rows) plus
//!    `--small` other tenants: `--reps` backups through [`backup::backup`] (ours) and as many
//!    `pg_dump -Fc -n <schema> -f <file>` runs, alternating; then `--reps` restores of our
//!    archive with `--replace`.
//! 2. The same after provisioning other tenants up to `--large`.
//!
//! Printed: medians, and the ratios large/small (goal for ours: ≤ 1.2) and ours/pg_dump.
//!
//! ```text
//! cargo bench --bench backup -- [--small 10] [--large 1000] [--rows 2000] [--reps 7]
//! ```
//!
//! The server is `DATABASE_URL` when set (database `capliquify_bench_backup`, dropped at the
//! end), otherwise the durable embedded cluster under `target/bench-pg`.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context as _, ensure};
use capliquify::audit::Actor;
use capliquify::billing::Tier;
use capliquify::tenancy::backup::{self, RestoreMode};
use capliquify::tenancy::migrate;
use capliquify::tenancy::{NewTenant, Tenancy};
use sqlx::PgPool;
use support::{BenchArgs, BenchServer, median};

const BENCH_DB: &str = "capliquify_bench_backup";
const SUBJECT: &str = "subject";
/// Concurrent provisioning tasks while growing the fleet (nothing is measured then).
const BUILDERS: usize = 3;

/// Backup of one tenant with few and with many other tenants in the database, against
/// `pg_dump -n <schema>` in the same run (docs/benchmarks.md).
#[derive(Debug, clap::Parser)]
#[command(name = "backup", bin_name = "cargo bench --bench backup --")]
struct Args {
    /// Other tenants in the database for the first measurement.
    #[arg(long, value_name = "N", default_value_t = 10)]
    small: usize,
    /// Other tenants in the database for the second measurement (more than --small).
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    large: usize,
    /// Products of the backed-up tenant (and as many sales and inventory rows).
    #[arg(long, value_name = "N", default_value_t = 2_000)]
    rows: usize,
    /// Backups, pg_dump runs and restores per fleet size (medians reported).
    #[arg(long, value_name = "N", default_value_t = 7)]
    reps: usize,
}

impl BenchArgs for Args {
    fn check(&self) -> Result<(), String> {
        if self.small >= self.large {
            return Err("--small must be below --large".into());
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

/// Medians of one fleet size, in milliseconds.
struct Round {
    others: usize,
    ours: f64,
    pg_dump: f64,
    restore: f64,
    archive_bytes: u64,
    dump_bytes: u64,
}

async fn run(args: &Args, server: &BenchServer) -> anyhow::Result<()> {
    server.recreate_database().await?;
    let pool = capliquify::db::connect(&server.bench_url, 8).await?;
    migrate::migrate_public(&pool, migrate::tenant_migrations()).await?;
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&pool)
        .await?;
    let pg_dump_version = tokio::process::Command::new(server.tool("pg_dump"))
        .arg("--version")
        .output()
        .await
        .context("running pg_dump --version")?;
    server.print_header("backup", &version);
    println!(
        "  pg_dump:  {}",
        String::from_utf8_lossy(&pg_dump_version.stdout).trim()
    );

    let tenancy = Tenancy::new(pool.clone(), 30);
    let subject = tenancy
        .provision(
            &NewTenant::parse(SUBJECT, "Subject Co", Tier::Professional, "org_subject")?,
            &Actor::operator(),
        )
        .await?;
    fill(&pool, &subject.schema_name, args.rows).await?;
    println!(
        "  subject:  {} products, {} sales, {} inventory rows (+ one row in each other table)",
        args.rows, args.rows, args.rows
    );
    let folder = tempfile::Builder::new()
        .prefix("capliquify-bench-backup-")
        .tempdir()?;

    let mut rounds = Vec::new();
    for others in [args.small, args.large] {
        grow(&tenancy, others).await?;
        rounds.push(
            measure(
                args,
                server,
                &pool,
                &subject.schema_name,
                folder.path(),
                others,
            )
            .await?,
        );
    }
    pool.close().await;

    let (s, l) = (&rounds[0], &rounds[1]);
    println!();
    println!(
        "| other tenants | ours backup ms | pg_dump -n ms | ours/pg_dump | restore --replace ms | archive bytes | pg_dump -Fc bytes |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rounds {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.1} | {} | {} |",
            r.others,
            r.ours,
            r.pg_dump,
            r.ours / r.pg_dump,
            r.restore,
            r.archive_bytes,
            r.dump_bytes
        );
    }
    let ratio = l.ours / s.ours;
    println!();
    println!(
        "ours backup, {} vs {} other tenants: ratio {ratio:.2} (goal ≤ 1.2: {})",
        l.others,
        s.others,
        if ratio <= 1.2 { "met" } else { "NOT met" }
    );
    println!(
        "pg_dump -n, {} vs {} other tenants: ratio {:.2}",
        l.others,
        s.others,
        l.pg_dump / s.pg_dump
    );
    println!(
        "restore --replace, {} vs {} other tenants: ratio {:.2}",
        l.others,
        s.others,
        l.restore / s.restore
    );
    Ok(())
}

/// Rows in every table of the subject; the three large tables get `rows` each.
async fn fill(pool: &PgPool, schema: &str, rows: usize) -> anyhow::Result<()> {
    let rows = i64::try_from(rows)?;
    let sql = format!(
        "INSERT INTO {schema}.companies (id, name) VALUES ('11111111-1111-1111-1111-111111111111', 'Subject Co');
         INSERT INTO {schema}.products (company_id, sku, name, unit_cost, unit_price, description)
           SELECT '11111111-1111-1111-1111-111111111111', 'SKU-' || g, 'Product ' || g, g % 100 + 1, g % 100 + 2,
                  'A product description long enough to look real, number ' || g
             FROM generate_series(1, {rows}) g;
         INSERT INTO {schema}.sales (company_id, product_id, sale_date, quantity, unit_price, total_amount, channel)
           SELECT company_id, id, date '2026-01-01' + (random() * 300)::int, 3, unit_price, unit_price * 3, 'web'
             FROM {schema}.products;
         INSERT INTO {schema}.inventory (company_id, product_id, quantity_on_hand, quantity_reserved, unit_cost)
           SELECT company_id, id, 50, 5, unit_cost FROM {schema}.products;
         INSERT INTO {schema}.forecasts (company_id, forecast_date, forecast_type, predicted_value)
           VALUES ('11111111-1111-1111-1111-111111111111', date '2026-02-01', 'demand', 100);
         INSERT INTO {schema}.working_capital_metrics (company_id, period_date, period_type, cash)
           VALUES ('11111111-1111-1111-1111-111111111111', date '2026-01-31', 'monthly', 1000);
         INSERT INTO {schema}.scenarios (company_id, name, parameters)
           VALUES ('11111111-1111-1111-1111-111111111111', 'Base', '{{}}');
         INSERT INTO {schema}.user_preferences (user_id) VALUES ('user_subject');
         ANALYZE;"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await?;
    Ok(())
}

/// Provisions other tenants until there are `others` besides the subject.
async fn grow(tenancy: &Tenancy, others: usize) -> anyhow::Result<()> {
    let have: i64 = sqlx::query_scalar("SELECT count(*) - 1 FROM public.tenants")
        .fetch_one(tenancy.pool())
        .await?;
    let have = usize::try_from(have)?;
    if have >= others {
        return Ok(());
    }
    let missing = others - have;
    eprintln!("  provisioning {missing} other tenants");
    let started = Instant::now();
    let claimed = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..BUILDERS {
        let (tenancy, claimed) = (tenancy.clone(), claimed.clone());
        tasks.spawn(async move {
            loop {
                let i = claimed.fetch_add(1, Ordering::Relaxed);
                if i >= missing {
                    break;
                }
                let slug = format!("other-{:06}", have + i);
                let new = NewTenant::parse(&slug, &slug, Tier::Starter, &format!("org_{slug}"))?;
                tenancy.provision(&new, &Actor::operator()).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    eprintln!("  done in {:.0} s", started.elapsed().as_secs_f64());
    // Statistics and a checkpoint, so neither lands inside a measurement.
    sqlx::raw_sql("ANALYZE; CHECKPOINT")
        .execute(tenancy.pool())
        .await?;
    Ok(())
}

async fn measure(
    args: &Args,
    server: &BenchServer,
    pool: &PgPool,
    schema: &str,
    folder: &Path,
    others: usize,
) -> anyhow::Result<Round> {
    println!("== {others} other tenants");
    let (mut ours, mut dumps, mut restores) = (Vec::new(), Vec::new(), Vec::new());
    let (mut archive_bytes, mut dump_bytes) = (0, 0);
    // One discarded warm-up of each, then alternate which goes first.
    for rep in 0..=args.reps {
        let archive = folder.join(format!("ours-{others}-{rep}.capliquify-backup"));
        let dump = folder.join(format!("dump-{others}-{rep}.pgdump"));
        let (o, d) = if rep % 2 == 0 {
            let o = backup_ours(pool, &archive).await?;
            (o, pg_dump(server, schema, &dump).await?)
        } else {
            let d = pg_dump(server, schema, &dump).await?;
            (backup_ours(pool, &archive).await?, d)
        };
        let started = Instant::now();
        backup::restore(
            pool,
            &archive,
            RestoreMode::Replace,
            backup::Trust::key(&bench_key()),
            &Actor::operator(),
            &|_| {},
        )
        .await?;
        let r = ms(started);
        archive_bytes = std::fs::metadata(&archive)?.len();
        dump_bytes = std::fs::metadata(&dump)?.len();
        std::fs::remove_file(&archive)?;
        std::fs::remove_file(&dump)?;
        if rep == 0 {
            continue;
        }
        println!("  rep {rep}: ours {o:.1} ms, pg_dump {d:.1} ms, restore {r:.1} ms");
        ours.push(o);
        dumps.push(d);
        restores.push(r);
    }
    Ok(Round {
        others,
        ours: median(&ours),
        pg_dump: median(&dumps),
        restore: median(&restores),
        archive_bytes,
        dump_bytes,
    })
}

/// Wall clock of one backup through the library (connection from the warm pool).
async fn backup_ours(pool: &PgPool, file: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    backup::backup(
        pool,
        SUBJECT,
        Some(file),
        false,
        Some(&bench_key()),
        &Actor::operator(),
        &|_| {},
    )
    .await?;
    Ok(ms(started))
}

/// Wall clock of one `pg_dump` process (its start-up and connection included: that is how
/// operators run it).
async fn pg_dump(server: &BenchServer, schema: &str, file: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = tokio::process::Command::new(server.tool("pg_dump"))
        .args(["-Fc", "-n", schema, "-f"])
        .arg(file)
        .arg("-d")
        .arg(&server.bench_url)
        .status()
        .await
        .context("running pg_dump")?;
    ensure!(status.success(), "pg_dump failed: {status}");
    Ok(ms(started))
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// Archives are signed as in production (the HMAC is part of the measured cost).
fn bench_key() -> backup::BackupKey {
    backup::BackupKey::parse("bench-backup-key-0123456789abcdef-XYZ")
        .unwrap_or_else(|e| panic!("the bench's backup key: {e}"))
}
