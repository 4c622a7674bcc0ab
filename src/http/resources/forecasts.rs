//! `/api/v1/forecasts`: predicted demand, revenue or cash flow for a date, with its
//! interval and, once known, the actual value. Writing needs the plan's AI forecasting.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::resource::{Bind, Filter, Kind, Op, RequiredFeature, Resource, Sort, nullable};
use crate::http::validate as v;

const FORECAST_TYPES: &[&str] = &["demand", "revenue", "cash_flow"];

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Forecast {
    pub id: Uuid,
    pub company_id: Uuid,
    pub product_id: Option<Uuid>,
    pub forecast_date: NaiveDate,
    /// `demand`, `revenue` or `cash_flow`.
    pub forecast_type: String,
    pub model_type: Option<String>,
    /// Decimal string.
    #[schema(value_type = String)]
    pub predicted_value: Decimal,
    #[schema(value_type = Option<String>)]
    pub lower_bound: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub upper_bound: Option<Decimal>,
    /// Percent, 0 to 100.
    #[schema(value_type = Option<String>)]
    pub confidence_level: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub actual_value: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub accuracy_percentage: Option<Decimal>,
    pub model_parameters: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewForecast {
    pub company_id: Uuid,
    pub product_id: Option<Uuid>,
    pub forecast_date: NaiveDate,
    /// `demand`, `revenue` or `cash_flow`.
    pub forecast_type: String,
    pub model_type: Option<String>,
    /// Decimal string; may be negative (cash flow).
    #[schema(value_type = String)]
    pub predicted_value: Decimal,
    /// At most `predicted_value`.
    #[schema(value_type = Option<String>)]
    pub lower_bound: Option<Decimal>,
    /// At least `predicted_value`.
    #[schema(value_type = Option<String>)]
    pub upper_bound: Option<Decimal>,
    /// Percent, 0 to 100, at most 2 decimals.
    #[schema(value_type = Option<String>)]
    pub confidence_level: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub actual_value: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub accuracy_percentage: Option<Decimal>,
    /// A JSON object.
    pub model_parameters: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForecastChanges {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub product_id: Option<Option<Uuid>>,
    pub forecast_date: Option<NaiveDate>,
    pub forecast_type: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub model_type: Option<Option<String>>,
    #[schema(value_type = Option<String>)]
    pub predicted_value: Option<Decimal>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub lower_bound: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub upper_bound: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub confidence_level: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub actual_value: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub accuracy_percentage: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    pub model_parameters: Option<Option<serde_json::Value>>,
}

fn forecast_type(value: String) -> Result<String, ApiError> {
    v::one_of("forecast_type", Some(value), FORECAST_TYPES).map(Option::unwrap_or_default)
}

/// `numeric(5,2)` between 0 and 100 (the column's CHECK, refused here with a clearer word).
fn confidence_level(value: Option<Decimal>) -> Result<Option<Decimal>, ApiError> {
    let value = v::numeric("confidence_level", value, 5, 2)?;
    if value.is_some_and(|c| c < Decimal::ZERO || c > Decimal::ONE_HUNDRED) {
        return Err(ApiError::validation(
            "confidence_level",
            "confidence_level must be between 0 and 100",
        ));
    }
    Ok(value)
}

/// The interval must contain the prediction. On update only the values in the body can
/// be compared: the engine does not show us the stored row.
fn interval(
    lower: Option<Decimal>,
    predicted: Option<Decimal>,
    upper: Option<Decimal>,
) -> Result<(), ApiError> {
    if let (Some(l), Some(p)) = (lower, predicted)
        && l > p
    {
        return Err(ApiError::validation(
            "lower_bound",
            "lower_bound must not exceed predicted_value",
        ));
    }
    if let (Some(p), Some(u)) = (predicted, upper)
        && u < p
    {
        return Err(ApiError::validation(
            "upper_bound",
            "upper_bound must not be below predicted_value",
        ));
    }
    if let (Some(l), Some(u)) = (lower, upper)
        && l > u
    {
        return Err(ApiError::validation(
            "lower_bound",
            "lower_bound must not exceed upper_bound",
        ));
    }
    Ok(())
}

pub struct Forecasts;

impl Resource for Forecasts {
    const NAME: &'static str = "forecast";
    const PATH: &'static str = "forecasts";
    const TABLE: &'static str = "forecasts";
    const COLUMNS: &'static str = "id, company_id, product_id, forecast_date, forecast_type::text, model_type::text, \
         predicted_value, lower_bound, upper_bound, confidence_level, actual_value, accuracy_percentage, \
         model_parameters, created_at";
    const SORTS: &'static [Sort] = &[
        Sort {
            param: "forecast_date",
            column: "forecast_date",
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
            param: "product_id",
            column: "product_id",
            op: Op::Eq,
            kind: Kind::Uuid,
        },
        Filter {
            param: "forecast_type",
            column: "forecast_type",
            op: Op::Eq,
            kind: Kind::Text,
        },
        Filter {
            param: "from",
            column: "forecast_date",
            op: Op::Gte,
            kind: Kind::Date,
        },
        Filter {
            param: "to",
            column: "forecast_date",
            op: Op::Lte,
            kind: Kind::Date,
        },
    ];
    const WRITE_FEATURE: Option<RequiredFeature> = Some(RequiredFeature {
        name: "ai_forecasting",
        enabled: |f| f.ai_forecasting,
    });
    const AUDITED: bool = true;

    type Row = Forecast;
    type Create = NewForecast;
    type Update = ForecastChanges;

    fn create(f: NewForecast) -> Result<Vec<(&'static str, Bind)>, ApiError> {
        let predicted = v::money("predicted_value", f.predicted_value, false)?;
        let lower = v::optional_money("lower_bound", f.lower_bound, false)?;
        let upper = v::optional_money("upper_bound", f.upper_bound, false)?;
        interval(lower, Some(predicted), upper)?;
        Ok(vec![
            ("company_id", Bind::Uuid(Some(f.company_id))),
            ("product_id", Bind::Uuid(f.product_id)),
            (
                "forecast_date",
                Bind::Date(Some(v::date("forecast_date", f.forecast_date)?)),
            ),
            (
                "forecast_type",
                Bind::Text(Some(forecast_type(f.forecast_type)?)),
            ),
            (
                "model_type",
                Bind::Text(v::optional_text("model_type", f.model_type, 50)?),
            ),
            ("predicted_value", Bind::Decimal(Some(predicted))),
            ("lower_bound", Bind::Decimal(lower)),
            ("upper_bound", Bind::Decimal(upper)),
            (
                "confidence_level",
                Bind::Decimal(confidence_level(f.confidence_level)?),
            ),
            (
                "actual_value",
                Bind::Decimal(v::optional_money("actual_value", f.actual_value, false)?),
            ),
            (
                "accuracy_percentage",
                Bind::Decimal(v::numeric(
                    "accuracy_percentage",
                    f.accuracy_percentage,
                    5,
                    2,
                )?),
            ),
            (
                "model_parameters",
                Bind::Json(v::object("model_parameters", f.model_parameters)?),
            ),
        ])
    }

    fn update(f: ForecastChanges) -> Result<Vec<(&'static str, Bind)>, ApiError> {
        let mut values = Vec::new();
        if let Some(product_id) = f.product_id {
            values.push(("product_id", Bind::Uuid(product_id)));
        }
        if let Some(date) = f.forecast_date {
            values.push((
                "forecast_date",
                Bind::Date(Some(v::date("forecast_date", date)?)),
            ));
        }
        if let Some(kind) = f.forecast_type {
            values.push(("forecast_type", Bind::Text(Some(forecast_type(kind)?))));
        }
        if let Some(model) = f.model_type {
            values.push((
                "model_type",
                Bind::Text(v::optional_text("model_type", model, 50)?),
            ));
        }
        let predicted = v::optional_money("predicted_value", f.predicted_value, false)?;
        let lower = f
            .lower_bound
            .map(|l| v::optional_money("lower_bound", l, false))
            .transpose()?;
        let upper = f
            .upper_bound
            .map(|u| v::optional_money("upper_bound", u, false))
            .transpose()?;
        interval(lower.flatten(), predicted, upper.flatten())?;
        if let Some(p) = predicted {
            values.push(("predicted_value", Bind::Decimal(Some(p))));
        }
        if let Some(l) = lower {
            values.push(("lower_bound", Bind::Decimal(l)));
        }
        if let Some(u) = upper {
            values.push(("upper_bound", Bind::Decimal(u)));
        }
        if let Some(c) = f.confidence_level {
            values.push(("confidence_level", Bind::Decimal(confidence_level(c)?)));
        }
        if let Some(a) = f.actual_value {
            values.push((
                "actual_value",
                Bind::Decimal(v::optional_money("actual_value", a, false)?),
            ));
        }
        if let Some(a) = f.accuracy_percentage {
            values.push((
                "accuracy_percentage",
                Bind::Decimal(v::numeric("accuracy_percentage", a, 5, 2)?),
            ));
        }
        if let Some(p) = f.model_parameters {
            values.push((
                "model_parameters",
                Bind::Json(v::object("model_parameters", p)?),
            ));
        }
        Ok(values)
    }
}
