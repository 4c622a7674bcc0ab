//! The tenant scope: the one value that carries a tenant's identity from where it was
//! resolved (a token, a slug on the command line) to the SQL that runs for it.
//!
//! Tenant work runs inside [`begin`]'s transaction, whose `search_path` is set with
//! transaction scope (`SET LOCAL`) in the same round trip as `BEGIN`, and which runs as the
//! tenant's own database role (`SET LOCAL ROLE`, public migration 0006): even a statement
//! that names another schema, or `public.users`, is refused by PostgreSQL. Nothing here ever
//! sets a session-level `search_path`: on a pooled connection that would leak into the
//! next request (DESIGN.md §5), and behind PgBouncer in transaction mode into another
//! client's.

use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::cluster::ClusterName;
use crate::tenancy::ident::{SchemaName, TenantSlug};

/// A resolved tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    pub id: Uuid,
    pub slug: TenantSlug,
    pub schema: SchemaName,
    /// The cluster that holds the schema (its placement): `begin` must be given that
    /// cluster's pool ([`super::Clusters::pool`]).
    pub cluster: ClusterName,
}

impl TenantScope {
    /// The tenant's database role: `capliquify_t_<id without dashes>`, the name
    /// `public.tenant_role_name(id)` gives (45 characters, within PostgreSQL's 63).
    pub fn role(&self) -> String {
        role_name(self.id)
    }
}

/// The database role of the tenant `id` (see [`TenantScope::role`]).
pub fn role_name(id: Uuid) -> String {
    format!("capliquify_t_{}", id.simple())
}

/// Begins a transaction in which unqualified names resolve to `scope`'s schema only (and
/// `pg_catalog`), running as the tenant's role. `BEGIN` and both `SET LOCAL`s go as one
/// simple query: one round trip.
pub async fn begin(
    pool: &PgPool,
    scope: &TenantScope,
) -> sqlx::Result<Transaction<'static, Postgres>> {
    pool.begin_with(AssertSqlSafe(begin_statement(scope, "BEGIN")))
        .await
}

/// [`begin`], with every statement of the transaction limited to `timeout` (the API's:
/// a request answered 408 does not leave its query running in the database).
pub async fn begin_bounded(
    pool: &PgPool,
    scope: &TenantScope,
    timeout: std::time::Duration,
) -> sqlx::Result<Transaction<'static, Postgres>> {
    let begin = format!(
        "BEGIN; SET LOCAL statement_timeout = {}",
        timeout.as_millis().max(1)
    );
    pool.begin_with(AssertSqlSafe(begin_statement(scope, &begin)))
        .await
}

/// `begin` (e.g. `BEGIN READ ONLY`) followed by the scope's transaction-local settings.
pub(crate) fn begin_statement(scope: &TenantScope, begin: &str) -> String {
    // `schema.quoted()` is the validated, quoted identifier (tenancy::ident); the role name
    // is made of a fixed prefix and hex digits only.
    format!(
        "{begin}; SET LOCAL search_path TO {}; SET LOCAL ROLE \"{}\"",
        scope.schema.quoted(),
        scope.role()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_path_and_the_role_are_transaction_scoped() {
        let scope = TenantScope {
            id: Uuid::parse_str("0191c1d2-aaaa-7bbb-8ccc-123456789abc").unwrap(),
            slug: TenantSlug::parse("acme").unwrap(),
            schema: SchemaName::parse("tenant_acme").unwrap(),
            cluster: crate::db::ClusterName::home(),
        };
        assert_eq!(
            begin_statement(&scope, "BEGIN"),
            "BEGIN; SET LOCAL search_path TO \"tenant_acme\"; \
             SET LOCAL ROLE \"capliquify_t_0191c1d2aaaa7bbb8ccc123456789abc\""
        );
    }
}
