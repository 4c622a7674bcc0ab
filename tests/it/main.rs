//! The integration tests: one binary (`cargo test` links it once), a module per area, all
//! against a real PostgreSQL (see `common`). Run one area with `cargo test --test it webhooks::`.

mod common;

mod api_core;
mod api_limits;
mod api_preferences;
mod api_resources;
mod audit;
mod backup;
mod citus;
mod cli;
mod console;
mod credentials;
mod deploy;
mod engine;
mod fleet_migrations;
mod fleet_sql;
mod forecast_refresh;
mod forecasts_api;
mod help_snapshots;
mod import;
mod isolation_stress;
mod lifecycle;
mod monitoring;
mod pgbouncer;
mod placement;
mod properties;
mod recycle;
mod revenue;
mod roles;
mod schema_pool;
mod sentia;
mod sql_functions;
mod tenant_checks;
mod webhooks;
