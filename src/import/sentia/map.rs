//! From Sentia's rows to ours (SENTIA-SOURCE.md §3): one mapper per source table and
//! generation, each one query on the snapshot and a pass over its rows that keeps the ones
//! our rules accept and counts the others by reason.
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

// ---------------------------------------------------------------------------------------
// Companies: B organizations, A entities, else one company.

async fn companies(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    let mut rows = Vec::new();
    let mut tally = Tally::default();
    // Production may hold generation A with some of B's tables beside it (B's migration
    // was marked applied, not run): organizations count only beside B's products, or
    // without entities.
    let organizations = cx.snap.has("organizations", &["id"])
        && (cx.snap.generation("products") == Some(Generation::B)
            || !cx.snap.has("entities", &["id"]));
    let (source, generation, read) = if organizations {
        let src = cx
            .snap
            .rows(
                "SELECT id::text, name::text, display_name::text, domain::text, logo::text,
                        industry::text, size::text, plan::text,
                        (plan_expiry AT TIME ZONE 'UTC') AS plan_expiry, billing_email::text,
                        settings::jsonb AS settings, features::jsonb AS features
                   FROM organizations ORDER BY created_at, id"
                    .into(),
            )
            .await?;
        let currency = if src.is_empty() {
            String::new()
        } else {
            cx.home_currency("Sentia's organizations")?
        };
        for r in &src {
            let source_id = text(r, "id")?.unwrap_or_default();
            let Some(name) = text(r, "display_name")?.or(text(r, "name")?) else {
                tally.skip("no name");
                continue;
            };
            if !fits(&name, 255) {
                tally.skip("name longer than 255 characters");
                continue;
            }
            let id = cx.company_id(uuid_of("organizations", &source_id), &name);
            let settings = json!({ "source": {
                "system": "sentia", "organization_id": source_id, "name": text(r, "name")?,
                "domain": text(r, "domain")?, "logo": text(r, "logo")?,
                "industry": text(r, "industry")?, "size": text(r, "size")?,
                "plan": text(r, "plan")?, "plan_expiry": get::<DateTime<Utc>>(r, "plan_expiry")?,
                "billing_email": text(r, "billing_email")?,
                "settings": get::<Value>(r, "settings")?, "features": get::<Value>(r, "features")?,
            }});
            let company = Company {
                id,
                currency: currency.clone(),
            };
            cx.companies.insert(format!("org:{source_id}"), company);
            rows.push(company_row(id, name, None, None, &currency, settings));
        }
        ("organizations", Generation::B, src.len())
    } else if cx.snap.has("entities", &["id"]) {
        let src = cx
            .snap
            .rows(
                "SELECT id::text, name::text, country_code::text, currency_code::text,
                        tax_number::text, address, is_active
                   FROM entities ORDER BY created_at, id"
                    .into(),
            )
            .await?;
        for r in &src {
            let source_id = text(r, "id")?.unwrap_or_default();
            let Some(name) = text(r, "name")? else {
                tally.skip("no name");
                continue;
            };
            let currency = match text(r, "currency_code")?.map(|c| c.to_uppercase()) {
                Some(c) if super::is_currency(&c) => c,
                _ => {
                    tally.note("no valid currency_code: the home currency (--currency)");
                    cx.home_currency("some entities")?
                }
            };
            let tax_id = text(r, "tax_number")?.filter(|t| {
                let ok = fits(t, 50);
                if !ok {
                    tally.note("tax_number longer than 50 characters dropped");
                }
                ok
            });
            let id = cx.company_id(uuid_of("entities", &source_id), &name);
            let settings = json!({ "source": {
                "system": "sentia", "entity_id": source_id,
                "country_code": text(r, "country_code")?, "address": text(r, "address")?,
                "is_active": get::<bool>(r, "is_active")?,
            }});
            let company = Company {
                id,
                currency: currency.clone(),
            };
            cx.companies.insert(format!("entity:{source_id}"), company);
            rows.push(company_row(
                id,
                name.clone(),
                Some(name),
                tax_id,
                &currency,
                settings,
            ));
        }
        ("entities", Generation::A, src.len())
    } else {
        cx.missing("entities");
        cx.missing("organizations");
        ("(none)", Generation::A, 0)
    };
    if rows.is_empty() {
        // "Else a single company" (SENTIA-SOURCE.md §3.0).
        let name = cx
            .options
            .company_name
            .clone()
            .unwrap_or_else(|| cx.tenant.name.clone());
        let currency =
            cx.home_currency("the source has no entities or organizations, so its rows")?;
        let id = cx.company_id(derived(&["company", "single"]), &name);
        tally.note("the source has no company: one made for all rows");
        cx.default_company = Some(Company {
            id,
            currency: currency.clone(),
        });
        rows.push(company_row(
            id,
            name,
            None,
            None,
            &currency,
            json!({ "source": { "system": "sentia" } }),
        ));
    } else {
        let first = rows[0].id;
        cx.default_company = cx.companies.values().find(|c| c.id == first).cloned();
        if rows.len() > 1 {
            tally.note("rows that name no company go to the first one");
        }
    }
    cx.plan.company_ids = rows.iter().map(|r| r.id).collect();
    cx.push(
        "companies",
        source,
        generation,
        read,
        tally,
        Rows::Table("companies", rows),
    );
    Ok(())
}

fn company_row(
    id: Uuid,
    name: String,
    legal_name: Option<String>,
    tax_id: Option<String>,
    currency: &str,
    settings: Value,
) -> Row {
    Row {
        id,
        cells: vec![
            ("name", Cell::Text(Some(name))),
            ("legal_name", Cell::Text(legal_name)),
            ("tax_id", Cell::Text(tax_id)),
            ("currency", Cell::Text(Some(currency.to_owned()))),
            ("settings", Cell::Json(Some(settings))),
        ],
    }
}

// ---------------------------------------------------------------------------------------
// Products, by SKU.

async fn products(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    let Some(generation) = cx.snap.generation("products") else {
        cx.missing("products");
        return Ok(());
    };
    let sql = match generation {
        Generation::A => {
            let market = if cx.snap.has("markets", &["code", "currency_code"]) {
                "(SELECT m.currency_code::text FROM markets m WHERE m.code = p.market_region)"
            } else {
                "NULL::text"
            };
            let rop = if cx.snap.has("inventory_policies", &["rop"]) {
                "(SELECT ip.rop FROM inventory_policies ip WHERE ip.product_id = p.id
                   ORDER BY ip.effective_from DESC LIMIT 1)::int4"
            } else {
                "NULL::int4"
            };
            let eoq = if cx.snap.has("inventory_levels", &["economic_order_quantity"]) {
                "(SELECT il.economic_order_quantity FROM inventory_levels il
                   WHERE il.product_id = p.id AND il.economic_order_quantity IS NOT NULL
                   ORDER BY il.snapshot_date DESC LIMIT 1)::int4"
            } else {
                "NULL::int4"
            };
            format!(
                "SELECT p.id::text, NULL::text AS company, p.sku::text, p.name::text,
                        NULL::text AS description, p.category::text, p.unit_cost::numeric,
                        p.selling_price::numeric, {market} AS currency, {rop} AS reorder_point,
                        {eoq} AS reorder_quantity, NULL::int4 AS lead_time, p.is_active
                   FROM products p ORDER BY p.created_at, p.id"
            )
        }
        Generation::B => "SELECT id::text, 'org:' || organization_id AS company, sku, name, description,
                        category, unit_cost::numeric, selling_price::numeric, NULL::text AS currency,
                        reorder_point::int4, NULL::int4 AS reorder_quantity, lead_time::int4,
                        is_active AND discontinued_at IS NULL AS is_active
                   FROM products ORDER BY created_at, id"
            .into(),
    };
    let src = cx.snap.rows(sql).await?;
    let mut tally = Tally::default();
    let mut rows = Vec::new();
    for r in &src {
        let source_id = text(r, "id")?.unwrap_or_default();
        let company = match cx.company(text(r, "company")?) {
            Ok(c) => c,
            Err(why) => {
                tally.skip(why);
                continue;
            }
        };
        let Some(sku) = text(r, "sku")?.filter(|s| fits(s, 100)) else {
            tally.skip("no SKU, or one longer than 100 characters");
            continue;
        };
        let Some(name) = text(r, "name")? else {
            tally.skip("no name");
            continue;
        };
        let name = if fits(&name, 255) {
            name
        } else {
            tally.note("name cut to 255 characters");
            cut(name, 255)
        };
        let category = text(r, "category")?.map(|c| {
            if fits(&c, 100) {
                c
            } else {
                tally.note("category cut to 100 characters");
                cut(c, 100)
            }
        });
        let mut amount = |column: &str| -> Result<Option<Decimal>, SentiaError> {
            Ok(dec(r, column)?.and_then(|v| {
                let m = money(v);
                if m.is_none() {
                    tally.note(format!("negative or too large {column} dropped"));
                }
                m
            }))
        };
        let unit_cost = amount("unit_cost")?;
        let unit_price = amount("selling_price")?;
        let mut count = |column: &str| -> Result<Option<i32>, SentiaError> {
            Ok(int(r, column)?.filter(|v| {
                if *v < 0 {
                    tally.note(format!("negative {column} dropped"));
                }
                *v >= 0
            }))
        };
        let reorder_point = count("reorder_point")?;
        let reorder_quantity = count("reorder_quantity")?;
        let lead_time = count("lead_time")?;
        let currency = text(r, "currency")?
            .map(|c| c.to_uppercase())
            .filter(|c| super::is_currency(c))
            .unwrap_or_else(|| company.currency.clone());
        let id = cx
            .existing
            .skus
            .get(&sku)
            .copied()
            .unwrap_or_else(|| uuid_of("products", &source_id));
        cx.products.insert(
            source_id,
            Product {
                id,
                company: company.clone(),
                currency: currency.clone(),
            },
        );
        rows.push(Row {
            id,
            cells: vec![
                ("company_id", Cell::Uuid(Some(company.id))),
                ("sku", Cell::Text(Some(sku))),
                ("name", Cell::Text(Some(name))),
                ("description", Cell::Text(text(r, "description")?)),
                ("category", Cell::Text(category)),
                ("unit_cost", Cell::Dec(unit_cost)),
                ("unit_price", Cell::Dec(unit_price)),
                ("currency", Cell::Text(Some(currency))),
                ("reorder_point", Cell::Int(reorder_point)),
                ("reorder_quantity", Cell::Int(reorder_quantity)),
                ("lead_time_days", Cell::Int(lead_time)),
                (
                    "is_active",
                    Cell::Bool(get::<bool>(r, "is_active")?.unwrap_or(true)),
                ),
            ],
        });
    }
    cx.push(
        "products",
        "products",
        generation,
        src.len(),
        tally,
        Rows::Table("products", rows),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Inventory: B items; A the latest snapshot per product and location.

async fn inventory(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    // `cost` is the unit cost carried over; `newer` counts the later snapshots of the same
    // product and location (0: the row is the one kept).
    let (source, generation, select, checksum) = if cx.snap.has("inventory_items", &["id"]) {
        let select = "SELECT id::text, 'org:' || organization_id AS company, product_id::text,
                             warehouse_id::text AS warehouse, location::text, batch_number::text,
                             quantity_on_hand::int4 AS on_hand, quantity_reserved::int4 AS reserved,
                             round(unit_cost, 2) AS cost, false AS in_base,
                             (last_counted AT TIME ZONE 'UTC') AS counted_at,
                             count(*) OVER (PARTITION BY product_id, warehouse_id, location)::int4 AS sharing,
                             0::int4 AS newer
                        FROM inventory_items";
        (
            "inventory_items",
            Generation::B,
            format!("{select} ORDER BY created_at, id"),
            format!("SELECT coalesce(sum(on_hand * cost), 0)::numeric FROM ({select}) s"),
        )
    } else if cx.snap.has("inventory_levels", &["snapshot_date"]) {
        // A snapshot valued in another currency than its base carries the base cost.
        let select = "SELECT id::text, 'entity:' || entity_id AS company, product_id::text,
                             location_id::text AS warehouse, NULL::text AS location,
                             NULL::text AS batch_number,
                             (available_quantity + coalesce(reserved_quantity, 0))::int4 AS on_hand,
                             coalesce(reserved_quantity, 0)::int4 AS reserved,
                             round(CASE WHEN currency_code_valuation <> currency_code_base
                                        THEN unit_cost_base ELSE unit_cost END, 2) AS cost,
                             coalesce(currency_code_valuation <> currency_code_base, false) AS in_base,
                             (last_count_date::timestamp AT TIME ZONE 'UTC') AS counted_at,
                             1::int4 AS sharing,
                             (row_number() OVER (PARTITION BY product_id, location_id
                                  ORDER BY snapshot_date DESC, updated_at DESC NULLS LAST, id) - 1)::int4 AS newer
                        FROM inventory_levels";
        (
            "inventory_levels",
            Generation::A,
            format!("{select} ORDER BY product_id, location_id, newer"),
            format!(
                "SELECT coalesce(sum(on_hand * cost), 0)::numeric FROM ({select}) s WHERE newer = 0"
            ),
        )
    } else {
        cx.missing("inventory_items");
        cx.missing("inventory_levels");
        return Ok(());
    };
    let src = cx.snap.rows(select).await?;
    let source_sum = cx.snap.sum(checksum).await?;
    let mut tally = Tally::default();
    let mut rows = Vec::new();
    let mut not_carried = Decimal::ZERO;
    for r in &src {
        if int(r, "newer")?.unwrap_or(0) > 0 {
            tally.skip("an older snapshot of the same product and location (the latest is kept)");
            continue;
        }
        let on_hand = int(r, "on_hand")?;
        let cost = dec(r, "cost")?;
        let value = match (on_hand, cost) {
            (Some(q), Some(c)) => Decimal::from(q) * c,
            _ => Decimal::ZERO,
        };
        let skip = |why: &str, tally: &mut Tally, not_carried: &mut Decimal| {
            tally.skip(why);
            *not_carried += value;
        };
        let Some(product) = text(r, "product_id")?.and_then(|p| cx.products.get(&p).cloned())
        else {
            skip("its product was not imported", &mut tally, &mut not_carried);
            continue;
        };
        let company = match text(r, "company")? {
            Some(k) => match cx.companies.get(&k) {
                Some(c) => c.clone(),
                None => {
                    skip(
                        "its organization or entity is not in the source, or was skipped",
                        &mut tally,
                        &mut not_carried,
                    );
                    continue;
                }
            },
            None => product.company.clone(),
        };
        let (Some(on_hand), Some(reserved)) = (on_hand, int(r, "reserved")?) else {
            skip("no quantity", &mut tally, &mut not_carried);
            continue;
        };
        if on_hand < 0 || reserved < 0 {
            skip("a negative quantity", &mut tally, &mut not_carried);
            continue;
        }
        if reserved > on_hand {
            skip("more reserved than on hand", &mut tally, &mut not_carried);
            continue;
        }
        let cost = match cost {
            Some(c) if c < Decimal::ZERO => {
                tally.note("negative unit cost dropped");
                not_carried += value;
                None
            }
            c => c,
        };
        if get::<bool>(r, "in_base")?.unwrap_or(false) {
            tally.note("valued in another currency: the base currency's unit cost");
        }
        let mut location = text(r, "warehouse")?.unwrap_or_default();
        if let Some(l) = text(r, "location")? {
            location = format!("{location}/{l}");
        }
        // Batches of the same product and place stay apart (our table has no batch).
        if int(r, "sharing")?.unwrap_or(1) > 1
            && let Some(b) = text(r, "batch_number")?
        {
            location = format!("{location} #{b}");
        }
        if !fits(&location, 100) {
            skip(
                "a warehouse location longer than 100 characters",
                &mut tally,
                &mut not_carried,
            );
            continue;
        }
        let source_id = text(r, "id")?.unwrap_or_default();
        let id = match generation {
            Generation::B => uuid_of("inventory_items", &source_id),
            Generation::A => derived(&["inventory_levels", &product.id.to_string(), &location]),
        };
        rows.push(Row {
            id,
            cells: vec![
                ("company_id", Cell::Uuid(Some(company.id))),
                ("product_id", Cell::Uuid(Some(product.id))),
                (
                    "warehouse_location",
                    Cell::Text(Some(location).filter(|l| !l.is_empty())),
                ),
                ("quantity_on_hand", Cell::Int(Some(on_hand))),
                ("quantity_reserved", Cell::Int(Some(reserved))),
                ("unit_cost", Cell::Dec(cost)),
                (
                    "last_counted_at",
                    Cell::Time(get::<DateTime<Utc>>(r, "counted_at")?),
                ),
            ],
        });
    }
    cx.plan.checksums.push(ChecksumPlan {
        name: "Σ inventory.total_value",
        table: "inventory",
        column: "total_value",
        source: source_sum,
        not_carried,
        ids: rows.iter().map(|r| r.id).collect(),
    });
    cx.push(
        "inventory",
        source,
        generation,
        src.len(),
        tally,
        Rows::Table("inventory", rows),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Sales: A historical_sales only. total_amount is gross_revenue (before discounts).

async fn sales(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    if !cx.snap.has("historical_sales", &["gross_revenue"]) {
        cx.missing("historical_sales");
        return Ok(());
    }
    let (channel, join) = if cx.snap.has("sales_channels", &["id"]) {
        let market = if cx.snap.has("markets", &["code"]) {
            "(SELECT m.currency_code::text FROM markets m WHERE m.code = sc.market_code)"
        } else {
            "NULL::text"
        };
        (
            format!(
                "sc.name::text AS channel_name, sc.channel_type::text AS channel_type, {market} AS market_currency"
            ),
            "LEFT JOIN sales_channels sc ON sc.id = hs.sales_channel_id",
        )
    } else {
        (
            "NULL::text AS channel_name, NULL::text AS channel_type, NULL::text AS market_currency"
                .to_owned(),
            "",
        )
    };
    let src = cx
        .snap
        .rows(format!(
            "SELECT hs.id::text, 'entity:' || hs.entity_id AS company, hs.product_id::text,
                    hs.sale_date, hs.quantity_sold::int4 AS quantity, hs.unit_price::numeric,
                    hs.gross_revenue::numeric, hs.order_id::text, hs.order_item_id::text,
                    hs.currency_code_tx::text AS currency, {channel}
               FROM historical_sales hs {join}
              ORDER BY hs.sale_date, hs.sale_datetime, hs.id"
        ))
        .await?;
    let source_sum = cx
        .snap
        .sum("SELECT coalesce(sum(gross_revenue), 0)::numeric FROM historical_sales".into())
        .await?;
    let mut tally = Tally::default();
    let mut rows = Vec::new();
    let mut not_carried = Decimal::ZERO;
    let mut seen: HashSet<String> = HashSet::new();
    for r in &src {
        let gross = dec(r, "gross_revenue")?.unwrap_or_default();
        let mut skip = |why: &str, tally: &mut Tally| {
            tally.skip(why);
            not_carried += gross;
        };
        let source_id = text(r, "id")?.unwrap_or_default();
        let Some(product) = text(r, "product_id")?.and_then(|p| cx.products.get(&p).cloned())
        else {
            skip("its product was not imported", &mut tally);
            continue;
        };
        let company = match cx.company(text(r, "company")?) {
            Ok(c) => c,
            Err(why) => {
                skip(why, &mut tally);
                continue;
            }
        };
        let Some(quantity) = int(r, "quantity")?.filter(|q| *q > 0) else {
            skip("quantity_sold is not positive", &mut tally);
            continue;
        };
        let Some(unit_price) = dec(r, "unit_price")?.and_then(money) else {
            skip("unit_price is negative or too large", &mut tally);
            continue;
        };
        let Some(total) = money(gross) else {
            skip("gross_revenue is negative or too large", &mut tally);
            continue;
        };
        let external_id = match (text(r, "order_id")?, text(r, "order_item_id")?) {
            (Some(o), Some(i)) => format!("{o}:{i}"),
            _ => format!("sentia:historical_sales:{source_id}"),
        };
        if !fits(&external_id, 255) {
            skip("an order id longer than 255 characters", &mut tally);
            continue;
        }
        if !seen.insert(external_id.clone()) {
            skip(
                "the same order line (order_id:order_item_id) as an earlier row",
                &mut tally,
            );
            continue;
        }
        let channel = match (text(r, "channel_name")?, text(r, "channel_type")?) {
            (Some(n), _) if fits(&n, 50) => Some(n),
            (_, Some(t)) => Some(cut(t.to_lowercase(), 50)),
            (Some(n), None) => {
                tally.note("channel name cut to 50 characters");
                Some(cut(n, 50))
            }
            (None, None) => None,
        };
        let currency = text(r, "currency")?
            .or(text(r, "market_currency")?)
            .map(|c| c.to_uppercase())
            .filter(|c| super::is_currency(c))
            .unwrap_or_else(|| product.currency.clone());
        rows.push(Row {
            id: uuid_of("historical_sales", &source_id),
            cells: vec![
                ("company_id", Cell::Uuid(Some(company.id))),
                ("product_id", Cell::Uuid(Some(product.id))),
                ("sale_date", Cell::Date(get::<NaiveDate>(r, "sale_date")?)),
                ("quantity", Cell::Int(Some(quantity))),
                ("unit_price", Cell::Dec(Some(unit_price))),
                ("total_amount", Cell::Dec(Some(total))),
                ("currency", Cell::Text(Some(currency))),
                ("channel", Cell::Text(channel)),
                ("external_id", Cell::Text(Some(external_id))),
            ],
        });
    }
    cx.plan.checksums.push(ChecksumPlan {
        name: "Σ sales.total_amount",
        table: "sales",
        column: "total_amount",
        source: source_sum,
        not_carried,
        ids: rows.iter().map(|r| r.id).collect(),
    });
    cx.push(
        "sales",
        "historical_sales",
        Generation::A,
        src.len(),
        tally,
        Rows::Table("sales", rows),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Forecasts: demand, revenue and cash_flow.

/// A forecast row being made.
struct Forecast {
    id: Uuid,
    company: Uuid,
    product: Option<Uuid>,
    date: Option<NaiveDate>,
    kind: &'static str,
    model_type: Option<String>,
    predicted: Option<Decimal>,
    lower: Option<Decimal>,
    upper: Option<Decimal>,
    confidence: Option<Decimal>,
    actual: Option<Decimal>,
    accuracy: Option<Decimal>,
    parameters: Value,
}

/// Our row, or why the forecast cannot be one. Swapped bounds are put right (noted); a
/// predicted value outside its bounds is refused, as our table refuses it.
fn forecast_row(f: Forecast, tally: &mut Tally) -> Option<Row> {
    let Some(predicted) = f.predicted.and_then(signed_money) else {
        tally.skip("no predicted value, or one too large");
        return None;
    };
    let Some(date) = f.date else {
        tally.skip("no forecast date");
        return None;
    };
    let (mut lower, mut upper) = (
        f.lower.and_then(signed_money),
        f.upper.and_then(signed_money),
    );
    if let (Some(l), Some(u)) = (lower, upper)
        && l > u
    {
        tally.note("lower and upper bounds swapped back");
        (lower, upper) = (Some(u), Some(l));
    }
    if lower.is_some_and(|l| l > predicted) || upper.is_some_and(|u| predicted > u) {
        tally.skip("the predicted value lies outside its bounds");
        return None;
    }
    let confidence = f.confidence.and_then(|c| percent(c, "confidence", tally));
    let accuracy = f.accuracy.and_then(|a| {
        let v = numeric(a * Decimal::ONE_HUNDRED, 5, 2);
        if v.is_none() {
            tally.note("accuracy out of range dropped");
        }
        v
    });
    let model_type = f.model_type.map(|m| cut(m.to_lowercase(), 50));
    Some(Row {
        id: f.id,
        cells: vec![
            ("company_id", Cell::Uuid(Some(f.company))),
            ("product_id", Cell::Uuid(f.product)),
            ("forecast_date", Cell::Date(Some(date))),
            ("forecast_type", Cell::Text(Some(f.kind.to_owned()))),
            ("model_type", Cell::Text(model_type)),
            ("predicted_value", Cell::Dec(Some(predicted))),
            ("lower_bound", Cell::Dec(lower)),
            ("upper_bound", Cell::Dec(upper)),
            ("confidence_level", Cell::Dec(confidence)),
            ("actual_value", Cell::Dec(f.actual.and_then(signed_money))),
            ("accuracy_percentage", Cell::Dec(accuracy)),
            ("model_parameters", Cell::Json(Some(f.parameters))),
        ],
    })
}

/// A 0–1 share as a percent (×100); a value above 1 is taken to be a percent already
/// (a heuristic, noted); one outside 0–100 is dropped.
fn percent(value: Decimal, what: &str, tally: &mut Tally) -> Option<Decimal> {
    let v = if value <= Decimal::ONE {
        value * Decimal::ONE_HUNDRED
    } else {
        tally.note(format!("{what} above 1 taken as a percent"));
        value
    };
    let v = v.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    if v < Decimal::ZERO || v > Decimal::ONE_HUNDRED {
        tally.note(format!("{what} outside 0–100 dropped"));
        return None;
    }
    Some(v)
}

async fn forecasts(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    if cx.snap.has("forecasts", &["predicted_demand"]) {
        let src = cx
            .snap
            .rows(
                "SELECT id::text, 'entity:' || entity_id AS company, product_id::text,
                        sales_channel_id::text, forecast_date, forecast_period::text,
                        forecast_horizon_days::int4, predicted_demand::numeric,
                        demand_lower_bound::numeric, demand_upper_bound::numeric,
                        confidence_score::numeric, predicted_revenue::numeric,
                        revenue_lower_bound::numeric, revenue_upper_bound::numeric,
                        seasonal_factor::numeric, trend_factor::numeric, promotional_factor::numeric,
                        model_type::text, model_version::text, model_accuracy_score::numeric,
                        status::text, is_approved, actual_demand::numeric, actual_revenue::numeric,
                        forecast_accuracy::numeric, series_id::text
                   FROM forecasts ORDER BY forecast_date, id"
                    .into(),
            )
            .await?;
        let mut demand = (Tally::default(), Vec::new());
        let mut revenue = (Tally::default(), Vec::new(), 0usize);
        for r in &src {
            let has_revenue = dec(r, "predicted_revenue")?.is_some();
            if has_revenue {
                revenue.2 += 1;
            }
            let product = text(r, "product_id")?.and_then(|p| cx.products.get(&p).cloned());
            let company = cx.company(text(r, "company")?);
            let (product, company) = match (product, company) {
                (Some(p), Ok(c)) => (p, c),
                (None, _) | (_, Err(_)) => {
                    let why = "its product or company was not imported";
                    demand.0.skip(why);
                    if has_revenue {
                        revenue.0.skip(why);
                    }
                    continue;
                }
            };
            let source_id = text(r, "id")?.unwrap_or_default();
            let parameters = json!({
                "source": "sentia.forecasts", "sales_channel_id": text(r, "sales_channel_id")?,
                "period": text(r, "forecast_period")?, "horizon_days": int(r, "forecast_horizon_days")?,
                "seasonal_factor": dec(r, "seasonal_factor")?, "trend_factor": dec(r, "trend_factor")?,
                "promotional_factor": dec(r, "promotional_factor")?,
                "model_version": text(r, "model_version")?,
                "model_accuracy_score": dec(r, "model_accuracy_score")?,
                "status": text(r, "status")?, "is_approved": get::<bool>(r, "is_approved")?,
                "series_id": text(r, "series_id")?,
            });
            let base = |kind: &'static str, predicted, lower, upper, actual| Forecast {
                id: derived(&["forecasts", &source_id, kind]),
                company: company.id,
                product: Some(product.id),
                date: None,
                kind,
                model_type: None,
                predicted,
                lower,
                upper,
                confidence: None,
                actual,
                accuracy: None,
                parameters: parameters.clone(),
            };
            let date = get::<NaiveDate>(r, "forecast_date")?;
            let confidence = dec(r, "confidence_score")?;
            let model_type = text(r, "model_type")?;
            let mut f = base(
                "demand",
                dec(r, "predicted_demand")?,
                dec(r, "demand_lower_bound")?,
                dec(r, "demand_upper_bound")?,
                dec(r, "actual_demand")?,
            );
            f.date = date;
            f.confidence = confidence;
            f.model_type = model_type.clone();
            f.accuracy = dec(r, "forecast_accuracy")?;
            if let Some(row) = forecast_row(f, &mut demand.0) {
                demand.1.push(row);
            }
            if has_revenue {
                let mut f = base(
                    "revenue",
                    dec(r, "predicted_revenue")?,
                    dec(r, "revenue_lower_bound")?,
                    dec(r, "revenue_upper_bound")?,
                    dec(r, "actual_revenue")?,
                );
                f.date = date;
                f.confidence = confidence;
                f.model_type = model_type;
                if let Some(row) = forecast_row(f, &mut revenue.0) {
                    revenue.1.push(row);
                }
            }
        }
        let read = src.len();
        cx.push(
            "forecasts",
            "forecasts: demand",
            Generation::A,
            read,
            demand.0,
            Rows::Table("forecasts", demand.1),
        );
        cx.push(
            "forecasts",
            "forecasts: revenue",
            Generation::A,
            revenue.2,
            revenue.0,
            Rows::Table("forecasts", revenue.1),
        );
    } else if cx.snap.has("demand_forecasts", &["forecasted_demand"]) {
        let src = cx
            .snap
            .rows(
                "SELECT id::text, product_id::text, (forecast_date AT TIME ZONE 'UTC')::date AS forecast_date,
                        period::text, horizon::int4, baseline_demand::int4,
                        seasonal_factor::numeric, trend_factor::numeric,
                        forecasted_demand::numeric, lower_bound::numeric, upper_bound::numeric,
                        confidence::numeric, model_type::text, model_version::text,
                        accuracy::numeric, ai_adjustment::numeric, ai_rationale::text,
                        (expires_at AT TIME ZONE 'UTC') AS expires_at
                   FROM demand_forecasts ORDER BY forecast_date, id"
                    .into(),
            )
            .await?;
        let mut tally = Tally::default();
        let mut rows = Vec::new();
        for r in &src {
            let Some(product) = text(r, "product_id")?.and_then(|p| cx.products.get(&p).cloned())
            else {
                tally.skip("its product was not imported");
                continue;
            };
            let source_id = text(r, "id")?.unwrap_or_default();
            let f = Forecast {
                id: uuid_of("demand_forecasts", &source_id),
                company: product.company.id,
                product: Some(product.id),
                date: get::<NaiveDate>(r, "forecast_date")?,
                kind: "demand",
                model_type: text(r, "model_type")?,
                predicted: dec(r, "forecasted_demand")?,
                lower: dec(r, "lower_bound")?,
                upper: dec(r, "upper_bound")?,
                confidence: dec(r, "confidence")?,
                actual: None,
                accuracy: None,
                parameters: json!({
                    "source": "sentia.demand_forecasts", "period": text(r, "period")?,
                    "horizon": int(r, "horizon")?, "baseline_demand": int(r, "baseline_demand")?,
                    "seasonal_factor": dec(r, "seasonal_factor")?, "trend_factor": dec(r, "trend_factor")?,
                    "model_version": text(r, "model_version")?, "accuracy": dec(r, "accuracy")?,
                    "ai_adjustment": dec(r, "ai_adjustment")?, "ai_rationale": text(r, "ai_rationale")?,
                    "expires_at": get::<DateTime<Utc>>(r, "expires_at")?,
                }),
            };
            if let Some(row) = forecast_row(f, &mut tally) {
                rows.push(row);
            }
        }
        cx.push(
            "forecasts",
            "demand_forecasts",
            Generation::B,
            src.len(),
            tally,
            Rows::Table("forecasts", rows),
        );
    } else {
        cx.missing("forecasts");
        cx.missing("demand_forecasts");
    }

    // Cash flow: B cash_flow_forecasts (closing balance), A wc_projections (ending cash).
    let (source, generation, sql) = if cx.snap.has("cash_flow_forecasts", &["closing_balance"]) {
        (
            "cash_flow_forecasts",
            Generation::B,
            "SELECT c.id::text, 'org:' || w.organization_id AS company,
                    (c.forecast_date AT TIME ZONE 'UTC')::date AS forecast_date,
                    c.closing_balance::numeric AS predicted, c.confidence::numeric,
                    NULL::text AS model, jsonb_build_object(
                      'source', 'sentia.cash_flow_forecasts', 'model_version', c.model_version,
                      'working_capital_id', c.working_capital_id,
                      'horizon', c.horizon, 'opening_balance', c.opening_balance,
                      'cash_inflows', c.cash_inflows, 'cash_outflows', c.cash_outflows,
                      'sales_receipts', c.sales_receipts, 'supplier_payments', c.supplier_payments,
                      'payroll_expenses', c.payroll_expenses, 'overhead_expenses', c.overhead_expenses,
                      'capital_expenses', c.capital_expenses, 'cash_runway', c.cash_runway,
                      'burn_rate', c.burn_rate, 'assumptions', c.assumptions::jsonb) AS parameters
               FROM cash_flow_forecasts c LEFT JOIN working_capital w ON w.id = c.working_capital_id
              ORDER BY c.forecast_date, c.id",
        )
    } else if cx.snap.has("wc_projections", &["ending_cash"]) {
        (
            "wc_projections",
            Generation::A,
            "SELECT id::text, NULL::text AS company, month AS forecast_date,
                    ending_cash::numeric AS predicted, NULL::numeric AS confidence,
                    NULL::text AS model, jsonb_build_object(
                      'source', 'sentia.wc_projections', 'run_id', run_id, 'scenario', scenario,
                      'cash_in', cash_in, 'cash_out', cash_out, 'net_change', net_change,
                      'currency_code', currency_code) AS parameters
               FROM wc_projections ORDER BY month, id",
        )
    } else {
        cx.missing("cash_flow_forecasts");
        cx.missing("wc_projections");
        return Ok(());
    };
    let src = cx.snap.rows(sql.into()).await?;
    let mut tally = Tally::default();
    let mut rows = Vec::new();
    for r in &src {
        let company = match cx.company(text(r, "company")?) {
            Ok(c) => c,
            Err(why) => {
                tally.skip(why);
                continue;
            }
        };
        let source_id = text(r, "id")?.unwrap_or_default();
        let f = Forecast {
            id: uuid_of(source, &source_id),
            company: company.id,
            product: None,
            date: get::<NaiveDate>(r, "forecast_date")?,
            kind: "cash_flow",
            model_type: text(r, "model")?,
            predicted: dec(r, "predicted")?,
            lower: None,
            upper: None,
            confidence: dec(r, "confidence")?,
            actual: None,
            accuracy: None,
            parameters: get::<Value>(r, "parameters")?.unwrap_or(Value::Null),
        };
        if let Some(row) = forecast_row(f, &mut tally) {
            rows.push(row);
        }
    }
    cx.push(
        "forecasts",
        source,
        generation,
        src.len(),
        tally,
        Rows::Table("forecasts", rows),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Working-capital metrics.

/// A period's type from its length in days.
fn period_type(days: i64) -> Option<&'static str> {
    match days {
        27..=31 => Some("monthly"),
        88..=92 => Some("quarterly"),
        364..=366 => Some("annual"),
        _ => None,
    }
}

async fn metrics(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    let Some(generation) = cx.snap.generation("working_capital") else {
        cx.missing("working_capital");
        return Ok(());
    };
    let sql = match generation {
        Generation::A => "SELECT id::text, 'entity:' || entity_id AS company, projection_date AS period_date,
                    lower(projection_period) AS period, NULL::int4 AS days,
                    product_id IS NOT NULL OR market_code IS NOT NULL OR sales_channel_id IS NOT NULL AS breakdown,
                    lower(coalesce(scenario_type, 'actual')) AS scenario,
                    currency_code::text AS currency, currency_code_base::text AS base_currency,
                    fx_rate_to_base::numeric AS fx_rate,
                    accounts_receivable::numeric AS ar, inventory_value::numeric AS inventory,
                    accounts_payable::numeric AS ap, working_capital_requirement::numeric AS wc,
                    NULL::numeric AS current_ratio, NULL::numeric AS quick_ratio,
                    days_sales_outstanding::numeric AS dso, days_inventory_outstanding::numeric AS dio,
                    days_payable_outstanding::numeric AS dpo, cash_conversion_cycle_days::numeric AS ccc,
                    actual_sales_revenue::numeric AS revenue, cost_of_goods_sold::numeric AS cogs,
                    NULL::int4 AS runway
               FROM working_capital ORDER BY projection_date, updated_at DESC NULLS LAST, id"
            .to_owned(),
        Generation::B => {
            let runway = if cx.snap.has("cash_flow_forecasts", &["cash_runway"]) {
                "(SELECT c.cash_runway FROM cash_flow_forecasts c WHERE c.working_capital_id = w.id
                   ORDER BY c.forecast_date DESC, c.id DESC LIMIT 1)::int4"
            } else {
                "NULL::int4"
            };
            format!(
                "SELECT w.id::text, 'org:' || w.organization_id AS company,
                        (w.period_end AT TIME ZONE 'UTC')::date AS period_date, NULL::text AS period,
                        ((w.period_end AT TIME ZONE 'UTC')::date - (w.period_start AT TIME ZONE 'UTC')::date + 1)::int4 AS days,
                        false AS breakdown, 'actual' AS scenario, NULL::text AS currency,
                        NULL::text AS base_currency, NULL::numeric AS fx_rate,
                        w.accounts_receivable::numeric AS ar, w.inventory::numeric AS inventory,
                        w.accounts_payable::numeric AS ap, w.working_capital::numeric AS wc,
                        w.current_ratio::numeric, w.quick_ratio::numeric, w.dso::numeric, w.dio::numeric,
                        w.dpo::numeric, w.ccc::numeric, w.revenue::numeric, w.cogs::numeric,
                        {runway} AS runway
                   FROM working_capital w ORDER BY w.period_end, w.updated_at DESC, w.id"
            )
        }
    };
    let src = cx.snap.rows(sql).await?;
    let mut tally = Tally::default();
    let mut rows = Vec::new();
    let mut periods: HashSet<(Uuid, &'static str, NaiveDate)> = HashSet::new();
    for r in &src {
        if get::<bool>(r, "breakdown")?.unwrap_or(false) {
            tally.skip("a breakdown by product, market or channel (not a company total)");
            continue;
        }
        let scenario = text(r, "scenario")?.unwrap_or_default();
        if scenario != "actual" {
            tally.skip(format!(
                "a projection (scenario_type {scenario}), not an actual"
            ));
            continue;
        }
        let company = match cx.company(text(r, "company")?) {
            Ok(c) => c,
            Err(why) => {
                tally.skip(why);
                continue;
            }
        };
        let Some(period_date) = get::<NaiveDate>(r, "period_date")? else {
            tally.skip("no period date");
            continue;
        };
        let period = match (text(r, "period")?, int(r, "days")?) {
            (Some(p), _) => match p.as_str() {
                "month" | "monthly" => Some("monthly"),
                "quarter" | "quarterly" => Some("quarterly"),
                "year" | "yearly" | "annual" | "annually" => Some("annual"),
                _ => None,
            },
            (None, Some(days)) => period_type(i64::from(days)),
            (None, None) => None,
        };
        let Some(period) = period else {
            tally.skip("a period that is neither a month, a quarter nor a year");
            continue;
        };
        // Amounts in another currency are converted with the row's own rate to its base,
        // when that base is the company's currency.
        let mut rate = Decimal::ONE;
        if let Some(cur) = text(r, "currency")?
            && cur != company.currency
        {
            match (dec(r, "fx_rate")?, text(r, "base_currency")?) {
                (Some(fx), Some(base)) if base == company.currency && fx > Decimal::ZERO => {
                    rate = fx;
                    tally.note("converted to the company's currency with fx_rate_to_base");
                }
                _ => {
                    tally.skip("in another currency than the company's, with no rate to it");
                    continue;
                }
            }
        }
        if !periods.insert((company.id, period, period_date)) {
            tally.skip("the same company and period as a newer row");
            continue;
        }
        let mut balance = |column: &str| -> Result<Option<Decimal>, SentiaError> {
            Ok(dec(r, column)?.and_then(|v| {
                let m = money(v * rate);
                if m.is_none() {
                    tally.note(format!("negative or too large {column} dropped"));
                }
                m
            }))
        };
        let ar = balance("ar")?;
        let inventory = balance("inventory")?;
        let ap = balance("ap")?;
        let revenue = balance("revenue")?;
        let cogs = balance("cogs")?;
        let mut num = |column: &str, p, s| -> Result<Option<Decimal>, SentiaError> {
            Ok(dec(r, column)?.and_then(|v| {
                let m = numeric(v, p, s);
                if m.is_none() {
                    tally.note(format!("{column} too large, dropped"));
                }
                m
            }))
        };
        let cells = vec![
            ("company_id", Cell::Uuid(Some(company.id))),
            ("period_date", Cell::Date(Some(period_date))),
            ("period_type", Cell::Text(Some(period.to_owned()))),
            ("accounts_receivable", Cell::Dec(ar)),
            ("inventory", Cell::Dec(inventory)),
            ("accounts_payable", Cell::Dec(ap)),
            (
                "working_capital",
                Cell::Dec(dec(r, "wc")?.and_then(|v| signed_money(v * rate))),
            ),
            ("current_ratio", Cell::Dec(num("current_ratio", 10, 4)?)),
            ("quick_ratio", Cell::Dec(num("quick_ratio", 10, 4)?)),
            ("days_sales_outstanding", Cell::Dec(num("dso", 10, 2)?)),
            ("days_inventory_outstanding", Cell::Dec(num("dio", 10, 2)?)),
            ("days_payables_outstanding", Cell::Dec(num("dpo", 10, 2)?)),
            ("cash_conversion_cycle", Cell::Dec(num("ccc", 10, 2)?)),
            (
                "cash_runway_days",
                Cell::Int(int(r, "runway")?.filter(|d| *d >= 0)),
            ),
            ("revenue", Cell::Dec(revenue)),
            ("cost_of_goods_sold", Cell::Dec(cogs)),
        ];
        let source_id = text(r, "id")?.unwrap_or_default();
        rows.push(Row {
            id: uuid_of("working_capital", &source_id),
            cells,
        });
    }
    cx.push(
        "working_capital_metrics",
        "working_capital",
        generation,
        src.len(),
        tally,
        Rows::Table("working_capital_metrics", rows),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Scenarios.

async fn scenarios(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    let (source, generation, sql) = if cx.snap.has("what_if_scenarios", &["id"]) {
        (
            "what_if_scenarios",
            Generation::B,
            "SELECT s.id::text, 'org:' || w.organization_id AS company, s.name::text,
                    s.description::text, lower(s.type) AS scenario_type, s.is_active,
                    NULL::text AS created_by,
                    jsonb_build_object('revenue_change_pct', s.revenue_change,
                      'cogs_change_pct', s.cogs_change, 'dso_change', s.dso_change,
                      'dio_change', s.dio_change, 'dpo_change', s.dpo_change,
                      'working_capital_id', s.working_capital_id) AS parameters,
                    jsonb_build_object('projected_revenue', s.projected_revenue,
                      'projected_cogs', s.projected_cogs, 'projected_wc', s.projected_wc,
                      'projected_ccc', s.projected_ccc, 'impact', s.impact) AS results
               FROM what_if_scenarios s LEFT JOIN working_capital w ON w.id = s.working_capital_id
              ORDER BY s.created_at, s.id"
                .to_owned(),
        )
    } else if cx.snap.has("wc_scenarios", &["id"]) {
        let results = if cx.snap.has("wc_projections", &["run_id"]) {
            "(SELECT jsonb_build_object('projections', jsonb_agg(jsonb_build_object(
                  'month', p.month, 'scenario', p.scenario, 'cash_in', p.cash_in,
                  'cash_out', p.cash_out, 'net_change', p.net_change, 'ending_cash', p.ending_cash,
                  'currency_code', p.currency_code) ORDER BY p.month, p.scenario))
                FROM wc_projections p WHERE p.run_id = s.run_id HAVING count(*) > 0)"
        } else {
            "NULL::jsonb"
        };
        (
            "wc_scenarios",
            Generation::A,
            format!(
                "SELECT s.id::text, NULL::text AS company, s.name::text, s.description::text,
                        s.scenario_type::text, true AS is_active, s.created_by::text,
                        CASE WHEN jsonb_typeof(s.parameters::jsonb) = 'object' THEN s.parameters::jsonb
                             ELSE jsonb_build_object('value', s.parameters::jsonb) END
                          || jsonb_build_object('status', s.status, 'run_id', s.run_id) AS parameters,
                        {results} AS results
                   FROM wc_scenarios s ORDER BY s.created_at, s.id"
            ),
        )
    } else {
        cx.missing("what_if_scenarios");
        cx.missing("wc_scenarios");
        return Ok(());
    };
    let src = cx.snap.rows(sql).await?;
    let mut tally = Tally::default();
    let mut rows = Vec::new();
    for r in &src {
        if !get::<bool>(r, "is_active")?.unwrap_or(true) {
            tally.skip("inactive in Sentia");
            continue;
        }
        let company = match cx.company(text(r, "company")?) {
            Ok(c) => c,
            Err(why) => {
                tally.skip(why);
                continue;
            }
        };
        let Some(name) = text(r, "name")?.filter(|n| fits(n, 255)) else {
            tally.skip("no name, or one longer than 255 characters");
            continue;
        };
        let scenario_type = text(r, "scenario_type")?.map(|t| cut(t, 50));
        let is_baseline = scenario_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("baseline"));
        let source_id = text(r, "id")?.unwrap_or_default();
        rows.push(Row {
            id: uuid_of(source, &source_id),
            cells: vec![
                ("company_id", Cell::Uuid(Some(company.id))),
                ("name", Cell::Text(Some(name))),
                ("description", Cell::Text(text(r, "description")?)),
                ("scenario_type", Cell::Text(scenario_type)),
                (
                    "parameters",
                    Cell::Json(Some(get::<Value>(r, "parameters")?.unwrap_or(json!({})))),
                ),
                ("results", Cell::Json(get::<Value>(r, "results")?)),
                ("is_baseline", Cell::Bool(is_baseline)),
                (
                    "created_by_user_id",
                    Cell::Text(text(r, "created_by")?.and_then(|u| cx.clerk_ids.get(&u).cloned())),
                ),
            ],
        });
    }
    cx.push(
        "scenarios",
        source,
        generation,
        src.len(),
        tally,
        Rows::Table("scenarios", rows),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Integration credentials: A "ApiKey", one credential per service.

/// Our service name: lower case, `[a-z0-9_-]`, at most 50 characters.
fn service_name(service: &str) -> Option<String> {
    let s: String = service
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_owned();
    (!s.is_empty() && fits(&s, 50)).then_some(s)
}

async fn credentials(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    if !cx.snap.has("ApiKey", &["service", "keyName", "value"]) {
        cx.missing("ApiKey");
        return Ok(());
    }
    let src = cx
        .snap
        .rows(
            r#"SELECT id, "organizationId" AS organization, service, "keyName" AS key_name, value,
                      "encryptedData" IS NOT NULL AS sealed, "isActive" AS is_active
                 FROM "ApiKey" ORDER BY service, "keyName", "createdAt", id"#
                .into(),
        )
        .await?;
    let mut tally = Tally::default();
    // service → (display name, keyName → value), in source order.
    let mut services: BTreeMap<String, (String, serde_json::Map<String, Value>)> = BTreeMap::new();
    for r in &src {
        if !get::<bool>(r, "is_active")?.unwrap_or(true) {
            tally.skip("inactive in Sentia");
            continue;
        }
        let Some(display) = text(r, "service")? else {
            tally.skip("no service");
            continue;
        };
        let Some(service) = service_name(&display) else {
            tally.skip("a service name that is not 1–50 of [a-z0-9_-]");
            continue;
        };
        let Some(key) = text(r, "key_name")? else {
            tally.skip("no keyName");
            continue;
        };
        // Never trimmed or inspected beyond presence: a secret is copied as it is.
        let Some(value) = get::<String>(r, "value")?.filter(|v| !v.is_empty()) else {
            if get::<bool>(r, "sealed")?.unwrap_or(false) {
                tally.skip(
                    "only encryptedData, sealed under a key Sentia did not keep: re-enter it",
                );
            } else {
                tally.skip("no value");
            }
            continue;
        };
        match text(r, "organization")?.as_deref() {
            Some("default") | None => {
                tally.note("organizationId 'default' (a placeholder): the first company")
            }
            Some(_) => tally.note("organizationId names no company of ours: the first company"),
        }
        let entry = services
            .entry(service)
            .or_insert_with(|| (display.clone(), serde_json::Map::new()));
        if entry.1.contains_key(&key) {
            tally.skip("the same service and keyName as an earlier key");
            continue;
        }
        entry.1.insert(key, Value::String(value));
    }
    let Some(company) = cx.default_company.clone() else {
        return Ok(());
    };
    let mut out = Vec::new();
    for (service, (display, keys)) in services {
        let n = keys.len();
        if n > 1 {
            for _ in 0..n {
                tally.note(format!("grouped with the other keys of {service}"));
            }
        }
        let id = cx
            .existing
            .credentials
            .get(&(company.id, service.clone()))
            .copied()
            .unwrap_or_else(|| derived(&["ApiKey", &company.id.to_string(), &service]));
        out.push(Credential {
            id,
            company_id: company.id,
            service,
            display_name: cut(display, 255),
            secrets: Secrets {
                credentials: Value::Object(keys),
                oauth_access_token: None,
                oauth_refresh_token: None,
            },
        });
    }
    cx.push(
        "api_credentials",
        "ApiKey",
        Generation::A,
        src.len(),
        tally,
        Rows::Credentials(out),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Users → memberships (public.users).

/// Our role for a Sentia role (SENTIA-SOURCE.md §3.1). Nobody becomes owner here.
fn role_of(role: &str, is_admin: bool) -> Role {
    match role.trim().to_lowercase().as_str() {
        _ if is_admin => Role::Admin,
        "admin" | "master_admin" => Role::Admin,
        "manager" | "operator" | "analyst" => Role::Member,
        _ => Role::Viewer,
    }
}

async fn members(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    let Some(generation) = cx.snap.generation("users") else {
        cx.missing("users");
        return Ok(());
    };
    // A user's preferences: their `preferences` object with the per-user settings beside it.
    let (is_admin, preferences) = match generation {
        Generation::A => (
            "is_admin",
            "jsonb_build_object('currency', preferred_currency_code, 'locale', preferred_locale,
                                'timezone', preferred_timezone)",
        ),
        Generation::B => (
            "false",
            "jsonb_build_object('dashboard_layout', dashboard_layout::jsonb, 'timezone', timezone,
                                'locale', locale, 'currency', currency)",
        ),
    };
    // Only these columns: password hashes, tokens and 2FA secrets are never read.
    let src = cx
        .snap
        .rows(format!(
            "SELECT id::text, email::text, display_name::text, first_name::text, last_name::text,
                    role::text, {is_admin} AS is_admin, is_active, deleted_at IS NOT NULL AS deleted,
                    CASE WHEN jsonb_typeof(preferences::jsonb) = 'object' THEN preferences::jsonb
                         ELSE '{{}}'::jsonb END || jsonb_strip_nulls({preferences}) AS preferences
               FROM users ORDER BY created_at, id"
        ))
        .await?;
    let mut preferences = (Tally::default(), Vec::new(), 0usize);
    let links: HashMap<String, &str> = cx
        .options
        .users
        .iter()
        .map(|l| (l.email.trim().to_lowercase(), l.clerk_user_id.as_str()))
        .collect();
    let owner = cx.options.owner.as_ref().map(|o| o.trim().to_lowercase());
    let mut tally = Tally::default();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for r in &src {
        let Some(email) = text(r, "email")? else {
            tally.skip("no email");
            continue;
        };
        let key = email.to_lowercase();
        if get::<bool>(r, "deleted")?.unwrap_or(false) {
            tally.skip("deleted in Sentia");
            continue;
        }
        if !get::<bool>(r, "is_active")?.unwrap_or(true) {
            tally.skip("inactive in Sentia");
            continue;
        }
        if !seen.insert(key.clone()) {
            tally.skip("the same email as an earlier user");
            continue;
        }
        let full_name = text(r, "display_name")?
            .or_else(|| {
                let parts: Vec<String> = [text(r, "first_name"), text(r, "last_name")]
                    .into_iter()
                    .filter_map(|p| p.ok().flatten())
                    .collect();
                (!parts.is_empty()).then(|| parts.join(" "))
            })
            .map(|n| cut(n, 255));
        let mut role = role_of(
            &text(r, "role")?.unwrap_or_default(),
            get::<bool>(r, "is_admin")?.unwrap_or(false),
        );
        if owner.as_deref() == Some(key.as_str()) {
            role = Role::Owner;
        }
        let member = match cx.existing.members.get(&key) {
            Some(m) if m.tenant_id != cx.tenant.id => {
                tally.skip("a member of another tenant (an account belongs to one tenant)");
                continue;
            }
            Some(m) if m.removed => {
                tally.skip("removed from this tenant in CapLiquify");
                continue;
            }
            Some(m) => {
                if m.role == Role::Owner {
                    role = Role::Owner;
                }
                // Clerk owns the profile of an account that exists: only the role is ours.
                Member {
                    clerk_user_id: m.clerk_user_id.clone(),
                    email: m.email.clone(),
                    full_name: None,
                    role,
                    existing: Some((m.id, m.role)),
                }
            }
            None => match links.get(&key) {
                Some(clerk) => {
                    if cx
                        .existing
                        .clerk_tenants
                        .get(*clerk)
                        .is_some_and(|t| *t != cx.tenant.id)
                    {
                        tally.skip("a member of another tenant (an account belongs to one tenant)");
                        continue;
                    }
                    Member {
                        clerk_user_id: (*clerk).to_owned(),
                        email: cut(email, 255),
                        full_name,
                        role,
                        existing: None,
                    }
                }
                None => {
                    tally.skip(
                        "no Clerk account known: invite them in Clerk, or list them in --users",
                    );
                    continue;
                }
            },
        };
        if let Some(id) = text(r, "id")? {
            cx.clerk_ids.insert(id, member.clerk_user_id.clone());
        }
        if let Some(p) = get::<Value>(r, "preferences")?.filter(|p| p != &json!({})) {
            preferences.2 += 1;
            let clerk = &member.clerk_user_id;
            let ours = derived(&["user_preferences", clerk]);
            match cx.existing.preferences.get(clerk) {
                // Preferences set in CapLiquify are the member's newer choice.
                Some(id) if *id != ours => preferences
                    .0
                    .skip("the member has preferences in CapLiquify already (kept)"),
                _ => preferences.1.push(Row {
                    id: ours,
                    cells: vec![
                        ("user_id", Cell::Text(Some(clerk.clone()))),
                        ("preferences", Cell::Json(Some(p))),
                    ],
                }),
            }
        }
        out.push(member);
    }
    if let Some(o) = &owner
        && !out.iter().any(|m| m.email.to_lowercase() == *o)
    {
        return Err(SentiaError::Option(format!(
            "--owner {o}: no Sentia user with that email is imported (they need a Clerk account: \
             a member of this tenant already, or a line in --users)"
        )));
    }
    cx.push(
        "members",
        "users",
        generation,
        src.len(),
        tally,
        Rows::Members(out),
    );
    cx.push(
        "user_preferences",
        "users: preferences",
        generation,
        preferences.2,
        preferences.0,
        Rows::Table("user_preferences", preferences.1),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
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
