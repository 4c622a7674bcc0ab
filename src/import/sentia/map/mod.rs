//! From Sentia's rows to ours (SENTIA-SOURCE.md §3): one mapper per source table and
//! generation, each one query on the snapshot and a pass over its rows that keeps the ones
//! our rules accept and counts the others by reason. The mappers live in [`trade`]
//! (companies, products, inventory, sales), [`planning`] (forecasts, metrics, scenarios)
//! and [`access`] (credentials, users); this module holds what they share.
//!
//! Two rules hold throughout. A row is skipped when a field it cannot be without is
//! unusable (a negative quantity, a product that was not imported); an unusable optional
//! field is dropped and the row noted. Ids are the source's UUIDs; where a row has none
//! (a cuid, one row made of several, a snapshot per day) the id is a UUIDv5 over its
//! natural key, so a re-run finds the same rows.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::Row as _;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::source::{Generation, Snapshot};
use super::write::Existing;
use super::{Options, Reason, SentiaError, TableReport};
use crate::access::Role;
use crate::credentials::Secrets;
use crate::tenancy::registry::Tenant;

mod access;
mod planning;
mod trade;

use access::{credentials, integrations, members};
use planning::{forecasts, metrics, scenarios};
use trade::{companies, inventory, products, sales};

/// The namespace of the importer's UUIDv5 ids (fixed: changing it would duplicate every
/// derived row on the next run).
const NAMESPACE: Uuid = Uuid::from_u128(0x5e47_1a00_c0de_4b1d_9e3a_0000_5e47_1a01);

/// A value for one column of ours.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(Option<String>),
    Int(Option<i32>),
    Dec(Option<Decimal>),
    Date(Option<NaiveDate>),
    Time(Option<DateTime<Utc>>),
    Bool(bool),
    Uuid(Option<Uuid>),
    Json(Option<Value>),
}

/// One row of one of our tables: its id and the other columns written.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: Uuid,
    pub cells: Vec<(&'static str, Cell)>,
}

/// One integration's credential: its secrets, sealed only when written.
pub struct Credential {
    pub id: Uuid,
    pub company_id: Uuid,
    pub service: String,
    pub display_name: String,
    pub secrets: Secrets,
    pub token_expires_at: Option<DateTime<Utc>>,
    /// Set on a new credential only: afterwards they are CapLiquify's own (its syncs, an
    /// operator switching it off).
    pub state: CredentialState,
}

/// A credential's state as Sentia left it.
#[derive(Debug, Clone)]
pub struct CredentialState {
    pub is_active: bool,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_sync_status: Option<String>,
    pub last_sync_error: Option<String>,
}

impl Default for CredentialState {
    fn default() -> Self {
        Self {
            is_active: true,
            last_sync_at: None,
            last_sync_status: None,
            last_sync_error: None,
        }
    }
}

/// A Sentia user with a Clerk account: the membership they get.
#[derive(Debug, Clone)]
pub struct Member {
    pub clerk_user_id: String,
    pub email: String,
    pub full_name: Option<String>,
    pub role: Role,
    /// Their row in `public.users` when they are already a member.
    pub existing: Option<(Uuid, Role)>,
}

/// What one part writes.
pub enum Rows {
    /// Rows of a tenant table.
    Table(&'static str, Vec<Row>),
    Credentials(Vec<Credential>),
    Members(Vec<Member>),
}

/// One source table into one of ours: the report so far and the rows to write.
pub struct Part {
    pub report: TableReport,
    pub rows: Rows,
}

/// A money total to reconcile after the write.
pub struct ChecksumPlan {
    pub name: &'static str,
    /// Our table and the column summed over the rows written.
    pub table: &'static str,
    pub column: &'static str,
    pub source: Decimal,
    pub not_carried: Decimal,
    pub ids: Vec<Uuid>,
}

/// Everything to write, in order (companies before what belongs to them).
pub struct Plan {
    pub parts: Vec<Part>,
    pub missing_tables: Vec<String>,
    pub checksums: Vec<ChecksumPlan>,
    /// Companies the migration writes.
    pub company_ids: HashSet<Uuid>,
}

/// A company of ours and the currency its rows default to.
#[derive(Debug, Clone)]
struct Company {
    id: Uuid,
    currency: String,
}

/// A product of ours, by its source id.
#[derive(Debug, Clone)]
struct Product {
    id: Uuid,
    company: Company,
    currency: String,
}

/// The mapping's state: what earlier tables gave the later ones.
struct Cx<'a> {
    snap: &'a mut Snapshot,
    existing: &'a Existing,
    options: &'a Options,
    tenant: &'a Tenant,
    /// `entity:<uuid>` / `org:<id>` → company.
    companies: HashMap<String, Company>,
    /// The company of rows that name none.
    default_company: Option<Company>,
    products: HashMap<String, Product>,
    /// Source user id → the Clerk id of the member they became.
    clerk_ids: HashMap<String, String>,
    plan: Plan,
}

/// Reads and maps every table the source has.
pub async fn plan(
    snap: &mut Snapshot,
    existing: &Existing,
    options: &Options,
    tenant: &Tenant,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Plan, SentiaError> {
    let mut cx = Cx {
        snap,
        existing,
        options,
        tenant,
        companies: HashMap::new(),
        default_company: None,
        products: HashMap::new(),
        clerk_ids: HashMap::new(),
        plan: Plan {
            parts: Vec::new(),
            missing_tables: Vec::new(),
            checksums: Vec::new(),
            company_ids: HashSet::new(),
        },
    };
    progress("reading companies");
    companies(&mut cx).await?;
    progress("reading products");
    products(&mut cx).await?;
    progress("reading inventory");
    inventory(&mut cx).await?;
    progress("reading historical sales");
    sales(&mut cx).await?;
    progress("reading forecasts");
    forecasts(&mut cx).await?;
    progress("reading working capital");
    metrics(&mut cx).await?;
    progress("reading API keys");
    credentials(&mut cx).await?;
    integrations(&mut cx).await?;
    // Users before scenarios: a scenario's author is named by their Clerk id.
    progress("reading users");
    members(&mut cx).await?;
    progress("reading scenarios");
    scenarios(&mut cx).await?;
    Ok(cx.plan)
}

// ---------------------------------------------------------------------------------------
// Reading cells.

fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<Option<T>, SentiaError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get::<Option<T>, _>(column)
        .map_err(|e| SentiaError::Source(format!("column {column}: {e}")))
}

fn text(row: &PgRow, column: &str) -> Result<Option<String>, SentiaError> {
    Ok(get::<String>(row, column)?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty()))
}

fn dec(row: &PgRow, column: &str) -> Result<Option<Decimal>, SentiaError> {
    get::<Decimal>(row, column)
}

fn int(row: &PgRow, column: &str) -> Result<Option<i32>, SentiaError> {
    get::<i32>(row, column)
}

/// The source's UUID, or (a cuid, a B text id that is no UUID) a UUIDv5 over the table
/// and the id.
fn uuid_of(table: &str, id: &str) -> Uuid {
    Uuid::parse_str(id).unwrap_or_else(|_| derived(&[table, id]))
}

/// A UUIDv5 over a natural key.
fn derived(parts: &[&str]) -> Uuid {
    Uuid::new_v5(&NAMESPACE, parts.join("\u{1f}").as_bytes())
}

/// Money of ours: numeric(15,2), not negative. `None` when it does not fit.
fn money(value: Decimal) -> Option<Decimal> {
    let v = value.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    (v >= Decimal::ZERO && v < Decimal::from(10_000_000_000_000_i64)).then_some(v)
}

/// Money that may be negative (forecasts, working capital).
fn signed_money(value: Decimal) -> Option<Decimal> {
    let v = value.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    (v.abs() < Decimal::from(10_000_000_000_000_i64)).then_some(v)
}

/// `numeric(p, s)` for days and ratios; `None` when it does not fit.
fn numeric(value: Decimal, p: u32, s: u32) -> Option<Decimal> {
    let v = value.round_dp_with_strategy(s, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    (v.abs() < Decimal::from(10_i64.pow(p - s))).then_some(v)
}

/// At most `n` characters.
fn fits(value: &str, n: usize) -> bool {
    value.chars().count() <= n
}

fn cut(value: String, n: usize) -> String {
    value.chars().take(n).collect()
}

impl TableReport {
    fn new(table: &str, source: &str, generation: Generation) -> Self {
        Self {
            table: table.to_owned(),
            source: format!("{source} ({generation})"),
            read: 0,
            inserted: 0,
            updated: 0,
            unchanged: 0,
            skipped: 0,
            skip_reasons: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// Counts by reason while a table is mapped.
#[derive(Default)]
struct Tally {
    skipped: BTreeMap<String, u64>,
    notes: BTreeMap<String, u64>,
}

impl Tally {
    fn skip(&mut self, reason: impl Into<String>) {
        *self.skipped.entry(reason.into()).or_default() += 1;
    }

    fn note(&mut self, note: impl Into<String>) {
        *self.notes.entry(note.into()).or_default() += 1;
    }

    fn into_report(self, mut report: TableReport, read: usize) -> TableReport {
        let list = |m: BTreeMap<String, u64>| {
            let mut v: Vec<Reason> = m
                .into_iter()
                .map(|(reason, rows)| Reason { reason, rows })
                .collect();
            v.sort_by(|a, b| b.rows.cmp(&a.rows).then(a.reason.cmp(&b.reason)));
            v
        };
        report.read = read as u64;
        report.skipped = self.skipped.values().sum();
        report.skip_reasons = list(self.skipped);
        report.notes = list(self.notes);
        report
    }
}

impl Cx<'_> {
    fn missing(&mut self, table: &str) {
        self.plan.missing_tables.push(table.to_owned());
    }

    fn push(
        &mut self,
        table: &'static str,
        source: &str,
        generation: Generation,
        read: usize,
        tally: Tally,
        rows: Rows,
    ) {
        let report = tally.into_report(TableReport::new(table, source, generation), read);
        self.plan.parts.push(Part { report, rows });
    }

    /// The company of a row: its entity or organization, else the default one.
    fn company(&self, key: Option<String>) -> Result<Company, &'static str> {
        match key {
            Some(k) => self
                .companies
                .get(&k)
                .cloned()
                .ok_or("its organization or entity is not in the source, or was skipped"),
            None => self
                .default_company
                .clone()
                .ok_or("it names no company and the source has none"),
        }
    }

    fn home_currency(&self, what: &str) -> Result<String, SentiaError> {
        self.options.currency.clone().ok_or_else(|| {
            SentiaError::Option(format!(
                "{what} state no currency: give the home currency with --currency (Sentia's was GBP)"
            ))
        })
    }

    /// The id of a company of ours: the source's, unless the tenant already has a
    /// company of that name.
    fn company_id(&self, source_id: Uuid, name: &str) -> Uuid {
        self.existing
            .company_names
            .get(&name.trim().to_lowercase())
            .copied()
            .unwrap_or(source_id)
    }
}

#[cfg(test)]
mod tests {
    use super::access::{role_of, service_name};
    use super::planning::{Forecast, forecast_row, percent};
    use super::*;

    #[test]
    fn confidences_are_percentages_and_high_ones_are_noted() {
        let mut tally = Tally::default();
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(percent(d("0.85"), "confidence", &mut tally), Some(d("85")));
        assert_eq!(percent(d("1"), "confidence", &mut tally), Some(d("100")));
        assert!(tally.notes.is_empty());
        assert_eq!(
            percent(d("92.5"), "confidence", &mut tally),
            Some(d("92.5"))
        );
        assert_eq!(percent(d("250"), "confidence", &mut tally), None);
        assert_eq!(tally.notes.len(), 2);
    }

    #[test]
    fn roles_follow_the_source_and_nobody_becomes_owner() {
        assert_eq!(role_of("ADMIN", false), Role::Admin);
        assert_eq!(role_of("master_admin", false), Role::Admin);
        assert_eq!(role_of("viewer", true), Role::Admin);
        assert_eq!(role_of("ANALYST", false), Role::Member);
        assert_eq!(role_of("operator", false), Role::Member);
        assert_eq!(role_of("VIEWER", false), Role::Viewer);
        assert_eq!(role_of("owner", false), Role::Viewer);
    }

    #[test]
    fn derived_ids_are_stable_and_uuids_are_kept() {
        let id = "0191c1d2-aaaa-7bbb-8ccc-123456789abc";
        assert_eq!(uuid_of("products", id).to_string(), id);
        assert_eq!(uuid_of("ApiKey", "ckx1"), uuid_of("ApiKey", "ckx1"));
        assert_ne!(uuid_of("ApiKey", "ckx1"), uuid_of("ApiKey", "ckx2"));
        assert_eq!(uuid_of("ApiKey", "ckx1").get_version_num(), 5);
    }

    #[test]
    fn service_names_are_made_safe() {
        assert_eq!(service_name(" Shopify UK ").as_deref(), Some("shopify-uk"));
        assert_eq!(service_name("XERO").as_deref(), Some("xero"));
        assert_eq!(service_name("!!"), None);
    }

    #[test]
    fn swapped_bounds_are_mended_and_outliers_skipped() {
        let d = |s: &str| Some(s.parse::<Decimal>().unwrap());
        let f = |p, l, u| Forecast {
            id: Uuid::nil(),
            company: Uuid::nil(),
            product: None,
            date: NaiveDate::from_ymd_opt(2025, 1, 1),
            kind: "demand",
            model_type: None,
            predicted: p,
            lower: l,
            upper: u,
            confidence: None,
            actual: None,
            accuracy: None,
            parameters: Value::Null,
        };
        let mut tally = Tally::default();
        assert!(forecast_row(f(d("10"), d("12"), d("8")), &mut tally).is_some());
        assert!(forecast_row(f(d("20"), d("8"), d("12")), &mut tally).is_none());
        assert_eq!(tally.skipped.values().sum::<u64>(), 1);
        assert_eq!(tally.notes.values().sum::<u64>(), 1);
    }
}
