//! `/api/v1/forecasts`: predicted demand, revenue or cash flow for a date, with its
//! interval and, once known, the actual value. Writing needs the plan's AI forecasting.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::fields::{Day, JsonObject, Numeric, Patch, Percentage, SignedMoney, Text};
use crate::http::resource::{Filter, Kind, Op, RequiredFeature, Resource, Sort};

/// Largest `model_parameters` document of a forecast.
pub const MAX_MODEL_PARAMETERS_BYTES: usize = 64 * 1024;

crate::words! {
    /// What a forecast predicts.
    ForecastType { Demand = "demand", Revenue = "revenue", CashFlow = "cash_flow" }
}

crate::resource_fields! {
    row Forecast, create NewForecast, update ForecastChanges;
    id: Uuid => read,
    company_id: Uuid => fixed,
    product_id: Uuid => optional,
    forecast_date: Day => required,
    forecast_type: ForecastType => required,
    model_type: Text<50> => optional,
    /// May be negative (cash flow).
    predicted_value: SignedMoney => required,
    /// At most predicted_value.
    lower_bound: SignedMoney => optional,
    /// At least predicted_value.
    upper_bound: SignedMoney => optional,
    confidence_level: Percentage => optional,
    actual_value: SignedMoney => optional,
    accuracy_percentage: Numeric<5, 2> => optional,
    model_parameters: JsonObject<MAX_MODEL_PARAMETERS_BYTES> => optional,
    created_at: DateTime<Utc> => read,
}

fn value<const P: u32, const S: u32>(n: Option<Numeric<P, S>>) -> Option<Decimal> {
    n.map(|n| n.0)
}

fn patched<const P: u32, const S: u32>(p: &Patch<Numeric<P, S>>) -> Option<Decimal> {
    match p {
        Patch::Value(n) => Some(n.0),
        _ => None,
    }
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
        return Err(ApiError::rule(
            "lower_bound",
            "lower_bound must not exceed predicted_value",
        ));
    }
    if let (Some(p), Some(u)) = (predicted, upper)
        && u < p
    {
        return Err(ApiError::rule(
            "upper_bound",
            "upper_bound must not be below predicted_value",
        ));
    }
    if let (Some(l), Some(u)) = (lower, upper)
        && l > u
    {
        return Err(ApiError::rule(
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

    fn prepare_create(new: &mut NewForecast) -> Result<(), ApiError> {
        interval(
            value(new.lower_bound),
            Some(new.predicted_value.0),
            value(new.upper_bound),
        )
    }

    /// Only the values in the body can be compared here; the database's CHECK compares
    /// them with the stored ones.
    fn prepare_update(changes: &mut ForecastChanges) -> Result<(), ApiError> {
        interval(
            patched(&changes.lower_bound),
            value(changes.predicted_value),
            patched(&changes.upper_bound),
        )
    }
}
