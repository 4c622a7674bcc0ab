//! The tenant scope: the one value that carries a tenant's identity from where it was
//! resolved (a token, a slug on the command line) to the SQL that runs for it.
//!
//! Tenant work runs inside [`begin`]'s transaction, whose `search_path` is set with
//! transaction scope (`SET LOCAL`) in the same round trip as `BEGIN`. Nothing here ever
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

/// Begins a transaction in which unqualified names resolve to `scope`'s schema only (and
/// `pg_catalog`). `BEGIN` and `SET LOCAL` go as one simple query: one round trip.
pub async fn begin(
    pool: &PgPool,
    scope: &TenantScope,
) -> sqlx::Result<Transaction<'static, Postgres>> {
    pool.begin_with(AssertSqlSafe(begin_statement(&scope.schema)))
        .await
}

fn begin_statement(schema: &SchemaName) -> String {
    // `schema.quoted()` is the validated, quoted identifier (tenancy::ident).
    format!("BEGIN; SET LOCAL search_path TO {}", schema.quoted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_path_is_transaction_scoped() {
        let schema = SchemaName::parse("tenant_acme").unwrap();
        assert_eq!(
            begin_statement(&schema),
            "BEGIN; SET LOCAL search_path TO \"tenant_acme\""
        );
    }
}
