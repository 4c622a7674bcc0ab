//! The migration of Sentia's single-tenant database into one tenant
//! (`capliquify import sentia`, docs/import.md "Migrating from Sentia"; the source and its
//! mapping: SENTIA-SOURCE.md).
//!
//! Three steps: [`source`] opens the old database read-only in one snapshot and tells,
//! table by table, which of its two schema generations it holds; [`map`] reads each table
//! and turns its rows into rows of ours (or skips them, with a reason); [`write`] upserts
//! them by id, so a second run finds everything unchanged. The report counts each table's
//! rows read, inserted, updated, unchanged and skipped, and reconciles the money: the
//! source's Σ sales amount and Σ inventory value must equal the tenant's after the write
//! plus what was not carried over, or nothing is committed.
//!
//! Unlike the file import, this room opens its own transactions, because one act spans
//! three connections: the source's snapshot, the tenant's transaction (its schema and
//! role, [`crate::db::scope`]) and one on the home cluster for the memberships in
//! `public.users`, which the tenant's role may not write. The tenant's is committed first,
//! the memberships right after it; both are idempotent, so a re-run mends a failure
//! between the two.

mod map;
mod source;
mod write;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::audit::Actor;
use crate::crypto::Keyring;
use crate::db::{Database, scope};
use crate::tenancy::registry::Tenant;
pub use source::Generation;

/// What the migration is asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `postgres://…` of the Sentia database (read only).
    pub source_url: String,
    /// Read, map and count, and roll everything back.
    pub dry_run: bool,
    /// The home currency (ISO 4217), for rows whose source states none.
    pub currency: Option<String>,
    /// The email of the member who becomes the tenant's owner.
    pub owner: Option<String>,
    /// Clerk accounts of Sentia's users, by email (`--users FILE`).
    pub users: Vec<UserLink>,
    /// The name of the one company when the source has no entities (default: the tenant's).
    pub company_name: Option<String>,
}

/// A Sentia user's Clerk account.
#[derive(Debug, Clone)]
pub struct UserLink {
    pub email: String,
    pub clerk_user_id: String,
}

/// Reads `email,clerk_user_id` lines (a header line is allowed).
pub fn parse_user_links(input: impl std::io::Read) -> Result<Vec<UserLink>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let mut links = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("line {}: {e}", i + 1))?;
        let (Some(email), Some(clerk)) = (record.get(0), record.get(1)) else {
            if record.iter().all(str::is_empty) {
                continue;
            }
            return Err(format!("line {}: expected email,clerk_user_id", i + 1));
        };
        if i == 0 && !email.contains('@') {
            continue; // the header
        }
        if !email.contains('@') || clerk.is_empty() {
            return Err(format!("line {}: expected email,clerk_user_id", i + 1));
        }
        links.push(UserLink {
            email: email.to_owned(),
            clerk_user_id: clerk.to_owned(),
        });
    }
    Ok(links)
}

/// Why the migration was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SentiaError {
    /// The source cannot be read (unreachable, refused, a query failed).
    #[error("source database: {0}")]
    Source(String),
    /// The source holds neither generation's tables.
    #[error("{0}")]
    NotSentia(String),
    /// An option is missing or names nothing.
    #[error("{0}")]
    Option(String),
    #[error("{0}")]
    PlanLimit(String),
    #[error("sealing a credential: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error(transparent)]
    Cluster(#[from] crate::db::cluster::ClusterError),
    #[error("tenant: {0}")]
    Tenancy(#[from] crate::tenancy::TenancyError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A reason and how many rows it applies to.
#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    pub reason: String,
    pub rows: u64,
}

/// One source table into one of ours.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// Our table (`companies`, `products`, …, `members` for `public.users`).
    pub table: String,
    /// The source table and its generation, e.g. `historical_sales (A)`.
    pub source: String,
    pub read: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: u64,
    /// Why rows were skipped, with counts.
    pub skip_reasons: Vec<Reason>,
    /// Rows carried over with a change worth knowing (a value dropped, a scale read as a
    /// percent), with counts.
    pub notes: Vec<Reason>,
}

/// A money total on both sides: `source` must equal `target + not_carried`.
#[derive(Debug, Clone, Serialize)]
pub struct Checksum {
    /// e.g. `Σ sales.total_amount`.
    pub name: String,
    /// Summed in the source by SQL over the rows this table is read from.
    pub source: Decimal,
    /// The part of `source` in rows (or values) that were skipped.
    pub not_carried: Decimal,
    /// Summed in the tenant by SQL over the rows written, after the write.
    pub target: Decimal,
    pub agrees: bool,
}

/// What the migration did (or, with a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tenant: String,
    /// `imported`, `dry_run` (nothing written) or `checksum_mismatch` (nothing written).
    pub status: String,
    pub tables: Vec<TableReport>,
    /// Source tables the mapping reads that the source does not have.
    pub missing_tables: Vec<String>,
    pub checksums: Vec<Checksum>,
}

impl Report {
    pub fn written(&self) -> u64 {
        self.tables.iter().map(|t| t.inserted + t.updated).sum()
    }
}

/// Migrates the Sentia database of `options.source_url` into `tenant`. A dry run, and a
/// checksum that disagrees, roll everything back and still return the report.
pub async fn run(
    db: &Database,
    keys: &Keyring,
    tenant: &Tenant,
    options: &Options,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Report, SentiaError> {
    if let Some(c) = &options.currency
        && !is_currency(c)
    {
        return Err(SentiaError::Option(format!(
            "--currency {c:?} is not an ISO 4217 code such as GBP"
        )));
    }
    let scope = tenant.scope()?;
    progress("opening the source snapshot");
    let mut snapshot = source::Snapshot::open(&options.source_url).await?;
    if ["products", "users", "working_capital"]
        .iter()
        .all(|t| snapshot.generation(t).is_none())
        && !snapshot.has("organizations", &["id"])
        && !snapshot.has("entities", &["id"])
    {
        snapshot.close().await;
        return Err(SentiaError::NotSentia(
            "the source is not a Sentia database: it has none of the tables of either generation \
             (products with market_region or organization_id, users, working_capital, entities, organizations)"
                .into(),
        ));
    }
    let pool = db.clusters.pool(&scope.cluster)?;
    let mut tx = scope::begin(pool, &scope).await?;
    // The natural keys (SKUs, a company's service) are matched against what is stored:
    // concurrent writers wait until the migration commits.
    sqlx::query(
        "LOCK TABLE companies, products, sales, inventory, forecasts, working_capital_metrics,
                    scenarios, api_credentials, user_preferences IN SHARE ROW EXCLUSIVE MODE",
    )
    .execute(&mut *tx)
    .await?;
    let existing = write::Existing::load(&mut tx, &db.pool, tenant.id).await?;
    let plan = map::plan(&mut snapshot, &existing, options, tenant, progress).await;
    snapshot.close().await;
    let plan = plan?;

    if let Some(max) = tenant.max_entities {
        let total = existing.company_count(&plan);
        if total > u64::try_from(max).unwrap_or(0) {
            return Err(SentiaError::PlanLimit(format!(
                "the plan allows {max} compan{}; this migration would make {total} (upgrade the tier, or migrate fewer entities)",
                if max == 1 { "y" } else { "ies" }
            )));
        }
    }

    progress("writing");
    let mut members = db.pool.begin().await?;
    let mut report = write::write(&mut tx, &mut members, keys, &scope, plan).await?;
    report.tenant = tenant.slug.clone();
    let agree = report.checksums.iter().all(|c| c.agrees);
    if options.dry_run || !agree {
        tx.rollback().await?;
        members.rollback().await?;
        report.status = if agree {
            "dry_run"
        } else {
            "checksum_mismatch"
        }
        .into();
        return Ok(report);
    }
    crate::audit::record_in_tenant(
        &mut tx,
        &scope,
        &Actor::operator(),
        crate::audit::Entry {
            tenant_id: Some(scope.id),
            action: "import.sentia",
            resource_type: "import",
            resource_id: "sentia".into(),
            metadata: audit_metadata(&report, &options.source_url),
        },
    )
    .await?;
    tx.commit().await?;
    members.commit().await?;
    report.status = "imported".into();
    Ok(report)
}

/// The audit row's counts: per table and checksums, the source by host and database only
/// (never the URL, which may hold a password), never a value of a row.
fn audit_metadata(report: &Report, source_url: &str) -> serde_json::Value {
    let source = url::Url::parse(source_url)
        .map(|u| {
            format!(
                "{}{}",
                u.host_str().unwrap_or("localhost"),
                u.path().trim_end_matches('/')
            )
        })
        .unwrap_or_default();
    let tables: Vec<_> = report
        .tables
        .iter()
        .map(|t| {
            serde_json::json!({
                "table": t.table, "source": t.source, "read": t.read, "inserted": t.inserted,
                "updated": t.updated, "unchanged": t.unchanged, "skipped": t.skipped,
            })
        })
        .collect();
    serde_json::json!({
        "source": source,
        "tables": tables,
        "written": report.written(),
        "checksums": report.checksums,
        "missing_tables": report.missing_tables,
    })
}

fn is_currency(c: &str) -> bool {
    c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_links_read_with_or_without_a_header() {
        let links = parse_user_links(
            "email,clerk_user_id\nAnn@Example.com, user_1\n\nbob@example.com,user_2\n".as_bytes(),
        )
        .unwrap();
        let pairs: Vec<_> = links
            .iter()
            .map(|l| (l.email.as_str(), l.clerk_user_id.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("Ann@Example.com", "user_1"), ("bob@example.com", "user_2")]
        );
        assert!(parse_user_links("a@b.c\n".as_bytes()).is_err());
        assert!(parse_user_links("a@b.c,u\nnot-an-email,u2\n".as_bytes()).is_err());
    }
}
