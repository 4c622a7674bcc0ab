//! `capliquify import SLUG FILE --table T`: the API's file import from the command line,
//! with a progress bar; and `capliquify import sentia`, the migration of Sentia's database
//! into a tenant (docs/import.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use super::output;
use crate::audit::Actor;
use crate::config::Settings;
use crate::db::{Database, scope};
use crate::import::sentia;
use crate::import::{self, DateOrder, DecimalSeparator, Format, ImportError, Options, Table};
use crate::tenancy::migrate;

#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "\
The file is validated whole first: every rejected row is listed (line, column, value,
reason) and, unless --skip-invalid, nothing is written. Otherwise the rows are upserted by
their natural key in one transaction (products by SKU; sales by external_id or date, SKU,
channel, customer and order line; inventory by SKU and warehouse location; metrics by
company, period type and date; companies by name): importing the same file again changes
nothing. Exit 1 when the file is refused.

Examples:
  capliquify import acme-manufacturing products.csv --table products
  capliquify import acme-manufacturing sales.xlsx --table sales --dry-run
  capliquify import acme-manufacturing stock.csv --table inventory \\
      --mapping 'Ref=sku'

Migrating a tenant from Sentia's database: capliquify import sentia --help"
)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub source: Option<ImportSource>,
    /// The tenant (slug).
    #[arg(required = true)]
    pub tenant: Option<String>,
    /// A CSV file, or a spreadsheet (.xlsx, .xls, .xlsb, .ods).
    #[arg(required = true)]
    pub file: Option<PathBuf>,
    /// The table the rows go into.
    #[arg(long, required = true, value_parser = ["products", "inventory", "sales", "working-capital-metrics", "companies"])]
    pub table: Option<String>,
    /// Validate and count; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// `file column=field,…`: overrides the automatic mapping (a field of `-` ignores the
    /// column).
    #[arg(long)]
    pub mapping: Option<String>,
    /// A spreadsheet's sheet (default the first).
    #[arg(long)]
    pub sheet: Option<String>,
    /// Import the valid rows and list the rejected ones.
    #[arg(long)]
    pub skip_invalid: bool,
    /// How to read dates such as 03/04/2026.
    #[arg(long, default_value = "auto", value_parser = DateOrder::WORDS)]
    pub date_format: String,
    /// The decimal mark of the file's numbers.
    #[arg(long, default_value = ".", value_parser = [".", ","])]
    pub decimal_separator: String,
    /// The company of every row that names none (default: the tenant's only company).
    #[arg(long)]
    pub company_id: Option<uuid::Uuid>,
}

/// Other sources than a file.
#[derive(Debug, clap::Subcommand)]
pub enum ImportSource {
    /// Migrate Sentia's single-tenant database into a tenant (read-only on the source).
    Sentia(SentiaArgs),
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The source is read in one REPEATABLE READ, READ ONLY snapshot; each table's generation (A, the
schema production most likely holds, or B, the later Prisma schema) is told by its columns, and
a missing table is reported, not fatal. Companies, products, inventory, historical sales,
working-capital records, forecasts, scenarios and API keys (sealed with our envelopes) are
upserted by id in one tenant transaction: a second run changes nothing. Users with a Clerk
account become members (public.users) in a second transaction, committed right after. The
report gives, per table, rows read, inserted, updated, unchanged and skipped (with reasons),
and the money on both sides (sales amount, inventory value): when a total disagrees nothing
is written and the exit status is 1.

Examples:
  capliquify import sentia --source-url postgres://reader@old-db/sentia \\
      --tenant sentia-spirits --currency GBP --dry-run
  SENTIA_DATABASE_URL=postgres://reader:…@old-db/sentia capliquify import sentia \\
      --tenant sentia-spirits --currency GBP --users clerk-users.csv --owner ceo@sentia.example")]
pub struct SentiaArgs {
    /// Sentia's database, `postgres://…` (only read). From the environment it stays out of
    /// the process list.
    #[arg(long, env = "SENTIA_DATABASE_URL", hide_env_values = true)]
    pub source_url: String,
    /// The tenant (slug) to migrate into.
    #[arg(long)]
    pub tenant: String,
    /// Read, map and count; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The home currency (ISO 4217) of rows whose source states none; required when the
    /// source has organizations (generation B) or no entities.
    #[arg(long)]
    pub currency: Option<String>,
    /// The email of the Sentia user who becomes the tenant's owner (Sentia marks none).
    #[arg(long)]
    pub owner: Option<String>,
    /// A CSV of `email,clerk_user_id`: the Clerk accounts of Sentia's users who are not
    /// members of the tenant yet. Others are skipped.
    #[arg(long)]
    pub users: Option<PathBuf>,
    /// The name of the one company made when the source has no entities (default: the
    /// tenant's name).
    #[arg(long)]
    pub company_name: Option<String>,
}

/// The tenant `slug`, checked to be live and at the newest schema version.
async fn open_tenant(db: &Database, slug: &str) -> anyhow::Result<crate::tenancy::Tenant> {
    let tenant = crate::tenancy::registry::find(&db.pool, slug).await?;
    anyhow::ensure!(
        tenant.deleted_at.is_none(),
        "tenant {} is deleted; undelete it first",
        tenant.slug
    );
    let latest = migrate::latest_version(migrate::tenant_migrations());
    anyhow::ensure!(
        tenant.schema_version == Some(latest),
        "tenant {} is not at the newest schema version; run `capliquify migrate` first",
        tenant.slug
    );
    Ok(tenant)
}

pub async fn run(
    db: &Database,
    settings: &Settings,
    args: ImportArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(ImportSource::Sentia(sentia)) = args.source {
        return run_sentia(db, settings, sentia, json).await;
    }
    let (Some(slug), Some(path), Some(table)) = (&args.tenant, &args.file, &args.table) else {
        anyhow::bail!("usage: capliquify import SLUG FILE --table T");
    };
    let table = Table::parse(table).context("--table")?;
    let mut options = Options::new(table);
    options.dry_run = args.dry_run;
    options.skip_invalid = args.skip_invalid;
    options.sheet = args.sheet.clone();
    options.company_id = args.company_id;
    options.date_order = DateOrder::parse(&args.date_format).context("--date-format")?;
    options.decimal_separator =
        DecimalSeparator::parse(&args.decimal_separator).context("--decimal-separator")?;
    if let Some(mapping) = &args.mapping {
        options.mapping = import::parse_mapping(mapping)
            .map_err(|e| anyhow::anyhow!("--mapping must be `column=field,…`: {e}"))?;
    }
    let format = Format::from_path(path).with_context(|| {
        format!(
            "{}: the file must end in .csv, .xlsx, .xls, .xlsb or .ods",
            path.display()
        )
    })?;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;

    let tenant = open_tenant(db, slug).await?;
    let scope = tenant.scope()?;

    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}  {elapsed}").context("progress template")?,
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar.set_message(format!("reading {}", path.display()));
    let shown = bar.clone();
    let progress: import::ProgressFn = Arc::new(move |p| match p {
        import::Progress::Validated(n) => shown.set_message(format!("{n} rows validated")),
        import::Progress::Written(n, total) => {
            if shown.length() != Some(total) {
                shown.set_style(
                    ProgressStyle::with_template("{bar:40} {pos}/{len} rows written  {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                shown.set_length(total);
            }
            shown.set_position(n);
        }
    });

    let who = import::Who {
        actor: Actor::operator(),
        clerk_user_id: None,
    };
    let limits = import::Limits {
        max_entities: tenant.max_entities,
    };
    let pool = db.clusters.pool(&scope.cluster)?;
    let mut tx = scope::begin(pool, &scope).await?;
    let result = import::run(
        &mut tx,
        &scope,
        &who,
        limits,
        import::Source {
            input: Box::new(file),
            format,
        },
        &options,
        Some(progress),
    )
    .await;
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => {
            if report.status == "imported" {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            report
        }
        Err(ImportError::Rejected { detail, report }) => {
            tx.rollback().await?;
            show(&report, json)?;
            eprintln!("refused: {detail}");
            return Ok(ExitCode::FAILURE);
        }
        Err(err) => {
            tx.rollback().await?;
            return Err(err.into());
        }
    };
    show(&report, json)?;
    Ok(ExitCode::SUCCESS)
}

fn show(report: &import::Report, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(report);
    }
    println!(
        "{} ({}) into {}: {}",
        report.status, report.format, report.table, report.summary
    );
    if let Some(id) = report.id {
        println!("import {id}  sha256 {}", report.file_sha256);
    }
    if !report.columns.is_empty() {
        let rows = report
            .columns
            .iter()
            .map(|c| vec![c.column.clone(), c.field.clone()]);
        println!("{}", output::table(&["COLUMN", "FIELD"], rows));
    }
    if !report.ignored_columns.is_empty() {
        println!("ignored columns: {}", report.ignored_columns.join(", "));
    }
    if !report.rejections.is_empty() {
        let rows = report.rejections.iter().map(|r| {
            vec![
                r.line.to_string(),
                r.column.clone().unwrap_or_default(),
                r.value.clone().unwrap_or_default(),
                r.reason.clone(),
            ]
        });
        println!(
            "{}",
            output::table(&["LINE", "COLUMN", "VALUE", "REASON"], rows)
        );
        if report.rejections_not_shown > 0 {
            println!("… and {} more problems", report.rejections_not_shown);
        }
    }
    Ok(())
}

async fn run_sentia(
    db: &Database,
    settings: &Settings,
    args: SentiaArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let users = match &args.users {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            sentia::parse_user_links(file)
                .map_err(|e| anyhow::anyhow!("--users {}: {e}", path.display()))?
        }
        None => Vec::new(),
    };
    let options = sentia::Options {
        source_url: args.source_url,
        dry_run: args.dry_run,
        currency: args.currency,
        owner: args.owner,
        users,
        company_name: args.company_name,
    };
    let tenant = open_tenant(db, &args.tenant).await?;
    let keys = settings.keyring(db.is_embedded())?;
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}  {elapsed}").context("progress template")?,
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let shown = bar.clone();
    let result = sentia::run(db, &keys, &tenant, &options, &move |m: &str| {
        shown.set_message(m.to_owned())
    })
    .await;
    bar.finish_and_clear();
    let report = result?;
    if json {
        output::json(&report)?;
    } else {
        show_sentia(&report);
    }
    if report.status == "checksum_mismatch" {
        eprintln!(
            "refused: a money total disagrees between Sentia and the tenant; nothing was written"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn show_sentia(report: &sentia::Report) {
    let (status, written) = match report.status.as_str() {
        "imported" => ("imported", "written"),
        "dry_run" => ("dry run, nothing written", "would be written"),
        _ => ("refused, nothing written", "would have been written"),
    };
    println!(
        "Sentia into {} ({status}): {} rows {written}",
        report.tenant,
        report.written()
    );
    let rows = report.tables.iter().map(|t| {
        [
            t.table.clone(),
            t.source.clone(),
            t.read.to_string(),
            t.inserted.to_string(),
            t.updated.to_string(),
            t.unchanged.to_string(),
            t.skipped.to_string(),
        ]
    });
    println!(
        "{}",
        output::table(
            &[
                "TABLE",
                "SOURCE",
                "READ",
                "INSERTED",
                "UPDATED",
                "UNCHANGED",
                "SKIPPED"
            ],
            rows
        )
    );
    let reasons: Vec<[String; 4]> = report
        .tables
        .iter()
        .flat_map(|t| {
            let skips = t.skip_reasons.iter().map(move |r| {
                [
                    t.table.clone(),
                    "skipped".to_owned(),
                    r.rows.to_string(),
                    r.reason.clone(),
                ]
            });
            let notes = t.notes.iter().map(move |r| {
                [
                    t.table.clone(),
                    "note".to_owned(),
                    r.rows.to_string(),
                    r.reason.clone(),
                ]
            });
            skips.chain(notes)
        })
        .collect();
    if !reasons.is_empty() {
        println!();
        println!(
            "{}",
            output::table(&["SOURCE", "", "ROWS", "REASON"], reasons)
        );
    }
    if !report.checksums.is_empty() {
        println!();
        let rows = report.checksums.iter().map(|c| {
            [
                c.name.clone(),
                c.source.to_string(),
                c.not_carried.to_string(),
                c.target.to_string(),
                if c.agrees { "ok" } else { "MISMATCH" }.to_owned(),
            ]
        });
        println!(
            "{}",
            output::table(
                &["CHECKSUM", "SOURCE", "NOT CARRIED", "TARGET", "AGREES"],
                rows
            )
        );
    }
    if !report.missing_tables.is_empty() {
        println!();
        println!(
            "not in the source (nothing read): {}",
            report.missing_tables.join(", ")
        );
    }
}
