//! What the connected role may do, checked before `migrate` and `db init-roles` start.
//!
//! Managed PostgreSQL services hand out a database owner with CREATEROLE but never a
//! superuser. That is enough: the migrations create the group roles and one role per
//! tenant, and grant them, which CREATEROLE allows (the superuser-only extras — the
//! pg_stat_statements extension, `set_config` for the service — are skipped with a notice).
//! Without CREATEROLE the migrations would fail half-way with PostgreSQL's own words; this
//! check fails first, once, naming the statement to run.

use serde::Serialize;
use sqlx::PgPool;

/// The connected role's relevant attributes.
#[derive(Debug, Clone, Serialize)]
pub struct Privileges {
    pub role: String,
    pub superuser: bool,
    pub createrole: bool,
    /// Whether the role owns the current database (or is a superuser).
    pub owns_database: bool,
    pub database: String,
}

impl Privileges {
    pub async fn of_session(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let (role, superuser, createrole, owner, database): (String, bool, bool, String, String) =
            sqlx::query_as(
                "SELECT r.rolname::text, r.rolsuper, r.rolcreaterole, o.rolname::text,
                        current_database()::text
                   FROM pg_roles r, pg_database d JOIN pg_roles o ON o.oid = d.datdba
                  WHERE r.rolname = current_user AND d.datname = current_database()",
            )
            .fetch_one(pool)
            .await?;
        // Not pg_has_role: see IS_MEMBER_SQL. The usual owner is the database's own.
        let owns_database = superuser
            || role == owner
            || sqlx::query_scalar(super::roles::IS_MEMBER_SQL)
                .bind(&role)
                .bind(&owner)
                .fetch_one(pool)
                .await?;
        Ok(Self {
            role,
            superuser,
            createrole,
            owns_database,
            database,
        })
    }

    /// Whether the migrations and `db init-roles` can run as this role.
    pub fn can_manage_roles(&self) -> bool {
        self.superuser || self.createrole
    }

    /// The one message for a role that cannot, naming what to grant.
    pub fn missing(&self) -> Option<String> {
        (!self.can_manage_roles()).then(|| {
            format!(
                "the database role {role:?} lacks CREATEROLE, which `capliquify migrate` and `capliquify db init-roles` need (they create a role per tenant and the service's login role); as an administrator run: ALTER ROLE \"{role}\" CREATEROLE; (managed services: the database owner they create usually has it; use that role for these commands)",
                role = self.role
            )
        })
    }
}

/// Fails with [`Privileges::missing`]'s message when the session's role lacks CREATEROLE.
pub async fn require_role_management(pool: &PgPool) -> anyhow::Result<Privileges> {
    let privileges = Privileges::of_session(pool).await?;
    match privileges.missing() {
        Some(message) => Err(anyhow::anyhow!(message)),
        None => Ok(privileges),
    }
}

/// `doctor`'s line: the database owner must have CREATEROLE (or be a superuser) for the
/// next `migrate`; another role (the service's login role) need not, and passes.
pub async fn doctor_check(pool: &PgPool) -> Result<crate::tenancy::verify::Check, sqlx::Error> {
    let p = Privileges::of_session(pool).await?;
    let (result, details) = if p.superuser {
        ("PASS", format!("{} is a superuser", p.role))
    } else if p.createrole {
        (
            "PASS",
            format!("{} has CREATEROLE (no superuser needed)", p.role),
        )
    } else if p.owns_database {
        ("FAIL", p.missing().unwrap_or_default())
    } else {
        (
            "PASS",
            format!(
                "{} has no CREATEROLE: enough to serve; run migrate and db init-roles as the owner of {}",
                p.role, p.database
            ),
        )
    };
    Ok(crate::tenancy::verify::Check {
        test_name: "role may run migrations (CREATEROLE)".to_owned(),
        result: result.to_owned(),
        details,
    })
}
