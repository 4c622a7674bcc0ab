//! Tenancy benchmarks: each speed goal is checked against a baseline measured in the same
//! run — raw `psql` doing the same work on the same server — and printed as a ratio.
//!
//! What is measured (details and recorded results in `docs/benchmarks.md`):
//!
//! - `provision`: milliseconds per tenant through [`Tenancy::provision`] (registry row,
//!   `create_tenant_schema`, audit row, one transaction) against the tenant migration SQL run
//!   by one long-lived `psql` session in one transaction per tenant
//!   (`BEGIN; CREATE SCHEMA …; SET LOCAL search_path …; CREATE ROLE …; GRANT …;
//!   ALTER DEFAULT PRIVILEGES …; <tenant SQL>; COMMIT;`, the tenant's role made and granted the same rights as
//!   `grant_tenant_role` gives, through default privileges set before the tables). After a
//!   warm-up round, rounds of the two paths alternate so drift hits both alike. Goal: the
//!   ratio of medians ours/psql ≤ 1.2.
//! - `provision-growth`: provisioning as the fleet grows. The fleet is built up to
//!   `--tenants` one tenant at a time through [`Tenancy::provision`], as sign-ups arrive;
//!   the per-tenant median of the last `--window` tenants is compared with that of the first
//!   `--window`. Goal: ≤ 1.2 — no per-tenant step may read a catalog that grows with the
//!   fleet (issue 16; migration 0012 removed the `pg_class` scans of `GRANT … ON ALL TABLES
//!   IN SCHEMA`). The psql baseline provisions a window at both ends too: its own slowdown
//!   (a bigger catalog, a busier machine) is the yardstick, and ours against it at the end
//!   is the second goal (≤ 1.2). Also printed: `grant_tenant_role` re-run on each window's
//!   tenants, the step that scanned.
//! - `commands`: the operators' commands as real processes (`migrate` with nothing to do,
//!   `tenant list`, `doctor`, `monitor sizes`, `monitor tenants`, `tenant backup` of one
//!   tenant), median of 7 runs each, first on a fleet of `--small` tenants, then on
//!   `--tenants`. Goal (issue 16): each at most 1.2× its time on the small fleet, and the
//!   no-op `migrate` under 1 s.
//! - `migrate-noop`: `migrate` with nothing to do over `--tenants` tenants (default 1,000),
//!   both as the library sequence the CLI runs and as the real `capliquify migrate` process
//!   (wall clock, including process start and connect). Goal: < 1 s.
//! - `migrate-column`: one new-column tenant migration (`ALTER TABLE products ADD COLUMN`)
//!   over every tenant with `--jobs 2`, against the same ALTERs run sequentially by one
//!   `psql` process in autocommit mode. Goal: ratio of totals ours/psql ≤ 1.5.
//! - `signup`: `--signups` sign-ups through [`Tenancy::provision`], one every
//!   `--signup-gap-ms`, while the service's refill loop keeps the schema pool at
//!   `--pool-size` (a sign-up claims a schema made ahead); then the same sign-ups without a
//!   pool, each making its schema. Goal: p99 < 50 ms with the pool; the ratios against the
//!   no-pool path are printed.
//! - `role-memberships`: the service's login and the migrations' owner belong to every
//!   tenant role, and PostgreSQL lists a role's memberships again after any role change in
//!   the cluster (a provisioning, a purge). Measured at `--small` and at `--tenants` bare
//!   tenant roles (memberships, not schemas, are what it lists), each after a role change
//!   made by another session, median of 9: the service's next `SET LOCAL ROLE`, and the
//!   owner's membership check in `grant_tenant_role` — `pg_has_role` (before public
//!   migration 0024) against `role_is_member` (since). Goal: `role_is_member` below
//!   `pg_has_role`; the other ratios are information (the `SET ROLE` one is PostgreSQL's own).
//!
//! Run (release profile):
//!
//! ```text
//! cargo bench --bench tenancy -- [provision|provision-growth|commands|migrate-noop|migrate-column|signup|role-memberships|all]
//!     [--tenants N] [--rounds N] [--per-round N] [--column-rounds N] [--window N] [--small N]
//!     [--signups N] [--signup-gap-ms MS] [--pool-size N]
//! ```
//!
//! The server is `DATABASE_URL` when set (the benchmark creates and drops the database
//! `capliquify_bench` on it), otherwise a durable embedded cluster under
//! `target/bench-pg`, so both paths pay real fsync costs. The database is dropped and
//! recreated at the start of every run.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
use capliquify::audit::Actor;
use capliquify::billing::Tier;
use capliquify::tenancy::migrate::{self, TenantOutcome};
use capliquify::tenancy::{NewTenant, Tenancy};
use sqlx::migrate::{Migration, MigrationType};
use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr};

const BENCH_DB: &str = "capliquify_bench";
/// Concurrent provisioning tasks when creating the fleet for the migrate benchmarks: enough
/// to overlap fsyncs on two cores without measuring anything.
const FLEET_BUILDERS: usize = 3;
/// Repetitions of the no-op migrate (library and process).
const NOOP_REPS: usize = 7;
/// Role changes measured per figure and size in the role-memberships benchmark.
const MEMBERSHIP_REPS: usize = 9;
/// The role-memberships benchmark's roles (the cluster's, not the database's) start so.
const MEMBERSHIP_PREFIX: &str = "cq_bench_rm_";
/// `--jobs` of the new-column migration, as the goal states it.
const COLUMN_JOBS: usize = 2;

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    /// Milliseconds per tenant provisioned, ours against psql.
    Provision,
    /// Provisioning time of the last tenants of a growing fleet against the first.
    ProvisionGrowth,
    /// The operators' commands on a large fleet against a small one.
    Commands,
    /// `migrate` with nothing to do over the fleet (goal: < 1 s).
    MigrateNoop,
    /// One new-column tenant migration over the fleet, ours against psql.
    MigrateColumn,
    /// Sign-up latency (p50/p99) with the schema pool refilled in the background, against
    /// the same sign-ups without a pool.
    Signup,
    /// What a role change costs the roles that belong to every tenant role, at a small
    /// and a large number of tenant roles.
    RoleMemberships,
    /// All seven.
    All,
}

/// Tenancy benchmarks: provisioning and migrations, each against raw psql doing the same
/// work on the same server in the same run (docs/benchmarks.md).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "tenancy", bin_name = "cargo bench --bench tenancy --")]
struct Args {
    /// Which benchmark to run.
    #[arg(value_enum, default_value_t = Which::All)]
    which: Which,
    /// Tenants in the fleet of the migrate benchmarks, and the size provision-growth grows
    /// the fleet to.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    tenants: usize,
    /// Tenants at each end of the growing fleet whose medians provision-growth compares.
    #[arg(long, value_name = "N", default_value_t = 100)]
    window: usize,
    /// The small fleet the commands benchmark measures first (then at --tenants).
    #[arg(long, value_name = "N", default_value_t = 100)]
    small: usize,
    /// Provisioning rounds per path.
    #[arg(long, value_name = "N", default_value_t = 5)]
    rounds: usize,
    /// Tenants per provisioning round and path.
    #[arg(long, value_name = "N", default_value_t = 20)]
    per_round: usize,
    /// Tenants per path in the discarded provisioning warm-up round.
    #[arg(long, value_name = "N", default_value_t = 5)]
    warmup: usize,
    /// New-column migrations per path (alternating which path goes first).
    #[arg(long, value_name = "N", default_value_t = 3)]
    column_rounds: usize,
    /// Sign-ups per path of the signup benchmark.
    #[arg(long, value_name = "N", default_value_t = 200)]
    signups: usize,
    /// Milliseconds between two sign-ups (the arrival rate; the pool refills meanwhile).
    #[arg(long, value_name = "MS", default_value_t = 150)]
    signup_gap_ms: u64,
    /// The schema pool's size in the signup benchmark (CAPLIQUIFY_SCHEMA_POOL_SIZE).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pool_size: u32,
}

impl BenchArgs for Args {
    fn check(&self) -> Result<(), String> {
        if self.tenants >= 1 && self.rounds >= 1 && self.per_round >= 1 && self.window >= 1 {
            if (self.runs(Which::Commands) || self.runs(Which::RoleMemberships))
                && !(1..self.tenants).contains(&self.small)
            {
                return Err("--small must be at least 1 and below --tenants".into());
            }
            Ok(())
        } else {
            Err("--tenants, --rounds, --per-round and --window must be at least 1".into())
        }
    }
}

impl Args {
    fn runs(&self, which: Which) -> bool {
        self.which == which || self.which == Which::All
    }
}

/// One line of the final table.
struct ResultRow {
    name: String,
    ours: String,
    baseline: String,
    ratio: String,
    goal: String,
    /// `None` for diagnostic rows without a goal.
    met: Option<bool>,
}

struct Bench<'a> {
    args: Args,
    server: &'a BenchServer,
    pool: PgPool,
    tenancy: Tenancy,
    actor: Actor,
    /// Numbers slugs and psql schema names so every run of every phase gets fresh ones.
    serial: AtomicUsize,
}

mod support;

use support::commands::{self, capliquify_binary, run_binary, time_commands};
use support::psql::{PsqlSession, psql, psql_version, tenant_sql};
use support::signup::{self, percentile};
use support::{BenchArgs, BenchServer, median};

fn main() -> anyhow::Result<()> {
    let args: Args = support::args();
    support::run_on_server(BENCH_DB, "bench-pg", async |server| run(args, server).await)
}

async fn run(args: Args, server: &BenchServer) -> anyhow::Result<()> {
    server.recreate_database().await?;
    // More connections than any phase uses at once (fleet builders, --jobs 2, the CLI's own
    // pool is separate), so nobody waits for a connection.
    let pool = capliquify::db::connect(&server.bench_url, 8).await?;
    migrate::migrate_public(&pool, migrate::tenant_migrations()).await?;
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&pool)
        .await?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("capliquify tenancy benchmarks");
    println!(
        "  date:     {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("  cores:    {cores}");
    println!("  server:   {version}");
    println!("  database: {}", server.describe());
    println!("  psql:     {}", psql_version(server).await?);

    let bench = Bench {
        tenancy: Tenancy::new(pool.clone(), 30),
        actor: Actor::operator(),
        serial: AtomicUsize::new(0),
        args,
        server,
        pool,
    };
    let mut rows = Vec::new();
    if bench.args.runs(Which::Provision) {
        rows.push(bench.provision().await?);
    }
    if bench.args.runs(Which::Signup) {
        rows.extend(bench.signup().await?);
    }
    if bench.args.runs(Which::Commands) {
        rows.extend(bench.commands().await?);
    }
    if bench.args.runs(Which::RoleMemberships) {
        rows.extend(bench.role_memberships().await?);
    }
    if bench.args.runs(Which::ProvisionGrowth) {
        rows.extend(bench.provision_growth().await?);
    }
    // No-op first: after the column benchmark the catalog holds versions this build of the
    // binary does not know, and `capliquify migrate` rightly refuses to run.
    if bench.args.runs(Which::MigrateNoop) {
        rows.extend(bench.migrate_noop().await?);
    }
    if bench.args.runs(Which::MigrateColumn) {
        rows.extend(bench.migrate_column().await?);
    }
    bench.pool.close().await;
    print_table(&rows);
    Ok(())
}

impl Bench<'_> {
    fn next_serial(&self) -> usize {
        self.serial.fetch_add(1, Ordering::Relaxed)
    }

    fn new_tenant(&self, prefix: &str) -> anyhow::Result<NewTenant> {
        let n = self.next_serial();
        let slug = format!("{prefix}-{n:06}");
        Ok(NewTenant::parse(
            &slug,
            &format!("Bench {slug}"),
            Tier::Professional,
            &format!("org_{slug}"),
        )?)
    }

    // ---- provisioning -------------------------------------------------------------------

    async fn provision(&self) -> anyhow::Result<ResultRow> {
        let (rounds, per_round) = (self.args.rounds, self.args.per_round);
        println!(
            "\n== provision: {rounds} rounds x {per_round} tenants per path (+ {} warm-up)",
            self.args.warmup
        );
        let tenant_sql = tenant_sql();
        let mut psql = PsqlSession::start(self.server).await?;

        if self.args.warmup > 0 {
            self.provision_ours(self.args.warmup).await?;
            psql.provision(|| self.next_serial(), &tenant_sql, self.args.warmup)
                .await?;
        }
        let (mut ours, mut psql_timing, mut psql_wall) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate who goes first, so neither path always runs on a fresher server.
            let (o, (t, w)) = if round % 2 == 0 {
                let o = self.provision_ours(per_round).await?;
                (
                    o,
                    psql.provision(|| self.next_serial(), &tenant_sql, per_round)
                        .await?,
                )
            } else {
                let p = psql
                    .provision(|| self.next_serial(), &tenant_sql, per_round)
                    .await?;
                (self.provision_ours(per_round).await?, p)
            };
            println!(
                "  round {}/{rounds}: ours median {:.2} ms, psql median {:.2} ms (\\timing sum), {:.2} ms (wall)",
                round + 1,
                median(&o),
                median(&t),
                median(&w)
            );
            ours.extend(o);
            psql_timing.extend(t);
            psql_wall.extend(w);
        }
        psql.finish().await?;
        let (o, t, w) = (median(&ours), median(&psql_timing), median(&psql_wall));
        let ratio = o / t;
        println!(
            "  overall medians over {} tenants each: ours {o:.2} ms, psql {t:.2} ms (\\timing sum) / {w:.2} ms (wall, server clock); ratio {ratio:.2} (vs wall {:.2})",
            ours.len(),
            o / w
        );
        println!(
            "  ours p10/p90: {:.2}/{:.2} ms; psql \\timing p10/p90: {:.2}/{:.2} ms",
            percentile(&ours, 0.1),
            percentile(&ours, 0.9),
            percentile(&psql_timing, 0.1),
            percentile(&psql_timing, 0.9)
        );
        Ok(ResultRow {
            name: "provision, median ms/tenant".into(),
            ours: format!("{o:.2}"),
            baseline: format!("{t:.2}"),
            ratio: format!("{ratio:.2}"),
            goal: "ratio <= 1.2".into(),
            met: Some(ratio <= 1.2),
        })
    }

    // ---- sign-up with the schema pool ----------------------------------------------------

    /// Sign-ups arriving every `--signup-gap-ms`, each through [`Tenancy::provision`] as
    /// the webhook and the admin API call it, with the service's refill loop keeping the
    /// pool at `--pool-size`; then the same without a pool. Goal (issue 16): p99 < 50 ms.
    async fn signup(&self) -> anyhow::Result<Vec<ResultRow>> {
        let (n, gap) = (
            self.args.signups,
            Duration::from_millis(self.args.signup_gap_ms),
        );
        println!(
            "\n== signup: {n} sign-ups per path, one every {} ms; pool of {} refilled by the service's loop",
            gap.as_millis(),
            self.args.pool_size
        );
        // The pooled path goes first, filled before the first sign-up as `serve` fills it
        // at start; the loop then refills as sign-ups claim.
        let next = || self.new_tenant("signup");
        let pooled = signup::run(&self.tenancy, n, gap, self.args.pool_size, next).await?;
        let (claimed, pooled) = (pooled.from_pool, pooled.ms);
        let bare = signup::run(&self.tenancy, n, gap, 0, next).await?.ms;
        let (p50, p99) = (percentile(&pooled, 0.5), percentile(&pooled, 0.99));
        let (b50, b99) = (percentile(&bare, 0.5), percentile(&bare, 0.99));
        println!(
            "  with the pool: p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms; {claimed} of {n} took a pooled schema",
            percentile(&pooled, 1.0)
        );
        println!(
            "  without:       p50 {b50:.2} ms, p99 {b99:.2} ms, max {:.2} ms",
            percentile(&bare, 1.0)
        );
        Ok(vec![
            ResultRow {
                name: "sign-up p50 ms, pool vs none".into(),
                ours: format!("{p50:.2}"),
                baseline: format!("{b50:.2}"),
                ratio: format!("{:.2}", p50 / b50),
                goal: "-".into(),
                met: None,
            },
            ResultRow {
                name: "sign-up p99 ms, pool vs none".into(),
                ours: format!("{p99:.2}"),
                baseline: format!("{b99:.2}"),
                ratio: format!("{:.2}", p99 / b99),
                goal: "p99 < 50 ms".into(),
                met: Some(p99 < 50.0),
            },
        ])
    }

    /// Provisions `n` tenants one after another; milliseconds each.
    async fn provision_ours(&self, n: usize) -> anyhow::Result<Vec<f64>> {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let new = self.new_tenant("prov")?;
            let started = Instant::now();
            self.tenancy.provision(&new, &self.actor).await?;
            times.push(ms(started.elapsed()));
        }
        Ok(times)
    }

    /// Grows the fleet to `--tenants` one tenant at a time; compares the first and the last
    /// `--window` tenants' medians, and `grant_tenant_role` re-run at both ends.
    async fn provision_growth(&self) -> anyhow::Result<Vec<ResultRow>> {
        let window = self.args.window;
        let have = usize::try_from(
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM public.tenants")
                .fetch_one(&self.pool)
                .await?,
        )?;
        let want = self.args.tenants.max(have + 2 * window);
        println!(
            "\n== provision-growth: from {have} to {want} tenants one at a time; the first and last {window} compared"
        );
        // psql provisions a window at both ends too: how much the same DDL slowed by itself
        // (a bigger catalog, a busier machine) is the yardstick for how much ours did.
        let tenant_sql = tenant_sql();
        let mut psql = PsqlSession::start(self.server).await?;
        let first = self.provision_ours(window).await?;
        let (psql_first, _) = psql
            .provision(|| self.next_serial(), &tenant_sql, window)
            .await?;
        let grant_first = self.grant_rerun(window).await?;
        let middle = want - have - 2 * window;
        let started = Instant::now();
        let step = (middle / 10).max(1);
        for i in 0..middle {
            self.provision_ours(1).await?;
            if (i + 1).is_multiple_of(step) {
                eprintln!(
                    "  provisioned {}/{want} ({:.0} s)",
                    have + window + i + 1,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let (psql_last, _) = psql
            .provision(|| self.next_serial(), &tenant_sql, window)
            .await?;
        let last = self.provision_ours(window).await?;
        psql.finish().await?;
        let grant_last = self.grant_rerun(window).await?;
        let relations: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_class")
            .fetch_one(&self.pool)
            .await?;
        let (f, l) = (median(&first), median(&last));
        let (pf, pl) = (median(&psql_first), median(&psql_last));
        let (gf, gl) = (median(&grant_first), median(&grant_last));
        println!(
            "  tenants {}..{}: median {f:.2} ms (p90 {:.2}); tenants {}..{want}: median {l:.2} ms (p90 {:.2}); pg_class now {relations} rows",
            have + 1,
            have + window,
            percentile(&first, 0.9),
            want - window + 1,
            percentile(&last, 0.9)
        );
        println!("  psql: median {pf:.2} ms at the start, {pl:.2} ms at the end (\\timing sum)");
        println!("  grant_tenant_role re-run: {gf:.2} ms at the start, {gl:.2} ms at the end");
        Ok(vec![
            ResultRow {
                name: format!("provision at {want} vs at {}, median ms", have + window),
                ours: format!("{l:.2}"),
                baseline: format!("{f:.2}"),
                ratio: format!("{:.2}", l / f),
                goal: "ratio <= 1.2".into(),
                met: Some(l / f <= 1.2),
            },
            ResultRow {
                name: format!("provision at {want}, median ms, ours vs psql"),
                ours: format!("{l:.2}"),
                baseline: format!("{pl:.2}"),
                ratio: format!("{:.2}", l / pl),
                goal: "ratio <= 1.2".into(),
                met: Some(l / pl <= 1.2),
            },
            ResultRow {
                name: format!(
                    "psql provision at {want} vs at {}, median ms",
                    have + window
                ),
                ours: format!("{pl:.2}"),
                baseline: format!("{pf:.2}"),
                ratio: format!("{:.2}", pl / pf),
                goal: String::new(),
                met: None,
            },
            ResultRow {
                name: format!("grant_tenant_role at {want} vs at {}, ms", have + window),
                ours: format!("{gl:.2}"),
                baseline: format!("{gf:.2}"),
                ratio: format!("{:.2}", gl / gf),
                goal: String::new(),
                met: None,
            },
        ])
    }

    /// `grant_tenant_role` re-run (idempotent) on the `n` newest tenants; milliseconds each.
    async fn grant_rerun(&self, n: usize) -> anyhow::Result<Vec<f64>> {
        let tenants: Vec<(uuid::Uuid, String)> = sqlx::query_as(
            "SELECT id, schema_name::text FROM public.tenants ORDER BY created_at DESC LIMIT $1",
        )
        .bind(i64::try_from(n)?)
        .fetch_all(&self.pool)
        .await?;
        let mut times = Vec::with_capacity(n);
        for (id, schema) in tenants {
            let started = Instant::now();
            sqlx::query("SELECT public.grant_tenant_role($1, $2)")
                .bind(id)
                .bind(schema)
                .execute(&self.pool)
                .await?;
            times.push(ms(started.elapsed()));
        }
        Ok(times)
    }

    // ---- role memberships ------------------------------------------------------------------

    /// The role-memberships benchmark (module docs): bare roles shaped as the tenancy's
    /// (tenant roles in one group, as in `capliquify_tenant`; a service group with a login
    /// in it and a CREATEROLE owner, each a member of every tenant role), one set per size,
    /// made here and dropped at the end.
    async fn role_memberships(&self) -> anyhow::Result<Vec<ResultRow>> {
        let (small, large) = (self.args.small, self.args.tenants);
        println!(
            "\n== role memberships: {small} and {large} tenant roles, median of {MEMBERSHIP_REPS} role changes per figure"
        );
        drop_membership_roles(&self.pool).await?;
        let started = Instant::now();
        // Logins need the embedded cluster's password (it admits no other).
        let password = url::Url::parse(&self.server.bench_url)?
            .password()
            .map(|p| format!(" PASSWORD '{}'", p.replace('\'', "''")))
            .unwrap_or_default();
        let p = MEMBERSHIP_PREFIX;
        let mut setup = format!("CREATE ROLE {p}churn NOLOGIN; CREATE ROLE {p}tenant NOLOGIN;");
        for size in [small, large] {
            setup.push_str(&format!(
                "CREATE ROLE {p}service_{size} NOLOGIN;
                 CREATE ROLE {p}login_{size} LOGIN{password} IN ROLE {p}service_{size};
                 CREATE ROLE {p}owner_{size} LOGIN CREATEROLE{password};"
            ));
        }
        setup.push_str(&format!(
            "DO $$ BEGIN FOR i IN 1..{large} LOOP
                 EXECUTE format('CREATE ROLE {p}t%s NOLOGIN IN ROLE {p}tenant', i);
                 EXECUTE format('GRANT {p}t%s TO {p}service_{large}, {p}owner_{large}', i);
                 IF i <= {small} THEN
                     EXECUTE format('GRANT {p}t%s TO {p}service_{small}, {p}owner_{small}', i);
                 END IF;
             END LOOP; END $$;"
        ));
        sqlx::raw_sql(AssertSqlSafe(setup))
            .execute(&self.pool)
            .await?;
        println!(
            "  {} roles made in {:.1} s",
            large + 8,
            started.elapsed().as_secs_f64()
        );
        let at_small = self.memberships_at(small).await?;
        let at_large = self.memberships_at(large).await?;
        drop_membership_roles(&self.pool).await?;
        let [s, l] = [at_small, at_large].map(|m| m.map(|xs| median(&xs)));
        for (size, m) in [(small, s), (large, l)] {
            println!(
                "  {size:>6} tenant roles: SET ROLE after a change {:.2} ms (no change: {:.2}), owner's check after a change: pg_has_role {:.2} ms, role_is_member {:.2} ms",
                m[0], m[1], m[2], m[3]
            );
        }
        Ok(vec![
            ResultRow {
                name: format!(
                    "service's SET ROLE after a role change, ms at {large} vs {small} roles"
                ),
                ours: format!("{:.2}", l[0]),
                baseline: format!("{:.2}", s[0]),
                ratio: format!("{:.2}", l[0] / s[0]),
                goal: String::new(),
                met: None,
            },
            ResultRow {
                name: format!("service's SET ROLE, no change since, ms at {large} vs {small}"),
                ours: format!("{:.2}", l[1]),
                baseline: format!("{:.2}", s[1]),
                ratio: format!("{:.2}", l[1] / s[1]),
                goal: String::new(),
                met: None,
            },
            ResultRow {
                name: format!(
                    "owner's check after a change at {large}: role_is_member vs pg_has_role, ms"
                ),
                ours: format!("{:.3}", l[3]),
                baseline: format!("{:.3}", l[2]),
                ratio: format!("{:.3}", l[3] / l[2]),
                goal: "ratio < 1".into(),
                met: Some(l[3] < l[2]),
            },
            ResultRow {
                name: format!("role_is_member after a change, ms at {large} vs {small}"),
                ours: format!("{:.3}", l[3]),
                baseline: format!("{:.3}", s[3]),
                ratio: format!("{:.2}", l[3] / s[3]),
                goal: String::new(),
                met: None,
            },
        ])
    }

    /// At `size` tenant roles, each of [`MEMBERSHIP_REPS`] times: a role change by another
    /// session, then the login's `SET LOCAL ROLE` (ms), again with no change since, then (after
    /// a change each) the owner's `pg_has_role` and, in a session of its own, `role_is_member`.
    async fn memberships_at(&self, size: usize) -> anyhow::Result<[Vec<f64>; 4]> {
        use sqlx::Connection as _;
        let p = MEMBERSHIP_PREFIX;
        let connect = async |user: String| {
            sqlx::PgConnection::connect(&self.server.bench_url_as(&user)?)
                .await
                .map_err(anyhow::Error::from)
        };
        let mut login = connect(format!("{p}login_{size}")).await?;
        // Two owner sessions: one that has asked pg_has_role holds every membership list
        // in its catalog cache, and each role change makes it drop them all.
        let mut owner = connect(format!("{p}owner_{size}")).await?;
        let mut walker = connect(format!("{p}owner_{size}")).await?;
        let set_role = format!("BEGIN; SET LOCAL ROLE {p}t1; COMMIT");
        let has = format!("SELECT pg_has_role(current_user, '{p}t1', 'MEMBER')");
        let walk = format!("SELECT public.role_is_member(current_user, '{p}t1')");
        let mut changes = 0;
        let mut change = async || -> anyhow::Result<()> {
            changes += 1;
            // A membership row, as provisioning adds one (CREATE ROLE … IN ROLE).
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE ROLE {p}c{size}_{changes} NOLOGIN IN ROLE {p}churn"
            )))
            .execute(&self.pool)
            .await?;
            Ok(())
        };
        let timed = async |conn: &mut sqlx::PgConnection, sql: &str| -> anyhow::Result<f64> {
            let started = Instant::now();
            sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                .execute(&mut *conn)
                .await?;
            Ok(ms(started.elapsed()))
        };
        // Warm both connections: the first lists come from a cold catalog cache.
        for _ in 0..2 {
            timed(&mut login, &set_role).await?;
            timed(&mut owner, &has).await?;
            timed(&mut walker, &walk).await?;
        }
        let mut times: [Vec<f64>; 4] = Default::default();
        for _ in 0..MEMBERSHIP_REPS {
            change().await?;
            times[0].push(timed(&mut login, &set_role).await?);
            times[1].push(timed(&mut login, &set_role).await?);
            change().await?;
            times[2].push(timed(&mut owner, &has).await?);
            change().await?;
            times[3].push(timed(&mut walker, &walk).await?);
        }
        for conn in [login, owner, walker] {
            conn.close().await?;
        }
        Ok(times)
    }

    // ---- operators' commands on a small and a large fleet --------------------------------

    /// Each command's median process time on `--small` tenants, then on `--tenants`.
    async fn commands(&self) -> anyhow::Result<Vec<ResultRow>> {
        let (small, large) = (self.args.small, self.args.tenants);
        println!(
            "\n== commands: each median of {} runs, on {small} tenants, then on {large}",
            commands::REPS
        );
        let have: i64 = sqlx::query_scalar("SELECT count(*) FROM public.tenants")
            .fetch_one(&self.pool)
            .await?;
        ensure!(
            usize::try_from(have)? <= small,
            "the fleet already has {have} tenants, more than --small {small}: run `commands` first or alone"
        );
        self.ensure_fleet_of(small).await?;
        let at_small = time_commands(&self.pool, &self.server.bench_url).await?;
        self.ensure_fleet_of(large).await?;
        let at_large = time_commands(&self.pool, &self.server.bench_url).await?;
        let mut rows = Vec::new();
        for ((name, s), (_, l)) in at_small.iter().zip(&at_large) {
            let ratio = l / s;
            let (goal, met) = if name.starts_with("migrate") {
                ("< 1000 ms".to_owned(), *l < 1000.0)
            } else {
                ("ratio <= 1.2".to_owned(), ratio <= 1.2)
            };
            rows.push(ResultRow {
                name: format!("{name}, ms at {large} vs at {small}"),
                ours: format!("{l:.1}"),
                baseline: format!("{s:.1}"),
                ratio: format!("{ratio:.2}"),
                goal,
                met: Some(met),
            });
        }
        Ok(rows)
    }

    // ---- the fleet ----------------------------------------------------------------------

    /// Makes sure `--tenants` tenants are registered (earlier phases' tenants count),
    /// provisioning the rest with a few concurrent tasks.
    async fn ensure_fleet(&self) -> anyhow::Result<usize> {
        self.ensure_fleet_of(self.args.tenants).await
    }

    /// Makes sure `want` tenants are registered, provisioning the rest with a few
    /// concurrent tasks.
    async fn ensure_fleet_of(&self, want: usize) -> anyhow::Result<usize> {
        let have: i64 = sqlx::query_scalar("SELECT count(*) FROM public.tenants")
            .fetch_one(&self.pool)
            .await?;
        let missing = want.saturating_sub(usize::try_from(have)?);
        if missing == 0 {
            return Ok(want);
        }
        println!("  provisioning {missing} tenants ({FLEET_BUILDERS} concurrent tasks)");
        let started = Instant::now();
        // Tasks claim tenant numbers from one counter until `missing` are made.
        let claimed = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let step = (missing / 10).max(1);
        let first = usize::try_from(have)?;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..FLEET_BUILDERS {
            let (tenancy, actor) = (self.tenancy.clone(), self.actor.clone());
            let (claimed, done) = (claimed.clone(), done.clone());
            tasks.spawn(async move {
                loop {
                    let i = claimed.fetch_add(1, Ordering::Relaxed);
                    if i >= missing {
                        break;
                    }
                    let slug = format!("fleet-{:06}", first + i);
                    let new = NewTenant::parse(
                        &slug,
                        &format!("Bench {slug}"),
                        Tier::Professional,
                        &format!("org_{slug}"),
                    )?;
                    tenancy.provision(&new, &actor).await?;
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_multiple_of(step) || n == missing {
                        eprintln!(
                            "  provisioned {n}/{missing} ({:.0} s)",
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
                anyhow::Ok(())
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined??;
        }
        Ok(want)
    }

    // ---- migrate with nothing to do -----------------------------------------------------

    async fn migrate_noop(&self) -> anyhow::Result<Vec<ResultRow>> {
        println!(
            "\n== migrate-noop: {} tenants, nothing pending",
            self.args.tenants
        );
        let fleet = self.ensure_fleet().await?;
        let tenant_migrations = migrate::tenant_migrations();
        let latest = migrate::latest_version(tenant_migrations);

        // (a) The library sequence `capliquify migrate` runs, on an already open pool.
        let mut library = Vec::with_capacity(NOOP_REPS);
        for _ in 0..NOOP_REPS {
            let started = Instant::now();
            migrate::migrate_public(&self.pool, tenant_migrations).await?;
            let pending = migrate::pending_tenants(&self.pool, latest).await?;
            ensure!(
                pending.is_empty(),
                "{} tenants pending; expected none",
                pending.len()
            );
            let report =
                migrate::migrate_fleet(&self.pool, pending, latest, 4, Arc::new(|_| {})).await;
            library.push(ms(started.elapsed()));
            ensure!(report.failed.is_empty(), "no-op migrate failed");
        }

        // (b) The real binary: process start, pool connect, the same sequence, exit.
        let binary = capliquify_binary()?;
        let process = run_binary(
            &self.server.bench_url,
            &binary,
            &["migrate"],
            NOOP_REPS,
            || {},
        )
        .await?;
        let (lib, bin) = (median(&library), median(&process));
        println!(
            "  library: median {lib:.1} ms (min {:.1}, max {:.1}) over {NOOP_REPS} runs",
            min(&library),
            max(&library)
        );
        println!(
            "  `capliquify migrate` process: median {bin:.1} ms (min {:.1}, max {:.1}) over {NOOP_REPS} runs",
            min(&process),
            max(&process)
        );
        Ok(vec![
            ResultRow {
                name: format!("migrate no-op, {fleet} tenants, library (ms)"),
                ours: format!("{lib:.1}"),
                baseline: "-".into(),
                ratio: "-".into(),
                goal: "< 1000 ms".into(),
                met: Some(lib < 1000.0),
            },
            ResultRow {
                name: format!("migrate no-op, {fleet} tenants, process (ms)"),
                ours: format!("{bin:.1}"),
                baseline: "-".into(),
                ratio: "-".into(),
                goal: "< 1000 ms".into(),
                met: Some(bin < 1000.0),
            },
        ])
    }

    // ---- a new-column migration over the fleet ------------------------------------------

    async fn migrate_column(&self) -> anyhow::Result<Vec<ResultRow>> {
        println!(
            "\n== migrate-column: {} tenants, --jobs {COLUMN_JOBS}, {} round(s) per path",
            self.args.tenants, self.args.column_rounds
        );
        let fleet = self.ensure_fleet().await?;
        let schemas: Vec<String> = sqlx::query_scalar(
            "SELECT schema_name::text FROM public.tenants WHERE deleted_at IS NULL ORDER BY slug",
        )
        .fetch_all(&self.pool)
        .await?;

        let mut startup = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let status = psql(self.server)
                .args(["-c", "select 1"])
                .stdout(Stdio::null())
                .status()
                .await?;
            ensure!(status.success(), "psql -c 'select 1' failed");
            startup.push(ms(started.elapsed()));
        }
        println!(
            "  psql start-up (psql -c 'select 1'): median {:.1} ms",
            median(&startup)
        );

        let mut migrations: Vec<Migration> = migrate::tenant_migrations().to_vec();
        let (mut ours, mut baseline, mut function) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..self.args.column_rounds {
            // The baseline goes first in the first round, then the order alternates.
            let (p, o) = if round % 2 == 0 {
                let p = self.column_psql(&schemas, round).await?;
                (p, self.column_ours(&mut migrations, fleet, round).await?)
            } else {
                let o = self.column_ours(&mut migrations, fleet, round).await?;
                (self.column_psql(&schemas, round).await?, o)
            };
            // Diagnostic, not a goal: the same SQL function our path calls, driven by psql
            // one tenant after another. Separates the function's server-side cost from the
            // Rust fleet runner's.
            let f = self
                .column_function_via_psql(&mut migrations, &schemas, round)
                .await?;
            println!(
                "  round {}: psql ALTER {p:.0} ms, ours {o:.0} ms, ratio {:.2}; migrate_tenant_schema via psql {f:.0} ms",
                round + 1,
                o / p
            );
            baseline.push(p);
            ours.push(o);
            function.push(f);
        }
        let (o, p, f) = (median(&ours), median(&baseline), median(&function));
        let ratio = o / p;
        Ok(vec![
            ResultRow {
                name: format!("new-column migration, {fleet} tenants, total ms"),
                ours: format!("{o:.0}"),
                baseline: format!("{p:.0}"),
                ratio: format!("{ratio:.2}"),
                goal: "ratio <= 1.5".into(),
                met: Some(ratio <= 1.5),
            },
            ResultRow {
                name: "  (diagnostic) migrate_tenant_schema via psql".into(),
                ours: format!("{f:.0}"),
                baseline: format!("{p:.0}"),
                ratio: format!("{:.2}", f / p),
                goal: "-".into(),
                met: None,
            },
        ])
    }

    /// Runs a generated script in one psql process; wall clock of the whole process.
    async fn psql_script(&self, name: &str, script: &str) -> anyhow::Result<f64> {
        let path = std::env::temp_dir().join(format!(
            "capliquify-bench-{}-{name}.sql",
            std::process::id()
        ));
        std::fs::write(&path, script)?;
        let started = Instant::now();
        let status = psql(self.server)
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .status()
            .await;
        let elapsed = ms(started.elapsed());
        let _ = std::fs::remove_file(&path);
        ensure!(status?.success(), "psql script {name} failed");
        Ok(elapsed)
    }

    /// Checks that every tenant's `products` has `column`: a timing of work not done would
    /// be worthless.
    async fn expect_column(&self, column: &str, fleet: usize) -> anyhow::Result<()> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM public.tenants t
               JOIN pg_namespace n ON n.nspname = t.schema_name
               JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = 'products'
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $1",
        )
        .bind(column)
        .fetch_one(&self.pool)
        .await?;
        ensure!(
            usize::try_from(n)? == fleet,
            "{n} tenants have column {column}, expected {fleet}"
        );
        Ok(())
    }

    /// One psql process running every ALTER in autocommit mode (each its own transaction).
    async fn column_psql(&self, schemas: &[String], round: usize) -> anyhow::Result<f64> {
        let column = format!("bench_psql_{round}");
        let script: String = schemas
            .iter()
            .map(|s| format!("ALTER TABLE \"{s}\".products ADD COLUMN {column} text;\n"))
            .collect();
        let elapsed = self.psql_script(&format!("alter-{round}"), &script).await?;
        self.expect_column(&column, schemas.len()).await?;
        Ok(elapsed)
    }

    /// A catalog migration applied by psql calling `migrate_tenant_schema` per tenant.
    async fn column_function_via_psql(
        &self,
        migrations: &mut Vec<Migration>,
        schemas: &[String],
        round: usize,
    ) -> anyhow::Result<f64> {
        let column = format!("bench_fn_{round}");
        let version = push_column_migration(migrations, &column);
        migrate::sync_catalog(&self.pool, migrations).await?;
        let script: String = schemas
            .iter()
            .map(|s| format!("SELECT public.migrate_tenant_schema('{s}', {version});\n"))
            .collect();
        let elapsed = self
            .psql_script(&format!("function-{round}"), &script)
            .await?;
        self.expect_column(&column, schemas.len()).await?;
        Ok(elapsed)
    }

    /// A new tenant migration adding one column, synced and applied as `migrate` does it.
    async fn column_ours(
        &self,
        migrations: &mut Vec<Migration>,
        fleet: usize,
        round: usize,
    ) -> anyhow::Result<f64> {
        let column = format!("bench_note_{round}");
        push_column_migration(migrations, &column);
        let done = Arc::new(AtomicUsize::new(0));
        let step = (fleet / 4).max(1);
        let on_done: Arc<dyn Fn(&TenantOutcome) + Send + Sync> = {
            let done = done.clone();
            Arc::new(move |_| {
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(step) {
                    eprintln!("    migrated {n}/{fleet}");
                }
            })
        };
        let started = Instant::now();
        let sync = migrate::sync_catalog(&self.pool, migrations).await?;
        let pending = migrate::pending_tenants(&self.pool, sync.latest).await?;
        ensure!(
            pending.len() == fleet,
            "{} tenants pending, expected {fleet}",
            pending.len()
        );
        let report =
            migrate::migrate_fleet(&self.pool, pending, sync.latest, COLUMN_JOBS, on_done).await;
        let elapsed = ms(started.elapsed());
        ensure!(
            report.failed.is_empty(),
            "{} tenants failed to migrate: {:?}",
            report.failed.len(),
            report.failed.first().and_then(|f| f.error.as_ref())
        );
        self.expect_column(&column, fleet).await?;
        Ok(elapsed)
    }
}

/// Appends the next tenant migration version, adding `column` to `products`; returns it.
fn push_column_migration(migrations: &mut Vec<Migration>, column: &str) -> i64 {
    let version = migrate::latest_version(migrations) + 1;
    migrations.push(Migration::new(
        version,
        format!("bench add {column}").into(),
        MigrationType::Simple,
        AssertSqlSafe(format!("ALTER TABLE products ADD COLUMN {column} text;")).into_sql_str(),
        false,
    ));
    version
}

/// Drops every role of the role-memberships benchmark, a few hundred per statement.
async fn drop_membership_roles(pool: &PgPool) -> anyhow::Result<()> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(rolname) FROM pg_roles WHERE starts_with(rolname, $1)",
    )
    .bind(MEMBERSHIP_PREFIX)
    .fetch_all(pool)
    .await?;
    for chunk in names.chunks(500) {
        sqlx::raw_sql(AssertSqlSafe(format!("DROP ROLE {}", chunk.join(", "))))
            .execute(pool)
            .await?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn print_table(rows: &[ResultRow]) {
    let header = ["benchmark", "ours", "baseline", "ratio", "goal", "met"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.ours.clone(),
                r.baseline.clone(),
                r.ratio.clone(),
                r.goal.clone(),
                match r.met {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                }
                .to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    println!("\nresults");
    let line = |row: [&str; 6]| {
        let text: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                // Text left, numbers right.
                if i == 0 || i == 4 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("  {}", text.join("  "));
    };
    line(header);
    let rule = widths.map(|w| "-".repeat(w));
    line(rule.each_ref().map(String::as_str));
    for row in &cells {
        line(row.each_ref().map(String::as_str));
    }
}
