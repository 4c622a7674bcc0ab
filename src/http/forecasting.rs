//! `POST /api/v1/forecasts/generate`: a thin handler over [`crate::domain::forecast`].
//! Needs a member and the plan's `ai_forecasting` (the forecasts resource's write gate).
//! Demand and revenue are forecast per product; cash flow per company (see
//! [`crate::domain::cash_flow`]).
//! Histories are read, models fitted off the async runtime, and every product's rows
//! replaced in the one tenant transaction.

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::columns::RowType;
use super::error::ApiError;
use super::extract::{Body, Writer};
use super::fields::{Day, Int};
use super::resources::forecasts::{Forecast, Forecasts};
use crate::domain::cash_flow;
use crate::domain::forecast::{
    self, ForecastType, GenerateError, Granularity, ModelChoice, Plan, Run,
};
use crate::domain::working_capital as wc;

/// Most products one request forecasts.
pub const MAX_PRODUCTS: usize = 100;

/// The routes of this module (under `/api/v1`); `generate` is a static segment beside the
/// resource's `/forecasts/{id}`.
pub fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/forecasts/generate", post(generate))
}

/// Which products to forecast (exactly one of `product_id`, `product_ids`, `all: true`)
/// and how.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    pub product_id: Option<Uuid>,
    /// 1 to 100 distinct products.
    #[schema(min_items = 1, max_items = 100)]
    pub product_ids: Option<Vec<Uuid>>,
    /// Every active product (at most 100).
    pub all: Option<bool>,
    /// `demand` (units), `revenue`, or `cash_flow` (per company of the selected products:
    /// the projected cash balance; needs the company's computed metrics).
    pub forecast_type: ForecastType,
    pub granularity: Granularity,
    /// Periods ahead: up to 365 days, 104 weeks or 36 months.
    #[schema(value_type = i32, minimum = 1, maximum = 365)]
    pub horizon: Int<1, 365>,
    /// Default `auto`.
    pub model: Option<ModelChoice>,
    /// Percent, 50 to 99.9 (default 95).
    #[schema(minimum = 50, maximum = 99.9)]
    pub confidence_level: Option<f64>,
    /// The history ends before the period holding this date, which is the first forecast
    /// period (default today). For backtests and reproducible runs.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Date, pattern = "^(19[0-9]{2}|2[01][0-9]{2}|2200)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    pub as_of: Option<Day>,
}

/// One product's run (demand, revenue) or one company's (cash flow).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductRun {
    pub company_id: Uuid,
    /// Null for a company's cash-flow run.
    pub product_id: Option<Uuid>,
    /// The model used: `mstl_log`, `mstl`, `ets`, `seasonal_naive`, `naive`, `ensemble` or
    /// `none` (no history).
    pub model: String,
    /// Why the requested model was not used, when it was not.
    pub fallback: Option<String>,
    /// Complete periods of history the model saw.
    pub history_periods: usize,
    /// The stored `model_parameters` (model, ETS form, backtest scores, weights; for cash
    /// flow also receipts, payments and balance per period, and `runway_end`).
    #[schema(value_type = Object)]
    pub model_parameters: serde_json::Value,
    pub forecasts: Vec<Forecast>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateResponse {
    pub runs: Vec<ProductRun>,
}

fn validate(request: &GenerateRequest) -> Result<Plan, ApiError> {
    let selectors = [
        request.product_id.is_some(),
        request.product_ids.is_some(),
        request.all == Some(true),
    ];
    if selectors.iter().filter(|s| **s).count() != 1 {
        return Err(ApiError::rule(
            "product_id",
            "give exactly one of product_id, product_ids or all: true",
        ));
    }
    if let Some(ids) = &request.product_ids
        && (ids.is_empty() || ids.len() > MAX_PRODUCTS)
    {
        return Err(ApiError::validation(
            "product_ids",
            format!("product_ids must name 1 to {MAX_PRODUCTS} products"),
        ));
    }
    let max = request.granularity.max_horizon();
    let horizon = u32::try_from(request.horizon.0).unwrap_or(0);
    if !(1..=max).contains(&horizon) {
        return Err(ApiError::rule(
            "horizon",
            format!(
                "horizon must be 1 to {max} for granularity {}",
                request.granularity.as_str()
            ),
        ));
    }
    let level = request.confidence_level.unwrap_or(95.0);
    if !(50.0..=99.9).contains(&level) {
        return Err(ApiError::validation(
            "confidence_level",
            "confidence_level must be from 50 to 99.9 (percent)",
        ));
    }
    let level = Decimal::from_f64(level)
        .map(|l| l.round_dp(2))
        .ok_or_else(|| ApiError::validation("confidence_level", "not a number"))?;
    let as_of = match request.as_of {
        Some(date) => date.0,
        None => chrono::Utc::now().date_naive(),
    };
    // Every forecast period (the one after as_of's, and the next horizon - 1) is stored and
    // shown as a business date; the end of the horizon must be one too.
    let end = (0..=horizon).fold(request.granularity.start_of(as_of), |date, _| {
        request.granularity.next(date)
    });
    if !crate::http::fields::in_business_range(end) {
        return Err(ApiError::rule(
            "as_of",
            format!(
                "the forecast would run past 2200-12-31 (its periods end {end}): give an earlier as_of or a shorter horizon"
            ),
        ));
    }
    Ok(Plan {
        kind: request.forecast_type,
        granularity: request.granularity,
        horizon: horizon as usize,
        model: request.model.unwrap_or(ModelChoice::Auto),
        level,
        as_of,
    })
}

/// `POST /api/v1/forecasts/generate`
async fn generate(
    State(state): State<AppState>,
    Writer(caller, _): Writer<Forecasts>,
    Body(request): Body<GenerateRequest>,
) -> Result<Json<GenerateResponse>, ApiError> {
    let plan = validate(&request)?;

    let mut tx = state.begin(&caller).await?;
    let products: Vec<(Uuid, Uuid)> = match (&request.product_id, &request.product_ids) {
        (Some(id), _) => named(&mut tx, &[*id], "product_id").await?,
        (_, Some(ids)) => {
            let mut ids = ids.clone();
            ids.sort();
            ids.dedup();
            named(&mut tx, &ids, "product_ids").await?
        }
        _ => {
            let all: Vec<(Uuid, Uuid)> = sqlx::query_as(
                "SELECT id, company_id FROM products WHERE is_active ORDER BY sku LIMIT $1",
            )
            .bind(MAX_PRODUCTS as i64 + 1)
            .fetch_all(&mut *tx)
            .await?;
            if all.len() > MAX_PRODUCTS {
                return Err(ApiError::rule(
                    "all",
                    format!(
                        "more than {MAX_PRODUCTS} active products: name up to {MAX_PRODUCTS} in product_ids"
                    ),
                ));
            }
            all
        }
    };
    let today = chrono::Utc::now().date_naive();
    let runs = if plan.kind == ForecastType::CashFlow {
        let runs = cash_flow_runs(&mut tx, &plan, &products).await?;
        let product_ids: Vec<Uuid> = products.iter().map(|(p, _)| *p).collect();
        forecast::reconcile(&mut tx, today, Some(&product_ids)).await?;
        runs
    } else {
        // The refresh job's code path too (`capliquify forecasts refresh`).
        forecast::generate_sales(&mut tx, &plan, &products, today)
            .await
            .map_err(generate_error)?
            .into_iter()
            .map(|run| {
                (
                    run.ids,
                    ProductRun {
                        company_id: run.company,
                        product_id: Some(run.product),
                        model: run.model,
                        fallback: run.fallback,
                        history_periods: run.history_periods,
                        model_parameters: run.parameters,
                        forecasts: Vec::new(),
                    },
                )
            })
            .collect()
    };
    let mut out = Vec::with_capacity(runs.len());
    for (ids, mut run) in runs {
        run.forecasts = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM forecasts WHERE id = ANY($1) ORDER BY forecast_date",
            Forecast::select_list()
        )))
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        out.push(run);
    }
    tx.commit().await?;
    Ok(Json(GenerateResponse { runs: out }))
}

type StoredRun = (Vec<Uuid>, ProductRun);

/// Cash flow: one run per company of the selected products, from their revenue and COGS
/// forecasts, the company's latest DSO and DPO and its latest stored cash.
async fn cash_flow_runs(
    tx: &mut sqlx::PgConnection,
    plan: &Plan,
    products: &[(Uuid, Uuid)],
) -> Result<Vec<StoredRun>, ApiError> {
    let mut by_company: std::collections::BTreeMap<Uuid, Vec<Uuid>> = Default::default();
    for (product, company) in products {
        by_company.entry(*company).or_default().push(*product);
    }
    let first = plan.granularity.start_of(plan.as_of);
    let mut period_days = Vec::with_capacity(plan.horizon);
    let mut dates = Vec::with_capacity(plan.horizon);
    let mut date = first;
    for _ in 0..plan.horizon {
        let next = plan.granularity.next(date);
        period_days.push((next - date).num_days());
        dates.push(date);
        date = next;
    }
    let mut runs = Vec::new();
    for (company, members) in by_company {
        let metric = wc::latest(tx, company, None).await?;
        let Some((m, cash, dso, dpo)) = metric.and_then(|m| {
            Some((
                m.period_date,
                m.cash?,
                m.days_sales_outstanding?,
                m.days_payables_outstanding?,
            ))
        }) else {
            return Err(ApiError::rule(
                "company_id",
                format!(
                    "company {company} has no computed metrics with cash, DSO and DPO; compute them first (POST /api/v1/working-capital-metrics/compute)"
                ),
            ));
        };
        let (start, revenue, cogs) =
            forecast::company_flows(tx, company, &members, plan.granularity, plan.as_of).await?;
        let periods = revenue.len();
        let outcomes = forecast::fit_all(plan, vec![revenue.clone(), cogs.clone()])
            .await
            .map_err(generate_error)?;
        let (rev, cost) = (&outcomes[0], &outcomes[1]);
        let inputs = |r: &[f64], c: &[f64]| cash_flow::Inputs {
            opening_cash: cash,
            dso_days: dso,
            dpo_days: dpo,
            period_days: period_days.clone(),
            revenue_history: forecast::decimals(&revenue),
            cogs_history: forecast::decimals(&cogs),
            revenue_forecast: forecast::decimals(r),
            cogs_forecast: forecast::decimals(c),
        };
        let p = (&rev.prediction, &cost.prediction);
        let central = cash_flow::project(&inputs(&p.0.point, &p.1.point));
        // Low receipts with high payments bound the balance from below, and the reverse
        // from above: the flows' own intervals, not a joint one.
        let low = cash_flow::project(&inputs(&p.0.lower, &p.1.upper));
        let high = cash_flow::project(&inputs(&p.0.upper, &p.1.lower));
        let mut rows = Vec::with_capacity(plan.horizon);
        for t in 0..plan.horizon {
            let balance = central.periods[t].balance;
            let row = (
                balance,
                low.periods[t].balance.min(balance),
                high.periods[t].balance.max(balance),
            );
            if [row.0, row.1, row.2]
                .iter()
                .any(|v| v.abs() >= Decimal::from(10_000_000_000_000_i64))
            {
                return Err(ApiError::rule(
                    "horizon",
                    "the projected cash balance is too large to store",
                ));
            }
            rows.push(row);
        }
        let parameters = json!({
            "granularity": plan.granularity.as_str(),
            "requested_model": plan.model,
            "model": rev.model,
            "as_of": plan.as_of,
            "history": { "start": (periods > 0).then_some(start), "periods": periods },
            "opening_cash": { "amount": cash, "period_date": m },
            "days_sales_outstanding": dso,
            "days_payables_outstanding": dpo,
            "periods": dates.iter().zip(&central.periods).map(|(d, p)| json!({
                "period": d, "receipts": p.receipts, "payments": p.payments, "net": p.net, "balance": p.balance,
            })).collect::<Vec<_>>(),
            "runway_end": central.runway_end.map(|t| dates[t]),
            "revenue_forecast": forecast::parameters(plan, rev, start, periods),
            "cogs_forecast": forecast::parameters(plan, cost, start, periods),
        });
        let ids = forecast::replace(
            tx,
            &Run {
                company,
                product: None,
                kind: plan.kind,
                granularity: plan.granularity,
                first,
                confidence_level: plan.level,
                model: &rev.model,
                rows,
                parameters: parameters.clone(),
            },
        )
        .await?;
        runs.push((
            ids,
            ProductRun {
                company_id: company,
                product_id: None,
                model: rev.model.clone(),
                fallback: rev.fallback.clone().or(cost.fallback.clone()),
                history_periods: periods,
                model_parameters: parameters,
                forecasts: Vec::new(),
            },
        ));
    }
    Ok(runs)
}

fn generate_error(err: GenerateError) -> ApiError {
    match err {
        GenerateError::Database(e) => e.into(),
        GenerateError::Fit(e) => ApiError::internal(e),
    }
}

/// The (product, company) of each id, or a 422 naming `field` when one is not a product of
/// this tenant.
async fn named(
    conn: &mut sqlx::PgConnection,
    ids: &[Uuid],
    field: &str,
) -> Result<Vec<(Uuid, Uuid)>, ApiError> {
    let found: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT id, company_id FROM products WHERE id = ANY($1) ORDER BY sku")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    if found.len() != ids.len() {
        let missing = ids
            .iter()
            .find(|id| !found.iter().any(|(f, _)| f == *id))
            .map(Uuid::to_string)
            .unwrap_or_default();
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "reference_not_found",
            format!("{missing} is not a product of this tenant"),
        )
        .with_field(field));
    }
    Ok(found)
}
