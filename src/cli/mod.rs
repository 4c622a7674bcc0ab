//! The `capliquify` command line: one binary for the service and the operators.

mod cluster;
mod config_check;
mod forecasts;
mod import;
mod output;
mod schema_pool;
mod tenant;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::db::Database;
use crate::db::embedded::EmbeddedCluster;
use crate::tenancy::migrate::{self, TenantOutcome};
use crate::tenancy::verify;
use crate::{http, monitor};

const ABOUT: &str = "CapLiquify tenancy platform: the multi-tenant backend (one PostgreSQL schema per tenant) and its operators' tools.";

const AFTER_HELP: &str = "\
Database: every command uses DATABASE_URL. When it is unset, capliquify starts a private
PostgreSQL cluster from the installed PostgreSQL binaries under --data-dir (default
./.capliquify) and stops it again when the command ends.

First steps:
  capliquify serve            # run the service with demo tenants
  capliquify migrate          # bring every tenant schema up to date
  capliquify tenant create --slug acme --name 'ACME Corp' --tier starter \\
      --clerk-org org_123
  capliquify tenant list      # see every tenant
  capliquify doctor           # check versions and tenant isolation";

#[derive(Debug, Parser)]
#[command(name = "capliquify", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (with demo tenants on the embedded database).
    Serve(http::ServeArgs),
    /// Apply public-schema migrations, then bring every tenant schema to the newest version.
    #[command(after_help = "\
Tenants are migrated in batches of up to 16 per transaction, each tenant in its own
subtransaction: a tenant that fails is rolled back and reported, the others go on, and the
command exits non-zero. Running it again resumes. Two overlapping runs are safe: each
tenant is locked while it is migrated. Unclaimed schemas of the schema pool follow.")]
    Migrate(MigrateArgs),
    /// Create, inspect and manage tenants.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Check versions, the guide's verification summary and tenant isolation (exit 1 on FAIL).
    #[command(after_help = "\
Each tenant's own checks (tables, references out of its schema, grants, its role's rights,
its applied history) run a slice at a time, the least recently checked first, and every
problem a tenant's last check found is reported until a later check finds it gone. The
fleet check (every live tenant's schema present, no tenant_% schema without its tenant,
how much of the fleet was checked) reads the whole registry and the list of schemas.
A running serve does both every minute (100 tenants, then the fleet), and doctor then
reports what it recorded, so doctor stays fast at any fleet size; versions are read now.
Without serve's record (none in the last 2 minutes, or a tenant never checked), doctor
checks 100 tenants and the fleet itself. --slice N checks N tenants and the fleet now;
--full checks every tenant now (with progress), and adds the guide's
verify_tenant_isolation() over the whole fleet.")]
    Doctor(DoctorArgs),
    /// Watch the fleet: the largest tenant schemas (sizes), tenants against their plan's
    /// limits (tenants), the slowest statements per tenant (slow-queries).
    #[command(subcommand)]
    Monitor(MonitorCommand),
    /// Manage the embedded PostgreSQL cluster (used when DATABASE_URL is unset).
    #[command(subcommand)]
    Db(DbCommand),
    /// Citus: the workers holding tenant schemas, and the tenants' load.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Print the API's OpenAPI 3.1 document (the committed copy is docs/openapi.json).
    Openapi,
    /// Read the audit trail, newest first (every tenant, or one with --tenant).
    Audit(AuditArgs),
    /// Manage the keys that seal API credentials.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Cross-tenant queries.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Time-driven tenant changes: suspend ended trials and long past-due tenants, end
    /// cancelled subscriptions, purge tenants deleted longer than the grace period.
    #[command(subcommand)]
    Lifecycle(LifecycleCommand),
    /// Forecast jobs over the fleet: regenerate demand forecasts (refresh), fill in the
    /// actuals and accuracy of past forecasts (reconcile).
    #[command(subcommand)]
    Forecasts(forecasts::ForecastsCommand),
    /// Check the configuration: every setting, where it came from, and every problem.
    #[command(subcommand)]
    Config(config_check::ConfigCommand),
    /// Import a CSV or spreadsheet file into a tenant's table (as POST /api/v1/imports), or
    /// migrate Sentia's database into a tenant (import sentia).
    Import(import::ImportArgs),
    /// Tenant schemas made ahead of sign-ups, so a new tenant waits for no DDL: status,
    /// fill, drain.
    #[command(subcommand)]
    SchemaPool(schema_pool::SchemaPoolCommand),
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only this tenant (slug).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this action, e.g. tenant.suspended or scenario.created.
    #[arg(long)]
    pub action: Option<String>,
    /// Only entries from this time on: a date (2026-11-01, midnight UTC) or an RFC 3339
    /// time (2026-11-01T09:30:00Z).
    #[arg(long, value_parser = crate::audit::parse_instant)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// How many entries at most.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub limit: i64,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Run one read-only query in every tenant's schema (in parallel) and print the rows with
    /// a tenant column.
    #[command(
        after_help = "Each tenant runs the query in its own read-only transaction with its schema as the\nsearch path and a statement timeout, so the query can neither change data nor run away.\nThe query must be one row-returning statement (it is run as a subquery).\n\nExamples:\n  capliquify fleet sql \"SELECT count(*) AS products FROM products\"\n  capliquify fleet sql --json \"SELECT sum(total_amount) AS revenue\n      FROM sales WHERE sale_date >= '2026-01-01'\""
    )]
    Sql {
        /// The query, with unqualified table names (products, sales, …).
        query: String,
        /// Only these tenants (repeatable); default: every live tenant.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// How many tenants to query at the same time.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
        jobs: u32,
        /// Seconds each tenant's query may run.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout_secs: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-seal every tenant's credentials under ENCRYPTION_KEY (ENCRYPTION_KEY_ID), opening
    /// old envelopes with the keys in ENCRYPTION_KEYS. One transaction per tenant, audited,
    /// resumable: run it again after an interruption. Switched-off credentials that do not
    /// open (a clone's copies, sealed to the original tenant) are skipped and counted.
    #[command(
        after_help = "Rotation, step by step:\n  1. restart the service with the new key and the old one beside it:\n     ENCRYPTION_KEY=<new hex> ENCRYPTION_KEY_ID=k2 ENCRYPTION_KEYS=k1=<old hex>\n  2. capliquify keys rotate\n  3. remove k1 from ENCRYPTION_KEYS and restart"
    )]
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum LifecycleCommand {
    /// Run the lifecycle job once (for cron; `serve` also runs it on a timer). Safe beside
    /// running services: only one instance works at a time.
    Run,
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// How many tenants to migrate at the same time.
    #[arg(long, short, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Show what would be migrated without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// The largest tenant schemas by size on disk (tables, indexes, TOAST).
    #[command(after_help = "\
Each tenant's size is measured a slice at a time, least recently measured first, and kept
(serve measures 100 a minute): this command ranks the sizes kept and measures the largest
candidates again (3 per row shown, at least 30), so every size shown is exact and the cost
is the same at any fleet size. When serve is not keeping the sizes (a tenant never measured,
or nothing measured in the last 2 minutes) it first measures a slice itself (--slice). A
tenant that grew since it was last measured can be missed until its turn; the output says
how old the oldest measurement is. --full measures every tenant first (with progress).")]
    Sizes {
        /// How many schemas to show.
        #[arg(long, default_value_t = 10)]
        limit: i64,
        /// Tenants measured before ranking, least recently measured first (0: rank what
        /// earlier measurements found). Default: 100 when sizes are not being kept current
        /// (a tenant never measured, or no measurement in the last 2 minutes: serve is not
        /// running), otherwise none.
        #[arg(long, value_name = "N", conflicts_with = "full",
              value_parser = clap::value_parser!(u32).range(0..=100_000))]
        slice: Option<u32>,
        /// Measure every tenant now, then rank.
        #[arg(long)]
        full: bool,
    },
    /// Live tenants with their tier, status, and usage against their plan's limits.
    #[command(after_help = "\
Newest first, a page at a time: each tenant's entities are counted in its own schema, so
only the page's tenants are counted and a page costs the same at any fleet size. The page
ends with the command for the next one. --limit 0 shows every tenant.")]
    Tenants {
        /// Tenants per page (0: every tenant).
        #[arg(long, value_name = "N", default_value_t = 100,
              value_parser = clap::value_parser!(i64).range(0..=1_000_000))]
        limit: i64,
        /// Start after this position: the value the previous page printed.
        #[arg(long, value_name = "POSITION",
              value_parser = crate::tenancy::census::After::parse_newest)]
        after: Option<crate::tenancy::census::After>,
    },
    /// The statements with the most total execution time, per tenant (pg_stat_statements).
    #[command(after_help = "\
Each tenant's statements run as that tenant's own database role, so pg_stat_statements
knows whose they are even though the SQL never names a schema. Needs the
pg_stat_statements module in shared_preload_libraries (the embedded cluster sets it) and
`capliquify migrate` run once by a superuser after PostgreSQL loaded it.

Examples:
  capliquify monitor slow-queries --limit 5
  capliquify monitor slow-queries --tenant acme")]
    SlowQueries {
        /// Only this tenant (slug).
        #[arg(long)]
        tenant: Option<String>,
        /// How many statements to show.
        #[arg(long, default_value_t = 20)]
        limit: i32,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Start the embedded cluster and leave it running (prints its URL).
    Start,
    /// Stop the embedded cluster.
    Stop,
    /// Say whether the embedded cluster is running, and on which port; with DATABASE_URL
    /// set, which server is used instead and whether it answers.
    Status,
    /// Create the login role the HTTP service should connect as (least privilege).
    #[command(after_help = "\
Run it once per cluster, after `capliquify migrate`, as a role with CREATEROLE (the one
that runs migrations). It creates (or brings in line) a LOGIN role that is not a
superuser and cannot create databases or roles, and makes it a member of
capliquify_service: the service can then use the registry, members, subscriptions and
webhook inbox, append (never change) audit rows, provision tenants through the database's
own functions, and switch to a tenant's role for that tenant's work. Then run the service
with DATABASE_URL naming that role; keep the migrating role for operators' commands.

Example:
  CAPLIQUIFY_APP_PASSWORD='…' capliquify db init-roles
  DATABASE_URL=postgres://capliquify_app:…@db.internal/capliquify \\
      capliquify serve

See docs/security.md (Database roles).")]
    InitRoles {
        /// Name of the login role to create or update.
        #[arg(long, default_value = crate::db::roles::DEFAULT_LOGIN)]
        login: String,
        /// Its password (omit for peer/trust authentication). Only its SCRAM-SHA-256
        /// verifier is sent to the server, never the password itself — except with Citus,
        /// where the coordinator keeps it in pg_dist_authinfo (superusers only) to connect to
        /// the workers as this role.
        #[arg(long, env = "CAPLIQUIFY_APP_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
}

/// The settings a command's help shows, by group (ids are `Settings`' fields). Every
/// command accepts every setting (they are `global`, so a flag works in any position, as
/// before); a command's help lists only the ones it reads, so `openapi --help` does not
/// offer database flags and `tenant create --help` is not buried under key options.
const DATABASE: &[&str] = &["database_url", "data_dir", "clusters", "db_max_connections"];
const EMBEDDED: &[&str] = &["database_url", "data_dir"];
const KEYS: &[&str] = &["encryption_key", "encryption_key_id", "encryption_keys"];
const DELETION: &[&str] = &["grace_days"];
const PAST_DUE: &[&str] = &["past_due_grace_days"];
const BACKUP: &[&str] = &["backup_key"];
const JSON: &[&str] = &["json"];
const ALL_SETTINGS: [&[&str]; 6] = [DATABASE, KEYS, DELETION, PAST_DUE, BACKUP, JSON];

/// The settings a leaf command (its path below `capliquify`) reads.
fn settings_used(path: &[&str]) -> Vec<&'static str> {
    let groups: &[&[&str]] = match path {
        // The service logs; it prints no result to format.
        ["serve"] => &[DATABASE, KEYS, DELETION, PAST_DUE],
        // The document is JSON already.
        ["openapi"] => &[],
        ["db", "stop"] => &[EMBEDDED],
        ["db", _] => &[EMBEDDED, JSON],
        ["keys", _] => &[DATABASE, KEYS, JSON],
        // Sentia's API keys are sealed with the credentials' keys.
        ["import", "sentia"] => &[DATABASE, KEYS, JSON],
        ["lifecycle", _] => &[DATABASE, DELETION, PAST_DUE, JSON],
        ["tenant", "delete" | "undelete" | "purge"] => &[DATABASE, DELETION, JSON],
        // A clone signs its temporary archive with a key of its own.
        ["tenant", "backup" | "restore"] => &[DATABASE, BACKUP, JSON],
        _ => &[DATABASE, JSON],
    };
    groups.iter().flat_map(|g| g.iter().copied()).collect()
}

/// The command line with each command's help showing the settings it uses (see
/// [`settings_used`]); `main` parses with it and the help snapshot test reads it.
///
/// How: clap copies a global argument into each subcommand unless the subcommand already
/// has one with that id. A command that does not read a setting gets its own hidden copy,
/// which parses exactly like the propagated one (same id, still global) but stays out of
/// its help.
pub fn command() -> clap::Command {
    use clap::CommandFactory as _;
    let cmd = Cli::command();
    let globals: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    with_hidden_settings(cmd, &[], &globals)
}

/// The settings read by the command at `path` or any command below it.
fn used_below(cmd: &clap::Command, path: &[&str]) -> Vec<&'static str> {
    let children: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|c| c.get_name() != "help")
        .collect();
    if children.is_empty() {
        return settings_used(path);
    }
    let mut used = Vec::new();
    for child in children {
        let mut child_path = path.to_vec();
        child_path.push(child.get_name());
        used.extend(used_below(child, &child_path));
    }
    used
}

fn with_hidden_settings(
    mut cmd: clap::Command,
    path: &[&str],
    globals: &[clap::Arg],
) -> clap::Command {
    if !path.is_empty() {
        let used = used_below(&cmd, path);
        for arg in globals {
            let id = arg.get_id().as_str();
            if ALL_SETTINGS.iter().any(|g| g.contains(&id)) && !used.contains(&id) {
                cmd = cmd.arg(arg.clone().hide(true));
            }
        }
    }
    let children: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .filter(|n| n != "help")
        .collect();
    for child in children {
        let mut child_path = path.to_vec();
        child_path.push(child.as_str());
        cmd = cmd.mut_subcommand(&child, |sub| {
            with_hidden_settings(sub, &child_path, globals)
        });
    }
    cmd
}

/// Runs the parsed command; errors are printed by `main`.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => http::serve(&cli.settings, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Db(cmd) if !matches!(cmd, DbCommand::InitRoles { .. }) => {
            db_command(&cli.settings, cmd, cli.json).await
        }
        Command::Config(cmd) => config_check::run(cmd, &cli.settings, cli.json),
        Command::Openapi => {
            print!("{}", http::openapi::document_json());
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let db = Database::open(&cli.settings).await?;
            let result = with_database(&db, &cli.settings, command, cli.json).await;
            db.close().await?;
            result
        }
    }
}

async fn with_database(
    db: &Database,
    settings: &Settings,
    command: Command,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if db.is_embedded() && !matches!(command, Command::Migrate(_) | Command::Doctor(_)) {
        // The embedded cluster is a private development database: keep it current
        // without an extra step.
        migrate::migrate_public(&db.pool, migrate::tenant_migrations()).await?;
    }
    match command {
        Command::Migrate(args) => {
            crate::db::privileges::require_role_management(&db.pool).await?;
            run_migrate(db, args, json).await
        }
        Command::Tenant(cmd) => {
            migrate::ensure_current(&db.pool).await?;
            tenant::run(db, settings, cmd, json).await
        }
        Command::Doctor(args) => doctor(db, args, json).await,
        Command::SchemaPool(cmd) => {
            migrate::ensure_current(&db.pool).await?;
            schema_pool::run(db, cmd, json).await
        }
        Command::Cluster(cmd) => {
            migrate::ensure_current(&db.pool).await?;
            cluster::run(&db.pool, cmd, json).await
        }
        Command::Fleet(FleetCommand::Sql {
            query,
            tenants,
            jobs,
            timeout_secs,
        }) => {
            migrate::ensure_current(&db.pool).await?;
            fleet_sql(db, &query, &tenants, jobs as usize, timeout_secs, json).await
        }
        Command::Keys(KeysCommand::Rotate) => {
            migrate::ensure_current(&db.pool).await?;
            rotate_keys(db, settings, json).await
        }
        Command::Audit(args) => {
            migrate::ensure_current(&db.pool).await?;
            run_audit(db, args, json).await
        }
        Command::Lifecycle(LifecycleCommand::Run) => {
            migrate::ensure_current(&db.pool).await?;
            let report = crate::tenancy::lifecycle_job::run(
                &db.pool,
                settings.grace_days,
                settings.past_due_grace_days,
            )
            .await?;
            if json {
                output::json(&report)?;
            } else if report.skipped {
                println!("another instance is running the lifecycle job; nothing done");
            } else {
                let rows = [
                    ("trials ended → suspended", &report.trials_suspended),
                    (
                        "past due beyond grace → suspended",
                        &report.past_due_suspended,
                    ),
                    ("paid period over → cancelled", &report.subscriptions_ended),
                    ("deleted beyond grace → purged", &report.purged),
                    (
                        "deleted beyond grace, on another cluster → move home to purge",
                        &report.purge_waits_for_move_home,
                    ),
                ]
                .into_iter()
                .map(|(what, slugs)| {
                    vec![what.to_owned(), slugs.len().to_string(), slugs.join(", ")]
                });
                println!("{}", output::table(&["CHANGE", "TENANTS", "SLUGS"], rows));
                for (slug, error) in &report.failed {
                    eprintln!("FAILED {slug}: {error}");
                }
            }
            Ok(if report.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Monitor(cmd) => {
            migrate::ensure_current(&db.pool).await?;
            run_monitor(db, cmd, json).await
        }
        Command::Forecasts(cmd) => {
            migrate::ensure_current(&db.pool).await?;
            forecasts::run(db, cmd, json).await
        }
        Command::Import(args) => {
            migrate::ensure_current(&db.pool).await?;
            import::run(db, settings, args, json).await
        }
        Command::Db(DbCommand::InitRoles { login, password }) => {
            crate::db::privileges::require_role_management(&db.pool).await?;
            migrate::ensure_current(&db.pool).await?;
            let report = crate::db::roles::init(
                &db.pool,
                &login,
                password.as_deref().filter(|p| !p.is_empty()),
                &crate::audit::Actor::operator(),
            )
            .await?;
            if json {
                output::json(&report)?;
            } else {
                println!(
                    "{}",
                    output::table(
                        &["ROLE", "ACTION", "PASSWORD", "MEMBER OF"],
                        [vec![
                            report.login.clone(),
                            report.action.to_owned(),
                            if report.password_set {
                                "set"
                            } else {
                                "unchanged"
                            }
                            .to_owned(),
                            report.member_of.to_owned(),
                        ]],
                    )
                );
                println!(
                    "Run the service as it: DATABASE_URL=postgres://{}:<password>@<host>/<database>",
                    report.login
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(_) | Command::Db(_) | Command::Openapi | Command::Config(_) => {
            unreachable!("dispatched in run()")
        }
    }
}

async fn run_migrate(db: &Database, args: MigrateArgs, json: bool) -> anyhow::Result<ExitCode> {
    let tenant_migrations = migrate::tenant_migrations();
    let latest = migrate::latest_version(tenant_migrations);
    if args.dry_run {
        return dry_run(db, latest, json).await;
    }
    let sync = migrate::migrate_public(&db.pool, tenant_migrations).await?;
    let failed_clusters = migrate::migrate_secondaries(&db.clusters, tenant_migrations).await;
    for (name, err) in &failed_clusters {
        eprintln!("FAILED cluster {name}: {err}");
    }
    if !failed_clusters.is_empty() {
        anyhow::bail!(
            "{} cluster(s) could not be migrated (see above); tenant schemas were left as they were",
            failed_clusters.len()
        );
    }
    let pending = migrate::pending_tenants(&db.pool, latest).await?;
    let citus_failed = citus_placement(db, json).await?;
    if !json {
        eprintln!(
            "public schema current; tenant catalog at version {latest}{}",
            if sync.added.is_empty() {
                String::new()
            } else {
                format!(" (added {:?})", sync.added)
            }
        );
    }
    let bar = output::progress(pending.len() as u64, "tenants", json || pending.is_empty())?;
    let progress = bar.clone();
    let on_done: Arc<dyn Fn(&TenantOutcome) + Send + Sync> = Arc::new(move |outcome| {
        progress.inc(1);
        if let Some(error) = &outcome.error {
            progress.println(format!("FAILED {}: {error}", outcome.slug));
        }
    });
    let report =
        migrate::migrate_fleet(&db.clusters, pending, latest, args.jobs as usize, on_done).await;
    bar.finish_and_clear();
    // The schema pool's unclaimed schemas follow, so a sign-up never claims an old one.
    let pooled = migrate::pending_pooled(&db.pool, latest).await?;
    let pool_report = migrate::migrate_pooled(&db.pool, &pooled, latest).await;
    for (schema, error) in &pool_report.failed {
        eprintln!("FAILED pooled schema {schema}: {error}");
    }
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["schema_pool"] = serde_json::to_value(&pool_report)?;
        output::json(&value)?;
    } else {
        if pool_report.pending > 0 {
            println!(
                "schema pool: {} unclaimed schema(s) migrated, {} claimed meanwhile, {} failed",
                pool_report.migrated,
                pool_report.skipped,
                pool_report.failed.len()
            );
        }
        println!(
            "{} tenant(s) migrated, {} failed, in {} ms (version {latest})",
            report.migrated,
            report.failed.len(),
            report.millis
        );
        if !report.failed.is_empty() {
            let rows = report.failed.iter().map(|o| {
                vec![
                    o.slug.clone(),
                    output::opt(o.from_version),
                    o.error.clone().unwrap_or_default(),
                ]
            });
            println!(
                "{}",
                output::table(&["TENANT", "FROM VERSION", "ERROR"], rows)
            );
        }
    }
    Ok(
        if report.failed.is_empty() && pool_report.failed.is_empty() && !citus_failed {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// `migrate` in Citus mode: every tenant schema onto a worker (docs/scaling.md). Reports on
/// stderr (the JSON report on stdout keeps its shape); true when some tenant failed.
async fn citus_placement(db: &Database, json: bool) -> anyhow::Result<bool> {
    let Some(placement) = crate::db::citus::place_fleet(&db.pool).await? else {
        return Ok(false);
    };
    if !json || !placement.failed.is_empty() {
        eprintln!(
            "citus: {} tenant schema(s) placed on workers, {} failed",
            placement.placed.len(),
            placement.failed.len()
        );
    }
    for (slug, error) in &placement.failed {
        eprintln!("FAILED citus placement of {slug}: {error}");
    }
    Ok(!placement.failed.is_empty())
}

async fn dry_run(db: &Database, latest: i64, json: bool) -> anyhow::Result<ExitCode> {
    let public_pending: Vec<i64> = {
        let applied: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM public._sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap_or_default();
        migrate::PUBLIC_MIGRATIONS
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect()
    };
    // Before the first migrate there is no registry: nothing to list.
    let pending = migrate::pending_tenants(&db.pool, latest)
        .await
        .unwrap_or_default();
    // (Nor a schema pool before migration 0017.)
    let pooled = migrate::pending_pooled(&db.pool, latest)
        .await
        .unwrap_or_default();
    if json {
        return output::json(&serde_json::json!({
            "public_migrations_pending": public_pending,
            "tenant_version": latest,
            "tenants_pending": pending,
            "pooled_schemas_pending": pooled,
        }))
        .map(|()| ExitCode::SUCCESS);
    }
    println!("dry run: nothing is changed");
    if public_pending.is_empty() {
        println!("public migrations pending: none");
    } else {
        let rows = migrate::PUBLIC_MIGRATIONS
            .iter()
            .filter(|m| public_pending.contains(&m.version))
            .map(|m| vec![m.version.to_string(), m.description.to_string()]);
        println!(
            "public migrations pending:\n{}",
            output::table(&["VERSION", "DESCRIPTION"], rows)
        );
    }
    println!(
        "{} tenant(s) would be migrated to version {latest}",
        pending.len()
    );
    if !pending.is_empty() {
        let rows = pending.iter().map(|p| {
            vec![
                p.slug.clone(),
                p.schema_name.clone(),
                output::opt(p.schema_version),
            ]
        });
        println!(
            "{}",
            output::table(&["TENANT", "SCHEMA", "FROM VERSION"], rows)
        );
    }
    if !pooled.is_empty() {
        println!(
            "{} unclaimed schema(s) of the schema pool would be migrated too",
            pooled.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Tenants whose own checks this run performs, the least recently checked first; the
    /// fleet is checked now too (0: no tenant, and the fleet only when no fleet check was
    /// recorded in the last 2 minutes). Default: none while a running serve keeps the
    /// checks current (100 tenants and the fleet a minute), else 100.
    #[arg(long, value_name = "N", conflicts_with = "full",
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    slice: Option<u32>,
    /// Check every tenant now, a slice at a time, and run the guide's whole-fleet checks.
    #[arg(long)]
    full: bool,
}

async fn doctor(db: &Database, args: DoctorArgs, json: bool) -> anyhow::Result<ExitCode> {
    let depth = if args.full {
        verify::Depth::Full
    } else {
        args.slice
            .map_or(verify::Depth::Default, verify::Depth::Slice)
    };
    let bar = output::progress(0, "tenants checked", json || !args.full)?;
    let shown = bar.clone();
    let report = verify::doctor(&db.pool, depth, move |done, total| {
        shown.set_length(total);
        shown.set_position(done);
    })
    .await?;
    bar.finish_and_clear();
    if json {
        output::json(&report)?;
    } else {
        let v = &report.versions;
        println!(
            "capliquify {}  ·  PostgreSQL {}  ·  public schema {}/{}  ·  tenant schema version {}/{}\n",
            v.capliquify,
            v.postgres,
            v.public_schema,
            v.public_schema_expected,
            v.tenant_catalog,
            v.tenant_catalog_expected
        );
        if !report.summary.is_empty() {
            let rows = report.summary.iter().map(|r| {
                vec![
                    r.check_name.clone(),
                    r.count.to_string(),
                    r.expected.clone(),
                ]
            });
            println!("{}\n", output::table(&["CHECK", "COUNT", "EXPECTED"], rows));
        }
        let rows = report
            .checks
            .iter()
            .map(|c| vec![c.test_name.clone(), c.result.clone(), c.details.clone()]);
        println!("{}", output::table(&["TEST", "RESULT", "DETAILS"], rows));
    }
    Ok(if report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn fleet_sql(
    db: &Database,
    query: &str,
    only: &[String],
    jobs: usize,
    timeout_secs: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let query = match crate::tenancy::fleet::check_query(query) {
        Ok(query) => query,
        Err(why) => {
            eprintln!("error: {why}");
            // A usage error, as clap reports one: nothing was run.
            return Ok(ExitCode::from(2));
        }
    };
    let mut tenants: Vec<_> = crate::tenancy::registry::list(&db.pool, false)
        .await?
        .into_iter()
        .filter(|t| t.schema_version.is_some())
        .collect();
    if !only.is_empty() {
        for slug in only {
            if !tenants.iter().any(|t| &t.slug == slug) {
                anyhow::bail!("no live tenant with slug {slug:?} (see `capliquify tenant list`)");
            }
        }
        tenants.retain(|t| only.contains(&t.slug));
    }
    let results = crate::tenancy::fleet::query(
        &db.clusters,
        tenants,
        query,
        jobs,
        std::time::Duration::from_secs(timeout_secs),
    )
    .await;
    let failed: Vec<_> = results.iter().filter(|r| r.error.is_some()).collect();
    let rows: Vec<&serde_json::Value> = results.iter().flat_map(|r| r.rows.iter()).collect();
    // Columns: the tenant, then the SELECT's, in its order (the first tenant that returned
    // rows tells; a tenant on an older schema may add some, appended).
    let mut columns = vec!["tenant".to_owned()];
    for key in results.iter().flat_map(|r| r.columns.iter()) {
        if !columns.contains(key) {
            columns.push(key.clone());
        }
    }
    if json {
        output::json(&serde_json::json!({ "columns": columns, "rows": rows, "failed": failed }))?;
    } else {
        let header: Vec<&str> = columns.iter().map(String::as_str).collect();
        let table = output::table(
            &header,
            rows.iter().map(|row| {
                columns
                    .iter()
                    .map(|c| match row.get(c) {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(serde_json::Value::Null) | None => "-".to_owned(),
                        Some(v) => v.to_string(),
                    })
                    .collect::<Vec<_>>()
            }),
        );
        println!("{table}");
        let answered = results.len() - failed.len();
        if failed.is_empty() {
            println!("{} row(s) from {answered} tenant(s)", rows.len());
        } else {
            println!(
                "{} row(s) from {answered} tenant(s); {} tenant(s) failed",
                rows.len(),
                failed.len()
            );
        }
        for f in &failed {
            eprintln!("FAILED {}: {}", f.tenant, f.error.as_deref().unwrap_or(""));
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn rotate_keys(db: &Database, settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let keys = settings.keyring(db.is_embedded())?;
    let tenants = crate::tenancy::registry::list(&db.pool, true).await?;
    let bar = output::progress(tenants.len() as u64, "tenants", json)?;
    let actor = crate::audit::Actor::operator();
    let (mut resealed, mut skipped, mut failed) = (0u64, Vec::new(), Vec::new());
    for tenant in &tenants {
        bar.inc(1);
        if tenant.schema_version.is_none() {
            continue;
        }
        let result = match tenant.scope() {
            Ok(scope) => match db.clusters.pool(&scope.cluster) {
                Ok(pool) => crate::credentials::rotate_keys(pool, &keys, &scope, &actor)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(done) => {
                resealed += done.resealed;
                if done.skipped_switched_off > 0 {
                    skipped.push((tenant.slug.clone(), done.skipped_switched_off));
                }
            }
            Err(e) => {
                // Not `bar.println`: a hidden bar (output not a terminal) drops its lines,
                // and a failure must reach the operator however the output goes.
                bar.suspend(|| eprintln!("FAILED {}: {e}", tenant.slug));
                failed.push((tenant.slug.clone(), e));
            }
        }
    }
    bar.finish_and_clear();
    if json {
        output::json(
            &serde_json::json!({ "resealed": resealed, "key_id": keys.sealing_key_id(),
                                 "skipped_switched_off": skipped, "failed": failed }),
        )?;
    } else {
        let skipped_total: u64 = skipped.iter().map(|(_, n)| n).sum();
        println!(
            "{resealed} credential(s) re-sealed under key {} across {} tenant(s); {skipped_total} switched-off credential(s) skipped; {} failed",
            keys.sealing_key_id(),
            tenants.len(),
            failed.len()
        );
        for (slug, n) in &skipped {
            println!(
                "  {slug}: {n} switched-off credential(s) that do not open here (a clone's copies, or sealed with a key no longer configured) were left as they are; re-enter them to use them"
            );
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_audit(db: &Database, args: AuditArgs, json: bool) -> anyhow::Result<ExitCode> {
    let tenant_id = match &args.tenant {
        Some(slug) => Some(crate::tenancy::registry::find(&db.pool, slug).await?.id),
        None => None,
    };
    let filter = crate::audit::Filter {
        tenant_id,
        action: args.action,
        from: args.since,
        limit: args.limit,
        ..Default::default()
    };
    // Rows of acts on other clusters wait in their outboxes until drained into the trail.
    if let Err(err) = crate::audit::drain_all(&db.clusters, tenant_id).await {
        eprintln!("WARNING: some audit rows of other clusters could not be collected: {err}");
    }
    let mut conn = db.pool.acquire().await?;
    let rows = crate::audit::list(&mut conn, &filter).await?;
    if json {
        return output::json(&rows).map(|()| ExitCode::SUCCESS);
    }
    let table = output::table(
        &["TIME", "TENANT", "ACTION", "RESOURCE", "BY"],
        rows.iter().map(|r| {
            vec![
                r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                output::opt(r.tenant.clone()),
                r.action.clone(),
                format!(
                    "{} {}",
                    r.resource_type.clone().unwrap_or_default(),
                    r.resource_id.clone().unwrap_or_default()
                )
                .trim()
                .to_owned(),
                r.actor(),
            ]
        }),
    );
    println!("{table}");
    println!(
        "{} entr{}",
        rows.len(),
        if rows.len() == 1 { "y" } else { "ies" }
    );
    Ok(ExitCode::SUCCESS)
}

/// What `monitor sizes` ranked: how many tenants were never measured, how old the oldest
/// measurement is.
fn size_coverage(c: &monitor::SizeCoverage) -> String {
    let oldest = c
        .oldest_measurement
        .map(|at| at.format("%Y-%m-%d %H:%M UTC").to_string());
    match (c.never_measured, oldest) {
        (_, _) if c.tenants == 0 => "no live tenant to measure".to_owned(),
        (0, Some(oldest)) => format!(
            "ranked all {} tenants by their last measurement (oldest {oldest})",
            c.tenants
        ),
        (never, _) => format!(
            "{never} of {} tenants not measured yet and not ranked (serve measures {} a \
             minute; --full measures all now)",
            c.tenants,
            monitor::SIZE_SLICE
        ),
    }
}

async fn run_monitor(db: &Database, cmd: MonitorCommand, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        MonitorCommand::Sizes { limit, slice, full } => {
            // Coverage counts every live tenant (~6 ms at 10,000): read once, and again at
            // the end only when this run measured something.
            let citus = crate::db::citus::is_on(&db.pool).await?;
            let mut coverage = if citus {
                None
            } else {
                Some(monitor::coverage(&db.pool).await?)
            };
            let measured = if full {
                let bar = output::progress(0, "tenants measured", json)?;
                let shown = bar.clone();
                let n = monitor::measure_all(&db.pool, move |done, total| {
                    shown.set_length(total);
                    shown.set_position(done);
                })
                .await?;
                bar.finish_and_clear();
                n
            } else {
                let slice = match (slice, &coverage) {
                    (Some(n), _) => n,
                    (None, Some(c)) if c.kept_current() => 0,
                    (None, _) => monitor::SIZE_SLICE,
                };
                monitor::measure_slice(&db.pool, slice).await?
            };
            if measured > 0 && !citus {
                coverage = Some(monitor::coverage(&db.pool).await?);
            }
            let sizes = monitor::sizes(&db.pool, limit.clamp(1, 10_000)).await?;
            if json {
                return output::json(&sizes).map(|()| ExitCode::SUCCESS);
            }
            let rows = sizes.iter().map(|s| {
                vec![
                    s.schema_name.clone(),
                    s.slug.clone().unwrap_or_else(|| "(unregistered)".into()),
                    s.size.clone(),
                    s.table_count.to_string(),
                ]
            });
            println!(
                "{}",
                output::table(&["SCHEMA", "TENANT", "SIZE", "TABLES"], rows)
            );
            if let Some(c) = coverage {
                println!("{}", size_coverage(&c));
            }
        }
        MonitorCommand::Tenants { limit, after } => {
            let (tenants, next) = monitor::tenants(&db.clusters, limit, after.as_ref()).await?;
            if json {
                return output::json(
                    &serde_json::json!({ "tenants": tenants, "next_after": next }),
                )
                .map(|()| ExitCode::SUCCESS);
            }
            let rows = tenants.iter().map(|t| {
                vec![
                    t.slug.clone(),
                    t.name.clone(),
                    t.subscription_tier.as_str().to_owned(),
                    t.subscription_status.as_str().to_owned(),
                    format!("{}/{}", t.user_count, output::opt(t.max_users)),
                    format!(
                        "{}/{}",
                        output::opt(t.entity_count),
                        output::opt(t.max_entities)
                    ),
                    output::when(t.created_at),
                ]
            });
            println!(
                "{}",
                output::table(
                    &[
                        "TENANT", "NAME", "TIER", "STATUS", "USERS", "ENTITIES", "CREATED"
                    ],
                    rows
                )
            );
            if let Some(next) = next {
                let limit = if limit == 100 {
                    String::new()
                } else {
                    format!(" --limit {limit}")
                };
                println!("more: capliquify monitor tenants{limit} --after '{next}'");
            }
        }
        MonitorCommand::SlowQueries { tenant, limit } => {
            let tenant_id = match &tenant {
                Some(slug) => Some(crate::tenancy::registry::find(&db.pool, slug).await?.id),
                None => None,
            };
            let queries = monitor::slow_queries(&db.pool, tenant_id, limit.clamp(1, 1000))
                .await
                .map_err(|e| anyhow::anyhow!(migrate::describe_db_error(&e)))?;
            if json {
                return output::json(&queries).map(|()| ExitCode::SUCCESS);
            }
            let rows = queries.iter().map(|q| {
                vec![
                    q.tenant.clone(),
                    q.calls.to_string(),
                    format!("{:.1}", q.total_ms),
                    format!("{:.2}", q.mean_ms),
                    format!("{:.1}", q.max_ms),
                    q.rows.to_string(),
                    one_line(&q.query, 80),
                ]
            });
            println!(
                "{}",
                output::table(
                    &[
                        "TENANT", "CALLS", "TOTAL MS", "MEAN MS", "MAX MS", "ROWS", "QUERY"
                    ],
                    rows
                )
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn db_command(settings: &Settings, cmd: DbCommand, json: bool) -> anyhow::Result<ExitCode> {
    if settings.database_url.is_some() && !matches!(cmd, DbCommand::Status) {
        anyhow::bail!(
            "`capliquify db` manages the embedded cluster, but DATABASE_URL is set; unset it to use the embedded cluster"
        );
    }
    if let (Some(url), DbCommand::Status) = (&settings.database_url, &cmd) {
        return configured_server_status(url, json).await;
    }
    let root = settings.data_dir.clone();
    match cmd {
        DbCommand::Start => {
            let cluster = crate::db::start_embedded(settings).await?;
            // The URL without its password: the password stays in its 0600 file.
            let mut url = url::Url::parse(&cluster.url())?;
            let _ = url.set_password(None);
            let password_file = settings.data_dir.join("superuser.password");
            if json {
                output::json(&serde_json::json!({
                    "url": url.as_str(), "port": cluster.port(),
                    "socket_dir": cluster.socket_dir(), "password_file": password_file,
                }))?;
            } else {
                println!("{url}");
                println!(
                    "password in {0} (mode 0600), e.g.: PGPASSWORD=\"$(cat {0})\" psql '{url}'",
                    password_file.display()
                );
            }
        }
        DbCommand::Stop => {
            let was_running =
                tokio::task::spawn_blocking(move || EmbeddedCluster::stop_at(&root)).await??;
            println!(
                "{}",
                if was_running {
                    "stopped"
                } else {
                    "not running"
                }
            );
        }
        DbCommand::Status => {
            let status =
                tokio::task::spawn_blocking(move || EmbeddedCluster::status(&root)).await??;
            if json {
                output::json(&serde_json::json!({ "running": status.is_some(), "port": status }))?;
            } else {
                match status {
                    Some(port) => println!(
                        "running on the Unix socket {}/.s.PGSQL.{port} (data in {})",
                        settings.data_dir.join("sock").display(),
                        settings.data_dir.display()
                    ),
                    None => println!("not running (data folder {})", settings.data_dir.display()),
                }
            }
        }
        DbCommand::InitRoles { .. } => unreachable!("dispatched in run()"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `db status` with DATABASE_URL set: the embedded cluster is not used, so say which server
/// is, and whether it answers (exit 1 if not).
async fn configured_server_status(url: &str, json: bool) -> anyhow::Result<ExitCode> {
    // Never print the password: scheme, user, host, port and database only.
    let shown = match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "(DATABASE_URL is not a URL)".to_owned(),
    };
    let probe = async {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok::<_, sqlx::Error>(version)
    };
    let answer = match tokio::time::timeout(std::time::Duration::from_secs(5), probe).await {
        Ok(Ok(version)) => Ok(version),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("no answer within 5 seconds".to_owned()),
    };
    if json {
        output::json(&serde_json::json!({
            "database_url_set": true, "server": shown,
            "answers": answer.is_ok(), "server_version": answer.as_ref().ok(),
            "error": answer.as_ref().err(),
        }))?;
    } else {
        println!(
            "DATABASE_URL is set: the configured server {shown} is used (the embedded cluster is not)"
        );
        match &answer {
            Ok(version) => println!("it answers: PostgreSQL {version}"),
            Err(err) => println!("it does not answer: {err}"),
        }
    }
    Ok(if answer.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `text` on one line (whitespace runs collapsed), cut to `max` characters with `…`.
fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
            walk(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    /// A line of a help text that is (part of) a command to copy.
    fn is_example(line: &str) -> bool {
        let line = line.trim_start();
        [
            "capliquify ",
            "CAPLIQUIFY_",
            "DATABASE_URL=",
            "ENCRYPTION_KEY",
            "tar ",
            "curl ",
        ]
        .iter()
        .any(|start| line.starts_with(start))
            || line.starts_with('"')
            || line.starts_with("FROM ")
    }

    fn all_commands() -> Vec<(String, clap::Command)> {
        let mut cmd = command();
        cmd.build();
        let mut out = Vec::new();
        walk(&cmd, "capliquify".to_owned(), &mut out);
        out
    }

    #[test]
    fn help_examples_fit_80_columns_so_they_copy_and_paste_whole() {
        let mut long = Vec::new();
        for (path, cmd) in all_commands() {
            for text in [cmd.get_after_help(), cmd.get_after_long_help()]
                .into_iter()
                .flatten()
            {
                // Prose may wrap; a command line must not (clap would break it).
                let examples = text.to_string();
                for line in examples.lines().filter(|l| is_example(l)) {
                    if line.chars().count() > 80 {
                        long.push(format!("{path}: {line}"));
                    }
                }
            }
        }
        assert!(
            long.is_empty(),
            "lines clap would break:\n{}",
            long.join("\n")
        );
    }

    #[test]
    fn every_positional_argument_and_command_is_described() {
        let mut missing = Vec::new();
        for (path, cmd) in all_commands() {
            if cmd.get_about().is_none() {
                missing.push(format!("{path}: no summary"));
            }
            for arg in cmd.get_positionals() {
                if arg.get_help().is_none() {
                    missing.push(format!("{path} <{}>: no text", arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
