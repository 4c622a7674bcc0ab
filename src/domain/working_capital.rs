//! Working-capital metrics of one period, computed from the tenant's rows.
//!
//! Revenue and cost of goods sold come from the period's sales, inventory from the stock
//! on hand; the balances the tables cannot give (cash, receivables, payables, short-term
//! debt) come from the caller or are carried forward from the latest stored period. The
//! formulas are in `docs/domain.md`. A figure whose denominator is zero is `None` with a
//! reason, never a made-up default.

use std::collections::BTreeMap;

use chrono::{Datelike, Months, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// How long a period is. A period is named by its last day, which must end a month: a
/// quarter or a year is the three or twelve months ending there, so fiscal quarters and
/// years that do not follow the calendar work the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeriodType {
    Monthly,
    Quarterly,
    Annual,
}

impl PeriodType {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "monthly" => Some(Self::Monthly),
            "quarterly" => Some(Self::Quarterly),
            "annual" => Some(Self::Annual),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Monthly => "monthly",
            Self::Quarterly => "quarterly",
            Self::Annual => "annual",
        }
    }

    fn months(self) -> u32 {
        match self {
            Self::Monthly => 1,
            Self::Quarterly => 3,
            Self::Annual => 12,
        }
    }
}

/// A period of whole months, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Period {
    #[serde(rename = "period_type")]
    pub kind: PeriodType,
    pub start: NaiveDate,
    pub end: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("period_date must be the last day of a month (e.g. 2026-03-31), not {0}")]
    NotMonthEnd(NaiveDate),
}

impl Period {
    /// The period of `kind` whose last day is `end`.
    pub fn ending(kind: PeriodType, end: NaiveDate) -> Result<Self, PeriodError> {
        let is_month_end = end.succ_opt().is_none_or(|next| next.day() == 1);
        let first_of_month = end.with_day(1);
        let start = first_of_month
            .filter(|_| is_month_end)
            .and_then(|d| d.checked_sub_months(Months::new(kind.months() - 1)))
            .ok_or(PeriodError::NotMonthEnd(end))?;
        Ok(Self { kind, start, end })
    }

    /// The period's real number of days (28 to 366), never a conventional 30 or 365.
    pub fn days(&self) -> i64 {
        (self.end - self.start).num_days() + 1
    }
}

/// What one period's metrics are computed from.
#[derive(Debug, Clone)]
pub struct MetricInputs {
    pub period: Period,
    /// Σ sales.total_amount in the period.
    pub revenue: Decimal,
    /// Σ sales.quantity × products.unit_cost in the period.
    pub cogs: Decimal,
    /// Σ inventory.total_value.
    pub inventory: Decimal,
    pub cash: Decimal,
    pub accounts_receivable: Decimal,
    pub accounts_payable: Decimal,
    pub short_term_debt: Decimal,
    /// Cash at the company's earlier stored periods of the same type, newest first (the
    /// runway uses at most three).
    pub earlier_cash: Vec<(NaiveDate, Decimal)>,
}

/// The computed figures of a period. A `None` figure has its reason in `unavailable`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub current_assets: Decimal,
    pub current_liabilities: Decimal,
    pub working_capital: Decimal,
    pub current_ratio: Option<Decimal>,
    pub quick_ratio: Option<Decimal>,
    pub days_sales_outstanding: Option<Decimal>,
    pub days_inventory_outstanding: Option<Decimal>,
    pub days_payables_outstanding: Option<Decimal>,
    pub cash_conversion_cycle: Option<Decimal>,
    /// Average fall of cash per month over the last (up to) three stored periods; negative
    /// when cash grew.
    pub monthly_cash_burn: Option<Decimal>,
    pub cash_runway_days: Option<i32>,
    /// Figure name → why it could not be computed.
    pub unavailable: BTreeMap<&'static str, String>,
}

/// Largest absolute values the metric columns hold: numeric(15,2), (10,4), (10,2).
const MONEY_LIMIT: i64 = 10_000_000_000_000;
const RATIO_LIMIT: i64 = 1_000_000;
const DAYS_LIMIT: i64 = 100_000_000;

/// A stored figure is rounded half away from zero to its column's scale.
fn round(value: Decimal, scale: u32) -> Decimal {
    value.round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero)
}

/// A figure that does not fit in its column is reported unavailable rather than clipped.
fn fit(value: Decimal, scale: u32, limit: i64) -> Result<Decimal, String> {
    let value = round(value, scale);
    if value.abs() < Decimal::from(limit) {
        Ok(value)
    } else {
        Err(format!("{value} is too large to store"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct MetricsError {
    pub field: &'static str,
    pub message: String,
}

/// Computes the period's metrics. Fails only when a money figure (working capital, current
/// assets or liabilities) exceeds what the columns hold; ratios and days that cannot be
/// computed are `None` with a reason.
pub fn compute(inputs: &MetricInputs) -> Result<Metrics, MetricsError> {
    let days = Decimal::from(inputs.period.days());
    let current_assets = inputs.cash + inputs.accounts_receivable + inputs.inventory;
    let current_liabilities = inputs.accounts_payable + inputs.short_term_debt;
    let working_capital = current_assets - current_liabilities;
    for (field, value) in [
        ("working_capital", working_capital),
        ("current_assets", current_assets),
        ("current_liabilities", current_liabilities),
    ] {
        if value.abs() >= Decimal::from(MONEY_LIMIT) {
            return Err(MetricsError {
                field,
                message: format!("{field} ({value}) is too large to store"),
            });
        }
    }
    let mut unavailable = BTreeMap::new();
    let mut figure = |name: &'static str, value: Result<Decimal, String>| match value {
        Ok(v) => Some(v),
        Err(reason) => {
            unavailable.insert(name, reason);
            None
        }
    };
    let ratio = |numerator: Decimal| {
        if current_liabilities.is_zero() {
            Err("current liabilities (accounts payable + short-term debt) are zero".to_owned())
        } else {
            fit(numerator / current_liabilities, 4, RATIO_LIMIT)
        }
    };
    let current_ratio = figure("current_ratio", ratio(current_assets));
    let quick_ratio = figure("quick_ratio", ratio(current_assets - inputs.inventory));
    // Multiply before dividing: AR × days / revenue keeps the precision a quotient would lose.
    let days_of = |balance: Decimal, flow: Decimal, flow_name: &str| {
        if flow.is_zero() {
            Err(format!("{flow_name} in the period is zero"))
        } else {
            fit(balance * days / flow, 2, DAYS_LIMIT)
        }
    };
    let dso = figure(
        "days_sales_outstanding",
        days_of(inputs.accounts_receivable, inputs.revenue, "revenue"),
    );
    let dio = figure(
        "days_inventory_outstanding",
        days_of(inputs.inventory, inputs.cogs, "cost of goods sold"),
    );
    let dpo = figure(
        "days_payables_outstanding",
        days_of(inputs.accounts_payable, inputs.cogs, "cost of goods sold"),
    );
    let ccc = match (dso, dio, dpo) {
        (Some(s), Some(i), Some(p)) => {
            figure("cash_conversion_cycle", fit(s + i - p, 2, DAYS_LIMIT))
        }
        _ => figure(
            "cash_conversion_cycle",
            Err("needs DSO, DIO and DPO, and one of them is unavailable".to_owned()),
        ),
    };
    let (burn, runway) = match runway(inputs) {
        Ok((burn, runway)) => (
            figure("monthly_cash_burn", Ok(burn)),
            match runway {
                Ok(days) => Some(days),
                Err(reason) => {
                    unavailable.insert("cash_runway_days", reason);
                    None
                }
            },
        ),
        Err(reason) => {
            unavailable.insert("monthly_cash_burn", reason.clone());
            unavailable.insert("cash_runway_days", reason);
            (None, None)
        }
    };
    Ok(Metrics {
        current_assets,
        current_liabilities,
        working_capital,
        current_ratio,
        quick_ratio,
        days_sales_outstanding: dso,
        days_inventory_outstanding: dio,
        days_payables_outstanding: dpo,
        cash_conversion_cycle: ccc,
        monthly_cash_burn: burn,
        cash_runway_days: runway,
        unavailable,
    })
}

/// Months from one month-end to a later one.
fn months_between(from: NaiveDate, to: NaiveDate) -> i64 {
    (i64::from(to.year()) * 12 + i64::from(to.month()))
        - (i64::from(from.year()) * 12 + i64::from(from.month()))
}

/// The average monthly burn from the oldest of the last three earlier periods to this one,
/// and the days the current cash lasts at that pace (per real day elapsed, not per
/// conventional month).
#[allow(clippy::type_complexity)]
fn runway(inputs: &MetricInputs) -> Result<(Decimal, Result<i32, String>), String> {
    let end = inputs.period.end;
    let earlier: Vec<_> = inputs
        .earlier_cash
        .iter()
        .filter(|(date, _)| *date < end)
        .take(3)
        .collect();
    let Some((from, cash_then)) = earlier.last() else {
        return Err("no earlier stored period of this type has a cash balance".to_owned());
    };
    let fall = *cash_then - inputs.cash;
    let months = months_between(*from, end).max(1);
    let monthly = round(fall / Decimal::from(months), 2);
    if fall <= Decimal::ZERO {
        return Ok((
            monthly,
            Err("cash did not fall over the last periods".to_owned()),
        ));
    }
    let elapsed = Decimal::from((end - *from).num_days());
    let days = (inputs.cash * elapsed / fall).floor();
    let days = i32::try_from(days).map_err(|_| "the runway is too long to store".to_owned());
    Ok((monthly, days))
}

/// How healthy a figure is, on documented bands (docs/domain.md, "Status bands").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    Excellent,
    Good,
    Fair,
    Critical,
}

/// Bands of a "higher is better" figure, from the excellent threshold down.
fn higher_is_better(value: Decimal, thresholds: [Decimal; 3]) -> Band {
    if value >= thresholds[0] {
        Band::Excellent
    } else if value >= thresholds[1] {
        Band::Good
    } else if value >= thresholds[2] {
        Band::Fair
    } else {
        Band::Critical
    }
}

/// Current ratio: ≥ 2.0 excellent, ≥ 1.5 good, ≥ 1.0 fair, below 1.0 critical.
pub fn current_ratio_band(value: Decimal) -> Band {
    higher_is_better(
        value,
        [Decimal::new(20, 1), Decimal::new(15, 1), Decimal::ONE],
    )
}

/// Quick ratio: ≥ 1.5 excellent, ≥ 1.0 good, ≥ 0.5 fair, below 0.5 critical.
pub fn quick_ratio_band(value: Decimal) -> Band {
    higher_is_better(
        value,
        [Decimal::new(15, 1), Decimal::ONE, Decimal::new(5, 1)],
    )
}

/// Cash conversion cycle: ≤ 30 days excellent, ≤ 60 good, ≤ 90 fair, above 90 critical.
pub fn cash_conversion_cycle_band(days: Decimal) -> Band {
    higher_is_better(
        -days,
        [Decimal::from(-30), Decimal::from(-60), Decimal::from(-90)],
    )
}

/// Cash runway: ≥ 365 days excellent, ≥ 180 good, ≥ 90 fair, below 90 critical.
pub fn runway_band(days: i32) -> Band {
    higher_is_better(
        Decimal::from(days),
        [Decimal::from(365), Decimal::from(180), Decimal::from(90)],
    )
}

/// The bands of a stored row's figures (absent figures have no band).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Bands {
    pub current_ratio: Option<Band>,
    pub quick_ratio: Option<Band>,
    pub cash_conversion_cycle: Option<Band>,
    pub cash_runway: Option<Band>,
}

impl Bands {
    pub fn of(row: &StoredMetric) -> Self {
        Self {
            current_ratio: row.current_ratio.map(current_ratio_band),
            quick_ratio: row.quick_ratio.map(quick_ratio_band),
            cash_conversion_cycle: row.cash_conversion_cycle.map(cash_conversion_cycle_band),
            cash_runway: row.cash_runway_days.map(runway_band),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Queries: each runs on a connection already inside the tenant's transaction.

/// A `working_capital_metrics` row with the revenue and cost of goods sold it came from.
// `ToSchema` here (not in `http`) so the one row type is also the documented one.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StoredMetric {
    pub id: Uuid,
    pub company_id: Uuid,
    pub period_date: NaiveDate,
    pub period_type: String,
    #[schema(value_type = Option<String>)]
    pub revenue: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub cost_of_goods_sold: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub cash: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub accounts_receivable: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub inventory: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub accounts_payable: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub short_term_debt: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub working_capital: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub current_ratio: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub quick_ratio: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub days_sales_outstanding: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub days_inventory_outstanding: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub days_payables_outstanding: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub cash_conversion_cycle: Option<Decimal>,
    pub cash_runway_days: Option<i32>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

const STORED_COLUMNS: &str = "id, company_id, period_date, period_type::text, revenue, \
     cost_of_goods_sold, cash, accounts_receivable, inventory, accounts_payable, short_term_debt, \
     working_capital, current_ratio, quick_ratio, days_sales_outstanding, \
     days_inventory_outstanding, days_payables_outstanding, cash_conversion_cycle, \
     cash_runway_days, created_at";

pub async fn company_exists(conn: &mut PgConnection, company: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM companies WHERE id = $1)")
        .bind(company)
        .fetch_one(conn)
        .await
}

/// What the tenant's own rows say about a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodTotals {
    pub revenue: Decimal,
    pub cogs: Decimal,
    pub inventory: Decimal,
    pub sales_lines: i64,
    /// Sales lines with no product or a product without unit_cost: they add revenue but no
    /// cost of goods sold.
    pub sales_lines_without_cost: i64,
}

pub async fn period_totals(
    conn: &mut PgConnection,
    company: Uuid,
    period: &Period,
) -> sqlx::Result<PeriodTotals> {
    let (revenue, cogs, sales_lines, sales_lines_without_cost): (Decimal, Decimal, i64, i64) =
        sqlx::query_as(
            "SELECT COALESCE(sum(s.total_amount), 0), COALESCE(sum(s.quantity * p.unit_cost), 0),
                    count(*), count(*) FILTER (WHERE p.unit_cost IS NULL)
               FROM sales s LEFT JOIN products p ON p.id = s.product_id
              WHERE s.company_id = $1 AND s.sale_date BETWEEN $2 AND $3",
        )
        .bind(company)
        .bind(period.start)
        .bind(period.end)
        .fetch_one(&mut *conn)
        .await?;
    let inventory: Decimal = sqlx::query_scalar(
        "SELECT COALESCE(sum(total_value), 0) FROM inventory WHERE company_id = $1",
    )
    .bind(company)
    .fetch_one(&mut *conn)
    .await?;
    Ok(PeriodTotals {
        revenue,
        cogs,
        inventory,
        sales_lines,
        sales_lines_without_cost,
    })
}

/// The balances a caller may leave out, by column name.
pub const CARRIED_BALANCES: [&str; 4] = [
    "cash",
    "accounts_receivable",
    "accounts_payable",
    "short_term_debt",
];

/// The latest stored value of `column` (one of [`CARRIED_BALANCES`]) for the company at or
/// before `on`, with the period it comes from.
pub async fn latest_balance(
    conn: &mut PgConnection,
    company: Uuid,
    column: &'static str,
    on: NaiveDate,
) -> sqlx::Result<Option<(Decimal, NaiveDate)>> {
    debug_assert!(CARRIED_BALANCES.contains(&column));
    // `column` is one of four fixed names, never request text.
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {column}, period_date FROM working_capital_metrics
          WHERE company_id = $1 AND period_date <= $2 AND {column} IS NOT NULL
          ORDER BY period_date DESC, created_at DESC LIMIT 1"
    )))
    .bind(company)
    .bind(on)
    .fetch_optional(conn)
    .await
}

/// Cash of the company's three latest stored periods of `kind` before `before`, newest first.
pub async fn earlier_cash(
    conn: &mut PgConnection,
    company: Uuid,
    kind: PeriodType,
    before: NaiveDate,
) -> sqlx::Result<Vec<(NaiveDate, Decimal)>> {
    sqlx::query_as(
        "SELECT DISTINCT ON (period_date) period_date, cash FROM working_capital_metrics
          WHERE company_id = $1 AND period_type = $2 AND period_date < $3 AND cash IS NOT NULL
          ORDER BY period_date DESC, created_at DESC LIMIT 3",
    )
    .bind(company)
    .bind(kind.as_str())
    .bind(before)
    .fetch_all(conn)
    .await
}

/// Writes the period's row: updates the newest row stored for (company, period type, period
/// date) or inserts one. The table has no unique key on those three (clients could always
/// store several rows per period through the plain resource), so an advisory lock on them,
/// for this transaction, keeps two computations of one period from both inserting.
pub async fn store(
    conn: &mut PgConnection,
    company: Uuid,
    inputs: &MetricInputs,
    metrics: &Metrics,
) -> sqlx::Result<StoredMetric> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(
                    current_schema() || '/wcm/' || $1::text || '/' || $2 || '/' || $3::text, 0))",
    )
    .bind(company)
    .bind(inputs.period.kind.as_str())
    .bind(inputs.period.end)
    .execute(&mut *conn)
    .await?;
    let existing: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM working_capital_metrics
          WHERE company_id = $1 AND period_type = $2 AND period_date = $3
          ORDER BY created_at DESC, id LIMIT 1",
    )
    .bind(company)
    .bind(inputs.period.kind.as_str())
    .bind(inputs.period.end)
    .fetch_optional(&mut *conn)
    .await?;
    // One statement either way: the UPDATE runs when a row exists ($19), the INSERT when not.
    let sql = format!(
        "WITH updated AS (
             UPDATE working_capital_metrics SET revenue = $4, cost_of_goods_sold = $5, cash = $6,
                 accounts_receivable = $7, inventory = $8, accounts_payable = $9,
                 short_term_debt = $10, working_capital = $11, current_ratio = $12,
                 quick_ratio = $13, days_sales_outstanding = $14,
                 days_inventory_outstanding = $15, days_payables_outstanding = $16,
                 cash_conversion_cycle = $17, cash_runway_days = $18
              WHERE id = $19
              RETURNING {STORED_COLUMNS}
         ), inserted AS (
             INSERT INTO working_capital_metrics (company_id, period_type, period_date, revenue,
                 cost_of_goods_sold, cash, accounts_receivable, inventory, accounts_payable,
                 short_term_debt, working_capital, current_ratio, quick_ratio,
                 days_sales_outstanding, days_inventory_outstanding, days_payables_outstanding,
                 cash_conversion_cycle, cash_runway_days)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18
              WHERE $19::uuid IS NULL
             RETURNING {STORED_COLUMNS}
         )
         SELECT * FROM updated UNION ALL SELECT * FROM inserted"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(company)
        .bind(inputs.period.kind.as_str())
        .bind(inputs.period.end)
        .bind(inputs.revenue)
        .bind(inputs.cogs)
        .bind(inputs.cash)
        .bind(inputs.accounts_receivable)
        .bind(inputs.inventory)
        .bind(inputs.accounts_payable)
        .bind(inputs.short_term_debt)
        .bind(metrics.working_capital)
        .bind(metrics.current_ratio)
        .bind(metrics.quick_ratio)
        .bind(metrics.days_sales_outstanding)
        .bind(metrics.days_inventory_outstanding)
        .bind(metrics.days_payables_outstanding)
        .bind(metrics.cash_conversion_cycle)
        .bind(metrics.cash_runway_days)
        .bind(existing)
        .fetch_one(conn)
        .await
}

/// The company's latest stored period of `kind` (any type when `None`).
pub async fn latest(
    conn: &mut PgConnection,
    company: Uuid,
    kind: Option<PeriodType>,
) -> sqlx::Result<Option<StoredMetric>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {STORED_COLUMNS} FROM working_capital_metrics
          WHERE company_id = $1 AND ($2::text IS NULL OR period_type = $2)
          ORDER BY period_date DESC, created_at DESC LIMIT 1"
    )))
    .bind(company)
    .bind(kind.map(PeriodType::as_str))
    .fetch_optional(conn)
    .await
}

/// The stored row of one period, when there is one.
pub async fn of_period(
    conn: &mut PgConnection,
    company: Uuid,
    period: &Period,
) -> sqlx::Result<Option<StoredMetric>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {STORED_COLUMNS} FROM working_capital_metrics
          WHERE company_id = $1 AND period_type = $2 AND period_date = $3
          ORDER BY created_at DESC LIMIT 1"
    )))
    .bind(company)
    .bind(period.kind.as_str())
    .bind(period.end)
    .fetch_optional(conn)
    .await
}

/// The last `count` periods of `period_type` (one row per period date), oldest first.
pub async fn trend(
    conn: &mut PgConnection,
    company: Uuid,
    period_type: &str,
    count: i64,
) -> sqlx::Result<Vec<StoredMetric>> {
    let mut rows: Vec<StoredMetric> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT ON (period_date) {STORED_COLUMNS} FROM working_capital_metrics
          WHERE company_id = $1 AND period_type = $2
          ORDER BY period_date DESC, created_at DESC LIMIT $3"
    )))
    .bind(company)
    .bind(period_type)
    .bind(count)
    .fetch_all(conn)
    .await?;
    rows.reverse();
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::from_str(s).unwrap()
    }

    fn inputs(period: Period) -> MetricInputs {
        MetricInputs {
            period,
            revenue: d("310000"),
            cogs: d("186000"),
            inventory: d("120000"),
            cash: d("50000"),
            accounts_receivable: d("100000"),
            accounts_payable: d("60000"),
            short_term_debt: d("40000"),
            earlier_cash: Vec::new(),
        }
    }

    #[test]
    fn periods_have_their_real_day_count() {
        let feb = Period::ending(PeriodType::Monthly, date("2026-02-28")).unwrap();
        assert_eq!((feb.start, feb.days()), (date("2026-02-01"), 28));
        let leap = Period::ending(PeriodType::Monthly, date("2024-02-29")).unwrap();
        assert_eq!(leap.days(), 29);
        let q1 = Period::ending(PeriodType::Quarterly, date("2026-03-31")).unwrap();
        // 31 + 28 + 31
        assert_eq!((q1.start, q1.days()), (date("2026-01-01"), 90));
        let fiscal = Period::ending(PeriodType::Annual, date("2024-06-30")).unwrap();
        // July 2023 to June 2024 holds 29 February 2024.
        assert_eq!((fiscal.start, fiscal.days()), (date("2023-07-01"), 366));
        assert_eq!(
            Period::ending(PeriodType::Monthly, date("2026-03-30")),
            Err(PeriodError::NotMonthEnd(date("2026-03-30")))
        );
    }

    #[test]
    fn a_thirty_one_day_month_matches_hand_computed_figures() {
        let m = compute(&inputs(
            Period::ending(PeriodType::Monthly, date("2026-03-31")).unwrap(),
        ))
        .unwrap();
        // Computed by hand: CA = 50 000 + 100 000 + 120 000 = 270 000; CL = 100 000.
        assert_eq!(m.current_assets, d("270000"));
        assert_eq!(m.working_capital, d("170000"));
        assert_eq!(m.current_ratio, Some(d("2.7")));
        assert_eq!(m.quick_ratio, Some(d("1.5")));
        // 100 000 / 310 000 × 31 = 10; 120 000 / 186 000 × 31 = 20; 60 000 / 186 000 × 31 = 10.
        assert_eq!(m.days_sales_outstanding, Some(d("10")));
        assert_eq!(m.days_inventory_outstanding, Some(d("20")));
        assert_eq!(m.days_payables_outstanding, Some(d("10")));
        assert_eq!(m.cash_conversion_cycle, Some(d("20")));
        assert!(m.cash_runway_days.is_none());
        assert!(m.unavailable["cash_runway_days"].contains("no earlier"));
    }

    #[test]
    fn days_use_the_period_length_not_365_over_12() {
        // The same balances over February (28 days) and a quarter (90 days).
        let feb = compute(&inputs(
            Period::ending(PeriodType::Monthly, date("2026-02-28")).unwrap(),
        ))
        .unwrap();
        // 100 000 × 28 / 310 000 = 9.0322… → 9.03; 120 000 × 28 / 186 000 = 18.0645… → 18.06
        assert_eq!(feb.days_sales_outstanding, Some(d("9.03")));
        assert_eq!(feb.days_inventory_outstanding, Some(d("18.06")));
        let q = compute(&inputs(
            Period::ending(PeriodType::Quarterly, date("2026-03-31")).unwrap(),
        ))
        .unwrap();
        // 100 000 × 90 / 310 000 = 29.0322… ; 60 000 × 90 / 186 000 = 29.0322…
        assert_eq!(q.days_sales_outstanding, Some(d("29.03")));
        assert_eq!(q.days_payables_outstanding, Some(d("29.03")));
        // 120 000 × 90 / 186 000 = 58.0645… ; CCC from the rounded parts: 29.03 + 58.06 − 29.03
        assert_eq!(q.cash_conversion_cycle, Some(d("58.06")));
    }

    #[test]
    fn a_zero_denominator_gives_no_figure_and_a_reason() {
        let mut i = inputs(Period::ending(PeriodType::Monthly, date("2026-03-31")).unwrap());
        i.revenue = Decimal::ZERO;
        i.cogs = Decimal::ZERO;
        i.accounts_payable = Decimal::ZERO;
        i.short_term_debt = Decimal::ZERO;
        let m = compute(&i).unwrap();
        for name in [
            "current_ratio",
            "quick_ratio",
            "days_sales_outstanding",
            "days_inventory_outstanding",
            "days_payables_outstanding",
            "cash_conversion_cycle",
        ] {
            assert!(m.unavailable.contains_key(name), "{name}: {m:?}");
        }
        assert_eq!(
            (
                m.current_ratio,
                m.days_sales_outstanding,
                m.cash_conversion_cycle
            ),
            (None, None, None)
        );
        assert!(m.unavailable["days_sales_outstanding"].contains("revenue"));
        // Working capital needs no division.
        assert_eq!(m.working_capital, d("270000"));
    }

    #[test]
    fn runway_is_cash_over_the_average_burn_of_the_last_three_periods() {
        let mut i = inputs(Period::ending(PeriodType::Monthly, date("2026-04-30")).unwrap());
        i.cash = d("40000");
        // Newest first; the fourth is older than the last three and ignored.
        i.earlier_cash = vec![
            (date("2026-03-31"), d("50000")),
            (date("2026-02-28"), d("55000")),
            (date("2026-01-31"), d("70000")),
            (date("2025-12-31"), d("900000")),
        ];
        let m = compute(&i).unwrap();
        // Fall 70 000 − 40 000 = 30 000 over 3 months → 10 000 a month; over the 89 days
        // from 31 January to 30 April: 40 000 × 89 / 30 000 = 118.67 → 118 whole days.
        assert_eq!(m.monthly_cash_burn, Some(d("10000")));
        assert_eq!(m.cash_runway_days, Some(118));
    }

    #[test]
    fn growing_cash_has_no_runway_end() {
        let mut i = inputs(Period::ending(PeriodType::Monthly, date("2026-04-30")).unwrap());
        i.earlier_cash = vec![(date("2026-03-31"), d("20000"))];
        let m = compute(&i).unwrap();
        assert_eq!(m.monthly_cash_burn, Some(d("-30000")));
        assert_eq!(m.cash_runway_days, None);
        assert!(m.unavailable["cash_runway_days"].contains("did not fall"));
    }

    #[test]
    fn bands_follow_the_documented_thresholds() {
        assert_eq!(current_ratio_band(d("2.0")), Band::Excellent);
        assert_eq!(current_ratio_band(d("1.9999")), Band::Good);
        assert_eq!(current_ratio_band(d("1.0")), Band::Fair);
        assert_eq!(current_ratio_band(d("0.99")), Band::Critical);
        assert_eq!(quick_ratio_band(d("0.5")), Band::Fair);
        assert_eq!(cash_conversion_cycle_band(d("-5")), Band::Excellent);
        assert_eq!(cash_conversion_cycle_band(d("60")), Band::Good);
        assert_eq!(cash_conversion_cycle_band(d("90.01")), Band::Critical);
        assert_eq!(runway_band(89), Band::Critical);
        assert_eq!(runway_band(365), Band::Excellent);
    }

    #[test]
    fn a_working_capital_too_large_to_store_is_an_error_naming_it() {
        let mut i = inputs(Period::ending(PeriodType::Monthly, date("2026-03-31")).unwrap());
        i.cash = d("9999999999999.99");
        i.accounts_receivable = d("9999999999999.99");
        let err = compute(&i).unwrap_err();
        assert_eq!(err.field, "working_capital");
    }
}
