//! `capliquify tenant …`: the tenant lifecycle at the command line.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Subcommand;

use super::output;
use crate::audit::Actor;
use crate::billing::Tier;
use crate::config::Settings;
use crate::db::Database;
use crate::tenancy::backup::{self, PartSummary, Progress, RestoreMode, RestoreReport};
use crate::tenancy::placement::{self, MoveOptions};
use crate::tenancy::{NewTenant, Tenancy, Tenant, census, registry};

const BACKUP_HELP: &str = "\
The archive is one tar file: every table of the tenant's schema (COPY text), its public
rows (the tenant, its users, its subscription; its audit rows with --with-audit) and a
manifest with versions, row counts and SHA-256 checksums. All of it is read in one
read-only snapshot, so the parts agree with each other; the tenant keeps working meanwhile.
The file appears under its final name only when complete. The backup is audited
(tenant.backup).

Examples:
  capliquify tenant backup acme
  capliquify tenant backup acme -o /backups/acme.capliquify-backup --with-audit
  tar tvf /backups/acme.capliquify-backup        # list the parts";

const RESTORE_HELP: &str = "\
The archive is checked in full first (format, every checksum and row count, the tenant it
belongs to); a damaged or foreign file is refused and nothing changes. The schema is then
rebuilt at the archive's schema version, loaded, migrated to the current version and put
in place in one transaction: on any failure the database stays as it was.

Three ways:
  (none)      the archive's tenant is gone (e.g. purged): register it again with its id,
              slug, Clerk organization, users and subscription
  --replace   the tenant exists: replace its schema's data with the archive's; its
              tenant row, users and subscription are left as they are (they belong to
              Clerk and Stripe, which keep them current)
  --as SLUG   a copy beside it: new id, new schema, no users, no subscription; Clerk
              organization from --clerk-org, else unlinked-<new id>

Examples:
  capliquify tenant restore acme-20261201T020000Z.capliquify-backup
  capliquify tenant restore acme.capliquify-backup --replace
  capliquify tenant restore acme.capliquify-backup --as acme-staging \\
      --name 'ACME (staging)'";

const CLONE_HELP: &str = "\
Backs the tenant up to a temporary file and restores it with --as: the copy has its own id
and schema, the source's data as of one snapshot, no users and no subscription. The source
is only read.

Example:
  capliquify tenant clone acme acme-staging --clerk-org org_2staging";

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Register a tenant and create its schema (one transaction; 14-day trial).
    #[command(
        after_help = "Example:\n  capliquify tenant create --slug acme --name 'ACME Corp' --tier professional \\\n      --clerk-org org_2abc123"
    )]
    Create {
        /// Short unique handle: 3-50 of a-z, 0-9 and '-', not starting or ending with '-'.
        #[arg(long)]
        slug: String,
        /// Display name of the organisation.
        #[arg(long)]
        name: String,
        /// Plan; sets the user and entity limits and the features.
        #[arg(long, value_enum)]
        tier: Tier,
        /// The Clerk organization id this tenant belongs to (org_…).
        #[arg(long = "clerk-org")]
        clerk_org: String,
    },
    /// List tenants, newest first, a page at a time (--all adds soft-deleted ones).
    #[command(after_help = "\
A page ends with the command for the next one (its --after position), so listing costs
the same at any fleet size. --limit 0 prints every tenant at once. With --json the output
is {\"tenants\": [...], \"next_after\": POSITION or null}.")]
    List {
        /// Include soft-deleted tenants.
        #[arg(long)]
        all: bool,
        /// Tenants per page (0: every tenant).
        #[arg(long, value_name = "N", default_value_t = 100,
              value_parser = clap::value_parser!(i64).range(0..=1_000_000))]
        limit: i64,
        /// Start after this position: the value the previous page printed.
        #[arg(long, value_name = "POSITION",
              value_parser = crate::tenancy::census::After::parse_newest)]
        after: Option<crate::tenancy::census::After>,
        /// Only tenants whose slug or name contains TEXT (any case), or whose Clerk
        /// organization or Stripe customer id is TEXT.
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
    },
    /// Show one tenant in full.
    Show {
        /// The tenant (its slug).
        slug: String,
    },
    /// Switch a tenant off: its users are refused until it is reactivated. Data is kept.
    Suspend {
        /// The tenant to switch off (its slug).
        slug: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Switch a suspended tenant back on, with the status it had before.
    Reactivate {
        /// The suspended tenant (its slug).
        slug: String,
    },
    /// Extend a live tenant's trial by some days (from its current end, or from now when it
    /// has passed).
    #[command(after_help = "Example:\n  capliquify tenant extend-trial acme --days 14")]
    ExtendTrial {
        /// The tenant on trial (its slug).
        slug: String,
        /// How many days to add: 1 to 90.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=90))]
        days: u32,
    },
    /// Put a tenant on another tier, with that plan's limits and features (a Stripe
    /// subscription's next event sets its price's tier again).
    #[command(after_help = "Example:\n  capliquify tenant set-tier acme --tier enterprise")]
    SetTier {
        /// The tenant (its slug).
        slug: String,
        /// The new plan.
        #[arg(long, value_enum)]
        tier: Tier,
    },
    /// Soft-delete a tenant: unusable at once, data kept for the grace period (--grace-days).
    Delete {
        /// The tenant to soft-delete (its slug).
        slug: String,
    },
    /// Undo a soft delete within the grace period (formerly `tenant restore SLUG`).
    #[command(
        after_help = "Example:\n  capliquify tenant undelete acme\n\nTo bring back data from a backup file, use `capliquify tenant restore FILE`."
    )]
    Undelete {
        /// The soft-deleted tenant (its slug).
        slug: String,
        /// Undelete even though the grace period has ended.
        #[arg(long)]
        force: bool,
    },
    /// Write a consistent backup of one tenant (its schema's data and its public rows) to
    /// one archive file.
    #[command(after_help = BACKUP_HELP)]
    Backup {
        /// The tenant to back up.
        slug: String,
        /// Where to write the archive (default: ./<slug>-<UTC time>.capliquify-backup). An
        /// existing file is never overwritten.
        #[arg(short, long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        /// Also include the tenant's audit trail (audit_logs rows).
        #[arg(long)]
        with_audit: bool,
    },
    /// Restore a tenant from a backup file: register it again, replace its data
    /// (--replace), or make a copy under a new slug (--as).
    #[command(after_help = RESTORE_HELP)]
    Restore {
        /// The archive written by `capliquify tenant backup`.
        file: std::path::PathBuf,
        /// Replace the data of the existing tenant (same id) with the archive's.
        #[arg(long, conflicts_with = "as_slug")]
        replace: bool,
        /// Restore as a new tenant with this slug (a copy with its own id and schema).
        #[arg(long = "as", value_name = "NEW_SLUG")]
        as_slug: Option<String>,
        /// With --as: the copy's display name (default: the archive's).
        #[arg(long, requires = "as_slug")]
        name: Option<String>,
        /// With --as: the copy's Clerk organization id (default: unlinked-<new id>, so no
        /// Clerk user reaches the copy until it is linked).
        #[arg(long = "clerk-org", requires = "as_slug")]
        clerk_org: Option<String>,
        /// Restore an archive that is not signed with CAPLIQUIFY_BACKUP_KEY (unsigned, signed
        /// with another key, or altered). Only for a file whose origin you trust.
        #[arg(long)]
        insecure_unsigned: bool,
    },
    /// Copy a tenant's data into a new tenant with its own identity.
    #[command(after_help = CLONE_HELP)]
    Clone {
        /// The tenant to copy.
        slug: String,
        /// The new tenant's slug.
        new_slug: String,
        /// The copy's display name (default: the source's).
        #[arg(long)]
        name: Option<String>,
        /// The copy's Clerk organization id (default: unlinked-<new id>).
        #[arg(long = "clerk-org")]
        clerk_org: Option<String>,
    },
    /// Permanently drop a soft-deleted tenant's schema and registry row (after the grace period).
    #[command(
        after_help = "Before the grace period ends, purge needs --force and the slug typed again:\n  capliquify tenant purge acme --force --confirm acme\nWithout --confirm on a terminal, you are asked to type it."
    )]
    Purge {
        /// The soft-deleted tenant to drop for good (its slug).
        slug: String,
        /// Purge before the grace period ends.
        #[arg(long)]
        force: bool,
        /// The slug again, to confirm a forced purge.
        #[arg(long)]
        confirm: Option<String>,
    },
    /// Recreate a missing schema, rebuild an empty half-made one, or apply pending migrations.
    Repair {
        /// The tenant to repair (its slug).
        slug: String,
    },
    /// Move a tenant's schema to another PostgreSQL cluster (named in CAPLIQUIFY_CLUSTERS,
    /// or `home`): read-only while it copies, verified, then switched over.
    #[command(
        after_help = "Steps: the tenant turns read-only (the API answers writes 503 with Retry-After), its\nschema is built on the target and the data copied table by table, row counts and\nchecksums are compared, the placement flips, and the source copy is dropped. A failure\nbefore the flip leaves the tenant where it was, intact and writable, and nothing on the\ntarget. A move whose process died is cleaned up by the next move of that tenant. Run it\non a direct connection to the home cluster (not through PgBouncer), and run `capliquify\nmigrate` and `capliquify db init-roles` on the target cluster first.\n\nWith Citus, --to-worker moves the schema between the coordinator's workers instead\n(online; docs/scaling.md).\n\nExamples:\n  CAPLIQUIFY_CLUSTERS='eu2=postgres://capliquify@eu2-db:5432/capliquify' \\\n      capliquify tenant move acme --to eu2\n  capliquify tenant move acme --to-worker 10.0.0.13:5432"
    )]
    Move {
        /// The tenant to move.
        slug: String,
        /// The cluster to move to.
        #[arg(
            long,
            required_unless_present = "to_worker",
            conflicts_with = "to_worker"
        )]
        to: Option<String>,
        /// With Citus: the worker (HOST:PORT, as `cluster status` shows it) to move the
        /// tenant's schema to, online (Citus's citus_schema_move: reads and writes go on,
        /// writes wait only for the final switch).
        #[arg(long, value_name = "HOST:PORT")]
        to_worker: Option<String>,
        /// Seconds to wait after turning the tenant read-only and again before dropping the
        /// source: at least the services' CAPLIQUIFY_AUTH_CACHE_MS.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=600))]
        drain_secs: u64,
    },
}

pub async fn run(
    db: &Database,
    settings: &Settings,
    cmd: TenantCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let tenancy = Tenancy::new(db.pool.clone(), settings.grace_days);
    let actor = Actor::operator();
    let tenant = match cmd {
        TenantCommand::Create {
            slug,
            name,
            tier,
            clerk_org,
        } => {
            let new = NewTenant::parse(&slug, &name, tier, &clerk_org)?;
            tenancy.provision(&new, &actor).await?
        }
        TenantCommand::List {
            all,
            limit,
            after,
            search,
        } => {
            list(db, all, limit, after, search, json).await?;
            return Ok(ExitCode::SUCCESS);
        }
        TenantCommand::Show { slug } => registry::find(&db.pool, &slug).await?,
        TenantCommand::Suspend { slug, reason } => {
            tenancy.suspend(&slug, reason.as_deref(), &actor).await?
        }
        TenantCommand::Reactivate { slug } => tenancy.reactivate(&slug, &actor).await?,
        TenantCommand::SetTier { slug, tier } => tenancy.set_tier(&slug, tier, &actor).await?,
        TenantCommand::ExtendTrial { slug, days } => {
            tenancy.extend_trial(&slug, days, &actor).await?
        }
        TenantCommand::Delete { slug } => tenancy.soft_delete(&slug, &actor).await?,
        TenantCommand::Undelete { slug, force } => tenancy.restore(&slug, force, &actor).await?,
        TenantCommand::Backup {
            slug,
            output,
            with_audit,
        } => {
            let key = settings.backup_key()?;
            if key.is_none() {
                eprintln!(
                    "warning: CAPLIQUIFY_BACKUP_KEY is not set, so this archive is not signed; \
                     `tenant restore` will refuse it unless given --insecure-unsigned"
                );
            }
            let bar = Bar::new(json, "parts");
            let report = backup::backup(
                &db.pool,
                &slug,
                output.as_deref(),
                with_audit,
                key.as_ref(),
                &actor,
                &|p| bar.step(p),
            )
            .await;
            bar.finish();
            let report = report?;
            if json {
                output::json(&report)?;
            } else {
                print_parts(&report.parts);
                println!(
                    "backed up tenant {} (schema version {}) to {} ({} bytes) in {} ms",
                    report.slug,
                    report.schema_version,
                    report.file.display(),
                    report.bytes,
                    report.millis
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        TenantCommand::Restore {
            file,
            replace,
            as_slug,
            name,
            clerk_org,
            insecure_unsigned,
        } => {
            // `tenant restore acme` was the old name of `undelete`: a slug where a file was
            // expected gets pointed there.
            if !file.exists() {
                let given = file.display().to_string();
                if crate::tenancy::TenantSlug::parse(&given).is_ok() {
                    anyhow::bail!(
                        "there is no backup file {given:?}; to undo the soft delete of tenant {given}, run `capliquify tenant undelete {given}` (restore takes a file written by `capliquify tenant backup`)"
                    );
                }
            }
            let key = settings.backup_key()?;
            let trust = backup::Trust {
                key: key.as_ref(),
                allow_unsigned: insecure_unsigned,
            };
            let mode = match (replace, as_slug) {
                (true, _) => RestoreMode::Replace,
                (false, Some(slug)) => RestoreMode::Clone {
                    slug,
                    name,
                    clerk_org,
                },
                (false, None) => RestoreMode::Recreate,
            };
            let bar = Bar::new(json, "tables");
            let report =
                backup::restore(&db.pool, &file, mode, trust, &actor, &|p| bar.step(p)).await;
            bar.finish();
            print_restore(&report?, json)?;
            return Ok(ExitCode::SUCCESS);
        }
        TenantCommand::Clone {
            slug,
            new_slug,
            name,
            clerk_org,
        } => {
            let bar = Bar::new(json, "steps");
            let report =
                backup::clone_tenant(&db.pool, &slug, &new_slug, name, clerk_org, &actor, &|p| {
                    bar.step(p)
                })
                .await;
            bar.finish();
            print_restore(&report?, json)?;
            return Ok(ExitCode::SUCCESS);
        }
        TenantCommand::Purge {
            slug,
            force,
            confirm,
        } => {
            let confirm = match (force, confirm) {
                (true, None) => ask_confirmation(&slug)?,
                (_, confirm) => confirm,
            };
            let purged = tenancy
                .purge(&slug, force, confirm.as_deref(), &actor)
                .await?;
            if json {
                output::json(&purged)?;
            } else {
                println!(
                    "purged tenant {} (schema {} {})",
                    purged.slug,
                    purged.schema_name,
                    if purged.schema_dropped {
                        "dropped"
                    } else {
                        "was already gone"
                    }
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        TenantCommand::Move {
            slug,
            to_worker: Some(worker),
            ..
        } => {
            let worker = crate::db::citus::Worker::parse(&worker)?;
            let moved = crate::db::citus::move_tenant(&db.pool, &slug, &worker, &actor).await?;
            if json {
                output::json(&moved)?;
            } else {
                println!(
                    "moved tenant {} from worker {} to {} in {} ms",
                    moved.slug, moved.from, moved.to, moved.millis
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        TenantCommand::Move {
            slug,
            to,
            drain_secs,
            ..
        } => {
            let to = to.unwrap_or_default();
            let options = MoveOptions {
                drain: std::time::Duration::from_secs(drain_secs),
                ..MoveOptions::default()
            };
            let report = placement::move_tenant(&db.clusters, &slug, &to, &actor, &options).await?;
            if json {
                output::json(&report)?;
            } else {
                println!(
                    "moved tenant {} from {} to {}: {} rows in {} tables verified, in {} ms",
                    report.slug,
                    report.from,
                    report.to,
                    report.rows,
                    report.tables.len(),
                    report.millis
                );
            }
            if let Some(warning) = &report.warning {
                eprintln!("WARNING: {warning}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        TenantCommand::Repair { slug } => {
            let (tenant, repair) = tenancy.repair(&slug, &actor).await?;
            if json {
                output::json(&serde_json::json!({ "tenant": tenant, "repair": repair }))?;
            } else {
                println!("{}: {}", tenant.slug, repair.describe());
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    print_one(&tenant, json)?;
    Ok(ExitCode::SUCCESS)
}

/// Asks for the slug on a terminal; elsewhere a forced purge must pass --confirm.
fn ask_confirmation(slug: &str) -> anyhow::Result<Option<String>> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("a forced purge needs the slug typed again: pass --confirm {slug}");
    }
    eprint!("This permanently deletes all data of tenant {slug:?}. Type the slug to confirm: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(Some(line.trim().to_owned()))
}

/// A progress bar on stderr for backup and restore (hidden with --json or off a terminal).
struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new(json: bool, unit: &str) -> Self {
        let bar = if json || !std::io::stderr().is_terminal() {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(0)
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {unit}  {{elapsed}}  {{msg}}"
        )) {
            bar.set_style(style);
        }
        Self(bar)
    }

    fn step(&self, progress: Progress<'_>) {
        match progress {
            Progress::Start { parts } => {
                self.0.set_position(0);
                self.0.set_length(parts);
            }
            Progress::Part { name, rows } => {
                self.0.set_message(format!("{name}: {rows} rows"));
                self.0.inc(1);
            }
        }
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn print_parts(parts: &[PartSummary]) {
    let rows = parts
        .iter()
        .map(|p| vec![p.path.clone(), p.rows.to_string(), p.bytes.to_string()]);
    println!("{}", output::table(&["PART", "ROWS", "BYTES"], rows));
}

fn print_restore(report: &RestoreReport, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(report);
    }
    print_parts(&report.tables);
    let rows = [
        ("mode", report.mode.to_owned()),
        ("slug", report.slug.clone()),
        ("id", report.tenant_id.to_string()),
        ("schema", report.schema_name.clone()),
        ("clerk organization", report.clerk_organization_id.clone()),
        ("from backup of", report.source_slug.clone()),
        (
            "schema version",
            format!(
                "{} (archive {}, {} migration(s) applied)",
                report.schema_version, report.archive_schema_version, report.migrations_applied
            ),
        ),
        ("users restored", report.users_restored.to_string()),
        ("took", format!("{} ms", report.millis)),
    ];
    let rows = rows.into_iter().map(|(k, v)| vec![k.to_owned(), v]);
    println!("{}", output::table(&["FIELD", "VALUE"], rows));
    Ok(())
}

/// `tenant list`: one keyset page of [`census::search`] (newest first, on the registry's
/// (created_at, slug) index), and the position of the next.
async fn list(
    db: &Database,
    all: bool,
    limit: i64,
    after: Option<census::After>,
    search: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let page = if limit == 0 { i64::MAX - 1 } else { limit };
    let mut tenants = census::search(
        &db.pool,
        &census::Search {
            text: search.clone(),
            live_only: !all,
            order: census::Order::Newest,
            after,
            limit: page,
            ..census::Search::default()
        },
    )
    .await?;
    let next = (tenants.len() as i64 > page).then(|| {
        tenants.truncate(page as usize);
        tenants
            .last()
            .map(|t| census::After::of(t, census::Order::Newest).encode())
    });
    let next = next.flatten();
    if json {
        return output::json(&serde_json::json!({ "tenants": tenants, "next_after": next }));
    }
    print_list(&tenants)?;
    if let Some(next) = next {
        let mut again = vec!["capliquify tenant list".to_owned()];
        if all {
            again.push("--all".into());
        }
        if limit != 100 {
            again.push(format!("--limit {limit}"));
        }
        if let Some(text) = &search {
            again.push(format!("--search '{}'", text.replace('\'', "'\\''")));
        }
        again.push(format!("--after '{next}'"));
        println!("more: {}", again.join(" "));
    }
    Ok(())
}

fn print_list(tenants: &[Tenant]) -> anyhow::Result<()> {
    let rows = tenants.iter().map(|t| {
        vec![
            t.slug.clone(),
            t.name.clone(),
            t.subscription_tier.as_str().to_owned(),
            t.subscription_status.as_str().to_owned(),
            t.state().as_str().to_owned(),
            placement_of(t),
            output::opt(t.schema_version),
            output::when(t.created_at),
        ]
    });
    println!(
        "{}",
        output::table(
            &[
                "SLUG",
                "NAME",
                "TIER",
                "STATUS",
                "STATE",
                "CLUSTER",
                "SCHEMA VERSION",
                "CREATED"
            ],
            rows
        )
    );
    println!("{} tenant(s)", tenants.len());
    Ok(())
}

fn print_one(t: &Tenant, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(t);
    }
    let rows = [
        ("slug", t.slug.clone()),
        ("name", t.name.clone()),
        ("id", t.id.to_string()),
        ("schema", t.schema_name.clone()),
        ("schema version", output::opt(t.schema_version)),
        ("cluster", placement_of(t)),
        ("clerk organization", t.clerk_organization_id.clone()),
        ("tier", t.subscription_tier.as_str().to_owned()),
        ("status", t.subscription_status.as_str().to_owned()),
        ("state", t.state().as_str().to_owned()),
        (
            "suspended by",
            output::opt(t.suspended_by.map(|by| by.as_str())),
        ),
        ("trial ends", output::opt(t.trial_ends_at.map(output::when))),
        ("max users", output::opt(t.max_users)),
        ("max entities", output::opt(t.max_entities)),
        ("features", t.features.to_string()),
        ("created", output::when(t.created_at)),
        ("deleted", output::opt(t.deleted_at.map(output::when))),
    ];
    let rows = rows.into_iter().map(|(k, v)| vec![k.to_owned(), v]);
    println!("{}", output::table(&["FIELD", "VALUE"], rows));
    Ok(())
}

/// The tenant's cluster, and where it is moving to while a move runs.
fn placement_of(t: &Tenant) -> String {
    match &t.moving_to {
        Some(to) => format!("{} → {to} (moving)", t.cluster),
        None => t.cluster.clone(),
    }
}
