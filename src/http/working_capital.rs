//! `POST /api/v1/working-capital-metrics/compute` and `GET /api/v1/working-capital/summary`:
//! thin handlers over [`crate::domain::working_capital`]. They check the role, validate the
//! request, open the tenant's transaction and hand the connection to the domain room.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::context::Caller;
use super::error::ApiError;
use super::extract::{Body, Writer};
use super::fields::{Day, Money};
use super::resources::working_capital_metrics::WorkingCapitalMetrics;
use crate::access::Act;
use crate::domain::working_capital::{
    self as wc, Bands, MetricInputs, Period, PeriodType, StoredMetric,
};

/// The routes of this module (under `/api/v1`). `compute` is a static segment beside the
/// resource's `/working-capital-metrics/{id}`: axum matches static segments first.
pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/working-capital-metrics/compute", post(compute))
        .route("/working-capital/summary", get(summary))
}

/// Which period of which company to compute, and the balances the tenant's tables cannot
/// give (each absent one is carried forward from the latest stored period).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComputeRequest {
    pub company_id: Uuid,
    pub period_type: PeriodType,
    /// The period's last day (1900–2200); must end a month (a quarter or year is the 3 or
    /// 12 months ending there).
    #[schema(value_type = String, format = Date, pattern = "^(19[0-9]{2}|2[01][0-9]{2}|2200)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    pub period_date: Day,
    /// Cash at the period's end (decimal string ≥ 0, at most 2 decimals). Absent: carried
    /// forward from the latest stored period.
    #[schema(value_type = Option<String>, pattern = r"^[0-9]{1,13}(\.[0-9]{1,2})?$")]
    #[serde(default)]
    pub cash: Option<Money>,
    /// Accounts receivable at the period's end; as `cash`.
    #[schema(value_type = Option<String>, pattern = r"^[0-9]{1,13}(\.[0-9]{1,2})?$")]
    #[serde(default)]
    pub accounts_receivable: Option<Money>,
    /// Accounts payable at the period's end; as `cash`.
    #[schema(value_type = Option<String>, pattern = r"^[0-9]{1,13}(\.[0-9]{1,2})?$")]
    #[serde(default)]
    pub accounts_payable: Option<Money>,
    /// Short-term debt at the period's end; as `cash`.
    #[schema(value_type = Option<String>, pattern = r"^[0-9]{1,13}(\.[0-9]{1,2})?$")]
    #[serde(default)]
    pub short_term_debt: Option<Money>,
}

/// Where a balance came from.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceSource {
    /// `given` (in the request) or `carried_forward` (from a stored period).
    pub source: &'static str,
    /// The period a carried-forward value comes from.
    pub from_period: Option<NaiveDate>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PeriodSpan {
    pub period_type: PeriodType,
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// The period's real number of days, used by DSO, DIO and DPO.
    pub days: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ComputedMetrics {
    /// The stored row (one per company, period type and period date).
    pub metric: StoredMetric,
    pub period: PeriodSpan,
    /// Status band of each figure that has a value (docs/domain.md, "Status bands").
    pub status: Bands,
    /// For `cash`, `accounts_receivable`, `accounts_payable` and `short_term_debt`.
    pub sources: BTreeMap<&'static str, BalanceSource>,
    /// Figure → why it is null (e.g. a zero denominator).
    pub unavailable: BTreeMap<&'static str, String>,
    /// Average fall of cash per month over the last (up to) three stored periods; negative
    /// when cash grew. Decimal string.
    #[schema(value_type = Option<String>)]
    pub monthly_cash_burn: Option<Decimal>,
    /// Sales lines in the period.
    pub sales_lines: i64,
    /// Sales lines whose product has no unit_cost (or no product): revenue without COGS.
    pub sales_lines_without_cost: i64,
}

/// `POST /api/v1/working-capital-metrics/compute`
async fn compute(
    State(state): State<AppState>,
    Writer(caller, _): Writer<WorkingCapitalMetrics>,
    Body(request): Body<ComputeRequest>,
) -> Result<Json<ComputedMetrics>, ApiError> {
    let period = Period::ending(request.period_type, request.period_date.0)
        .map_err(|e| ApiError::rule("period_date", e.to_string()))?;
    let checked = [
        ("cash", request.cash),
        ("accounts_receivable", request.accounts_receivable),
        ("accounts_payable", request.accounts_payable),
        ("short_term_debt", request.short_term_debt),
    ]
    .map(|(field, value)| (field, value.map(|m| m.0)));

    let mut tx = state.begin(&caller).await?;
    if !wc::company_exists(&mut tx, request.company_id).await? {
        return Err(unknown_company());
    }
    let mut balances = BTreeMap::new();
    let mut sources = BTreeMap::new();
    for (field, value) in checked {
        let (value, source) = match value {
            Some(value) => (
                value,
                BalanceSource {
                    source: "given",
                    from_period: None,
                },
            ),
            None => {
                let stored = wc::latest_balance(&mut tx, request.company_id, field, period.end)
                    .await?
                    .ok_or_else(|| {
                        ApiError::rule(
                            field,
                            format!(
                                "{field} is not given and no stored period of this company up to {} has it",
                                period.end
                            ),
                        )
                    })?;
                (
                    stored.0,
                    BalanceSource {
                        source: "carried_forward",
                        from_period: Some(stored.1),
                    },
                )
            }
        };
        balances.insert(field, value);
        sources.insert(field, source);
    }
    let balance = |field: &str| balances.get(field).copied().unwrap_or_default();
    let totals = wc::period_totals(&mut tx, request.company_id, &period).await?;
    for (field, value) in [
        ("revenue", totals.revenue),
        ("cost_of_goods_sold", totals.cogs),
        ("inventory", totals.inventory),
    ] {
        if value.abs() >= Decimal::from(10_000_000_000_000_i64) {
            return Err(ApiError::rule(
                field,
                format!("the period's {field} ({value}) is too large to store"),
            ));
        }
    }
    let inputs = MetricInputs {
        period,
        revenue: totals.revenue,
        cogs: totals.cogs,
        inventory: totals.inventory,
        cash: balance("cash"),
        accounts_receivable: balance("accounts_receivable"),
        accounts_payable: balance("accounts_payable"),
        short_term_debt: balance("short_term_debt"),
        earlier_cash: wc::earlier_cash(&mut tx, request.company_id, period.kind, period.end)
            .await?,
    };
    let metrics = wc::compute(&inputs).map_err(|e| ApiError::rule(e.field, e.message))?;
    let row = wc::store(&mut tx, request.company_id, &inputs, &metrics).await?;
    tx.commit().await?;
    Ok(Json(ComputedMetrics {
        status: Bands::of(&row),
        metric: row,
        period: PeriodSpan {
            period_type: period.kind,
            start: period.start,
            end: period.end,
            days: period.days(),
        },
        sources,
        unavailable: metrics.unavailable,
        monthly_cash_burn: metrics.monthly_cash_burn,
        sales_lines: totals.sales_lines,
        sales_lines_without_cost: totals.sales_lines_without_cost,
    }))
}

fn unknown_company() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "reference_not_found",
        "company_id does not name a company of this tenant",
    )
    .with_field("company_id")
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    pub company_id: Uuid,
    /// Default: the type of the company's latest stored period.
    pub period_type: Option<PeriodType>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LatestPeriod {
    pub metric: StoredMetric,
    pub status: Bands,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Runway {
    /// Days the latest cash lasts at the average burn of the last three periods; null when
    /// cash is not falling or there is no earlier period.
    pub days: Option<i32>,
    pub status: Option<wc::Band>,
    pub as_of: NaiveDate,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkingCapitalSummary {
    pub company_id: Uuid,
    /// `monthly`, `quarterly` or `annual`; null when the company has no stored period.
    pub period_type: Option<String>,
    pub latest: Option<LatestPeriod>,
    /// The last 12 periods of that type, oldest first.
    pub trend: Vec<StoredMetric>,
    pub runway: Option<Runway>,
}

/// How many periods the summary's trend shows.
const TREND_PERIODS: i64 = 12;

/// `GET /api/v1/working-capital/summary?company_id=…`
async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<SummaryQuery>, QueryRejection>,
) -> Result<Json<WorkingCapitalSummary>, ApiError> {
    caller.require(Act::ReadData)?;
    let Query(query) =
        query.map_err(|e| ApiError::bad_request("invalid_parameter", e.body_text()))?;
    let mut tx = state.begin(&caller).await?;
    if !wc::company_exists(&mut tx, query.company_id).await? {
        return Err(ApiError::not_found("company"));
    }
    let latest = wc::latest(&mut tx, query.company_id, query.period_type).await?;
    let trend = match &latest {
        Some(row) => wc::trend(&mut tx, query.company_id, &row.period_type, TREND_PERIODS).await?,
        None => Vec::new(),
    };
    tx.commit().await?;
    let period_type = latest.as_ref().map(|row| row.period_type.clone());
    let runway = latest.as_ref().map(|row| Runway {
        days: row.cash_runway_days,
        status: row.cash_runway_days.map(wc::runway_band),
        as_of: row.period_date,
    });
    Ok(Json(WorkingCapitalSummary {
        company_id: query.company_id,
        period_type,
        latest: latest.map(|metric| LatestPeriod {
            status: Bands::of(&metric),
            metric,
        }),
        trend,
        runway,
    }))
}
