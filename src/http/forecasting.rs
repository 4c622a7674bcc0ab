//! `POST /api/v1/forecasts/generate`: a thin handler over [`crate::domain::forecast`].
//! Needs a member and the plan's `ai_forecasting` (the forecasts resource's write gate).
//! Histories are read, models fitted off the async runtime, and every product's rows
//! replaced in the one tenant transaction.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::routing::post;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::context::Caller;
use super::error::ApiError;
use super::resource::{Resource, body_bytes, parse_body, require_write};
use super::resources::forecasts::{Forecast, Forecasts};
use super::validate as v;
use crate::db::scope;
use crate::domain::forecast::{self, ForecastType, Granularity, ModelChoice, Outcome, Run};

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
    /// `demand` (units) or `revenue`; `cash_flow` is not available yet (422).
    pub forecast_type: ForecastType,
    pub granularity: Granularity,
    /// Periods ahead: up to 365 days, 104 weeks or 36 months.
    #[schema(minimum = 1, maximum = 365)]
    pub horizon: u32,
    /// Default `auto`.
    pub model: Option<ModelChoice>,
    /// Percent, 50 to 99.9 (default 95).
    #[schema(minimum = 50, maximum = 99.9)]
    pub confidence_level: Option<f64>,
    /// The history ends before the period holding this date, which is the first forecast
    /// period (default today). For backtests and reproducible runs.
    pub as_of: Option<NaiveDate>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductRun {
    pub product_id: Uuid,
    /// The model used: `mstl_log`, `mstl`, `ets`, `seasonal_naive`, `naive`, `ensemble` or
    /// `none` (no history).
    pub model: String,
    /// Why the requested model was not used, when it was not.
    pub fallback: Option<String>,
    /// Complete periods of history the model saw.
    pub history_periods: usize,
    /// The stored `model_parameters` (model, ETS form, backtest scores, weights).
    #[schema(value_type = Object)]
    pub model_parameters: serde_json::Value,
    pub forecasts: Vec<Forecast>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateResponse {
    pub runs: Vec<ProductRun>,
}

/// What a request asks for, validated.
struct Plan {
    kind: ForecastType,
    granularity: Granularity,
    horizon: usize,
    model: ModelChoice,
    level: Decimal,
    as_of: NaiveDate,
}

fn validate(request: &GenerateRequest) -> Result<Plan, ApiError> {
    let selectors = [
        request.product_id.is_some(),
        request.product_ids.is_some(),
        request.all == Some(true),
    ];
    if selectors.iter().filter(|s| **s).count() != 1 {
        return Err(ApiError::validation(
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
    if request.forecast_type == ForecastType::CashFlow {
        return Err(ApiError::validation(
            "forecast_type",
            "cash_flow forecasts are not available yet; use demand or revenue",
        ));
    }
    let max = request.granularity.max_horizon();
    if !(1..=max).contains(&request.horizon) {
        return Err(ApiError::validation(
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
        Some(date) => v::date("as_of", date)?,
        None => chrono::Utc::now().date_naive(),
    };
    Ok(Plan {
        kind: request.forecast_type,
        granularity: request.granularity,
        horizon: request.horizon as usize,
        model: request.model.unwrap_or(ModelChoice::Auto),
        level,
        as_of,
    })
}

/// `POST /api/v1/forecasts/generate`
async fn generate(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<GenerateResponse>, ApiError> {
    require_write::<Forecasts>(&caller)?;
    let request: GenerateRequest = parse_body(&body_bytes(body)?)?;
    let plan = validate(&request)?;

    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
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
                return Err(ApiError::validation(
                    "all",
                    format!(
                        "more than {MAX_PRODUCTS} active products: name up to {MAX_PRODUCTS} in product_ids"
                    ),
                ));
            }
            all
        }
    };
    let mut histories = Vec::with_capacity(products.len());
    for (product, company) in &products {
        let (start, values) =
            forecast::history(&mut tx, *product, plan.kind, plan.granularity, plan.as_of).await?;
        histories.push((*product, *company, start, values));
    }
    // Fitting is CPU work: keep it off the runtime's worker threads.
    let (season, horizon, model) = (plan.granularity.season(), plan.horizon, plan.model);
    let level = f64::try_from(plan.level).unwrap_or(95.0) / 100.0;
    let fitted: Vec<(Uuid, Uuid, NaiveDate, usize, Outcome)> =
        tokio::task::spawn_blocking(move || {
            histories
                .into_iter()
                .map(|(product, company, start, y)| {
                    let outcome = forecast::forecast(&y, season, horizon, model, level);
                    (product, company, start, y.len(), outcome)
                })
                .collect()
        })
        .await
        .map_err(ApiError::internal)?;

    let first = plan.granularity.start_of(plan.as_of);
    let mut runs = Vec::with_capacity(fitted.len());
    for (product, company, start, periods, outcome) in &fitted {
        let parameters = json!({
            "granularity": plan.granularity.as_str(),
            "requested_model": plan.model,
            "model": outcome.model,
            "ets_form": outcome.ets_form,
            "fallback": outcome.fallback,
            "as_of": plan.as_of,
            "history": { "start": (*periods > 0).then_some(start), "periods": periods },
            "backtest": {
                "method": "rolling origin, up to 3 origins",
                "horizon": outcome.backtest_horizon,
                "scores": outcome.scores,
            },
            "weights": outcome.weights,
        });
        let ids = forecast::replace(
            &mut tx,
            &Run {
                company: *company,
                product: *product,
                kind: plan.kind,
                granularity: plan.granularity,
                first,
                confidence_level: plan.level,
                outcome,
                parameters: parameters.clone(),
            },
        )
        .await?;
        runs.push((ids, *product, outcome, *periods, parameters));
    }
    let today = chrono::Utc::now().date_naive();
    let product_ids: Vec<Uuid> = products.iter().map(|(p, _)| *p).collect();
    forecast::reconcile(&mut tx, today, Some(&product_ids)).await?;
    let mut out = Vec::with_capacity(runs.len());
    for (ids, product, outcome, periods, parameters) in runs {
        let forecasts: Vec<Forecast> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM forecasts WHERE id = ANY($1) ORDER BY forecast_date",
            Forecasts::COLUMNS
        )))
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        out.push(ProductRun {
            product_id: product,
            model: outcome.model.clone(),
            fallback: outcome.fallback.clone(),
            history_periods: periods,
            model_parameters: parameters,
            forecasts,
        });
    }
    tx.commit().await?;
    Ok(Json(GenerateResponse { runs: out }))
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
