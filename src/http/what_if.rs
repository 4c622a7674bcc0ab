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
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use uuid::Uuid;

use super::AppState;
use super::columns::{ObjectSchema, RowType};
use super::context::Caller;
use super::error::ApiError;
use super::extract::{Body, Id, Writer, parse_json};
use super::fields::{Day, Text};
use super::resource::{Resource, body_bytes, db_error};
use super::resources::scenarios::{Scenario, Scenarios};
use crate::access::Act;
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
    /// The baseline period's last day (1900–2200); absent: the company's latest computed
    /// period.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Date, pattern = "^(19[0-9]{2}|2[01][0-9]{2}|2200)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    pub period_date: Option<Day>,
}

/// The stored parameters or the baseline break a rule of the engine: the request itself
/// was valid, so `rule_violated` naming the field (e.g. `parameters.dso_days`).
fn scenario_error(e: ScenarioError) -> ApiError {
    ApiError::rule(e.field, e.message)
}

/// `POST /api/v1/scenarios/{id}/run`
async fn run(
    State(state): State<AppState>,
    Writer(caller, _): Writer<Scenarios>,
    Id(id): Id,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Scenario>, ApiError> {
    // The body is optional: none (or only white space) runs against the latest period.
    let body = body_bytes(body)?;
    let request: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        parse_json(&body)?
    };
    let stated = match request.period_date {
        Some(date) => {
            let kind = request.period_type.unwrap_or(PeriodType::Monthly);
            Some(
                Period::ending(kind, date.0)
                    .map_err(|e| ApiError::rule("period_date", e.to_string()))?,
            )
        }
        None => None,
    };

    let mut tx = state.begin(&caller).await?;
    // The document as PostgreSQL prints it, parsed here: `jsonb` keeps any number exactly,
    // and one no f64 holds (stored by SQL; the API's own parsing never makes one) is out
    // of range for serde_json. It is outside every parameter's range anyway, so it is the
    // client's to fix (422), not a fault of the server.
    let scenario: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT company_id, parameters::text FROM scenarios WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (company, parameters) = scenario.ok_or_else(|| ApiError::not_found("scenario"))?;
    let parameters = serde_json::from_str(&parameters).map_err(|e| {
        ApiError::rule(
            "parameters",
            format!(
                "the scenario's parameters cannot be read ({e}): a number is out of range; \
                 replace them (PATCH /api/v1/scenarios/{{id}})"
            ),
        )
    })?;
    let parameters = Parameters::parse(&parameters).map_err(scenario_error)?;
    let row = match &stated {
        Some(period) => wc::of_period(&mut tx, company, period).await?.ok_or_else(|| {
            ApiError::rule(
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
                ApiError::rule(
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
        Scenario::select_list()
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
async fn list_presets(caller: Caller) -> Result<Json<PresetList>, ApiError> {
    caller.require(Act::ReadData)?;
    Ok(Json(PresetList {
        data: scenarios::presets(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewScenarioFromPreset {
    pub company_id: Uuid,
    #[serde(default)]
    pub name: Option<Text<255>>,
}

impl utoipa::PartialSchema for NewScenarioFromPreset {
    fn schema() -> RefOr<Schema> {
        ObjectSchema::new("NewScenarioFromPreset", true)
            .property::<Uuid>("company_id", false, true, "")
            .property::<Text<255>>("name", true, false, "Default: the preset's name.")
            .build()
    }
}
impl ToSchema for NewScenarioFromPreset {}

/// `POST /api/v1/scenarios/presets/{preset}`: one call makes a scenario of a preset.
async fn create_from_preset(
    State(state): State<AppState>,
    Writer(caller, _): Writer<Scenarios>,
    Path(preset): Path<String>,
    Body(request): Body<NewScenarioFromPreset>,
) -> Result<Response, ApiError> {
    let preset = scenarios::presets()
        .into_iter()
        .find(|p| p.key == preset)
        .ok_or_else(|| ApiError::not_found("preset"))?;
    let name = request
        .name
        .map(Text::into_string)
        .unwrap_or(preset.name.to_owned());
    let mut tx = state.begin(&caller).await?;
    let row: Scenario = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO scenarios (company_id, name, description, scenario_type, parameters, created_by_user_id)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {}",
        Scenario::select_list()
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
