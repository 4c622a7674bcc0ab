//! Health of the tenancy layer: the guide's verification summary, versions, and the
//! isolation checks of `verify_tenant_isolation()`.

use serde::Serialize;
use sqlx::PgPool;

use super::migrate::{PUBLIC_MIGRATIONS, latest_version, tenant_migrations};

/// One row of `tenancy_summary()` (the guide's 003_testing_queries.sql output).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SummaryRow {
    pub check_name: String,
    pub count: i64,
    pub expected: String,
}

/// One row of `verify_tenant_isolation()`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Check {
    pub test_name: String,
    pub result: String,
    pub details: String,
}

impl Check {
    /// PASS, or INFO: a line that reports a state without judging it (e.g. the Citus mode).
    pub fn passed(&self) -> bool {
        matches!(self.result.as_str(), "PASS" | "INFO")
    }
}

/// Versions of the pieces that must agree.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub capliquify: &'static str,
    pub postgres: String,
    pub public_schema: i64,
    pub public_schema_expected: i64,
    pub tenant_catalog: i64,
    pub tenant_catalog_expected: i64,
}

/// Everything `capliquify doctor` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub versions: Versions,
    pub summary: Vec<SummaryRow>,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }
}

/// How much checking a [`doctor`] run does itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// `doctor` without `--slice` or `--full`: report what a running `serve` keeps current
    /// (its fleet check within [`KEPT_WITHIN`], every live tenant checked); else check
    /// [`SLICE`] tenants, the least recently checked first, and the fleet, itself. At 10,000
    /// tenants the least recently checked slice is schemas nobody touched for over an hour
    /// (1.8× doctor's time at 100 tenants), and the fleet check joins the whole registry
    /// with the schema list (3.9× with the rest; docs/benchmarks.md), for what serve does
    /// anyway.
    Default,
    /// Check this many tenants, the least recently checked first, and the fleet now. 0
    /// checks no tenant, and the fleet only when no fresh outcome is recorded (the
    /// console's System page).
    Slice(u32),
    /// Check every tenant, a slice at a time, and run [`report`]'s whole-catalog checks.
    Full,
}

/// Tenants `doctor` checks per run by default, and serve per minute in the background.
pub const SLICE: u32 = 100;
/// Tenants per transaction of a full check.
const FULL_SLICE: u32 = 200;
/// A recorded fleet check counts as kept current while serve's last one is younger than
/// this: serve checks the fleet every minute.
pub const KEPT_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

/// The outcome of `check_fleet()` (public migration 0025): every registry-wide join of
/// doctor's report, recorded by serve each minute and by a doctor that checks now.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FleetCheck {
    pub checked_at: chrono::DateTime<chrono::Utc>,
    /// The last check by serve's minute loop (this one, or an earlier one).
    pub serve_checked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Live (not deleted) tenants.
    pub live: i64,
    /// Live tenants whose schema does not exist, and the first 20 by slug.
    pub missing_count: i64,
    pub missing: Vec<String>,
    /// `tenant_%` schemas neither a tenant's nor unclaimed in the schema pool.
    pub orphan_count: i64,
    pub orphans: Vec<String>,
    /// The tenants the per-tenant checks cover (live, on this cluster, not moving), how
    /// many were never checked, and the oldest of their last checks.
    pub checkable: i64,
    pub never_checked: i64,
    pub oldest_check: Option<chrono::DateTime<chrono::Utc>>,
}

impl FleetCheck {
    /// Whether every tenant the checks cover had been checked when this was recorded.
    pub fn covers_all(&self) -> bool {
        self.never_checked == 0
    }
}

const FLEET_CHECK_COLUMNS: &str = "checked_at, serve_checked_at, live, missing_count, missing,
     orphan_count, orphans, checkable, never_checked, oldest_check";

/// Runs the fleet check now (the registry joined with the schema list and with the checks, once each), records its
/// outcome and returns it. `by_serve`: this is serve's minute loop (or a runner standing
/// in for it), which keeps the outcome current (see [`kept_current`]).
pub async fn check_fleet(pool: &PgPool, by_serve: bool) -> sqlx::Result<FleetCheck> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {FLEET_CHECK_COLUMNS} FROM public.check_fleet($1)"
    )))
    .bind(by_serve)
    .fetch_one(pool)
    .await
}

/// The recorded fleet check, when one was recorded within [`KEPT_WITHIN`] (by the
/// database's clock, which wrote `checked_at`), by anyone.
pub async fn recent_fleet_check(pool: &PgPool) -> sqlx::Result<Option<FleetCheck>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {FLEET_CHECK_COLUMNS} FROM public.fleet_check
          WHERE checked_at > now() - make_interval(secs => $1)"
    )))
    .bind(KEPT_WITHIN.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// Whether a running serve keeps the checks current (see [`Depth::Default`]): its loop
/// checked the fleet within [`KEPT_WITHIN`], and the last outcome covers every tenant;
/// that outcome if so. A record only a doctor or a repair wrote does not count: nobody
/// keeps it current, and the next doctor must see what changed since.
pub async fn kept_current(pool: &PgPool) -> sqlx::Result<Option<FleetCheck>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {FLEET_CHECK_COLUMNS} FROM public.fleet_check
          WHERE serve_checked_at > now() - make_interval(secs => $1) AND never_checked = 0"
    )))
    .bind(KEPT_WITHIN.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// Everything `capliquify doctor` checks (and the console's System page shows): the
/// versions, the guide's summary, the fleet checks (registry against schemas, versions),
/// the schema pool, the per-tenant checks of [`tenant_checks`], and the checks of the
/// connected role's privileges and of Citus. By default it checks nothing a running serve
/// keeps current (see [`Depth`]); its own reads then cost a scan of the registry for the
/// summary's counts and the versions, and no join of it. `progress(done, total)` follows a
/// full check. [`Depth::Full`] adds [`report`]'s checks, which read the whole fleet's
/// catalog in one statement each (the guide's `verify_tenant_isolation()`), in place of
/// the fleet checks.
pub async fn doctor(
    pool: &PgPool,
    depth: Depth,
    progress: impl FnMut(u64, u64),
) -> sqlx::Result<Report> {
    let (versions, migrated) = versions(pool).await?;
    let mut report = if !migrated {
        unmigrated(versions)
    } else if depth == Depth::Full {
        let mut report = report(pool).await?;
        let (checked_now, fleet) = check_tenants(pool, depth, progress).await?;
        report
            .checks
            .push(tenant_checks(pool, checked_now, &fleet).await?);
        report
    } else {
        let summary =
            sqlx::query_as("SELECT check_name, count, expected FROM public.tenancy_summary()")
                .fetch_all(pool)
                .await?;
        let (checked_now, fleet) = check_tenants(pool, depth, progress).await?;
        let mut checks = vec![migrations_current(&versions)];
        checks.extend(fleet_checks(pool, versions.tenant_catalog, &fleet).await?);
        checks.push(schema_pool(pool, versions.tenant_catalog).await?);
        checks.push(tenant_checks(pool, checked_now, &fleet).await?);
        Report {
            versions,
            summary,
            checks,
        }
    };
    report
        .checks
        .push(crate::db::privileges::doctor_check(pool).await?);
    report
        .checks
        .push(crate::db::citus::doctor_check(pool).await?);
    Ok(report)
}

/// Where a fleet check's outcome came from: this run, or a record.
#[derive(Debug, Clone)]
struct Fleet {
    check: FleetCheck,
    /// Recorded before this run: its figures are as of then.
    recorded: bool,
    /// And serve keeps that record current ([`kept_current`]).
    by_serve: bool,
}

impl Fleet {
    /// " (as of the fleet check at 12:01:02 UTC; …)" for a recorded outcome, else "".
    fn as_of(&self) -> String {
        if !self.recorded {
            return String::new();
        }
        format!(
            " (as of the fleet check at {} UTC; {}`--slice N` checks now)",
            self.check.checked_at.format("%H:%M:%S"),
            if self.by_serve {
                "serve checks every minute, "
            } else {
                ""
            }
        )
    }
}

/// Runs the per-tenant checks `depth` asks for (see [`Depth`]) and the fleet check, or
/// takes serve's recorded fleet check when that is enough: how many tenants this run
/// checked, and the fleet's outcome.
async fn check_tenants(
    pool: &PgPool,
    depth: Depth,
    mut progress: impl FnMut(u64, u64),
) -> sqlx::Result<(u64, Fleet)> {
    let kept = match depth {
        Depth::Default | Depth::Slice(0) => kept_current(pool).await?,
        Depth::Slice(_) | Depth::Full => None,
    };
    let recorded = match (kept, depth) {
        (Some(check), _) => Some((check, true)),
        (None, Depth::Slice(0)) => recent_fleet_check(pool).await?.map(|check| (check, false)),
        (None, _) => None,
    };
    if let Some((check, by_serve)) = recorded {
        return Ok((
            0,
            Fleet {
                check,
                recorded: true,
                by_serve,
            },
        ));
    }
    let mut checked_now = 0u64;
    match depth {
        Depth::Default => checked_now = slice(pool, SLICE).await?,
        Depth::Slice(0) => {}
        Depth::Slice(n) => checked_now = slice(pool, n).await?,
        Depth::Full => {
            let total: i64 = sqlx::query_scalar(CHECKABLE_COUNT).fetch_one(pool).await?;
            let total = u64::try_from(total).unwrap_or(0);
            progress(0, total);
            while checked_now < total {
                let done = slice(pool, FULL_SLICE).await?;
                if done == 0 {
                    break;
                }
                checked_now += done;
                progress(checked_now.min(total), total);
            }
        }
    }
    Ok((
        checked_now,
        Fleet {
            check: check_fleet(pool, false).await?,
            recorded: false,
            by_serve: false,
        },
    ))
}

/// The checks of `verify_tenant_isolation()` that read only the registry and the list of
/// schemas, not each schema's catalog: the shared tables, every live tenant's schema
/// present (from the fleet check) and at the newest version (one scan of the registry,
/// now: `migrate` then `doctor` shows the fleet current), no schema without its tenant
/// (from the fleet check). The rest of that function's checks are per tenant, in
/// [`tenant_checks`].
async fn fleet_checks(pool: &PgPool, latest: i64, fleet: &Fleet) -> sqlx::Result<Vec<Check>> {
    let (missing_tables, behind): (Vec<String>, Vec<String>) = sqlx::query_as(
        "SELECT ARRAY(SELECT t FROM unnest(ARRAY['tenants', 'users', 'subscriptions',
                                                 'audit_logs', 'tenant_migrations']) t
                       WHERE to_regclass('public.' || t) IS NULL ORDER BY t),
                ARRAY(SELECT t.slug || ': at version '
                             || coalesce(t.schema_version::text, 'none') || ' of ' || $1
                        FROM public.tenants t
                       WHERE t.deleted_at IS NULL AND t.schema_version IS DISTINCT FROM $1
                       ORDER BY t.slug LIMIT 20)",
    )
    .bind(latest)
    .fetch_one(pool)
    .await?;
    let as_of = fleet.as_of();
    let check = |name: &str, ok: bool, pass: String, fail: String| Check {
        test_name: name.into(),
        result: if ok { "PASS" } else { "FAIL" }.into(),
        details: if ok { pass } else { fail },
    };
    let FleetCheck {
        live,
        missing_count,
        missing,
        orphan_count,
        orphans,
        ..
    } = &fleet.check;
    let mut problems = missing.clone();
    problems.extend(behind.iter().cloned());
    Ok(vec![
        check(
            "public_tables_present",
            missing_tables.is_empty(),
            "tenants, users, subscriptions, audit_logs, tenant_migrations".into(),
            format!("missing: {}", missing_tables.join(", ")),
        ),
        check(
            "tenant_schemas_current",
            *missing_count == 0 && behind.is_empty(),
            format!("{live} live tenant(s), every schema present{as_of}, at version {latest}"),
            format!(
                "{}{}; {}",
                problems.join("; "),
                if *missing_count > 0 {
                    format!(" ({missing_count} schema(s) missing{as_of})")
                } else {
                    String::new()
                },
                if behind.is_empty() {
                    "`capliquify tenant repair SLUG` recreates a missing schema"
                } else {
                    "run `capliquify migrate`"
                }
            ),
        ),
        check(
            "no_orphan_schemas",
            *orphan_count == 0,
            format!("every tenant_% schema is registered or unclaimed in the schema pool{as_of}"),
            format!(
                "unregistered ({orphan_count}{as_of}): {}",
                orphans.join(", ")
            ),
        ),
    ])
}

/// The per-tenant checks (`check_tenant_schema()`, public migration 0020: tables,
/// references out of the schema, PUBLIC and foreign grants, the tenant role's rights, the
/// applied history): reports every problem the latest check of each live tenant found —
/// in this run or an earlier one (serve checks a slice a minute), read through the index
/// of checks that found one — and, from the fleet check, how much of the fleet has been
/// checked.
async fn tenant_checks(pool: &PgPool, checked_now: u64, fleet: &Fleet) -> sqlx::Result<Check> {
    let problems: Vec<String> = sqlx::query_scalar(
        "SELECT t.slug || ': ' || p
           FROM public.tenant_checks c
           JOIN public.tenants t ON t.id = c.tenant_id
          CROSS JOIN unnest(c.problems) p
          WHERE c.problems <> '{}'
            AND t.deleted_at IS NULL AND t.cluster = 'home' AND t.moving_to IS NULL
          ORDER BY t.slug, p LIMIT 20",
    )
    .fetch_all(pool)
    .await?;
    let FleetCheck {
        checkable,
        never_checked: never,
        oldest_check: oldest,
        ..
    } = fleet.check;
    let checked = u64::try_from(checkable - never).unwrap_or(0);
    let stale = checked.saturating_sub(checked_now);
    let as_of = fleet.as_of();
    let coverage = if never > 0 {
        format!(
            "{never} of {checkable} tenant(s) not checked yet (serve checks {SLICE} a \
             minute; `capliquify doctor --full` checks all now)"
        )
    } else if stale > 0 {
        format!(
            "the other {stale} of {checkable} checked since {}{as_of}",
            oldest.map_or_else(String::new, |at| at
                .format("%Y-%m-%d %H:%M UTC")
                .to_string())
        )
    } else if checkable == 0 {
        "no live tenant to check".to_owned()
    } else {
        format!("all {checkable} checked in this run")
    };
    let scope = if checked_now > 0 {
        format!("{checked_now} tenant(s) checked now, the least recently checked first; {coverage}")
    } else if fleet.by_serve {
        format!(
            "checks kept current by serve ({SLICE} a minute), none run now (`--slice N` or \
             `--full` checks now); {coverage}"
        )
    } else {
        coverage
    };
    Ok(Check {
        test_name: "tenant_schemas_checked".into(),
        result: if problems.is_empty() {
            if never > 0 { "INFO" } else { "PASS" }
        } else {
            "FAIL"
        }
        .into(),
        details: if problems.is_empty() {
            format!("no tenant's last check found a problem; {scope}")
        } else {
            format!(
                "{}. `capliquify tenant repair SLUG` re-grants and recreates ({scope})",
                problems.join("; ")
            )
        },
    })
}

/// The tenants [`tenant_checks`] covers: live, on this cluster, not moving.
const CHECKABLE_COUNT: &str = "SELECT count(*) FROM public.tenants
     WHERE deleted_at IS NULL AND cluster = 'home' AND moving_to IS NULL";

/// Checks the `n` least recently checked tenants in one transaction; how many it checked.
/// On a connection closed afterwards, so that a pooled backend does not keep the catalog
/// entries of `n` cold schemas ([`crate::db::recycle::acquire_for_once`]).
pub async fn slice(pool: &PgPool, n: u32) -> sqlx::Result<u64> {
    let mut conn = crate::db::recycle::acquire_for_once(pool).await?;
    let checked: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT slug) FROM public.verify_tenant_slice($1)")
            .bind(i32::try_from(n).unwrap_or(i32::MAX))
            .fetch_one(&mut *conn)
            .await?;
    Ok(u64::try_from(checked).unwrap_or(0))
}

/// serve's background check: one slice of [`SLICE`] tenants a minute, then the fleet check,
/// so problems show in `doctor` and on the console without anyone running a full check,
/// and `doctor` reads the outcome instead of checking itself.
pub async fn check_loop(pool: PgPool) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(60));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(err) = slice(&pool, SLICE).await {
            tracing::warn!(error = %err, "checking a slice of tenants failed");
        }
        if let Err(err) = check_fleet(&pool, true).await {
            tracing::warn!(error = %err, "checking the fleet failed");
        }
    }
}

fn migrations_current(versions: &Versions) -> Check {
    let current = versions.public_schema == versions.public_schema_expected
        && versions.tenant_catalog == versions.tenant_catalog_expected;
    Check {
        test_name: "migrations_current".into(),
        result: if current { "PASS" } else { "FAIL" }.into(),
        details: format!(
            "public schema {}/{}, tenant catalog {}/{}{}",
            versions.public_schema,
            versions.public_schema_expected,
            versions.tenant_catalog,
            versions.tenant_catalog_expected,
            if current {
                ""
            } else {
                "; run `capliquify migrate`"
            }
        ),
    }
}

fn unmigrated(versions: Versions) -> Report {
    Report {
        versions,
        summary: Vec::new(),
        checks: vec![Check {
            test_name: "public_schema_migrated".into(),
            result: "FAIL".into(),
            details: "the capliquify public schema is missing; run `capliquify migrate`".into(),
        }],
    }
}

/// The versions of this build, the server, the public schema and the tenant catalog, and
/// whether the public schema was migrated at all (else its versions are 0).
pub async fn versions(pool: &PgPool) -> sqlx::Result<(Versions, bool)> {
    let postgres: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(pool)
        .await?;
    let migrated: bool = sqlx::query_scalar(
        "SELECT to_regprocedure('public.verify_tenant_isolation()') IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    let mut versions = Versions {
        capliquify: env!("CARGO_PKG_VERSION"),
        postgres,
        public_schema: 0,
        public_schema_expected: latest_version(&PUBLIC_MIGRATIONS.migrations),
        tenant_catalog: 0,
        tenant_catalog_expected: latest_version(tenant_migrations()),
    };
    if migrated {
        let (public_schema, tenant_catalog): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT max(version) FROM public._sqlx_migrations WHERE success),
                    (SELECT max(version) FROM public.tenant_migrations)",
        )
        .fetch_one(pool)
        .await?;
        versions.public_schema = public_schema.unwrap_or(0);
        versions.tenant_catalog = tenant_catalog.unwrap_or(0);
    }
    Ok((versions, migrated))
}

/// The report of everything, each check one pass over the whole fleet's catalog (the guide's
/// `verify_tenant_isolation()`, every history, every role): `doctor --full`'s, and a cost
/// that grows with the fleet. A database that was never migrated yields a report with a
/// failing check rather than an error, so `doctor` can say what to do.
pub async fn report(pool: &PgPool) -> sqlx::Result<Report> {
    let (versions, migrated) = versions(pool).await?;
    if !migrated {
        return Ok(unmigrated(versions));
    }
    let summary =
        sqlx::query_as("SELECT check_name, count, expected FROM public.tenancy_summary()")
            .fetch_all(pool)
            .await?;
    let mut checks: Vec<Check> =
        sqlx::query_as("SELECT test_name, result, details FROM public.verify_tenant_isolation()")
            .fetch_all(pool)
            .await?;
    checks.push(histories(pool).await?);
    checks.push(roles(pool).await?);
    checks.push(schema_pool(pool, versions.tenant_catalog).await?);
    checks.insert(0, migrations_current(&versions));
    Ok(Report {
        versions,
        summary,
        checks,
    })
}

/// The schema pool's unclaimed schemas are at the catalog's newest tenant migration (a sign-up
/// migrates the one it claims, but `capliquify migrate` should have left none behind).
async fn schema_pool(pool: &PgPool, latest: i64) -> sqlx::Result<Check> {
    let status = super::schema_pool::status(pool, latest).await?;
    let (result, details) = if status.behind == 0 {
        (
            "PASS",
            format!(
                "{} unclaimed schema(s), all at version {latest}",
                status.unclaimed
            ),
        )
    } else {
        (
            "FAIL",
            format!(
                "{} of {} unclaimed schema(s) behind version {latest}; run `capliquify migrate`",
                status.behind, status.unclaimed
            ),
        )
    };
    Ok(Check {
        test_name: "schema_pool_current".into(),
        result: result.into(),
        details,
    })
}

/// Every tenant schema's applied history against the catalog: a version whose checksum the
/// catalog does not have means someone edited a schema's history or an applied migration.
/// (`migrate_tenant_schema` trusts the registry's version for registered tenants, so this
/// is where drift shows.) One query per tenant, each its own short transaction, so the
/// check holds no locks across the fleet.
async fn histories(pool: &PgPool) -> sqlx::Result<Check> {
    let tenants: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.slug::text, t.schema_name::text FROM public.tenants t
          WHERE to_regclass(quote_ident(t.schema_name) || '.schema_migrations') IS NOT NULL
          ORDER BY t.slug",
    )
    .fetch_all(pool)
    .await?;
    let mut drifted = Vec::new();
    for (slug, schema) in &tenants {
        let Ok(schema) = super::SchemaName::parse(schema) else {
            continue;
        };
        let version: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT min(s.version) FROM {}.schema_migrations s
               LEFT JOIN public.tenant_migrations c USING (version)
              WHERE c.checksum IS DISTINCT FROM s.checksum",
            schema.quoted()
        )))
        .fetch_one(pool)
        .await?;
        if let Some(version) = version {
            drifted.push(format!("{slug}: migration {version}"));
        }
    }
    Ok(Check {
        test_name: "tenant_histories_match_catalog".into(),
        result: if drifted.is_empty() { "PASS" } else { "FAIL" }.into(),
        details: if drifted.is_empty() {
            format!(
                "{} tenant schema histories match the catalog",
                tenants.len()
            )
        } else {
            format!(
                "applied with a checksum the catalog lacks: {}",
                drifted
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    })
}

/// Every live tenant's database role exists and holds its rights on its own schema, and no
/// tenant schema or table is granted to any role (PUBLIC included) but its owner and its
/// tenant's role (public migration 0006; `capliquify tenant repair SLUG` re-grants).
async fn roles(pool: &PgPool) -> sqlx::Result<Check> {
    let mut problems: Vec<String> = sqlx::query_scalar(super::lifecycle::ROLE_PROBLEMS_SQL)
        .bind(Option::<uuid::Uuid>::None)
        .fetch_all(pool)
        .await?;
    let foreign: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT g.object || ' is also granted to ' || coalesce(r.rolname, 'PUBLIC')
           FROM (SELECT n.nspname::text AS object, n.nspname AS schema, n.nspowner AS owner, a.grantee
                   FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
                  WHERE n.nspname LIKE 'tenant\\_%'
                 UNION ALL
                 SELECT n.nspname || '.' || c.relname, n.nspname, c.relowner, a.grantee
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  CROSS JOIN LATERAL aclexplode(c.relacl) a
                  WHERE n.nspname LIKE 'tenant\\_%') g
           LEFT JOIN pg_roles r ON r.oid = g.grantee
           LEFT JOIN public.tenants t ON t.schema_name = g.schema
           -- (an unclaimed pooled schema already belongs to the role of its future tenant)
           LEFT JOIN public.tenant_schema_pool p ON p.schema_name = g.schema
          WHERE g.grantee <> g.owner
            AND (r.rolname IS NULL
                 OR r.rolname IS DISTINCT FROM public.tenant_role_name(coalesce(t.id, p.tenant_id)))
          ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    problems.extend(foreign);
    Ok(Check {
        test_name: "tenant_roles_in_place".into(),
        result: if problems.is_empty() { "PASS" } else { "FAIL" }.into(),
        details: if problems.is_empty() {
            "every live tenant has its own role, granted on its own schema only".into()
        } else {
            format!(
                "{}; run `capliquify tenant repair SLUG`",
                problems
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    })
}
