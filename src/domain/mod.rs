//! The working-capital engine: what the product computes from a tenant's own rows.
//!
//! Plain functions over typed inputs (tested without a server), plus the sqlx queries that
//! load those inputs and store the results. The queries take a `&mut PgConnection` that is
//! already inside the tenant's transaction ([`crate::db::scope::begin`]): this room never
//! opens a transaction, picks a schema or checks a role — the HTTP layer above does. Money
//! stays [`rust_decimal::Decimal`] throughout.
//!
//! - [`working_capital`]: the metrics of one period (ratios, days outstanding, cash
//!   conversion cycle, runway) and the summary of a company's periods;
//! - [`cash_flow`]: the projected cash balance from forecast revenue and COGS;
//! - [`forecast`]: demand and revenue forecasts of a product's sales (augurs models,
//!   backtested);
//! - [`scenarios`]: what-if scenarios evaluated against a period's metrics.

pub mod cash_flow;
pub mod forecast;
pub mod scenarios;
pub mod working_capital;
