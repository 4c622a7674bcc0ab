//! Tenants: the registry in `public.tenants`, their schemas, their lifecycle and the
//! migrations that keep every schema current.
//!
//! Schema DDL lives in the database (`migrations/`): this module calls the SQL functions
//! `create_tenant_schema`, `migrate_tenant_schema` and `delete_tenant_schema`, the same ones
//! operators call from `psql`, so both paths build identical schemas.

pub mod backup;
mod catalog;
pub mod census;
mod error;
pub mod fleet;
pub mod ident;
pub mod lifecycle;
pub mod lifecycle_job;
pub mod members;
pub mod migrate;
pub mod placement;
pub mod refresh_runs;
pub mod registry;
pub mod schema_pool;
pub mod suspension;
pub mod verify;

pub use error::TenancyError;
pub use ident::{SchemaName, TenantSlug};
pub use lifecycle::{NewTenant, Tenancy};
pub use registry::{Tenant, TenantState};
