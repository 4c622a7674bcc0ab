//! CapLiquify's multi-tenant backend: one PostgreSQL schema per tenant, a shared `public`
//! schema for the registry, and the operators' tools around it.
//!
//! Rooms (see `docs/architecture.md`):
//! - [`db`]: connection pools, the embedded PostgreSQL cluster, the tenant-scoped transaction;
//! - [`tenancy`]: the tenant registry, provisioning and lifecycle, migrations across tenants,
//!   isolation checks;
//! - [`billing`]: plans (tiers) and what they allow;
//! - [`audit`]: the append-only audit trail;
//! - [`monitor`]: the guide's monitoring queries;
//! - [`domain`]: the working-capital engine (metrics, scenarios) as plain functions;
//! - [`import`]: CSV and spreadsheet imports into tenant tables;
//! - [`http`]: the HTTP service (tenant data API, operations endpoints);
//! - [`webhooks`]: Clerk and Stripe webhooks;
//! - [`cli`]: the `capliquify` command line.

pub mod access;
pub mod audit;
pub mod billing;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod db;
pub mod demo;
pub mod domain;
pub mod http;
pub mod import;
pub mod monitor;
pub mod tenancy;
pub mod webhooks;
