//! `capliquify import SLUG FILE --table T`: the API's file import from the command line,
//! with a progress bar (docs/import.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use super::output;
use crate::audit::Actor;
use crate::db::{Database, scope};
use crate::import::{self, DateOrder, DecimalSeparator, Format, ImportError, Options, Table};
use crate::tenancy::migrate;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
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
      --mapping 'Ref=sku'")]
pub struct ImportArgs {
    /// The tenant (slug).
    pub tenant: String,
    /// A CSV file, or a spreadsheet (.xlsx, .xls, .xlsb, .ods).
    pub file: PathBuf,
    /// The table the rows go into.
    #[arg(long, value_parser = ["products", "inventory", "sales", "working-capital-metrics", "companies"])]
    pub table: String,
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

pub async fn run(db: &Database, args: ImportArgs, json: bool) -> anyhow::Result<ExitCode> {
    let table = Table::parse(&args.table).context("--table")?;
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
    let format = Format::from_path(&args.file).with_context(|| {
        format!(
            "{}: the file must end in .csv, .xlsx, .xls, .xlsb or .ods",
            args.file.display()
        )
    })?;
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;

    let tenant = crate::tenancy::registry::find(&db.pool, &args.tenant).await?;
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
    bar.set_message(format!("reading {}", args.file.display()));
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
