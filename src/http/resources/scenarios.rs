//! `/api/v1/scenarios`: what-if scenarios (their parameters and, once run, results).
//! Writing needs the plan's what-if analysis.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::http::fields::{JsonObject, Text};
use crate::http::resource::{Filter, Kind, Op, RequiredFeature, Resource, Sort};

/// Largest `parameters` or `results` document of a scenario.
pub const MAX_SCENARIO_JSON_BYTES: usize = 64 * 1024;

/// A scenario's `parameters` or `results`.
pub type ScenarioDocument = JsonObject<MAX_SCENARIO_JSON_BYTES>;

crate::resource_fields! {
    row Scenario, create NewScenario, update ScenarioChanges;
    id: Uuid => read,
    company_id: Uuid => fixed,
    name: Text<255> => required,
    description: Text<10000> => optional,
    scenario_type: Text<50> => optional,
    parameters: ScenarioDocument => required,
    results: ScenarioDocument => optional,
    /// Default false.
    is_baseline: bool => defaulted,
    /// The Clerk user who created it.
    created_by_user_id: Option<String> => read,
    created_at: DateTime<Utc> => read,
    updated_at: DateTime<Utc> => read,
}

pub struct Scenarios;

impl Resource for Scenarios {
    const NAME: &'static str = "scenario";
    const PATH: &'static str = "scenarios";
    const TABLE: &'static str = "scenarios";
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
}
