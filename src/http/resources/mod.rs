//! The tenant resources, one module each; [`crate::http::resource`] serves them and
//! [`crate::http::openapi`] documents them. Add a resource to the list at the bottom and
//! both pick it up.

pub mod companies;
pub mod forecasts;
pub mod inventory;
pub mod products;
pub mod sales;
pub mod scenarios;
pub mod working_capital_metrics;

use axum::Router;

use super::AppState;
use super::resource::routes;

macro_rules! resources {
    ($($resource:ty),* $(,)?) => {
        /// The routes of every resource.
        pub fn router() -> Router<AppState> {
            Router::new()$(.merge(routes::<$resource>()))*
        }

        /// Adds every resource's paths and schemas to `api`.
        pub fn describe(api: &mut utoipa::openapi::OpenApi) {
            $(super::openapi::describe::<$resource>(api);)*
        }
    };
}

resources!(
    companies::Companies,
    products::Products,
    sales::Sales,
    inventory::Inventory,
    forecasts::Forecasts,
    working_capital_metrics::WorkingCapitalMetrics,
    scenarios::Scenarios,
);
