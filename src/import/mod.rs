//! Data import: a CSV or spreadsheet file into one tenant table (companies, products,
//! inventory, sales, working-capital metrics), as `POST /api/v1/imports` and
//! `capliquify import` do it (docs/import.md).
//!
//! The whole file is validated first ([`validate`], on a blocking thread, reading the file
//! as a stream): headers are mapped to fields by name and alias (or an explicit mapping),
//! every cell is parsed with the resource's rules, references are resolved by natural key
//! (a company by name, a product by SKU) and every rejected row is listed, while the valid
//! rows go on with `COPY` into a staging table of the caller's transaction. There repeated
//! keys are found; then, unless rows were rejected (and `skip_invalid` not given), the rows
//! are merged by their natural key ([`write`]): the caller commits all of it or nothing. A committed import leaves a row in
//! the tenant's `imports` table and one audit row with its counts and the file's SHA-256.
//!
//! Like [`crate::domain`], this room never opens a transaction or picks a tenant: it works
//! on the connection of the caller's tenant transaction.

pub mod read;
pub mod sentia;
pub mod spec;
pub mod value;
mod write;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::Actor;
use crate::db::TenantScope;
pub use read::Format;
pub use spec::{Kind, Need, Table};
pub use value::{DateOrder, DecimalSeparator};

/// Rejections listed in a report; the rest are counted.
pub const MAX_SHOWN_REJECTIONS: usize = 1000;

/// Default of `CAPLIQUIFY_MAX_IMPORT_BYTES`: the largest import body (100 MiB).
pub const DEFAULT_MAX_IMPORT_BYTES: u64 = 100 * 1024 * 1024;

/// What an import is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub table: Table,
    /// A spreadsheet's sheet (default the first).
    pub sheet: Option<String>,
    /// `(file column, field)` pairs that override the automatic mapping; a field of `-`
    /// ignores the column.
    pub mapping: Vec<(String, String)>,
    /// Validate and count, write nothing.
    pub dry_run: bool,
    /// Import the valid rows and list the others, instead of refusing the file.
    pub skip_invalid: bool,
    pub date_order: DateOrder,
    pub decimal_separator: DecimalSeparator,
    /// The company of every row that names none.
    pub company_id: Option<Uuid>,
}

impl Options {
    pub fn new(table: Table) -> Self {
        Self {
            table,
            sheet: None,
            mapping: Vec::new(),
            dry_run: false,
            skip_invalid: false,
            date_order: DateOrder::Auto,
            decimal_separator: DecimalSeparator::Point,
            company_id: None,
        }
    }
}

/// `Item code=sku,Qty=quantity` into pairs. A column name may not contain `=` or `,`.
pub fn parse_mapping(value: &str) -> Result<Vec<(String, String)>, String> {
    value
        .split(',')
        .map(|pair| {
            let (source, target) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not `file column=field`"))?;
            let (source, target) = (source.trim(), target.trim());
            if source.is_empty() || target.is_empty() || target.contains('=') {
                return Err(format!("{pair:?} is not `file column=field`"));
            }
            Ok((source.to_owned(), target.to_owned()))
        })
        .collect()
}

/// Who imports: the audit trail's actor and, for the history, the member's Clerk id.
#[derive(Debug, Clone)]
pub struct Who {
    pub actor: Actor,
    pub clerk_user_id: Option<String>,
}

/// The file: a reader of its bytes (a request body, a file, memory) and what they are.
pub struct Source {
    pub input: read::Input,
    pub format: Format,
}

/// The plan's limits that apply to imports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Companies the plan allows (a companies import may not exceed it).
    pub max_entities: Option<i32>,
}

/// How far an import has come, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Rows read and validated so far.
    Validated(u64),
    /// Rows written so far, of this many.
    Written(u64, u64),
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// A cell (or row) that could not be imported.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
#[schema(as = ImportRejection)]
pub struct Rejection {
    /// The line of the CSV (or row of the sheet), the header being line 1.
    pub line: u64,
    /// The file's column, when one cell is at fault.
    pub column: Option<String>,
    /// The field that column maps to.
    pub field: Option<String>,
    /// The cell's text.
    pub value: Option<String>,
    pub reason: String,
}

/// A column of the file and the field it was read as.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
#[schema(as = ImportColumn)]
pub struct ColumnUse {
    pub column: String,
    pub field: String,
}

/// What an import did (or, for a dry run or a refused file, would do).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ImportReport)]
pub struct Report {
    /// The import's id in the history; null for a dry run or a refused file.
    pub id: Option<Uuid>,
    /// products, inventory, sales, working-capital-metrics or companies.
    pub table: String,
    /// `imported`, `dry_run` (nothing written) or `rejected` (nothing written).
    pub status: String,
    /// csv, xlsx, xls, xlsb or ods.
    pub format: String,
    /// SHA-256 of the body, hex.
    pub file_sha256: String,
    pub file_bytes: u64,
    /// Data rows read (the header not counted).
    pub rows: u64,
    pub inserted: u64,
    pub updated: u64,
    /// Rows that matched a stored row holding the same values.
    pub unchanged: u64,
    /// Rows rejected (skipped, with `skip_invalid`).
    pub rejected: u64,
    pub skip_invalid: bool,
    /// One sentence: what happened.
    pub summary: String,
    pub columns: Vec<ColumnUse>,
    /// Columns of the file no field took.
    pub ignored_columns: Vec<String>,
    /// The first 1,000 problems, in file order.
    pub rejections: Vec<Rejection>,
    /// Problems beyond those listed.
    pub rejections_not_shown: u64,
    pub created_at: Option<DateTime<Utc>>,
}

/// Why an import was refused.
#[derive(Debug)]
pub enum ImportError {
    /// Parameters that do not go together (its name, why).
    Rule {
        name: &'static str,
        message: String,
    },
    /// A parameter names a row that does not exist (`company_id`).
    Reference {
        name: &'static str,
        message: String,
    },
    /// The file cannot be imported: unreadable, a required column missing, or rejected
    /// rows. Nothing was written.
    Rejected {
        detail: String,
        report: Box<Report>,
    },
    /// The plan does not allow it.
    PlanLimit(String),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for ImportError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(err)
    }
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rule { name, message } | Self::Reference { name, message } => {
                write!(f, "{name}: {message}")
            }
            Self::Rejected { detail, .. } => f.write_str(detail),
            Self::PlanLimit(m) => f.write_str(m),
            Self::Database(e) => write!(f, "database: {e}"),
        }
    }
}

impl std::error::Error for ImportError {}

/// A typed cell.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Text(String),
    Int(i32),
    Dec(Decimal),
    Date(NaiveDate),
    Time(DateTime<Utc>),
    Bool(bool),
    Uuid(Uuid),
}

impl Value {
    fn dec(&self) -> Option<Decimal> {
        match self {
            Self::Dec(d) => Some(*d),
            Self::Int(i) => Some(Decimal::from(*i)),
            _ => None,
        }
    }
}

/// The tenant's rows a file may name, loaded before validation.
#[derive(Debug, Default)]
struct References {
    /// Lower-cased company name → id (None: several companies have that name).
    companies: HashMap<String, Option<Uuid>>,
    /// SKU → product id.
    products: HashMap<String, Uuid>,
    /// The company of rows that name none.
    default_company: Option<Uuid>,
    company_count: usize,
}

/// What validation found; the valid rows went to the staging table.
struct Validated {
    /// The columns the merge writes.
    columns: Vec<write::Column>,
    /// Valid rows staged.
    rows: u64,
    rows_read: u64,
    rejected: u64,
    rejections: Vec<Rejection>,
    rejections_not_shown: u64,
    mapping: Vec<ColumnUse>,
    ignored: Vec<String>,
    kind: &'static str,
}

/// The SHA-256 and size of what was read.
#[derive(Default)]
struct Digest {
    sha: Sha256,
    bytes: u64,
}

/// A reader that hashes and counts what passes through it.
struct Hashing {
    inner: read::Input,
    digest: Arc<std::sync::Mutex<Digest>>,
}

impl std::io::Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut d) = self.digest.lock() {
            d.sha.update(&buf[..n]);
            d.bytes += n as u64;
        }
        Ok(n)
    }
}

/// Bytes of COPY data sent at a time.
const COPY_BATCH: usize = 1 << 20;

/// Imports `source` into `options.table` on `conn`, the caller's tenant transaction. With
/// `dry_run` the rows are written and counted all the same: the caller rolls back. The
/// caller commits an `imported` report and rolls back anything else.
pub async fn run(
    conn: &mut PgConnection,
    scope: &TenantScope,
    who: &Who,
    limits: Limits,
    source: Source,
    options: &Options,
    progress: Option<ProgressFn>,
) -> Result<Report, ImportError> {
    let Source { input, format } = source;
    let table = options.table;
    // Imports of one table are serialised, and concurrent API writes to it wait: the
    // natural-key matching must see every row. Companies also take the plan limit's lock,
    // which API creates take (in Citus mode an advisory lock, public migration 0019).
    if table == Table::Companies {
        sqlx::query("SELECT public.lock_for_plan_limit('companies')")
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
        table.sql_table()
    )))
    .execute(&mut *conn)
    .await?;
    let refs = load_references(conn, table, options.company_id).await?;
    sqlx::query(sqlx::AssertSqlSafe(write::staging_ddl(table)))
        .execute(&mut *conn)
        .await?;

    // Validation reads the file on a blocking thread and hands the valid rows over in
    // batches of COPY text, written to the staging table as they come: memory holds a
    // few batches, whatever the file's size.
    let digest = Arc::new(std::sync::Mutex::new(Digest::default()));
    let input: read::Input = Box::new(Hashing {
        inner: input,
        digest: digest.clone(),
    });
    let (batches, mut received) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let task_options = options.clone();
    let task_progress = progress.clone();
    let task = tokio::task::spawn_blocking(move || {
        validate(
            input,
            format,
            &task_options,
            &refs,
            task_progress.as_ref(),
            &mut |batch| {
                batches
                    .blocking_send(batch)
                    .map_err(|_| Refusal("the import stopped while the file was read".into()))
            },
        )
    });
    let mut copy = conn.copy_in_raw(&write::copy_statement(table)).await?;
    let mut copy_failed = None;
    while let Some(batch) = received.recv().await {
        if let Err(e) = copy.send(batch).await {
            copy_failed = Some(e);
            break;
        }
    }
    drop(received);
    let validated = task.await.map_err(|e| {
        ImportError::Database(sqlx::Error::Protocol(format!("validation task: {e}")))
    })?;
    if let Some(err) = copy_failed {
        let _ = copy.abort("the import failed").await;
        return Err(err.into());
    }
    let (sha, file_bytes) = digest
        .lock()
        .map(|d| (hex(&d.sha.clone().finalize()), d.bytes))
        .unwrap_or_default();

    let blank = |status: &str, summary: String| Report {
        id: None,
        table: table.as_str().to_owned(),
        status: status.to_owned(),
        format: String::new(),
        file_sha256: sha.clone(),
        file_bytes,
        rows: 0,
        inserted: 0,
        updated: 0,
        unchanged: 0,
        rejected: 0,
        skip_invalid: options.skip_invalid,
        summary,
        columns: Vec::new(),
        ignored_columns: Vec::new(),
        rejections: Vec::new(),
        rejections_not_shown: 0,
        created_at: None,
    };
    let mut v = match validated {
        Ok(v) => {
            copy.finish().await?;
            v
        }
        Err(Refusal(detail)) => {
            copy.abort("the file was refused").await?;
            return Err(ImportError::Rejected {
                report: Box::new(blank("rejected", detail.clone())),
                detail,
            });
        }
    };
    if table == Table::Sales {
        write::number_order_lines(conn).await?;
    }
    // Rows repeating an earlier row's natural key.
    let room = MAX_SHOWN_REJECTIONS.saturating_sub(v.rejections.len());
    let (repeated, shown) = write::duplicates(conn, table, room as i64).await?;
    if repeated > 0 {
        for (line, first) in &shown {
            v.rejections.push(Rejection {
                line: u64::try_from(*line).unwrap_or(0),
                column: None,
                field: None,
                value: None,
                reason: format!(
                    "the same {} as line {first}: a file may give each row once",
                    table.key_description()
                ),
            });
        }
        v.rejections_not_shown += repeated - shown.len() as u64;
        v.rejected += repeated;
        v.rows -= repeated;
        v.rejections.sort_by_key(|r| r.line);
    }
    let mut report = blank("rejected", String::new());
    report.format = v.kind.to_owned();
    report.rows = v.rows_read;
    report.rejected = v.rejected;
    report.columns = std::mem::take(&mut v.mapping);
    report.ignored_columns = std::mem::take(&mut v.ignored);
    report.rejections = std::mem::take(&mut v.rejections);
    report.rejections_not_shown = v.rejections_not_shown;

    if v.rejected > 0 && !options.skip_invalid {
        let detail = format!(
            "{} of {} rows are invalid; nothing was imported (fix them, or import the valid rows with skip_invalid=true)",
            v.rejected, v.rows_read
        );
        report.summary = detail.clone();
        return Err(ImportError::Rejected {
            detail,
            report: Box::new(report),
        });
    }
    if repeated > 0 {
        write::drop_duplicates(conn, table).await?;
    }
    if table == Table::Companies
        && let Some(max) = limits.max_entities
    {
        let total = refs_company_count(conn).await? + write::new_companies(conn).await?;
        if total > u64::try_from(max).unwrap_or(0) {
            return Err(ImportError::PlanLimit(format!(
                "the plan allows {max} compan{}; this import would make {total}",
                if max == 1 { "y" } else { "ies" }
            )));
        }
    }

    let (inserted, updated) = match write::merge(conn, table, &v.columns).await {
        Ok(counts) => counts,
        Err(err) => {
            return Err(match write::explain(&err) {
                Some(detail) => {
                    report.summary = detail.clone();
                    ImportError::Rejected {
                        detail,
                        report: Box::new(report),
                    }
                }
                None => ImportError::Database(err),
            });
        }
    };
    if let Some(p) = &progress {
        p(Progress::Written(v.rows, v.rows));
    }
    report.inserted = inserted;
    report.updated = updated;
    report.unchanged = v.rows.saturating_sub(inserted + updated);
    report.summary = summary(&report, options.dry_run);
    if options.dry_run {
        report.status = "dry_run".into();
        return Ok(report);
    }
    report.status = "imported".into();
    let (id, created_at) = record(conn, scope, who, &report).await?;
    report.id = Some(id);
    report.created_at = Some(created_at);
    Ok(report)
}

fn summary(r: &Report, dry_run: bool) -> String {
    let rows = |n: u64| format!("{n} row{}", if n == 1 { "" } else { "s" });
    let would = if dry_run { "would be " } else { "" };
    let mut s = if r.inserted + r.updated == 0 {
        format!(
            "nothing {}changed: {} valid, all matching what is stored",
            if dry_run { "would have " } else { "" },
            rows(r.unchanged)
        )
    } else {
        format!(
            "{} {would}inserted, {} {would}updated, {} unchanged",
            rows(r.inserted),
            r.updated,
            r.unchanged
        )
    };
    if r.rejected > 0 {
        s.push_str(&format!("; {} invalid skipped", rows(r.rejected)));
    }
    s
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn refs_company_count(conn: &mut PgConnection) -> sqlx::Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM companies")
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

async fn load_references(
    conn: &mut PgConnection,
    table: Table,
    company_id: Option<Uuid>,
) -> Result<References, ImportError> {
    let mut refs = References::default();
    let companies: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, name FROM companies")
        .fetch_all(&mut *conn)
        .await?;
    refs.company_count = companies.len();
    for (id, name) in &companies {
        refs.companies
            .entry(name.trim().to_lowercase())
            .and_modify(|e| *e = None)
            .or_insert(Some(*id));
    }
    if let Some(id) = company_id {
        if table == Table::Companies {
            return Err(ImportError::Rule {
                name: "company_id",
                message: "company_id does not apply to a companies import".into(),
            });
        }
        if !companies.iter().any(|(c, _)| *c == id) {
            return Err(ImportError::Reference {
                name: "company_id",
                message: "company_id does not name a company of this tenant".into(),
            });
        }
        refs.default_company = Some(id);
    } else if companies.len() == 1 {
        refs.default_company = Some(companies[0].0);
    }
    if matches!(table, Table::Inventory | Table::Sales) {
        let products: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, sku FROM products")
            .fetch_all(&mut *conn)
            .await?;
        refs.products = products.into_iter().map(|(id, sku)| (sku, id)).collect();
    }
    Ok(refs)
}

/// Writes the history row and the audit row of a committed import.
async fn record(
    conn: &mut PgConnection,
    scope: &TenantScope,
    who: &Who,
    report: &Report,
) -> sqlx::Result<(Uuid, DateTime<Utc>)> {
    let (id, created_at): (Uuid, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO imports (table_name, format, file_sha256, file_bytes, rows_read, inserted,
                              updated, unchanged, rejected, skip_invalid, summary, columns,
                              ignored_columns, rejections, rejections_not_shown, created_by_user_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         RETURNING id, created_at",
    )
    .bind(&report.table)
    .bind(&report.format)
    .bind(&report.file_sha256)
    .bind(report.file_bytes as i64)
    .bind(report.rows as i64)
    .bind(report.inserted as i64)
    .bind(report.updated as i64)
    .bind(report.unchanged as i64)
    .bind(report.rejected as i64)
    .bind(report.skip_invalid)
    .bind(&report.summary)
    .bind(to_json(&report.columns))
    .bind(to_json(&report.ignored_columns))
    .bind(to_json(&report.rejections))
    .bind(report.rejections_not_shown as i64)
    .bind(&who.clerk_user_id)
    .fetch_one(&mut *conn)
    .await?;
    crate::audit::record_in_tenant(
        conn,
        scope,
        &who.actor,
        crate::audit::Entry {
            tenant_id: Some(scope.id),
            action: "import.completed",
            resource_type: "import",
            resource_id: id.to_string(),
            metadata: serde_json::json!({
                "table": report.table,
                "format": report.format,
                "file_sha256": report.file_sha256,
                "file_bytes": report.file_bytes,
                "rows": report.rows,
                "inserted": report.inserted,
                "updated": report.updated,
                "unchanged": report.unchanged,
                "rejected": report.rejected,
                "skip_invalid": report.skip_invalid,
            }),
        },
    )
    .await?;
    Ok((id, created_at))
}

/// A report's part for the history's jsonb columns.
fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// Why validation refused the whole file.
struct Refusal(String);

/// Maps the header: explicit pairs first, then names and aliases. Returns, for each field
/// of the table, the file column that gives it.
fn map_headers(
    table: Table,
    headers: &[String],
    explicit: &[(String, String)],
) -> Result<(Vec<Option<usize>>, Vec<String>), Refusal> {
    let columns = table.columns();
    let mut by_field: Vec<Option<usize>> = vec![None; columns.len()];
    let mut taken: Vec<bool> = vec![false; headers.len()];
    let normalized: Vec<String> = headers.iter().map(|h| spec::normalize(h)).collect();
    for (source, target) in explicit {
        let wanted = spec::normalize(source);
        let Some(h) = normalized.iter().position(|n| *n == wanted) else {
            return Err(Refusal(format!(
                "the file has no column {source:?}; its columns: {}",
                headers.join(", ")
            )));
        };
        taken[h] = true;
        if target == "-" {
            continue;
        }
        let Some(f) = columns.iter().position(|c| c.field == target) else {
            let fields: Vec<_> = columns.iter().map(|c| c.field).collect();
            return Err(Refusal(format!(
                "{target:?} is not a field of {}; its fields: {}",
                table.as_str(),
                fields.join(", ")
            )));
        };
        if by_field[f].is_some() {
            return Err(Refusal(format!("two columns are mapped to {target}")));
        }
        by_field[f] = Some(h);
    }
    for (h, name) in normalized.iter().enumerate() {
        if taken[h] || name.is_empty() {
            continue;
        }
        let Some(f) = columns.iter().position(|c| c.answers_to(name)) else {
            continue;
        };
        if by_field[f].is_some() {
            // Explicitly mapped already, or a second header for the same field.
            if explicit.iter().any(|(_, t)| t == columns[f].field) {
                continue;
            }
            let first = by_field[f].map_or("", |i| headers[i].as_str());
            return Err(Refusal(format!(
                "columns {first:?} and {:?} both read as {}; say which with mapping={:?}={}",
                headers[h], columns[f].field, headers[h], columns[f].field
            )));
        }
        by_field[f] = Some(h);
        taken[h] = true;
    }
    let missing: Vec<_> = columns
        .iter()
        .zip(&by_field)
        .filter(|(c, h)| c.need == Need::Required && h.is_none())
        .map(|(c, _)| c.field)
        .collect();
    if !missing.is_empty() {
        return Err(Refusal(format!(
            "no column gives {} (the file's columns: {}); name one with mapping=<column>=<field>",
            missing.join(", "),
            headers.join(", ")
        )));
    }
    let ignored = headers
        .iter()
        .zip(&normalized)
        .enumerate()
        .filter(|(h, (_, n))| !by_field.contains(&Some(*h)) && !n.is_empty())
        .map(|(_, (name, _))| name.clone())
        .collect();
    Ok((by_field, ignored))
}

/// Parses one non-empty cell as `column`.
fn parse_cell(
    column: &spec::Column,
    raw: &str,
    options: &Options,
    refs: &References,
) -> Result<Value, String> {
    let sep = options.decimal_separator;
    let money = |signed: bool| -> Result<Value, String> {
        let d = value::parse_decimal(raw, sep)?;
        if !signed && d.is_sign_negative() && !d.is_zero() {
            return Err("must be at least 0".into());
        }
        value::fits(d, 15, 2).map(Value::Dec)
    };
    match column.kind {
        Kind::Text(max) => value::parse_text(raw, max).map(Value::Text),
        Kind::Whole { min } => value::parse_whole(raw, sep, min).map(Value::Int),
        Kind::Money => money(false),
        Kind::SignedMoney => money(true),
        Kind::Numeric(p, s) => value::fits(value::parse_decimal(raw, sep)?, p, s).map(Value::Dec),
        Kind::Date => value::parse_date(raw, options.date_order).map(Value::Date),
        Kind::Instant => value::parse_instant(raw, options.date_order).map(Value::Time),
        Kind::Bool => value::parse_bool(raw).map(Value::Bool),
        Kind::Currency => {
            let code = raw.trim().to_ascii_uppercase();
            if crate::domain::ISO_4217.contains(&code.as_str()) {
                Ok(Value::Text(code))
            } else {
                Err(format!(
                    "{raw:?} is not an ISO 4217 currency code such as USD"
                ))
            }
        }
        Kind::PeriodType => {
            let word = raw.trim().to_ascii_lowercase();
            let word = match word.as_str() {
                "month" => "monthly",
                "quarter" => "quarterly",
                "year" | "yearly" | "annually" => "annual",
                w => w,
            };
            crate::domain::working_capital::PeriodType::parse(word)
                .map(|p| Value::Text(p.as_str().to_owned()))
                .ok_or_else(|| format!("{raw:?} is not monthly, quarterly or annual"))
        }
        Kind::MonthDay => {
            let s = raw.trim();
            let ok =
                s.len() == 5 && NaiveDate::parse_from_str(&format!("2024-{s}"), "%Y-%m-%d").is_ok();
            if ok {
                Ok(Value::Text(s.to_owned()))
            } else {
                Err(format!(
                    "{raw:?} is not a day of the year, MM-DD (e.g. 12-31)"
                ))
            }
        }
        Kind::Company => match refs.companies.get(&raw.trim().to_lowercase()) {
            Some(Some(id)) => Ok(Value::Uuid(*id)),
            Some(None) => Err(format!(
                "several companies are named {raw:?}; give company_id instead"
            )),
            None => Err(format!("no company is named {raw:?}")),
        },
        Kind::Product => refs
            .products
            .get(raw.trim())
            .map(|id| Value::Uuid(*id))
            .ok_or_else(|| format!("no product has SKU {raw:?} (import products first)")),
    }
}

/// The default of a defaulted field.
fn default_value(column: &spec::Column, text: &str) -> Value {
    match column.kind {
        Kind::Whole { .. } => Value::Int(text.parse().unwrap_or(0)),
        Kind::Bool => Value::Bool(text == "true"),
        _ => Value::Text(text.to_owned()),
    }
}

const TOO_LARGE: i64 = 10_000_000_000_000;

/// Rules between fields of a row and derived values (as the API applies them). Returns
/// the field at fault and why.
fn row_rules(
    table: Table,
    columns: &[spec::Column],
    mapped: &[Option<usize>],
    values: &mut [Value],
) -> Vec<(&'static str, String)> {
    let idx = |field: &str| columns.iter().position(|c| c.field == field);
    let get = |values: &[Value], field: &str| idx(field).and_then(|i| values[i].dec());
    let limit = Decimal::from(TOO_LARGE);
    let mut errors = Vec::new();
    match table {
        Table::Inventory => {
            if let (Some(on_hand), Some(reserved)) = (
                get(values, "quantity_on_hand"),
                get(values, "quantity_reserved"),
            ) && reserved > on_hand
            {
                errors.push((
                    "quantity_reserved",
                    "must not exceed quantity_on_hand".to_owned(),
                ));
            }
            if let (Some(on_hand), Some(cost)) =
                (get(values, "quantity_on_hand"), get(values, "unit_cost"))
                && on_hand.checked_mul(cost).is_none_or(|t| t >= limit)
            {
                errors.push((
                    "unit_cost",
                    "quantity_on_hand × unit_cost is too large for total_value".to_owned(),
                ));
            }
        }
        Table::Sales => {
            if let Some(i) = idx("total_amount")
                && values[i] == Value::Null
                && let (Some(q), Some(p)) = (get(values, "quantity"), get(values, "unit_price"))
            {
                match q.checked_mul(p).filter(|t| *t < limit) {
                    Some(total) => values[i] = Value::Dec(total),
                    None => errors.push((
                        "total_amount",
                        "quantity × unit_price is too large".to_owned(),
                    )),
                }
            }
        }
        Table::WorkingCapitalMetrics => {
            let derive = |values: &mut [Value],
                          target: &'static str,
                          plus: &[&str],
                          minus: &[&str],
                          p: u32,
                          s: u32,
                          errors: &mut Vec<(&'static str, String)>| {
                let Some(t) = idx(target) else { return };
                if mapped[t].is_some() || values[t] != Value::Null {
                    return;
                }
                let mut sum = Decimal::ZERO;
                for (fields, sign) in [(plus, Decimal::ONE), (minus, Decimal::NEGATIVE_ONE)] {
                    for f in fields {
                        match get(values, f) {
                            Some(v) => sum += v * sign,
                            None => return,
                        }
                    }
                }
                match value::fits(sum, p, s) {
                    Ok(v) => values[t] = Value::Dec(v),
                    Err(rule) => errors.push((target, format!("{rule} (computed)"))),
                }
            };
            derive(
                values,
                "working_capital",
                &["cash", "accounts_receivable", "inventory"],
                &["accounts_payable", "short_term_debt"],
                15,
                2,
                &mut errors,
            );
            derive(
                values,
                "cash_conversion_cycle",
                &["days_sales_outstanding", "days_inventory_outstanding"],
                &["days_payables_outstanding"],
                10,
                2,
                &mut errors,
            );
        }
        Table::Companies | Table::Products => {}
    }
    errors
}

/// Whether field `i` of `table` is written: given by the file, part of the key, the
/// company, or derived from fields the file gives.
fn written(table: Table, columns: &[spec::Column], mapped: &[Option<usize>], i: usize) -> bool {
    let c = &columns[i];
    if mapped[i].is_some() || c.key || c.kind == Kind::Company {
        return true;
    }
    let all = |fields: &[&str]| {
        fields.iter().all(|f| {
            columns
                .iter()
                .position(|c| c.field == *f)
                .is_some_and(|j| mapped[j].is_some())
        })
    };
    match (table, c.field) {
        (Table::Sales, "total_amount") => true,
        (Table::WorkingCapitalMetrics, "working_capital") => all(&[
            "cash",
            "accounts_receivable",
            "inventory",
            "accounts_payable",
            "short_term_debt",
        ]),
        (Table::WorkingCapitalMetrics, "cash_conversion_cycle") => all(&[
            "days_sales_outstanding",
            "days_inventory_outstanding",
            "days_payables_outstanding",
        ]),
        _ => false,
    }
}

/// Reads and checks the whole file (no database: references come in `refs`), handing the
/// valid rows to `sink` in batches of COPY text (every field of the table, in order).
fn validate(
    input: read::Input,
    format: Format,
    options: &Options,
    refs: &References,
    progress: Option<&ProgressFn>,
    sink: &mut dyn FnMut(Vec<u8>) -> Result<(), Refusal>,
) -> Result<Validated, Refusal> {
    let table = options.table;
    let columns = table.columns();
    let sheet = read::open(input, format, options.sheet.as_deref()).map_err(Refusal)?;
    let (mapped, ignored) = map_headers(table, &sheet.headers, &options.mapping)?;
    if table.has_company() && refs.company_count == 0 {
        return Err(Refusal(
            "this tenant has no company yet: import companies (or create one) first".into(),
        ));
    }
    let company_idx = columns.iter().position(|c| c.kind == Kind::Company);
    if let Some(ci) = company_idx
        && mapped[ci].is_none()
        && refs.default_company.is_none()
    {
        return Err(Refusal(
            "this tenant has several companies: add a company column (the company's name) or give company_id".into(),
        ));
    }
    let written_columns = (0..columns.len())
        .filter(|i| written(table, columns, &mapped, *i))
        .map(|i| write::Column::new(table, &columns[i], mapped[i].is_some()))
        .collect();
    let mapping = columns
        .iter()
        .zip(&mapped)
        .filter_map(|(c, h)| {
            h.map(|h| ColumnUse {
                column: sheet.headers[h].clone(),
                field: c.field.to_owned(),
            })
        })
        .collect();

    let mut v = Validated {
        columns: written_columns,
        rows: 0,
        rows_read: 0,
        rejected: 0,
        rejections: Vec::new(),
        rejections_not_shown: 0,
        mapping,
        ignored,
        kind: sheet.kind,
    };
    let field_idx = |f: &str| columns.iter().position(|c| c.field == f);
    let mut batch: Vec<u8> = Vec::with_capacity(COPY_BATCH + 4096);

    for record in sheet.rows {
        let record = record.map_err(Refusal)?;
        v.rows_read += 1;
        if v.rows_read.is_multiple_of(10_000)
            && let Some(p) = progress
        {
            p(Progress::Validated(v.rows_read));
        }
        let line = record.line;
        let mut problems: Vec<Rejection> = Vec::new();
        let mut values = vec![Value::Null; columns.len()];
        for (i, c) in columns.iter().enumerate() {
            let Some(h) = mapped[i] else { continue };
            let raw = record.cells.get(h).map_or("", |s| s.trim());
            let result = if raw.is_empty() {
                match c.need {
                    Need::Required => Err("is required".to_owned()),
                    Need::Defaulted(d) => Ok(default_value(c, d)),
                    Need::Optional => Ok(Value::Null),
                }
            } else {
                parse_cell(c, raw, options, refs)
            };
            match result {
                Ok(value) => values[i] = value,
                Err(reason) => problems.push(Rejection {
                    line,
                    column: Some(sheet.headers[h].clone()),
                    field: Some(c.field.to_owned()),
                    value: Some(raw.to_owned()),
                    reason,
                }),
            }
        }
        if let Some(ci) = company_idx
            && values[ci] == Value::Null
            && !problems
                .iter()
                .any(|p| p.field.as_deref() == Some("company"))
        {
            match refs.default_company {
                Some(id) => values[ci] = Value::Uuid(id),
                None => problems.push(Rejection {
                    line,
                    column: mapped[ci].map(|h| sheet.headers[h].clone()),
                    field: Some("company".into()),
                    value: None,
                    reason: "names no company, and the tenant has several: fill it in or give company_id".into(),
                }),
            }
        }
        if problems.is_empty() {
            for (field, reason) in row_rules(table, columns, &mapped, &mut values) {
                let h = field_idx(field).and_then(|i| mapped[i]);
                problems.push(Rejection {
                    line,
                    column: h.map(|h| sheet.headers[h].clone()),
                    field: Some(field.to_owned()),
                    value: h.and_then(|h| record.cells.get(h).cloned()),
                    reason,
                });
            }
        }
        if problems.is_empty() {
            write::encode_row(&mut batch, line, &values);
            v.rows += 1;
            if batch.len() >= COPY_BATCH {
                sink(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(COPY_BATCH + 4096),
                ))?;
            }
        } else {
            v.rejected += 1;
            for p in problems {
                if v.rejections.len() < MAX_SHOWN_REJECTIONS {
                    v.rejections.push(p);
                } else {
                    v.rejections_not_shown += 1;
                }
            }
        }
    }
    if v.rows_read == 0 {
        return Err(Refusal(
            "the file has a header but no rows to import".into(),
        ));
    }
    if !batch.is_empty() {
        sink(batch)?;
    }
    Ok(v)
}

/// One import of the tenant's history.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ImportRecord {
    pub id: Uuid,
    /// products, inventory, sales, working-capital-metrics or companies.
    #[sqlx(rename = "table_name")]
    pub table: String,
    pub format: String,
    pub file_sha256: String,
    pub file_bytes: i64,
    pub rows: i64,
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub rejected: i64,
    pub skip_invalid: bool,
    pub summary: String,
    #[schema(value_type = Vec<ColumnUse>)]
    pub columns: sqlx::types::Json<Vec<ColumnUse>>,
    #[schema(value_type = Vec<String>)]
    pub ignored_columns: sqlx::types::Json<Vec<String>>,
    /// The first 1,000 problems of the rows skipped (`skip_invalid`).
    #[schema(value_type = Vec<Rejection>)]
    pub rejections: sqlx::types::Json<Vec<Rejection>>,
    pub rejections_not_shown: i64,
    /// The Clerk user id of the member who imported; null from the command line.
    pub created_by_user_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The columns of [`ImportRecord`], in `SELECT` form.
pub const RECORD_COLUMNS: &str = "id, table_name, format, file_sha256, file_bytes, rows_read AS rows, \
     inserted, updated, unchanged, rejected, skip_invalid, summary, columns, ignored_columns, \
     rejections, rejections_not_shown, created_by_user_id, created_at";

/// One import of the history.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<ImportRecord>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RECORD_COLUMNS} FROM imports WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Up to `limit` imports, newest first, after `(created_at, id)` when given.
pub async fn list(
    conn: &mut PgConnection,
    limit: i64,
    after: Option<(DateTime<Utc>, Uuid)>,
) -> sqlx::Result<Vec<ImportRecord>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RECORD_COLUMNS} FROM imports
          WHERE $1::timestamptz IS NULL OR (created_at, id) < ($1, $2)
          ORDER BY created_at DESC, id DESC LIMIT $3"
    )))
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs() -> References {
        let acme = Uuid::from_u128(1);
        References {
            companies: HashMap::from([("acme".to_owned(), Some(acme))]),
            products: HashMap::from([("A-1".to_owned(), Uuid::from_u128(2))]),
            default_company: Some(acme),
            company_count: 1,
        }
    }

    fn check(table: Table, csv: &str) -> (Validated, String) {
        let mut staged = Vec::new();
        let v = validate(
            Box::new(std::io::Cursor::new(csv.to_owned())),
            Format::Csv,
            &Options::new(table),
            &refs(),
            None,
            &mut |batch| {
                staged.extend(batch);
                Ok(())
            },
        );
        match v {
            Ok(v) => (v, String::from_utf8(staged).unwrap()),
            Err(Refusal(e)) => panic!("{e}"),
        }
    }

    #[test]
    fn aliases_map_and_bad_cells_are_listed() {
        let (v, _) = check(
            Table::Sales,
            "Date,Item code,Qty,Unit Price,Notes\n2026-01-05,A-1,2,3.50,x\n05/01/2026,B-9,0,abc,y\n",
        );
        assert_eq!(v.rows_read, 2);
        assert_eq!(v.rows, 1);
        assert_eq!(v.rejected, 1);
        assert_eq!(v.ignored, ["Notes"]);
        let reasons: Vec<_> = v
            .rejections
            .iter()
            .map(|r| (r.line, r.field.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            reasons,
            [
                (3, "sku".to_owned()),
                (3, "sale_date".to_owned()),
                (3, "quantity".to_owned()),
                (3, "unit_price".to_owned())
            ]
        );
    }

    #[test]
    fn valid_rows_are_staged_as_copy_text_with_derived_values() {
        let (v, staged) = check(
            Table::Sales,
            "sale_date,sku,quantity,unit_price\n2026-01-05,A-1,3,1.50\n",
        );
        assert_eq!(v.rows, 1);
        let acme = Uuid::from_u128(1);
        let product = Uuid::from_u128(2);
        // company, sku, sale_date, quantity, unit_price, total_amount, currency, channel,
        // external_id, customer_name, customer_id, order_line.
        assert_eq!(
            staged,
            format!(
                "2\t{acme}\t{product}\t2026-01-05\t3\t1.5\t4.5\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n"
            )
        );
    }

    #[test]
    fn mappings_parse() {
        assert_eq!(
            parse_mapping("Item code=sku, Qty = quantity").unwrap(),
            [
                ("Item code".to_owned(), "sku".to_owned()),
                ("Qty".to_owned(), "quantity".to_owned())
            ]
        );
        assert!(parse_mapping("nope").is_err());
        assert!(parse_mapping("a=b,,c=d").is_err());
        assert!(parse_mapping("a=b=c").is_err());
    }
}
