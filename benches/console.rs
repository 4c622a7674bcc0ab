//! Console benchmark: the operators' tenant list (`GET /console/tenants`) over a fleet of
//! 10,000 tenants, against the same query run directly through sqlx in the same run.
//!
//! Setup: `--tenants` rows (default 10,000) inserted into `public.tenants` in one
//! `INSERT … SELECT generate_series` (the list reads only `public.tenants`, so no tenant
//! schema is needed), a quarter of them with a Stripe customer, statuses and tiers mixed,
//! created a minute apart; then `VACUUM ANALYZE`. The service runs in-process on
//! `127.0.0.1:0` with the production router ([`launch`]) and the console on, logged in as the
//! service's least-privilege role; the bench signs in with the admin token once.
//!
//! Four pages, each requested `--samples` times after `--warmup` requests, one at a time:
//!
//! 1. the first page (50 tenants by slug);
//! 2. a search (`q=`, matching slugs and names by substring);
//! 3. a filter (status and tier);
//! 4. a deep keyset page (`after=` 90% into the list by slug).
//!
//! Each is timed end to end (request sent → whole HTML body read) and beside it the SQL
//! the page runs (`census::search`'s statement, written out here), through a sqlx pool on
//! the same role. Reported: median and 95th percentile of each, and the ratio of medians
//! (page / SQL). Goal (issue 14): every page's median under 100 ms.
//!
//! Run (release profile):
//!
//! ```text
//! cargo bench --bench console -- [--tenants N] [--samples N] [--warmup N]
//! ```
//!
//! The server is `DATABASE_URL` when set (the benchmark creates and drops the database
//! `capliquify_bench_console` on it), otherwise a durable embedded cluster under
//! `target/bench-console-pg`, stopped at the end if this run started it.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use capliquify::audit::Actor;
use capliquify::db::{PoolConfig, connect, connect_with, roles};
use capliquify::http::auth::Authenticator;
use capliquify::http::console::{ConsoleConfig, IDLE_TIMEOUT};
use capliquify::http::cursor::CursorCodec;
use capliquify::http::{AppState, HttpConfig, launch};
use capliquify::tenancy::census::After;
use capliquify::tenancy::migrate;
use sqlx::PgPool;
use support::{BenchArgs, BenchServer};

const BENCH_DB: &str = "capliquify_bench_console";
const ADMIN_TOKEN: &str = "bench-console-admin-token-5b2e8f0c9a7d";
/// What the page asks for: its 50 rows and one more, to know whether a next page exists.
const PAGE_ROWS: i64 = 51;
const GOAL_MS: f64 = 100.0;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "console", bin_name = "cargo bench --bench console --")]
/// The console's tenant list over a large fleet beside its SQL (docs/benchmarks.md).
struct Args {
    /// Tenants in public.tenants.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(100..=1_000_000))]
    tenants: usize,
    /// Timed requests (and SQL runs) per page.
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(5..=100_000))]
    samples: usize,
    /// Untimed requests per page first.
    #[arg(long, value_name = "N", default_value_t = 20)]
    warmup: usize,
}

impl BenchArgs for Args {}

fn main() -> anyhow::Result<()> {
    let args: Args = support::args();
    support::run_on_server(BENCH_DB, "bench-console-pg", async |server| {
        run(&args, server).await
    })
}

/// One page of the list and the statement it runs.
struct Case {
    name: &'static str,
    query: String,
    sql: &'static str,
    binds: Vec<String>,
}

async fn run(args: &Args, server: &BenchServer) -> anyhow::Result<()> {
    server.recreate_database().await?;
    let setup = connect(&server.bench_url, 2).await?;
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
    server.print_header("console", &version);
    println!(
        "  load:     {} tenants, {} timed requests per page after {} untimed, one at a time",
        args.tenants, args.samples, args.warmup
    );

    let started = Instant::now();
    fill(&setup, args.tenants).await?;
    println!("  setup:    {:.1} s", started.elapsed().as_secs_f64());
    setup.close().await;

    let service_url = server.bench_url_as(roles::DEFAULT_LOGIN)?;
    let pool = connect_with(&service_url, &PoolConfig::new(4)).await?;
    let sql_pool = connect_with(&service_url, &PoolConfig::new(1)).await?;
    let keys = capliquify::crypto::Keyring::from_settings(
        Some("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
        "k1",
        None,
    )?;
    let config = HttpConfig {
        console: Some(ConsoleConfig {
            token: Some(Arc::from(ADMIN_TOKEN)),
            operators: Arc::from([]),
            backup_key: None,
            secure_cookie: false,
            idle: IDLE_TIMEOUT,
        }),
        ..HttpConfig::default()
    };
    let state = AppState::new(
        capliquify::db::Clusters::single(pool.clone()),
        Arc::new(Authenticator::demo()?),
        keys,
        config,
    )
    .with_cursors(CursorCodec::new(b"benchmark cursor secret, 32+ chars"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (shutdown, rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(launch(listener, state, async {
        let _ = rx.await;
    }));

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let signed_in = client
        .post(format!("{base}/console/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        // The token is letters, digits and dashes: nothing to encode.
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await?;
    anyhow::ensure!(
        signed_in.status() == reqwest::StatusCode::SEE_OTHER,
        "sign-in answered {}",
        signed_in.status()
    );
    let cookie = signed_in
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .context("sign-in set no cookie")?
        .to_str()?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();

    let deep = format!("tenant-{:05}", args.tenants * 9 / 10);
    let cases = [
        Case {
            name: "first page",
            query: String::new(),
            sql: "SELECT t.* FROM public.tenants t WHERE true ORDER BY t.slug LIMIT $1",
            binds: vec![],
        },
        Case {
            name: "search q=ompany 42",
            query: "q=ompany+42".into(),
            sql: "SELECT t.* FROM public.tenants t
                   WHERE (t.slug ILIKE $2 OR t.name ILIKE $2 OR t.clerk_organization_id = $3
                          OR t.stripe_customer_id = $3
                          OR EXISTS (SELECT 1 FROM public.subscriptions s
                                      WHERE s.tenant_id = t.id AND s.stripe_customer_id = $3))
                   ORDER BY t.slug LIMIT $1",
            binds: vec!["%ompany 42%".into(), "ompany 42".into()],
        },
        Case {
            name: "filter past_due + enterprise",
            query: "status=past_due&tier=enterprise".into(),
            sql: "SELECT t.* FROM public.tenants t
                   WHERE t.deleted_at IS NULL AND t.subscription_status::text = $2
                     AND t.subscription_tier = $3::public.subscription_tier
                   ORDER BY t.slug LIMIT $1",
            binds: vec!["past_due".into(), "enterprise".into()],
        },
        Case {
            name: "deep keyset page (90%)",
            query: format!("after={}", After::Slug(deep.clone()).encode()),
            sql: "SELECT t.* FROM public.tenants t WHERE t.slug > $2 ORDER BY t.slug LIMIT $1",
            binds: vec![deep.clone()],
        },
    ];

    let mut rows = Vec::new();
    for case in &cases {
        let url = format!("{base}/console/tenants?{}", case.query);
        let page = |client: reqwest::Client, url: String, cookie: String| async move {
            let started = Instant::now();
            let response = client.get(&url).header("cookie", cookie).send().await?;
            let status = response.status();
            let body = response.text().await?;
            let took = started.elapsed().as_secs_f64() * 1000.0;
            anyhow::ensure!(status == reqwest::StatusCode::OK, "{url}: {status}");
            Ok::<_, anyhow::Error>((took, body))
        };
        let statement = |pool: PgPool| {
            let (sql, binds) = (case.sql, case.binds.clone());
            async move {
                let started = Instant::now();
                let mut query = sqlx::query(sql).bind(PAGE_ROWS);
                for b in binds {
                    query = query.bind(b);
                }
                let found = query.fetch_all(&pool).await?;
                Ok::<_, anyhow::Error>((started.elapsed().as_secs_f64() * 1000.0, found.len()))
            }
        };
        let (_, body) = page(client.clone(), url.clone(), cookie.clone()).await?;
        let listed = body.matches("href=\"/console/tenants/tenant-").count();
        let (_, found) = statement(sql_pool.clone()).await?;
        anyhow::ensure!(
            listed == found.min(50),
            "{}: the page lists {listed} tenants, the SQL finds {found}",
            case.name
        );
        for _ in 0..args.warmup {
            page(client.clone(), url.clone(), cookie.clone()).await?;
            statement(sql_pool.clone()).await?;
        }
        let (mut pages, mut sqls) = (Vec::new(), Vec::new());
        // Interleaved, so a burst of other work on the machine hits both sides alike.
        for _ in 0..args.samples {
            pages.push(page(client.clone(), url.clone(), cookie.clone()).await?.0);
            sqls.push(statement(sql_pool.clone()).await?.0);
        }
        rows.push((case.name, listed, pages, sqls));
    }
    let _ = shutdown.send(());
    serving.await.context("the service task")??;
    pool.close().await;
    sql_pool.close().await;

    println!();
    println!(
        "{:<30} {:>6} {:>12} {:>10} {:>11} {:>9} {:>7}",
        "page", "rows", "page median", "page p95", "SQL median", "SQL p95", "ratio"
    );
    let mut met = true;
    for (name, listed, pages, sqls) in &rows {
        let (pm, pp, sm, sp) = (
            support::median(pages),
            p95(pages),
            support::median(sqls),
            p95(sqls),
        );
        met &= pm < GOAL_MS;
        println!(
            "{name:<30} {listed:>6} {:>9.2} ms {:>7.2} ms {:>8.2} ms {:>6.2} ms {:>7.2}",
            pm,
            pp,
            sm,
            sp,
            pm / sm
        );
    }
    println!();
    println!(
        "goal: every page's median < {GOAL_MS} ms: {}",
        if met { "met" } else { "NOT met" }
    );
    Ok(())
}

/// The 95th percentile of `xs` (nearest rank).
fn p95(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((0.95 * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// `n` tenants in one statement: no schemas, since the list reads public.tenants only.
async fn fill(pool: &PgPool, n: usize) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO public.tenants
                (slug, name, schema_name, clerk_organization_id, stripe_customer_id,
                 subscription_tier, subscription_status, trial_ends_at, created_at)
         SELECT format('tenant-%s', lpad(i::text, 5, '0')),
                format('Company %s', i),
                format('tenant_%s', lpad(i::text, 5, '0')),
                format('org_bench_%s', i),
                CASE WHEN i % 4 = 0 THEN format('cus_bench_%s', i) END,
                (ARRAY['starter', 'professional', 'enterprise'])[1 + i % 3]::public.subscription_tier,
                (ARRAY['trial', 'active', 'active', 'past_due', 'cancelled'])[1 + i % 5]::public.subscription_status,
                CASE WHEN i % 5 = 0 THEN now() + interval '14 days' END,
                now() - make_interval(mins => i::int)
           FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(i64::try_from(n)?)
    .execute(pool)
    .await?;
    sqlx::raw_sql("VACUUM ANALYZE public.tenants")
        .execute(pool)
        .await?;
    Ok(())
}
