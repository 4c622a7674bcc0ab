//! Least-privilege database roles (`capliquify db init-roles`).
//!
//! Public migration 0006 creates the group roles and the grants; this module creates the
//! login role the HTTP service connects as: a plain member of `capliquify_service`
//! (no superuser, no CREATEDB, no CREATEROLE, no BYPASSRLS), so it can read and write the
//! registry, members, subscriptions and webhook inbox, append audit rows, provision through
//! the SECURITY DEFINER functions, and switch to a tenant's role — and nothing else.

use serde::Serialize;
use serde_json::json;
use sqlx::{AssertSqlSafe, PgPool};

use crate::audit::{self, Actor, Entry};

/// The login role `init-roles` creates when none is named.
pub const DEFAULT_LOGIN: &str = "capliquify_app";

/// The group whose rights the service's login role inherits (migration 0006).
pub const SERVICE_GROUP: &str = "capliquify_service";

/// `SELECT`s whether the role named `$1` belongs to the role named `$2` by grants, directly
/// or through other roles. It walks from `$2` down to its members, as public migration
/// 0024's `role_is_member` does (inlined here because `migrate` asks before that function
/// exists). `pg_has_role($1, $2, 'MEMBER')` walks the other way: PostgreSQL lists every role
/// `$1` belongs to — for the migrations' owner and the service's login, every tenant role —
/// and PostgreSQL 15 takes time quadratic in the fleet to do it (0.3–0.5 s at 10,000
/// tenants), again after any role change in the cluster (docs/scaling.md). Unlike
/// pg_has_role, a superuser is a member only when granted.
pub const IS_MEMBER_SQL: &str = "WITH RECURSIVE members(oid) AS (
        SELECT r.oid FROM pg_roles r WHERE r.rolname = $2
        UNION
        SELECT m.member FROM pg_auth_members m JOIN members ON m.roleid = members.oid)
    SELECT EXISTS (SELECT 1 FROM members JOIN pg_roles r ON r.oid = members.oid
                    WHERE r.rolname = $1)";

/// Why `init-roles` refused.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    #[error(
        "invalid login role name {0:?}: use 1-63 of a-z, 0-9 and '_', starting with a letter, not pg_… or capliquify_t_…/capliquify_service/capliquify_tenant"
    )]
    InvalidName(String),
    #[error(
        "role {0:?} is a superuser (or may bypass row-level security); the service must not run as one — pick another name with --login"
    )]
    Privileged(String),
    #[error(
        "the database has no capliquify_service role yet: run `capliquify migrate` first (as a role with CREATEROLE)"
    )]
    NotMigrated,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What `init-roles` did.
#[derive(Debug, Clone, Serialize)]
pub struct RolesReport {
    pub login: String,
    /// `created` or `updated`.
    pub action: &'static str,
    pub password_set: bool,
    pub member_of: &'static str,
}

/// Checks a login role name: a plain lower-case identifier that is not one of ours.
pub fn parse_login(name: &str) -> Result<&str, RolesError> {
    let plain = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let reserved = name.starts_with("pg_")
        || name.starts_with("capliquify_t_")
        || name == SERVICE_GROUP
        || name == "capliquify_tenant";
    if plain && !reserved {
        Ok(name)
    } else {
        Err(RolesError::InvalidName(name.to_owned()))
    }
}

/// Creates (or brings in line) the service's login role `login`, a member of
/// `capliquify_service`, with `password` when given. Audited. Needs CREATEROLE.
pub async fn init(
    pool: &PgPool,
    login: &str,
    password: Option<&str>,
    actor: &Actor,
) -> Result<RolesReport, RolesError> {
    let login = parse_login(login)?;
    let mut tx = pool.begin().await?;
    let group: bool = sqlx::query_scalar("SELECT to_regrole($1) IS NOT NULL")
        .bind(SERVICE_GROUP)
        .fetch_one(&mut *tx)
        .await?;
    if !group {
        return Err(RolesError::NotMigrated);
    }
    let existing: Option<(bool, bool)> =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
            .bind(login)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((superuser, bypass)) = existing
        && (superuser || bypass)
    {
        return Err(RolesError::Privileged(login.to_owned()));
    }
    // Only a SCRAM verifier reaches the server: the password itself never appears in a
    // statement (server logs, pg_stat_statements).
    let verifier = password.map(|p| scram_sha_256_verifier(p, &random_salt(), SCRAM_ITERATIONS));
    let verb = if existing.is_some() {
        "ALTER"
    } else {
        "CREATE"
    };
    // Role attributes and passwords cannot be bind parameters (utility statements), so the
    // statement is built by PostgreSQL's own quoting: format() with %I and %L.
    let statement: String = sqlx::query_scalar(
        "SELECT format('%s ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT
                        NOREPLICATION NOBYPASSRLS', $1::text, $2::text)
                || CASE WHEN $3::text IS NULL THEN '' ELSE format(' PASSWORD %L', $3::text) END",
    )
    .bind(verb)
    .bind(login)
    .bind(verifier)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::raw_sql(AssertSqlSafe(statement))
        .execute(&mut *tx)
        .await?;
    let member: bool = sqlx::query_scalar(IS_MEMBER_SQL)
        .bind(login)
        .bind(SERVICE_GROUP)
        .fetch_one(&mut *tx)
        .await?;
    if !member {
        // `login` is checked above to be a plain identifier.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "GRANT {SERVICE_GROUP} TO \"{login}\""
        )))
        .execute(&mut *tx)
        .await?;
    }
    let citus: bool =
        sqlx::query_scalar("SELECT to_regclass('pg_catalog.pg_dist_authinfo') IS NOT NULL")
            .fetch_one(&mut *tx)
            .await?;
    if let (true, Some(password)) = (citus, password) {
        // Citus mode: the coordinator connects to the workers as the current role, the
        // service's login included (reads across tenants), and takes the password from
        // pg_dist_authinfo (superusers only may read it). The role itself reached the
        // workers with its verifier: Citus propagates roles.
        let conninfo = format!(
            "password='{}'",
            password.replace('\\', "\\\\").replace('\'', "\\'")
        );
        sqlx::query(
            "INSERT INTO pg_catalog.pg_dist_authinfo (nodeid, rolename, authinfo)
             VALUES (0, $1, $2)
             ON CONFLICT (rolename, nodeid) DO UPDATE SET authinfo = EXCLUDED.authinfo",
        )
        .bind(login)
        .bind(conninfo)
        .execute(&mut *tx)
        .await?;
    }
    let report = RolesReport {
        login: login.to_owned(),
        action: if existing.is_some() {
            "updated"
        } else {
            "created"
        },
        password_set: password.is_some(),
        member_of: SERVICE_GROUP,
    };
    audit::record(
        &mut tx,
        actor,
        Entry {
            tenant_id: None,
            action: "db.roles_initialized",
            resource_type: "database_role",
            resource_id: login.to_owned(),
            metadata: json!({ "action": report.action, "password_set": report.password_set }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(report)
}

/// PostgreSQL's default `scram_iterations`.
pub const SCRAM_ITERATIONS: u32 = 4096;

pub(crate) fn random_salt() -> [u8; 16] {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut salt)
        .expect("the system's random source works");
    salt
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores in `pg_authid.rolpassword` for `password`
/// (RFC 5802/7677): `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64.
/// Given to `CREATE/ALTER ROLE … PASSWORD`, it is stored as is. Written here because no
/// crate we use builds one; the pieces (PBKDF2, HMAC, SHA-256) are aws-lc-rs's. Passwords
/// are used as their UTF-8 bytes without SASLprep: the same as PostgreSQL for ASCII and for
/// text SASLprep leaves unchanged (`tests/it/roles.rs` compares with PostgreSQL's own); a
/// password SASLprep would rewrite (e.g. with non-ASCII spaces) would not match.
pub fn scram_sha_256_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    use aws_lc_rs::{digest, hmac, pbkdf2};
    use base64::Engine as _;
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(iterations.max(1)).expect("at least 1"),
        salt,
        password.as_bytes(),
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key.as_ref()),
        b64.encode(server_key.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names_are_plain_and_not_ours() {
        for ok in ["capliquify_app", "svc", "app_2"] {
            assert!(parse_login(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "App",
            "1app",
            "pg_monitor",
            "capliquify_service",
            "capliquify_tenant",
            "capliquify_t_00000000000000000000000000000000",
            "a\"; DROP ROLE x; --",
            &"a".repeat(64),
        ] {
            assert!(parse_login(bad).is_err(), "{bad}");
        }
    }
}
