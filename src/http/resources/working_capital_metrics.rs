//! `/api/v1/working-capital-metrics`: a company's working-capital position for one period
//! (balances, ratios, days outstanding, cash conversion cycle).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::fields::{Count, Day, Money, Numeric, Patch, SignedMoney};
use crate::http::resource::{Filter, Kind, Op, Resource, Sort};

pub use crate::domain::working_capital::PeriodType;

impl sqlx::Type<sqlx::Postgres> for PeriodType {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <String as sqlx::Type<sqlx::Postgres>>::type_info()
    }
    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for PeriodType {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let word = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
        PeriodType::parse(word).ok_or_else(|| format!("unknown period type {word:?}").into())
    }
}

impl crate::http::fields::Field for PeriodType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(["monthly", "quarterly", "annual"]))
            .into()
    }
    fn bind(value: Option<Self>) -> crate::http::resource::Bind {
        crate::http::resource::Bind::Text(value.map(|v| v.as_str().to_owned()))
    }
    const CAST: &'static str = "::text";
}

/// A ratio (`numeric(10,4)`).
pub type Ratio = Numeric<10, 4>;
/// A number of days (`numeric(10,2)`); may be negative.
pub type Days = Numeric<10, 2>;

crate::resource_fields! {
    row WorkingCapitalMetric, create NewWorkingCapitalMetric, update WorkingCapitalMetricChanges;
    id: Uuid => read,
    company_id: Uuid => fixed,
    /// The period's last day.
    period_date: Day => required,
    period_type: PeriodType => required,
    cash: Money => optional,
    accounts_receivable: Money => optional,
    inventory: Money => optional,
    accounts_payable: Money => optional,
    short_term_debt: Money => optional,
    /// When absent and all five balances are given: cash + receivables + inventory −
    /// payables − short-term debt.
    working_capital: SignedMoney => optional,
    current_ratio: Ratio => optional,
    quick_ratio: Ratio => optional,
    days_sales_outstanding: Days => optional,
    days_inventory_outstanding: Days => optional,
    days_payables_outstanding: Days => optional,
    /// When absent and the three days figures are given: DSO + DIO − DPO.
    cash_conversion_cycle: Days => optional,
    operating_cash_flow: SignedMoney => optional,
    cash_runway_days: Count => optional,
    /// Σ sales in the period, when the engine computed the row
    /// (`POST /api/v1/working-capital-metrics/compute`).
    revenue: Option<Decimal> => read,
    /// Σ quantity × unit cost of the period's sales, when the engine computed the row.
    cost_of_goods_sold: Option<Decimal> => read,
    created_at: DateTime<Utc> => read,
}

/// `value` as a `numeric(P, S)`, or a 422 naming `field` when the sum of valid inputs
/// does not fit (each input is below 10^13, so the sum cannot overflow `Decimal`).
fn fits<const P: u32, const S: u32>(
    field: &str,
    value: Decimal,
) -> Result<Numeric<P, S>, ApiError> {
    Numeric::<P, S>::try_from(value.round_dp(S).to_string())
        .map_err(|rule| ApiError::rule(field, format!("{field}: {rule} (computed)")))
}

fn working_capital(balances: [Option<Money>; 5]) -> Result<Option<SignedMoney>, ApiError> {
    let [Some(c), Some(r), Some(i), Some(p), Some(d)] = balances else {
        return Ok(None);
    };
    fits("working_capital", c.0 + r.0 + i.0 - p.0 - d.0).map(Some)
}

fn cycle(days: [Option<Days>; 3]) -> Result<Option<Days>, ApiError> {
    let [Some(s), Some(i), Some(p)] = days else {
        return Ok(None);
    };
    fits("cash_conversion_cycle", s.0 + i.0 - p.0).map(Some)
}

fn given<T: Copy>(p: &Patch<T>) -> Option<T> {
    match p {
        Patch::Value(v) => Some(*v),
        _ => None,
    }
}

pub struct WorkingCapitalMetrics;

impl Resource for WorkingCapitalMetrics {
    const NAME: &'static str = "working capital metric";
    const PATH: &'static str = "working-capital-metrics";
    const TABLE: &'static str = "working_capital_metrics";
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

    fn prepare_create(m: &mut NewWorkingCapitalMetric) -> Result<(), ApiError> {
        if m.working_capital.is_none() {
            m.working_capital = working_capital([
                m.cash,
                m.accounts_receivable,
                m.inventory,
                m.accounts_payable,
                m.short_term_debt,
            ])?;
        }
        if m.cash_conversion_cycle.is_none() {
            m.cash_conversion_cycle = cycle([
                m.days_sales_outstanding,
                m.days_inventory_outstanding,
                m.days_payables_outstanding,
            ])?;
        }
        Ok(())
    }

    /// Recomputed only from values in the body (an update sees only what it changes).
    fn prepare_update(m: &mut WorkingCapitalMetricChanges) -> Result<(), ApiError> {
        if m.working_capital.is_absent()
            && let Some(wc) = working_capital([
                given(&m.cash),
                given(&m.accounts_receivable),
                given(&m.inventory),
                given(&m.accounts_payable),
                given(&m.short_term_debt),
            ])?
        {
            m.working_capital = Patch::Value(wc);
        }
        if m.cash_conversion_cycle.is_absent()
            && let Some(ccc) = cycle([
                given(&m.days_sales_outstanding),
                given(&m.days_inventory_outstanding),
                given(&m.days_payables_outstanding),
            ])?
        {
            m.cash_conversion_cycle = Patch::Value(ccc);
        }
        Ok(())
    }
}
