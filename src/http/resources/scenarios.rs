//! `/api/v1/scenarios`: what-if scenarios (their parameters and, once run, results).
//! Writing needs the plan's what-if analysis.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::resource::{Bind, Filter, Kind, Op, RequiredFeature, Resource, Sort, nullable};
use crate::http::validate as v;

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Scenario {
    pub id: Uuid,
    pub company_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub scenario_type: Option<String>,
    pub parameters: serde_json::Value,
    pub results: Option<serde_json::Value>,
    pub is_baseline: bool,
    /// The Clerk user who created it; not yet recorded (always null for now).
    pub created_by_user_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewScenario {
    pub company_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub scenario_type: Option<String>,
    /// A JSON object.
    pub parameters: serde_json::Value,
    /// A JSON object.
    pub results: Option<serde_json::Value>,
    /// Default false.
    pub is_baseline: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioChanges {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub scenario_type: Option<Option<String>>,
    pub parameters: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    pub results: Option<Option<serde_json::Value>>,
    pub is_baseline: Option<bool>,
}

/// `parameters` is NOT NULL, so unlike `results` a JSON null is refused, not stored.
fn parameters(value: serde_json::Value) -> Result<serde_json::Value, ApiError> {
    v::object("parameters", Some(value)).map(Option::unwrap_or_default)
}

pub struct Scenarios;

impl Resource for Scenarios {
    const NAME: &'static str = "scenario";
    const PATH: &'static str = "scenarios";
    const TABLE: &'static str = "scenarios";
    const COLUMNS: &'static str = "id, company_id, name::text, description, scenario_type::text, parameters, results, \
         is_baseline, created_by_user_id::text, created_at, updated_at";
    const SORTS: &'static [Sort] = &[
        Sort {
            param: "created_at",
            column: "created_at",
            sql_type: "timestamptz",
        },
        Sort {
            param: "name",
            column: "name",
            sql_type: "text",
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
            param: "scenario_type",
            column: "scenario_type",
            op: Op::Eq,
            kind: Kind::Text,
        },
        Filter {
            param: "baseline",
            column: "is_baseline",
            op: Op::Eq,
            kind: Kind::Bool,
        },
    ];
    const WRITE_FEATURE: Option<RequiredFeature> = Some(RequiredFeature {
        name: "what_if",
        enabled: |f| f.what_if,
    });
    const CREATED_BY: Option<&'static str> = Some("created_by_user_id");
    const AUDITED: bool = true;

    type Row = Scenario;
    type Create = NewScenario;
    type Update = ScenarioChanges;

    // `created_by_user_id` is set by the engine from the caller (`CREATED_BY`), never
    // taken from the client.
    fn create(s: NewScenario) -> Result<Vec<(&'static str, Bind)>, ApiError> {
        let mut values = vec![
            ("company_id", Bind::Uuid(Some(s.company_id))),
            ("name", Bind::Text(Some(v::text("name", s.name, 255)?))),
            (
                "description",
                Bind::Text(v::optional_text("description", s.description, 10_000)?),
            ),
            (
                "scenario_type",
                Bind::Text(v::optional_text("scenario_type", s.scenario_type, 50)?),
            ),
            ("parameters", Bind::Json(Some(parameters(s.parameters)?))),
            ("results", Bind::Json(v::object("results", s.results)?)),
        ];
        if let Some(baseline) = s.is_baseline {
            values.push(("is_baseline", Bind::Bool(Some(baseline))));
        }
        Ok(values)
    }

    fn update(s: ScenarioChanges) -> Result<Vec<(&'static str, Bind)>, ApiError> {
        let mut values = Vec::new();
        if let Some(name) = s.name {
            values.push(("name", Bind::Text(Some(v::text("name", name, 255)?))));
        }
        if let Some(description) = s.description {
            values.push((
                "description",
                Bind::Text(v::optional_text("description", description, 10_000)?),
            ));
        }
        if let Some(kind) = s.scenario_type {
            values.push((
                "scenario_type",
                Bind::Text(v::optional_text("scenario_type", kind, 50)?),
            ));
        }
        if let Some(p) = s.parameters {
            values.push(("parameters", Bind::Json(Some(parameters(p)?))));
        }
        if let Some(results) = s.results {
            values.push(("results", Bind::Json(v::object("results", results)?)));
        }
        if let Some(baseline) = s.is_baseline {
            values.push(("is_baseline", Bind::Bool(Some(baseline))));
        }
        Ok(values)
    }
}
