//! `POST /api/v1/scenarios/{id}/run`, `GET /api/v1/scenarios/presets` and
//! `POST /api/v1/scenarios/presets/{preset}`: thin handlers over
//! [`crate::domain::scenarios`]. Running or creating needs a member and the plan's
//! `what_if` (the scenarios resource's own write gate); the presets are readable by anyone
//! in the tenant.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::context::Caller;
use super::error::ApiError;
use super::resource::{Resource, body_bytes, db_error, parse_body, parse_id, require_write};
use super::resources::scenarios::{Scenario, Scenarios};
use super::validate as v;
use crate::access::Act;
use crate::db::scope;
use crate::domain::scenarios::{self, Baseline, Parameters, Preset, ScenarioError};
use crate::domain::working_capital::{self as wc, Period, PeriodType};

/// The routes of this module (under `/api/v1`). `presets` is a static segment beside the
/// resource's `/scenarios/{id}`: axum matches static segments first, so it is never read
/// as an id.
pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/scenarios/presets", get(list_presets))
        .route("/scenarios/presets/{preset}", post(create_from_preset))
        .route("/scenarios/{id}/run", post(run))
}

/// Which stored period to run against; an empty body (or none) means the company's latest.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Default `monthly` when `period_date` is given; otherwise any type.
    pub period_type: Option<PeriodType>,
    /// The baseline period's last day; absent: the company's latest computed period.
    pub period_date: Option<NaiveDate>,
}

fn scenario_error(e: ScenarioError) -> ApiError {
    ApiError::validation(e.field, e.message)
}

/// `POST /api/v1/scenarios/{id}/run`
async fn run(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Scenario>, ApiError> {
    require_write::<Scenarios>(&caller)?;
    let id = parse_id(&id)?;
    let body = body_bytes(body)?;
    let request: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        parse_body(&body)?
    };
    let stated = match request.period_date {
        Some(date) => {
            let date = v::date("period_date", date)?;
            let kind = request.period_type.unwrap_or(PeriodType::Monthly);
            Some(
                Period::ending(kind, date)
                    .map_err(|e| ApiError::validation("period_date", e.to_string()))?,
            )
        }
        None => None,
    };

    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    let scenario: Option<(Uuid, serde_json::Value)> =
        sqlx::query_as("SELECT company_id, parameters FROM scenarios WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let (company, parameters) = scenario.ok_or_else(|| ApiError::not_found("scenario"))?;
    let parameters = Parameters::parse(&parameters).map_err(scenario_error)?;
    let row = match &stated {
        Some(period) => wc::of_period(&mut tx, company, period).await?.ok_or_else(|| {
            ApiError::validation(
                "period_date",
                format!(
                    "the scenario's company has no {} metrics for the period ending {}",
                    period.kind.as_str(),
                    period.end
                ),
            )
        })?,
        None => wc::latest(&mut tx, company, request.period_type)
            .await?
            .ok_or_else(|| {
                ApiError::validation(
                    "company_id",
                    "the scenario's company has no working-capital metrics; compute them first (POST /api/v1/working-capital-metrics/compute)",
                )
            })?,
    };
    let kind = PeriodType::parse(&row.period_type).unwrap_or(PeriodType::Monthly);
    let earlier = wc::earlier_cash(&mut tx, company, kind, row.period_date).await?;
    let baseline = Baseline::from_stored(&row, &earlier).map_err(scenario_error)?;
    let outcome = scenarios::run(&baseline, &parameters).map_err(scenario_error)?;
    let results = serde_json::to_value(&outcome).map_err(ApiError::internal)?;
    let updated: Scenario = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE scenarios SET results = $2 WHERE id = $1 RETURNING {}",
        Scenarios::COLUMNS
    )))
    .bind(id)
    .bind(results)
    .fetch_one(&mut *tx)
    .await?;
    crate::audit::record_in_tenant(
        &mut tx,
        &caller.tenant.scope,
        &caller.actor(),
        crate::audit::Entry {
            tenant_id: Some(caller.tenant.scope.id),
            action: "scenario.run",
            resource_type: Scenarios::NAME,
            resource_id: id.to_string(),
            metadata: serde_json::json!({ "baseline_period": row.period_date }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Json(updated))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PresetList {
    pub data: Vec<Preset>,
}

/// `GET /api/v1/scenarios/presets`
async fn list_presets(
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<PresetList>, ApiError> {
    caller.require(Act::ReadData)?;
    Ok(Json(PresetList {
        data: scenarios::presets(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewScenarioFromPreset {
    pub company_id: Uuid,
    /// Default: the preset's name. At most 255 characters.
    #[schema(max_length = 255)]
    pub name: Option<String>,
}

/// `POST /api/v1/scenarios/presets/{preset}`: one call makes a scenario of a preset.
async fn create_from_preset(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(preset): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_write::<Scenarios>(&caller)?;
    let preset = scenarios::presets()
        .into_iter()
        .find(|p| p.key == preset)
        .ok_or_else(|| ApiError::not_found("preset"))?;
    let request: NewScenarioFromPreset = parse_body(&body_bytes(body)?)?;
    let name = v::optional_text("name", request.name, 255)?.unwrap_or(preset.name.to_owned());
    let mut tx = scope::begin(
        state.tenant_pool(&caller.tenant.scope)?,
        &caller.tenant.scope,
    )
    .await?;
    let row: Scenario = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO scenarios (company_id, name, description, scenario_type, parameters, created_by_user_id)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {}",
        Scenarios::COLUMNS
    )))
    .bind(request.company_id)
    .bind(name)
    .bind(preset.description)
    .bind(preset.key)
    .bind(&preset.parameters)
    .bind(&caller.member.clerk_user_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| db_error(e, Scenarios::TABLE, Scenarios::NAME))?;
    crate::audit::record_in_tenant(
        &mut tx,
        &caller.tenant.scope,
        &caller.actor(),
        crate::audit::Entry {
            tenant_id: Some(caller.tenant.scope.id),
            action: "scenario.created",
            resource_type: Scenarios::NAME,
            resource_id: row.id.to_string(),
            metadata: serde_json::json!({ "preset": preset.key }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}
