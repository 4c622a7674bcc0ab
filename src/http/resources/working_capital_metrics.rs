//! `/api/v1/working-capital-metrics`: a company's working-capital position for one period
//! (balances, ratios, days outstanding, cash conversion cycle).

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::resource::{Bind, Filter, Kind, Op, Resource, Sort, nullable};
use crate::http::validate as v;

const PERIOD_TYPES: &[&str] = &["monthly", "quarterly", "annual"];

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct WorkingCapitalMetric {
    pub id: Uuid,
    pub company_id: Uuid,
    pub period_date: NaiveDate,
    /// `monthly`, `quarterly` or `annual`.
    pub period_type: String,
    /// Decimal string.
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
    #[schema(value_type = Option<String>)]
    pub operating_cash_flow: Option<Decimal>,
    pub cash_runway_days: Option<i32>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkingCapitalMetric {
    pub company_id: Uuid,
    pub period_date: NaiveDate,
    /// `monthly`, `quarterly` or `annual`.
    pub period_type: String,
    /// Decimal string, at least zero (likewise the other balances but working capital
    /// and operating cash flow, which may be negative).
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
    /// When absent and all five balances are given: cash + receivables + inventory −
    /// payables − short-term debt.
    #[schema(value_type = Option<String>)]
    pub working_capital: Option<Decimal>,
    /// At most 4 decimals.
    #[schema(value_type = Option<String>)]
    pub current_ratio: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub quick_ratio: Option<Decimal>,
    /// At most 2 decimals.
    #[schema(value_type = Option<String>)]
    pub days_sales_outstanding: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub days_inventory_outstanding: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub days_payables_outstanding: Option<Decimal>,
    /// When absent and the three days figures are given: DSO + DIO − DPO.
    #[schema(value_type = Option<String>)]
    pub cash_conversion_cycle: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub operating_cash_flow: Option<Decimal>,
    /// At least zero.
    pub cash_runway_days: Option<i32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkingCapitalMetricChanges {
    pub period_date: Option<NaiveDate>,
    pub period_type: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub cash: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub accounts_receivable: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub inventory: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub accounts_payable: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub short_term_debt: Option<Option<Decimal>>,
    /// Recomputed when absent and all five balances are given with values.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub working_capital: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub current_ratio: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub quick_ratio: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub days_sales_outstanding: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub days_inventory_outstanding: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub days_payables_outstanding: Option<Option<Decimal>>,
    /// Recomputed when absent and the three days figures are given with values.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub cash_conversion_cycle: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub operating_cash_flow: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    pub cash_runway_days: Option<Option<i32>>,
}

fn period_type(value: String) -> Result<String, ApiError> {
    v::one_of("period_type", Some(value), PERIOD_TYPES).map(Option::unwrap_or_default)
}

fn ratio(field: &str, value: Option<Decimal>) -> Result<Option<Decimal>, ApiError> {
    v::numeric(field, value, 10, 4)
}

fn days(field: &str, value: Option<Decimal>) -> Result<Option<Decimal>, ApiError> {
    v::numeric(field, value, 10, 2)
}

/// Current assets minus current liabilities, checked as if the client had sent it (the
/// sum of valid balances can still overflow `numeric(15,2)`).
fn computed_working_capital(
    cash: Decimal,
    receivable: Decimal,
    inventory: Decimal,
    payable: Decimal,
    debt: Decimal,
) -> Result<Decimal, ApiError> {
    // Each input is below 10^13, so this cannot overflow `Decimal` itself.
    let total = cash + receivable + inventory - payable - debt;
    v::money("working_capital", total, false)
}

/// Days of cash tied up in operations; may well be negative.
fn computed_cycle(dso: Decimal, dio: Decimal, dpo: Decimal) -> Result<Option<Decimal>, ApiError> {
    days("cash_conversion_cycle", Some(dso + dio - dpo))
}

/// A nullable field's validated value: `None` absent, `Some(None)` null.
type Change = Option<Option<Decimal>>;

fn change(
    value: Change,
    check: impl FnOnce(Option<Decimal>) -> Result<Option<Decimal>, ApiError>,
) -> Result<Change, ApiError> {
    value.map(check).transpose()
}

pub struct WorkingCapitalMetrics;

impl Resource for WorkingCapitalMetrics {
    const NAME: &'static str = "working capital metric";
    const PATH: &'static str = "working-capital-metrics";
    const TABLE: &'static str = "working_capital_metrics";
    const COLUMNS: &'static str = "id, company_id, period_date, period_type::text, cash, accounts_receivable, \
         inventory, accounts_payable, short_term_debt, working_capital, current_ratio, quick_ratio, \
         days_sales_outstanding, days_inventory_outstanding, days_payables_outstanding, \
         cash_conversion_cycle, operating_cash_flow, cash_runway_days, created_at";
    const SORTS: &'static [Sort] = &[
        Sort {
            param: "period_date",
            column: "period_date",
            sql_type: "date",
        },
        Sort {
            param: "created_at",
            column: "created_at",
            sql_type: "timestamptz",
        },
    ];
    const FILTERS: &'static [Filter] = &[
        Filter {
            param: "company_id",
            column: "company_id",
            op: Op::Eq,
            kind: Kind::Uuid,
        },
        Filter {
            param: "period_type",
            column: "period_type",
            op: Op::Eq,
            kind: Kind::Text,
        },
        Filter {
            param: "from",
            column: "period_date",
            op: Op::Gte,
            kind: Kind::Date,
        },
        Filter {
            param: "to",
            column: "period_date",
            op: Op::Lte,
            kind: Kind::Date,
        },
    ];

    type Row = WorkingCapitalMetric;
    type Create = NewWorkingCapitalMetric;
    type Update = WorkingCapitalMetricChanges;

    fn create(m: NewWorkingCapitalMetric) -> Result<Vec<(&'static str, Bind)>, ApiError> {
        let cash = v::optional_money("cash", m.cash, true)?;
        let receivable = v::optional_money("accounts_receivable", m.accounts_receivable, true)?;
        let inventory = v::optional_money("inventory", m.inventory, true)?;
        let payable = v::optional_money("accounts_payable", m.accounts_payable, true)?;
        let debt = v::optional_money("short_term_debt", m.short_term_debt, true)?;
        let working_capital = match (
            m.working_capital,
            cash,
            receivable,
            inventory,
            payable,
            debt,
        ) {
            (Some(wc), ..) => Some(v::money("working_capital", wc, false)?),
            (None, Some(c), Some(r), Some(i), Some(p), Some(d)) => {
                Some(computed_working_capital(c, r, i, p, d)?)
            }
            _ => None,
        };
        let dso = days("days_sales_outstanding", m.days_sales_outstanding)?;
        let dio = days("days_inventory_outstanding", m.days_inventory_outstanding)?;
        let dpo = days("days_payables_outstanding", m.days_payables_outstanding)?;
        let cycle = match (m.cash_conversion_cycle, dso, dio, dpo) {
            (Some(ccc), ..) => days("cash_conversion_cycle", Some(ccc))?,
            (None, Some(s), Some(i), Some(p)) => computed_cycle(s, i, p)?,
            _ => None,
        };
        Ok(vec![
            ("company_id", Bind::Uuid(Some(m.company_id))),
            (
                "period_date",
                Bind::Date(Some(v::date("period_date", m.period_date)?)),
            ),
            ("period_type", Bind::Text(Some(period_type(m.period_type)?))),
            ("cash", Bind::Decimal(cash)),
            ("accounts_receivable", Bind::Decimal(receivable)),
            ("inventory", Bind::Decimal(inventory)),
            ("accounts_payable", Bind::Decimal(payable)),
            ("short_term_debt", Bind::Decimal(debt)),
            ("working_capital", Bind::Decimal(working_capital)),
            (
                "current_ratio",
                Bind::Decimal(ratio("current_ratio", m.current_ratio)?),
            ),
            (
                "quick_ratio",
                Bind::Decimal(ratio("quick_ratio", m.quick_ratio)?),
            ),
            ("days_sales_outstanding", Bind::Decimal(dso)),
            ("days_inventory_outstanding", Bind::Decimal(dio)),
            ("days_payables_outstanding", Bind::Decimal(dpo)),
            ("cash_conversion_cycle", Bind::Decimal(cycle)),
            (
                "operating_cash_flow",
                Bind::Decimal(v::optional_money(
                    "operating_cash_flow",
                    m.operating_cash_flow,
                    false,
                )?),
            ),
            (
                "cash_runway_days",
                Bind::Int(v::non_negative("cash_runway_days", m.cash_runway_days)?),
            ),
        ])
    }

    fn update(m: WorkingCapitalMetricChanges) -> Result<Vec<(&'static str, Bind)>, ApiError> {
        let mut values = Vec::new();
        if let Some(date) = m.period_date {
            values.push((
                "period_date",
                Bind::Date(Some(v::date("period_date", date)?)),
            ));
        }
        if let Some(kind) = m.period_type {
            values.push(("period_type", Bind::Text(Some(period_type(kind)?))));
        }
        let balance = |field: &'static str, value: Change| {
            change(value, |x| v::optional_money(field, x, true))
        };
        let cash = balance("cash", m.cash)?;
        let receivable = balance("accounts_receivable", m.accounts_receivable)?;
        let inventory = balance("inventory", m.inventory)?;
        let payable = balance("accounts_payable", m.accounts_payable)?;
        let debt = balance("short_term_debt", m.short_term_debt)?;
        // Derived figures follow the create rule, but only from the body: the engine does
        // not show us the stored row, so a partial change of the inputs leaves them as they are.
        let working_capital = match (
            m.working_capital,
            cash,
            receivable,
            inventory,
            payable,
            debt,
        ) {
            (Some(wc), ..) => Some(v::optional_money("working_capital", wc, false)?),
            (None, Some(Some(c)), Some(Some(r)), Some(Some(i)), Some(Some(p)), Some(Some(d))) => {
                Some(Some(computed_working_capital(c, r, i, p, d)?))
            }
            _ => None,
        };
        let dso = change(m.days_sales_outstanding, |x| {
            days("days_sales_outstanding", x)
        })?;
        let dio = change(m.days_inventory_outstanding, |x| {
            days("days_inventory_outstanding", x)
        })?;
        let dpo = change(m.days_payables_outstanding, |x| {
            days("days_payables_outstanding", x)
        })?;
        let cycle = match (m.cash_conversion_cycle, dso, dio, dpo) {
            (Some(ccc), ..) => Some(days("cash_conversion_cycle", ccc)?),
            (None, Some(Some(s)), Some(Some(i)), Some(Some(p))) => Some(computed_cycle(s, i, p)?),
            _ => None,
        };
        let decimals = [
            ("cash", cash),
            ("accounts_receivable", receivable),
            ("inventory", inventory),
            ("accounts_payable", payable),
            ("short_term_debt", debt),
            ("working_capital", working_capital),
            (
                "current_ratio",
                change(m.current_ratio, |x| ratio("current_ratio", x))?,
            ),
            (
                "quick_ratio",
                change(m.quick_ratio, |x| ratio("quick_ratio", x))?,
            ),
            ("days_sales_outstanding", dso),
            ("days_inventory_outstanding", dio),
            ("days_payables_outstanding", dpo),
            ("cash_conversion_cycle", cycle),
            (
                "operating_cash_flow",
                change(m.operating_cash_flow, |x| {
                    v::optional_money("operating_cash_flow", x, false)
                })?,
            ),
        ];
        for (column, value) in decimals {
            if let Some(value) = value {
                values.push((column, Bind::Decimal(value)));
            }
        }
        if let Some(runway) = m.cash_runway_days {
            values.push((
                "cash_runway_days",
                Bind::Int(v::non_negative("cash_runway_days", runway)?),
            ));
        }
        Ok(values)
    }
}
