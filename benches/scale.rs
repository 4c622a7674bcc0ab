//! Scale runner (issue 16): builds one fleet of `--tenants` real tenants (default 10,000)
//! and prints every fleet-scale figure with its same-run baseline and ratio.
//!
//! On one bench database (`capliquify_bench_scale`):
//!
//! 1. migrates, runs `db init-roles`' setup ([`roles::init`]) and prints the header;
//! 2. grows the fleet to `--small` tenants (default 100), each a real tenant: provisioned
//!    through [`Tenancy::provision`], then one member, one company and 60 products (the fleet
//!    bench's tenant), from a few concurrent tasks; then `VACUUM ANALYZE`;
//! 3. at `--small`, after measuring the tenants' sizes and checking the tenants as a
//!    running service keeps them (untimed: every tenant measured and checked, the latest
//!    slice a moment ago, so `doctor` and `monitor sizes` report rather than check or
//!    measure a slice themselves), in this order: (b)
//!    the operators' commands as real processes (`migrate` with nothing to do, `tenant
//!    list`, `doctor`, `monitor sizes --limit 10`, `monitor tenants`, `tenant backup` of
//!    one tenant), median of 7 after one unmeasured run; (c) the
//!    console's tenant list query ([`census::search`], first page) in-process as the
//!    service's login role, median of 20 after one unmeasured; (a) a window of `--window`
//!    tenants (default 50) provisioned one at a time through [`Tenancy::provision`]
//!    (median ms of the call), interleaved tenant by tenant with the same number made by
//!    one long-lived psql session running the same DDL (the tenancy bench's baseline; its
//!    schemas and roles are dropped afterwards, untimed); (d) `--signups` sign-ups (default
//!    200), one every `--signup-gap-ms` (150), through [`Tenancy::provision`] with the
//!    schema pool (`--pool-size`, 10) filled first and refilled by the service's loop as
//!    `serve` keeps it (p50, p99, max, how many took a pooled schema; the pool drained
//!    afterwards, the tenants then given the fleet's member and products, untimed). The
//!    commands and the console go first so they see exactly `--small` tenants;
//! 4. grows the fleet to `--tenants`, printing the count, the elapsed time and the current
//!    tenants/s every 5 %, and reports the tenants/s of the first and the last tenth of the
//!    growth and how many provisioning connections were recycled (every provisioning
//!    connection of the runner is recycled at `--budget-mb`, as the service's are); then
//!    `VACUUM ANALYZE` again;
//! 5. at `--tenants`: the same (b), (c), (a);
//! 6. request throughput, as the fleet bench measures it: `GET /api/v1/products?limit=50`
//!    on a fresh in-process service per run, `--clients` reqwest tasks, `--warmup` seconds
//!    (and at least two requests per tenant: the steady state of a running service, not its
//!    cold start, whose rate is printed; the window's rate every 5 s shows the state held)
//!    then a `--duration` window, over the first `--hot` tenants without recycling (the
//!    baseline), then over every tenant with connection recycling at `--budget-mb`; req/s,
//!    the ratio, the largest and mean private memory of the service's backends, and the CPU
//!    each request cost this process (service and load) and the server, from `/proc` (the
//!    spread run with `--lanes` tenant lanes, default 8, or `auto` as serve resolves it
//!    from the live tenants, `--budget-mb` and the pool's size, src/db/lanes.rs); the pair of runs
//!    `--pairs` times (default 1), the summary taking the pair with the median ratio; then the same
//!    comparison for the database alone: pgbench running the request's transaction on
//!    `--clients` connections, over the hot tenants, then over every tenant with tenant `t`
//!    on connection `t mod clients` after a warm-up of two rounds ([`database_alone`]);
//! 7. a summary table (figure, at N, baseline, ratio, goal, met) and the total wall time.
//!
//! Goals (issue 16): sign-up p99 at N < 50 ms; provisioning at N ≤ 1.2× at `--small` and ≤ 1.2× psql at N; every
//! command at N ≤ 1.2× at `--small` (the no-op `migrate` < 1 s); the console's list < 100 ms;
//! requests over all N tenants ≥ 0.8× over the hot ones; the largest backend ≤ 64 MiB. The
//! exit status is non-zero on errors (failed requests included), never on unmet goals.
//! API against pgbench is `cargo bench --bench api` (it does not depend on the fleet's size).
//!
//! `--keep` keeps the database at the end and, at the start, reuses one a `--keep` run left
//! (marked by a comment on the database): growth resumes from its size, or is skipped when it
//! already has `--tenants`. When it holds more than `--small` tenants, the small-fleet
//! measurements run on a second database of the same server (`capliquify_bench_scale_small`,
//! grown to `--small`, then dropped); the output says so.
//!
//! Run (release profile for recorded results):
//!
//! ```text
//! cargo bench --bench scale -- [--tenants N] [--small N] [--window N] [--hot N]
//!     [--signups N] [--signup-gap-ms MS] [--pool-size N]
//!     [--clients N] [--warmup SECS] [--duration SECS] [--budget-mb MIB] [--lanes N|auto]
//!     [--pool N] [--auth-cache-ms MS] [--pairs N] [--keep]
//! ```
//!
//! The server is `DATABASE_URL` when set (the databases are created on it), otherwise a
//! durable embedded cluster under `target/bench-scale-pg`, stopped at the end if this run
//! started it.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, ensure};
use capliquify::audit::Actor;
use capliquify::billing::Tier;
use capliquify::db::lanes::LaneCount;
use capliquify::db::recycle::Recycler;
use capliquify::db::{PoolConfig, connect, connect_with, roles};
use capliquify::monitor;
use capliquify::tenancy::census::{self, Search};
use capliquify::tenancy::{NewTenant, Tenancy, migrate, verify};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};
use support::commands::{self, time_commands};
use support::fleet::{
    FLEET_SHAPE, FleetTenant, Load, Run, fleet_naming, measure, provision_many, provision_one,
    token_for,
};
use support::pgbench;
use support::psql::{PsqlSession, psql_version, tenant_sql};
use support::signup::{self, percentile};
use support::{BenchArgs, BenchServer, median};

const BENCH_DB: &str = "capliquify_bench_scale";
/// The small fleet's database when a kept fleet is already larger than `--small`.
const SMALL_DB: &str = "capliquify_bench_scale_small";
const FOLDER: &str = "bench-scale-pg";
/// The comment that marks a database a `--keep` run may reuse.
const KEPT_MARK: &str = "capliquify scale bench fleet (kept with --keep)";
/// Concurrent provisioning tasks while growing: enough to overlap commits' fsyncs on two
/// cores.
const PROVISIONERS: usize = 4;
/// Timed runs of the console's list query.
const CONSOLE_REPS: usize = 20;
/// The console's page size (`TENANTS_PER_PAGE`).
const PAGE: i64 = 50;
/// The schema of the pgbench step's table of tenants (dropped when the step ends).
const PGBENCH_SCHEMA: &str = "capliquify_bench";
/// Lifetime of the members' tokens: the whole throughput step.
const TOKEN_TTL_SECS: i64 = 4 * 3600;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "scale", bin_name = "cargo bench --bench scale --")]
/// One fleet of N tenants and every fleet-scale figure of issue 16, each with its same-run
/// baseline and ratio (docs/benchmarks.md, "Scale runner").
struct Args {
    /// Tenants in the large fleet.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=99_000))]
    tenants: usize,
    /// Tenants in the small fleet whose figures are the baselines.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=99_000))]
    small: usize,
    /// Tenants provisioned one at a time at each size, ours and psql's each.
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    window: usize,
    /// Tenants of the throughput baseline (the first N of the fleet by slug).
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=99_000))]
    hot: usize,
    /// Sign-ups at each size, through the schema pool as `serve` keeps it (0: none).
    #[arg(long, value_name = "N", default_value_t = 200)]
    signups: usize,
    /// Milliseconds between two sign-ups (their arrival rate; the pool refills meanwhile).
    #[arg(long, value_name = "MS", default_value_t = 150)]
    signup_gap_ms: u64,
    /// The schema pool's size during the sign-ups (CAPLIQUIFY_SCHEMA_POOL_SIZE).
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pool_size: u32,
    #[command(flatten)]
    load: Load,
    /// Throughput pairs (a hot run, then a run over every tenant), each on fresh services;
    /// the summary takes the pair with the median ratio (the upper middle one of an even
    /// count), so one window's bad luck (the machine, the server's background work) does
    /// not decide the verdict.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=20))]
    pairs: usize,
    /// Keep the database at the end, and reuse one an earlier --keep run left.
    #[arg(long)]
    keep: bool,
}

impl BenchArgs for Args {
    fn check(&self) -> Result<(), String> {
        if self.small >= self.tenants {
            return Err("--small must be below --tenants".into());
        }
        if self.hot > self.tenants {
            return Err("--hot must not exceed --tenants".into());
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let args: Args = support::args();
    let started = Instant::now();
    let server = BenchServer::open(BENCH_DB, FOLDER)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(run(&args, &server, started));
    let cleanup = if args.keep {
        eprintln!("keeping the database {BENCH_DB} (--keep)");
        Ok(())
    } else {
        runtime.block_on(server.drop_database())
    };
    drop(runtime);
    let stopped = server.stop();
    outcome?;
    cleanup?;
    stopped
}

/// What was measured at one fleet size.
struct Phase {
    tenants: usize,
    /// Median milliseconds per command, in `support::commands::COMMANDS`' order.
    commands: Vec<(String, f64)>,
    /// Median milliseconds of the console's first page query.
    console_ms: f64,
    /// Median milliseconds per tenant: ours (the provision call), psql (`\timing` sum).
    ours_ms: f64,
    psql_ms: f64,
    /// Sign-ups through the schema pool: milliseconds of each, and how many took a pooled
    /// schema (empty with `--signups 0`).
    signups: Vec<f64>,
    signups_pooled: usize,
}

/// One growth of the fleet.
struct Growth {
    from: usize,
    to: usize,
    secs: f64,
    first_tenth: f64,
    last_tenth: f64,
}

async fn run(args: &Args, server: &BenchServer, started: Instant) -> anyhow::Result<()> {
    let reused = args.keep && kept(server).await?;
    if !reused {
        server.recreate_database().await?;
    }
    // Provisioning connections are recycled as the service's are: a backend that made a
    // few thousand tenants holds their catalog entries, and every later DDL of it slows
    // (the first recorded run's growth and its provisioning window on such connections).
    let recycler = Recycler::new(args.load.budget_mb);
    let pool = connect_with(
        &server.bench_url,
        &PoolConfig::new(PROVISIONERS as u32 + 2).with_recycler(recycler.clone()),
    )
    .await?;
    set_up(server, &pool).await?;
    if args.keep {
        mark_kept(server).await?;
    }
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&pool)
        .await?;
    server.print_header("scale", &version);
    println!("  psql:     {}", psql_version(server).await?);
    println!(
        "  plan:     {} tenants (baselines at {}), windows of {} tenants per path, {} hot; {} connections, {} s warm-up + {} s window per throughput run, recycling at {} MiB, auth cache {} ms, pool {}",
        args.tenants,
        args.small,
        args.window,
        args.hot,
        args.load.clients,
        args.load.warmup,
        args.load.duration,
        args.load.budget_mb,
        args.load.auth_cache_ms,
        args.load.pool_size()
    );
    let have = count_tenants(&pool).await?;
    if reused {
        println!("  fleet:    reusing the kept database {BENCH_DB}: {have} tenants (--keep)");
    }

    // 2-3: the small fleet and its figures.
    let small = if have <= args.small {
        grow(&pool, have, args.small, false).await?;
        vacuum(&pool).await?;
        measure_phase(server, &pool, args).await?
    } else {
        println!(
            "\n== the kept fleet has {have} tenants, more than --small {}: the small-fleet figures run on a fresh database {SMALL_DB} on the same server",
            args.small
        );
        small_on_side_database(args).await?
    };

    // 4: growth to --tenants.
    let have = count_tenants(&pool).await?;
    let growth = if have >= args.tenants {
        println!(
            "\n== growth skipped: the kept fleet already has {have} tenants (--tenants {})",
            args.tenants
        );
        None
    } else {
        let before = recycler.as_ref().map_or(0, |r| r.stats().recycled);
        let g = grow(&pool, have, args.tenants, true).await?;
        if let Some(r) = &recycler {
            println!(
                "  provisioning connections recycled at {} MiB during the growth: {}",
                args.load.budget_mb,
                r.stats().recycled - before
            );
        }
        vacuum(&pool).await?;
        Some(g)
    };

    // 5: the same figures at --tenants.
    let large = measure_phase(server, &pool, args).await?;

    // 6: request throughput.
    let (hot, all, failed) = throughput(args, server, &pool).await?;
    let database = database_alone(args, server, &pool).await?;
    pool.close().await;

    // 7: the summary.
    summary(args, &small, &large, &hot, &all, database, growth.as_ref());
    println!(
        "\ntotal wall time: {:.0} s{}",
        started.elapsed().as_secs_f64(),
        growth.as_ref().map_or_else(String::new, |g| format!(
            " (growth {}→{}: {:.0} s, {:.1} s per 1,000 tenants)",
            g.from,
            g.to,
            g.secs,
            g.secs * 1000.0 / (g.to - g.from) as f64
        ))
    );
    ensure!(failed == 0, "{failed} requests failed");
    Ok(())
}

/// Whether the bench database exists and a `--keep` run marked it.
async fn kept(server: &BenchServer) -> anyhow::Result<bool> {
    let mut admin = PgConnection::connect(&server.admin_url)
        .await
        .context("connecting to the maintenance database")?;
    let mark: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(BENCH_DB)
    .fetch_optional(&mut admin)
    .await?;
    admin.close().await?;
    Ok(mark.flatten().as_deref() == Some(KEPT_MARK))
}

async fn mark_kept(server: &BenchServer) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&server.admin_url).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "COMMENT ON DATABASE \"{BENCH_DB}\" IS '{KEPT_MARK}'"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await?;
    Ok(())
}

/// Public migrations, the least-privilege roles (the service logs in as its login role),
/// and, on a kept database, whatever its tenants miss: newer tenant migrations, and the
/// member and products of a tenant an interrupted run provisioned but did not fill.
async fn set_up(server: &BenchServer, pool: &PgPool) -> anyhow::Result<()> {
    let sync = migrate::migrate_public(pool, migrate::tenant_migrations()).await?;
    let password = url::Url::parse(&server.bench_url)?
        .password()
        .map(str::to_owned);
    roles::init(
        pool,
        roles::DEFAULT_LOGIN,
        password.as_deref(),
        &Actor::operator(),
    )
    .await?;
    let pending = migrate::pending_tenants(pool, sync.latest).await?;
    if !pending.is_empty() {
        eprintln!("  migrating {} kept tenants", pending.len());
        let report = migrate::migrate_fleet(pool, pending, sync.latest, 2, Arc::new(|_| {})).await;
        ensure!(
            report.failed.is_empty(),
            "{} kept tenants failed to migrate",
            report.failed.len()
        );
    }
    let unfilled: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
        "SELECT t.id, t.slug::text, t.schema_name::text FROM public.tenants t
          WHERE NOT EXISTS (SELECT 1 FROM public.users u WHERE u.tenant_id = t.id)",
    )
    .fetch_all(pool)
    .await?;
    for (id, slug, schema) in unfilled {
        eprintln!("  filling {slug}, left without its member by an interrupted run");
        let tenant = FleetTenant {
            id,
            org: format!("org_{slug}"),
            user: format!("user_{slug}"),
            slug,
            schema,
            provision_ms: 0.0,
        };
        support::fleet::fill(pool, &tenant, FLEET_SHAPE).await?;
    }
    Ok(())
}

async fn count_tenants(pool: &PgPool) -> anyhow::Result<usize> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM public.tenants")
        .fetch_one(pool)
        .await?;
    Ok(usize::try_from(n)?)
}

async fn vacuum(pool: &PgPool) -> anyhow::Result<()> {
    let started = Instant::now();
    sqlx::raw_sql("VACUUM ANALYZE").execute(pool).await?;
    println!("  VACUUM ANALYZE: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Grows the fleet from `from` to `to` tenants with [`PROVISIONERS`] tasks. Progress every
/// 5 % (count, elapsed, tenants/s since the last line): on stdout for the large growth
/// (`report`), on stderr otherwise.
async fn grow(pool: &PgPool, from: usize, to: usize, report: bool) -> anyhow::Result<Growth> {
    let total = to - from;
    if total == 0 {
        return Ok(Growth {
            from,
            to,
            secs: 0.0,
            first_tenth: f64::NAN,
            last_tenth: f64::NAN,
        });
    }
    let say = move |line: String| {
        if report {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    };
    say(format!(
        "\n== growing the fleet from {from} to {to} tenants ({PROVISIONERS} concurrent tasks)"
    ));
    let started = Instant::now();
    let step = (total / 20).max(1);
    // Seconds since the start at each tenant's completion, and the last progress line's.
    let done_at = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let last = Arc::new(Mutex::new((0.0_f64, 0_usize)));
    let on_done = {
        let (done_at, last) = (done_at.clone(), last.clone());
        Arc::new(move |n: usize| {
            let now = started.elapsed().as_secs_f64();
            done_at.lock().expect("growth times").push(now);
            if n.is_multiple_of(step) || n == total {
                let mut last = last.lock().expect("growth progress");
                let rate = (n - last.1) as f64 / (now - last.0).max(1e-9);
                *last = (now, n);
                say(format!(
                    "  {:>6}/{to} tenants, {now:>7.1} s, {rate:>6.1} tenants/s now",
                    from + n
                ));
            }
        })
    };
    provision_many(
        pool,
        from..to,
        PROVISIONERS,
        fleet_naming(),
        FLEET_SHAPE,
        on_done,
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let mut times = done_at.lock().expect("growth times").clone();
    times.sort_by(f64::total_cmp);
    let tenth = (total / 10).max(1);
    let first_tenth = tenth as f64 / times[tenth - 1].max(1e-9);
    let last_tenth = tenth as f64
        / (times[total - 1]
            - if total > tenth {
                times[total - tenth - 1]
            } else {
                0.0
            })
        .max(1e-9);
    say(format!(
        "  grown {from}→{to} in {secs:.1} s ({:.1} tenants/s overall): first tenth {first_tenth:.1} tenants/s, last tenth {last_tenth:.1} tenants/s ({:.2}×)",
        total as f64 / secs,
        last_tenth / first_tenth
    ));
    Ok(Growth {
        from,
        to,
        secs,
        first_tenth,
        last_tenth,
    })
}

/// The small fleet on its own database of the same server, when the kept fleet is larger.
async fn small_on_side_database(args: &Args) -> anyhow::Result<Phase> {
    let side = tokio::task::block_in_place(|| BenchServer::open(SMALL_DB, FOLDER))?;
    side.recreate_database().await?;
    let pool = connect(&side.bench_url, PROVISIONERS as u32 + 2).await?;
    let outcome = async {
        set_up(&side, &pool).await?;
        grow(&pool, 0, args.small, false).await?;
        vacuum(&pool).await?;
        measure_phase(&side, &pool, args).await
    }
    .await;
    pool.close().await;
    side.drop_database().await?;
    tokio::task::block_in_place(|| side.stop())?;
    outcome
}

/// The tenants' sizes as a running service keeps them (`monitor::measure_loop`): every
/// tenant measured, the latest slice a moment ago; untimed, as `VACUUM ANALYZE` stands for
/// autovacuum. `monitor sizes` then ranks what serve recorded, as it does in production.
async fn keep_sizes(pool: &PgPool) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut measured = 0;
    while monitor::coverage(pool).await?.never_measured > 0 {
        measured += monitor::measure_slice(pool, 500).await?;
    }
    measured += monitor::measure_slice(pool, monitor::SIZE_SLICE).await?;
    println!(
        "  sizes kept as serve keeps them: {measured} tenants measured in {:.1} s (untimed)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Each tenant's checks as a running service keeps them (`verify::check_loop`): every live
/// tenant checked, the latest slice and the fleet check a moment ago; untimed, as
/// [`keep_sizes`]. `doctor` then reports what serve found instead of checking itself, as it
/// does in production.
async fn keep_checks(pool: &PgPool) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut checked = 0;
    while !verify::check_fleet(pool, true).await?.covers_all() {
        checked += verify::slice(pool, 500).await?;
    }
    checked += verify::slice(pool, verify::SLICE).await?;
    verify::check_fleet(pool, true).await?;
    println!(
        "  checks kept as serve keeps them: {checked} tenants checked in {:.1} s (untimed)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// (b) the commands, (c) the console's list query, (a) the provisioning window, (d) the
/// sign-ups.
async fn measure_phase(server: &BenchServer, pool: &PgPool, args: &Args) -> anyhow::Result<Phase> {
    let tenants = count_tenants(pool).await?;
    println!("\n== at {tenants} tenants");
    keep_sizes(pool).await?;
    keep_checks(pool).await?;
    println!(
        "  commands (process wall time, median of {} after one unmeasured run):",
        commands::REPS
    );
    let commands = time_commands(pool, &server.bench_url).await?;

    // The console's list as the page runs it: census::search, first page by slug, on the
    // service's login role.
    let console_pool = connect_with(
        &server.bench_url_as(roles::DEFAULT_LOGIN)?,
        &PoolConfig::new(1),
    )
    .await?;
    let search = Search {
        limit: PAGE,
        ..Search::default()
    };
    let found = census::search(&console_pool, &search).await?;
    ensure!(
        found.len() == tenants.min(PAGE as usize + 1),
        "the console's list found {} tenants",
        found.len()
    );
    let mut times = Vec::with_capacity(CONSOLE_REPS);
    for _ in 0..CONSOLE_REPS {
        let started = Instant::now();
        census::search(&console_pool, &search).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    console_pool.close().await;
    let console_ms = median(&times);
    println!(
        "  console tenant list (census::search, first page): median {console_ms:.2} ms of {CONSOLE_REPS}"
    );

    // Provisioning: ours and psql's interleaved tenant by tenant, so drift hits both.
    let tenancy = Tenancy::new(pool.clone(), 30);
    let naming = fleet_naming();
    let serial = AtomicUsize::new(first_free_psql_serial(pool).await?);
    let sql = tenant_sql();
    let mut psql = PsqlSession::start(server).await?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for k in 0..args.window {
        let (slug, name, user) = naming(tenants + k);
        let made = provision_one(&tenancy, pool, &slug, &name, &user, FLEET_SHAPE).await?;
        ours.push(made.provision_ms);
        let (timing, _) = psql
            .provision(|| serial.fetch_add(1, Ordering::Relaxed), &sql, 1)
            .await?;
        theirs.extend(timing);
    }
    psql.drop_made(pool).await?;
    psql.finish().await?;
    let (ours_ms, psql_ms) = (median(&ours), median(&theirs));
    println!(
        "  provisioning, {} tenants per path one at a time: ours median {ours_ms:.2} ms, psql median {psql_ms:.2} ms (\\timing sum), ratio {:.2}",
        args.window,
        ours_ms / psql_ms
    );
    let (signups, signups_pooled) = signups_step(pool, args, &tenancy).await?;
    Ok(Phase {
        tenants,
        commands,
        console_ms,
        ours_ms,
        psql_ms,
        signups,
        signups_pooled,
    })
}

/// (d) `--signups` sign-ups `--signup-gap-ms` apart through [`Tenancy::provision`], with
/// the schema pool filled and refilled as `serve` keeps it ([`signup::run`]); each tenant
/// then gets the fleet's member and products (untimed), as the growth's tenants have.
async fn signups_step(
    pool: &PgPool,
    args: &Args,
    tenancy: &Tenancy,
) -> anyhow::Result<(Vec<f64>, usize)> {
    if args.signups == 0 {
        return Ok((Vec::new(), 0));
    }
    let naming = fleet_naming();
    let mut next = count_tenants(pool).await?;
    let made = signup::run(
        tenancy,
        args.signups,
        std::time::Duration::from_millis(args.signup_gap_ms),
        args.pool_size,
        || {
            let (slug, name, _) = naming(next);
            next += 1;
            Ok(NewTenant::parse(
                &slug,
                &name,
                Tier::Professional,
                &format!("org_{slug}"),
            )?)
        },
    )
    .await?;
    for tenant in &made.tenants {
        let slug = tenant.slug.clone();
        let member = FleetTenant {
            id: tenant.id,
            org: format!("org_{slug}"),
            user: format!("user_{slug}"),
            schema: tenant.schema_name.clone(),
            slug,
            provision_ms: 0.0,
        };
        support::fleet::fill(pool, &member, FLEET_SHAPE).await?;
    }
    let ms = &made.ms;
    println!(
        "  sign-ups, {} one every {} ms through a schema pool of {}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} of {} took a pooled schema",
        ms.len(),
        args.signup_gap_ms,
        args.pool_size,
        percentile(ms, 0.5),
        percentile(ms, 0.99),
        percentile(ms, 1.0),
        made.from_pool,
        ms.len()
    );
    Ok((made.ms, made.from_pool))
}

/// A psql schema number no earlier (interrupted) run left behind.
async fn first_free_psql_serial(pool: &PgPool) -> anyhow::Result<usize> {
    let next: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(substr(nspname, 12)::bigint) + 1, 0) FROM pg_namespace
          WHERE nspname ~ '^bench_psql_[0-9]+$'",
    )
    .fetch_one(pool)
    .await?;
    Ok(usize::try_from(next)?)
}

/// The hot tenants without recycling (the baseline), then every tenant with recycling.
/// Step 6's service runs, `--pairs` times; returns the pair with the median ratio and the
/// requests that failed in all of them.
async fn throughput(
    args: &Args,
    server: &BenchServer,
    pool: &PgPool,
) -> anyhow::Result<(Run, Run, usize)> {
    let members: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.slug::text, u.clerk_user_id::text FROM public.tenants t
           JOIN public.users u ON u.tenant_id = t.id
          ORDER BY t.slug",
    )
    .fetch_all(pool)
    .await?;
    let started = Instant::now();
    let tokens = members
        .iter()
        .map(|(slug, user)| token_for(&format!("org_{slug}"), user, TOKEN_TTL_SECS))
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!(
        "\n== request throughput: GET /api/v1/products?limit=50 ({} tokens signed in {:.1} s)",
        tokens.len(),
        started.elapsed().as_secs_f64()
    );
    let load = args.load;
    let lanes = load.resolve_lanes(pool).await?;
    if load.lanes == LaneCount::Auto {
        println!(
            "  lanes auto: {lanes} for the database's live tenants (pool {}, budget {} MiB)",
            load.pool_size(),
            load.budget_mb
        );
    }
    let mut pairs = Vec::with_capacity(args.pairs);
    for pair in 1..=args.pairs {
        if args.pairs > 1 {
            println!("  -- pair {pair} of {}", args.pairs);
        }
        let hot_name = format!("{} hot tenants, no recycling", args.hot);
        println!("  {hot_name}:");
        let hot = measure(server, pool, &tokens[..args.hot], hot_name, 0, 1, load).await?;
        let all_name = format!(
            "all {} tenants, recycling at {} MiB, {} lane(s)",
            tokens.len(),
            args.load.budget_mb,
            lanes
        );
        println!("  {all_name}:");
        let all = measure(
            server,
            pool,
            &tokens,
            all_name,
            args.load.budget_mb,
            lanes,
            load,
        )
        .await?;
        for r in [&hot, &all] {
            println!(
                "  {:<44} {:>7.0} req/s  ratio {:.2}  {}  recycled {}",
                r.name,
                r.per_second,
                r.per_second / hot.per_second,
                r.memory.map_or_else(
                    || "backend memory n/a".to_owned(),
                    |m| format!(
                        "{} backends, largest {:.1} MiB, mean at end {:.1} MiB",
                        m.backends, m.largest, m.mean_at_end
                    )
                ),
                r.recycled.map_or_else(|| "-".into(), |n| n.to_string())
            );
        }
        pairs.push((hot, all));
    }
    let failed = pairs.iter().map(|(h, a)| h.failed + a.failed).sum();
    pairs.sort_by(|x, y| {
        let ratio = |(h, a): &(Run, Run)| a.per_second / h.per_second;
        ratio(x).total_cmp(&ratio(y))
    });
    if pairs.len() > 1 {
        let ratios: Vec<String> = pairs
            .iter()
            .map(|(h, a)| format!("{:.2}", a.per_second / h.per_second))
            .collect();
        println!(
            "  ratios of the {} pairs, sorted: {}; the summary takes the median pair's",
            pairs.len(),
            ratios.join(" ")
        );
    }
    let (hot, all) = pairs.swap_remove(pairs.len() / 2);
    Ok((hot, all, failed))
}

/// The database's own rates for the same comparison: pgbench on the service's login role,
/// `--clients` connections, each transaction the one a request runs (`BEGIN` with the
/// tenant's `search_path` and role, the products page's SELECT, `COMMIT`) for tenant `t`,
/// whose schema and role come from a table of the fleet in slug order (`set_config` in the
/// `BEGIN`'s round trip, an index lookup the service does not make, on both sides):
///
/// - hot: `t` goes round the first `--hot` tenants, every connection over all of them, as
///   the service's pool of `--clients` connections serves them;
/// - all: connection `c` of `k` serves the tenants `t ≡ c (mod k)` in turn (the fleet split
///   into lanes by connection, the most pgbench can do of the service's routing), after a
///   warm-up in which each connection has asked for each of its tenants twice.
///
/// Both windows last `--duration` seconds, out of pgbench's per-transaction logs. Returns
/// (hot, all) transactions per second.
async fn database_alone(
    args: &Args,
    server: &BenchServer,
    pool: &PgPool,
) -> anyhow::Result<(f64, f64)> {
    let login = roles::DEFAULT_LOGIN;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {PGBENCH_SCHEMA} CASCADE;
         CREATE SCHEMA {PGBENCH_SCHEMA};
         CREATE TABLE {PGBENCH_SCHEMA}.tenants (n int PRIMARY KEY, s text NOT NULL, r text NOT NULL);
         INSERT INTO {PGBENCH_SCHEMA}.tenants
         SELECT row_number() OVER (ORDER BY t.slug) - 1, quote_ident(t.schema_name),
                public.tenant_role_name(t.id)
           FROM public.tenants t
          WHERE EXISTS (SELECT 1 FROM public.users u WHERE u.tenant_id = t.id);
         ANALYZE {PGBENCH_SCHEMA}.tenants;
         GRANT USAGE ON SCHEMA {PGBENCH_SCHEMA} TO {login};
         GRANT SELECT ON {PGBENCH_SCHEMA}.tenants TO {login};"
    )))
    .execute(pool)
    .await?;
    let outcome = async {
        let tenants: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {PGBENCH_SCHEMA}.tenants"
        )))
        .fetch_one(pool)
        .await?;
        let clients = args.load.clients;
        let per = usize::try_from(tenants)? / clients;
        ensure!(per > 0, "fewer tenants than --clients");
        println!(
            "\n== the database alone: pgbench, the same transaction, {clients} connections ({})",
            psql_version(server).await?
        );
        let hot_expr = format!("({clients} * :i + :client_id) % {}", args.hot);
        let hot = pgbench_window(args, server, &hot_expr, None).await?;
        println!("  {} hot tenants: {:.0} tps", args.hot, hot.0);
        // The warm-up's length is not known in advance: give it four times what the hot
        // rate would need (a cold start is slower), and at least --warmup.
        let warm_rounds = 2 * per;
        let guess = (2 * clients * per) as f64 / (hot.0 / 4.0).max(1.0);
        let all_expr = format!("{clients} * (:i % {per}) + :client_id");
        let all = pgbench_window(
            args,
            server,
            &all_expr,
            Some((warm_rounds as u64, guess.max(args.load.warmup as f64))),
        )
        .await?;
        println!(
            "  all {} tenants, tenant t on connection t mod {clients}: {:.0} tps (warm-up: each connection asked for each of its {per} tenants twice, in {:.1} s)",
            per * clients,
            all.0,
            all.1
        );
        println!("  ratio {:.2}", all.0 / hot.0);
        Ok((hot.0, all.0))
    }
    .await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {PGBENCH_SCHEMA} CASCADE"
    )))
    .execute(pool)
    .await?;
    outcome
}

/// One pgbench run of the request's transaction for tenant `tenant_expr` (a pgbench
/// expression of the client's transaction counter `:i` and `:client_id`). `warm`: (each
/// client's warm-up transactions, the seconds they may take); without it, the warm-up is
/// `--warmup` seconds. Returns the window's transactions per second and the warm-up's
/// seconds.
async fn pgbench_window(
    args: &Args,
    server: &BenchServer,
    tenant_expr: &str,
    warm: Option<(u64, f64)>,
) -> anyhow::Result<(f64, f64)> {
    let dir = std::env::temp_dir().join(format!("capliquify-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("request.sql");
    std::fs::write(
        &script,
        format!(
            "\\set t {tenant_expr}\n\\set i :i + 1\n\
             BEGIN \\; SELECT set_config('search_path', s, true), set_config('role', r, true) FROM {PGBENCH_SCHEMA}.tenants WHERE n = :t;\n\
             {};\nCOMMIT;\n",
            pgbench::products_page_sql("51")
        ),
    )?;
    let warm_secs = warm.map_or(args.load.warmup as f64, |(_, secs)| secs);
    let duration = args.load.duration as f64;
    let mut command = pgbench::command(server);
    command
        .arg("-n")
        .args(["-c", &args.load.clients.to_string()])
        .args(["-j", &args.load.clients.min(2).to_string()])
        .args([
            "-T",
            &format!("{}", (warm_secs + duration).ceil() as u64 + 1),
        ])
        .args(["-D", "i=0"])
        .arg("-f")
        .arg(&script);
    let url = server.bench_url_as(roles::DEFAULT_LOGIN)?;
    let logged = pgbench::run_logged(command, &url, &dir.join("logs")).await;
    let _ = std::fs::remove_dir_all(&dir);
    let logged = logged?;
    ensure!(
        logged.unparsed == 0,
        "{} pgbench log lines did not parse",
        logged.unparsed
    );
    let first = logged.first_start();
    let from = match warm {
        None => first + std::time::Duration::from_secs(args.load.warmup),
        // Every client past its warm-up transactions.
        Some((rounds, _)) => {
            let mut ends = std::collections::HashMap::new();
            for t in &logged.transactions {
                if t.number + 1 == rounds {
                    ends.insert(t.client, t.end);
                }
            }
            ensure!(
                ends.len() == args.load.clients,
                "pgbench ended before every connection finished its warm-up ({} of {}); rerun with a longer --warmup",
                ends.len(),
                args.load.clients
            );
            ends.into_values().max().unwrap_or(first)
        }
    };
    let last = logged
        .transactions
        .iter()
        .map(|t| t.end)
        .max()
        .unwrap_or(from);
    let to = (from + std::time::Duration::from_secs_f64(duration)).min(last);
    let window = to.saturating_sub(from).as_secs_f64();
    ensure!(
        window >= duration / 2.0,
        "pgbench's warm-up took {:.1} s, more than the {warm_secs:.1} s given it; rerun with a longer --warmup",
        from.saturating_sub(first).as_secs_f64()
    );
    let counted = logged
        .transactions
        .iter()
        .filter(|t| t.start >= from && t.end <= to)
        .count();
    Ok((
        counted as f64 / window,
        from.saturating_sub(first).as_secs_f64(),
    ))
}

fn summary(
    args: &Args,
    small: &Phase,
    large: &Phase,
    hot: &Run,
    all: &Run,
    database: (f64, f64),
    growth: Option<&Growth>,
) {
    let (n, s) = (large.tenants, small.tenants);
    let met = |ok: bool| if ok { "yes" } else { "NO" }.to_owned();
    let mut rows: Vec<[String; 6]> = Vec::new();
    if !large.signups.is_empty() {
        let (l, sm) = (
            percentile(&large.signups, 0.99),
            percentile(&small.signups, 0.99),
        );
        rows.push([
            format!(
                "sign-up p99 ms (schema pool; {} of {} pooled) at {n} vs at {s}",
                large.signups_pooled,
                large.signups.len()
            ),
            format!("{l:.2}"),
            format!("{sm:.2}"),
            format!("{:.2}", l / sm),
            "< 50 ms".into(),
            met(l < 50.0),
        ]);
    }
    let ratio = large.ours_ms / small.ours_ms;
    rows.push([
        format!("provisioning, median ms per tenant, at {n} vs at {s}"),
        format!("{:.2}", large.ours_ms),
        format!("{:.2}", small.ours_ms),
        format!("{ratio:.2}"),
        "≤ 1.2".into(),
        met(ratio <= 1.2),
    ]);
    let ratio = large.ours_ms / large.psql_ms;
    rows.push([
        format!("provisioning at {n}, ours vs psql (same DDL)"),
        format!("{:.2}", large.ours_ms),
        format!("{:.2}", large.psql_ms),
        format!("{ratio:.2}"),
        "≤ 1.2".into(),
        met(ratio <= 1.2),
    ]);
    rows.push([
        format!("  (information) psql provisioning at {n} vs at {s}"),
        format!("{:.2}", large.psql_ms),
        format!("{:.2}", small.psql_ms),
        format!("{:.2}", large.psql_ms / small.psql_ms),
        "-".into(),
        "-".into(),
    ]);
    for ((name, l), (_, sm)) in large.commands.iter().zip(&small.commands) {
        let ratio = l / sm;
        let (goal, ok) = if name.starts_with("migrate") {
            ("< 1000 ms", *l < 1000.0)
        } else {
            ("≤ 1.2", ratio <= 1.2)
        };
        rows.push([
            format!("`{name}`, ms at {n} vs at {s}"),
            format!("{l:.1}"),
            format!("{sm:.1}"),
            format!("{ratio:.2}"),
            goal.into(),
            met(ok),
        ]);
    }
    rows.push([
        format!("console tenant list, first page, ms at {n} (vs at {s})"),
        format!("{:.2}", large.console_ms),
        format!("{:.2}", small.console_ms),
        format!("{:.2}", large.console_ms / small.console_ms),
        "< 100 ms".into(),
        met(large.console_ms < 100.0),
    ]);
    let ratio = all.per_second / hot.per_second;
    rows.push([
        format!(
            "req/s over all tenants (recycling at {} MiB) vs {} hot{}",
            args.load.budget_mb,
            args.hot,
            if args.pairs > 1 {
                format!(", median of {} pairs", args.pairs)
            } else {
                String::new()
            }
        ),
        format!("{:.0}", all.per_second),
        format!("{:.0}", hot.per_second),
        format!("{ratio:.2}"),
        "≥ 0.8".into(),
        met(ratio >= 0.8),
    ]);
    // Both windows keep the cores busy, so the rates' ratio follows the CPU each request
    // costs: hot over all is the ratio the CPU allows (docs/benchmarks.md, "Fifth run").
    if let (Some(a), Some(h)) = (all.cpu.server_us, hot.cpu.server_us) {
        let (a, h) = (a + all.cpu.process_us, h + hot.cpu.process_us);
        rows.push([
            "  (information) CPU µs per request, all vs hot (ratio: hot/all)".into(),
            format!("{a:.0}"),
            format!("{h:.0}"),
            format!("{:.2}", h / a),
            "-".into(),
            "-".into(),
        ]);
    }
    rows.push([
        format!(
            "  (information) the database alone: pgbench tps, all vs {} hot",
            args.hot
        ),
        format!("{:.0}", database.1),
        format!("{:.0}", database.0),
        format!("{:.2}", database.1 / database.0),
        "-".into(),
        "-".into(),
    ]);
    rows.push(match (all.memory, hot.memory) {
        (Some(a), Some(h)) => [
            "largest backend, MiB, all tenants vs hot".into(),
            format!("{:.1}", a.largest),
            format!("{:.1}", h.largest),
            format!("{:.2}", a.largest / h.largest),
            "≤ 64 MiB".into(),
            met(a.largest <= 64.0),
        ],
        _ => [
            "largest backend, MiB (server's /proc not readable)".into(),
            "n/a".into(),
            "n/a".into(),
            "-".into(),
            "≤ 64 MiB".into(),
            "-".into(),
        ],
    });
    let header = ["figure", "at N", "baseline", "ratio", "goal", "met"].map(str::to_owned);
    let mut widths = [0; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[String; 6]| {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                let pad = " ".repeat(w - c.chars().count());
                // Text left, numbers right.
                if i == 0 || i == 4 {
                    format!("{c}{pad}")
                } else {
                    format!("{pad}{c}")
                }
            })
            .collect();
        println!("  {}", cells.join("  "));
    };
    println!("\n== summary: N = {n} tenants, baselines at {s} tenants, same run");
    line(&header);
    line(&widths.map(|w| "-".repeat(w)));
    for row in &rows {
        line(row);
    }
    if let Some(g) = growth {
        println!(
            "  growth {}→{}: {:.1} tenants/s over the first tenth, {:.1} over the last ({:.2}×)",
            g.from,
            g.to,
            g.first_tenth,
            g.last_tenth,
            g.last_tenth / g.first_tenth
        );
    }
    println!(
        "  API vs pgbench (goal ≥ 0.8): not fleet-dependent, measured by `cargo bench --bench api`."
    );
}
