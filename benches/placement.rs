//! Moving a tenant between two PostgreSQL clusters (`capliquify tenant move`), against
//! `pg_dump -n <schema> | psql -1` copying the same schema between the same clusters in the
//! same run: the ratio ours/baseline is the number to watch.
//!
//! Two embedded durable clusters under `target/` (home and `eu2`); with `DATABASE_URL`
//! set, two databases on that one server instead. The tenant has 100,000 sales rows (and
//! a company and 50 products) by default.
//!
//! ```text
//! cargo bench --bench placement                      # --sales 100000 --rounds 3
//! cargo bench --bench placement -- --sales 20000 --rounds 1
//! ```
//!
//! Each round: the baseline copies home → eu2 (timed), its copy is dropped; our move goes
//! home → eu2 (timed, drain 0 s: the wait for service caches is policy, not work), then
//! back home (timed too, reported separately).

mod support;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use capliquify::audit::Actor;
use capliquify::billing::Tier;
use capliquify::db::{ClusterName, Clusters};
use capliquify::tenancy::placement::{self, MoveOptions};
use capliquify::tenancy::{NewTenant, Tenancy, migrate};
use sqlx::AssertSqlSafe;
use support::{BenchArgs, BenchServer, median};

/// Moving a tenant between two clusters (`capliquify tenant move`), against
/// `pg_dump -n <schema> | psql -1` copying the same schema in the same run
/// (docs/benchmarks.md).
#[derive(Debug, clap::Parser)]
#[command(name = "placement", bin_name = "cargo bench --bench placement --")]
struct Args {
    /// Sales rows of the moved tenant.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    sales: i64,
    /// Rounds of baseline copy, move out and move back (0 counts as 1).
    #[arg(long, value_name = "N", default_value_t = 3)]
    rounds: usize,
}

impl BenchArgs for Args {}

fn main() -> anyhow::Result<()> {
    let Args { sales, rounds } = support::args();
    let home = BenchServer::open("capliquify_bench_place_home", "bench-placement-home")?;
    let eu2 = BenchServer::open("capliquify_bench_place_eu2", "bench-placement-eu2")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run(&home, &eu2, sales, rounds.max(1)));
    home.stop()?;
    eu2.stop()?;
    result
}

async fn run(
    home: &BenchServer,
    eu2: &BenchServer,
    sales: i64,
    rounds: usize,
) -> anyhow::Result<()> {
    home.recreate_database().await?;
    eu2.recreate_database().await?;
    let home_pool = capliquify::db::connect(&home.bench_url, 4).await?;
    let eu2_pool = capliquify::db::connect(&eu2.bench_url, 4).await?;
    migrate::migrate_public(&home_pool, migrate::tenant_migrations()).await?;
    migrate::migrate_public(&eu2_pool, migrate::tenant_migrations()).await?;
    let clusters =
        Clusters::single(home_pool.clone()).with(ClusterName::parse("eu2")?, eu2_pool.clone());
    println!("placement benchmark: move a tenant with {sales} sales rows between two clusters");
    println!("  home: {}", home.describe());
    println!("  eu2:  {}", eu2.describe());

    let tenant = Tenancy::new(home_pool.clone(), 30)
        .provision(
            &NewTenant::parse(
                "bench-mover",
                "Bench Mover",
                Tier::Enterprise,
                "org_bench_mover",
            )?,
            &Actor::operator(),
        )
        .await?;
    let schema = tenant.schema_name.clone();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "INSERT INTO \"{schema}\".companies (name) VALUES ('Bench Works');
         INSERT INTO \"{schema}\".products (company_id, sku, name, unit_cost, unit_price)
              SELECT c.id, 'SKU-' || g, 'Product ' || g, 1.5 + g, 3 + g
                FROM generate_series(1, 50) g, \"{schema}\".companies c;
         INSERT INTO \"{schema}\".sales (company_id, product_id, sale_date, quantity, unit_price,
                                         total_amount, channel, customer_name)
              SELECT c.id, p.id, date '2025-01-01' + g % 365, 1 + g % 20, p.unit_price,
                     (1 + g % 20) * p.unit_price, CASE WHEN g % 3 = 0 THEN 'web' ELSE 'retail' END,
                     'Customer ' || (g % 997)
                FROM generate_series(1, {sales}) g
                CROSS JOIN \"{schema}\".companies c
                JOIN \"{schema}\".products p ON p.sku = 'SKU-' || (1 + g % 50);
         ANALYZE \"{schema}\".sales;"
    )))
    .execute(&home_pool)
    .await?;
    let size: String = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c
          WHERE c.relnamespace = '\"{schema}\"'::regnamespace AND c.relkind = 'r'"
    )))
    .fetch_one(&home_pool)
    .await?;
    println!("  tenant schema: {schema}, {size} with indexes");

    let options = MoveOptions {
        drain: Duration::ZERO,
        ..MoveOptions::default()
    };
    let (mut ours, mut back, mut baseline) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        // The dump grants the tenant's role, which must exist on eu2 (a move creates it
        // there itself, inside its measured time).
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DO $$ BEGIN CREATE ROLE \"{}\" NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
            capliquify::db::scope::role_name(tenant.id)
        )))
        .execute(&eu2_pool)
        .await?;
        let started = Instant::now();
        dump_restore(home, eu2, &schema).await?;
        let b = started.elapsed().as_secs_f64() * 1000.0;
        sqlx::query(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
            .execute(&eu2_pool)
            .await?;

        let started = Instant::now();
        let report = placement::move_tenant(
            &clusters,
            "bench-mover",
            "eu2",
            &Actor::operator(),
            &options,
        )
        .await?;
        let o = started.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(
            report
                .tables
                .iter()
                .any(|t| t.table == "sales" && t.rows == sales),
            "the move did not copy every sales row"
        );
        let started = Instant::now();
        placement::move_tenant(
            &clusters,
            "bench-mover",
            "home",
            &Actor::operator(),
            &options,
        )
        .await?;
        let h = started.elapsed().as_secs_f64() * 1000.0;
        println!(
            "  round {round}/{rounds}: move home→eu2 {o:.0} ms, back {h:.0} ms; pg_dump | psql {b:.0} ms"
        );
        ours.push(o);
        back.push(h);
        baseline.push(b);
    }
    let (o, h, b) = (median(&ours), median(&back), median(&baseline));
    println!(
        "  medians: move {o:.0} ms (back {h:.0} ms), pg_dump | psql {b:.0} ms; ratio move/baseline {:.2}",
        o / b
    );
    home_pool.close().await;
    eu2_pool.close().await;
    home.drop_database().await?;
    eu2.drop_database().await?;
    Ok(())
}

/// `pg_dump -n schema home | psql -1 eu2`: the same copy with the stock tools.
async fn dump_restore(home: &BenchServer, eu2: &BenchServer, schema: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            r#""$1" -n "$2" -d "$3" | "$4" -X -q -1 -v ON_ERROR_STOP=1 -d "$5" >/dev/null"#,
            "dump-restore",
        ])
        .arg(home.tool("pg_dump"))
        .arg(format!("\"{schema}\""))
        .arg(&home.bench_url)
        .arg(eu2.tool("psql"))
        .arg(&eu2.bench_url)
        .env("PGOPTIONS", "-c client_min_messages=warning")
        .status()
        .await
        .context("running pg_dump | psql")?;
    anyhow::ensure!(status.success(), "pg_dump | psql failed: {status}");
    Ok(())
}
