//! Citus mode (issue 17): detected from the connected database, never configured.
//!
//! Citus is on when the `citus` extension is installed in the database and its library is
//! loaded (`citus.enable_schema_based_sharding` exists only then). `doctor` shows the mode.
//!
//! In Citus mode a tenant's schema is placed on a worker right after it is made
//! ([`place_tenant`], the provisioning hook) and again after each tenant migration
//! ([`distribute_schema`]); `capliquify migrate` also prepares `public` for two-phase commit
//! of audit rows ([`prepare_public`]). The SQL is public migration 0019; without Citus each
//! of these is one cheap call that does nothing (docs/scaling.md, "Citus mode").

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::tenancy::ident::SchemaName;

use crate::tenancy::verify::Check;

/// What the connected database says about Citus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum CitusMode {
    /// No Citus: one PostgreSQL server per cluster (the default).
    Off { reason: String },
    /// The extension is installed and its library loaded.
    On {
        /// The extension's version (`pg_extension.extversion`, e.g. `13.2-1`).
        version: String,
        /// Primary worker nodes registered with the coordinator.
        workers: i64,
        /// `citus.enable_schema_based_sharding`: new schemas are distributed schemas.
        schema_based_sharding: bool,
    },
}

/// Reads the mode from the database `pool` is connected to (one query; a second for the
/// workers when Citus is on).
pub async fn detect(pool: &PgPool) -> sqlx::Result<CitusMode> {
    let (version, sharding): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT (SELECT extversion::text FROM pg_extension WHERE extname = 'citus'),
                (SELECT setting FROM pg_settings
                  WHERE name = 'citus.enable_schema_based_sharding')",
    )
    .fetch_one(pool)
    .await?;
    Ok(match (version, sharding) {
        (None, None) => CitusMode::Off {
            reason: "the citus extension is not installed in this database".into(),
        },
        (None, Some(_)) => CitusMode::Off {
            reason: "the citus library is loaded, but CREATE EXTENSION citus was not run in this database".into(),
        },
        (Some(version), None) => CitusMode::Off {
            reason: format!(
                "the citus extension ({version}) is installed, but its library is not loaded: put 'citus' first in shared_preload_libraries and restart"
            ),
        },
        (Some(version), Some(setting)) => {
            let workers: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_dist_node
                  WHERE groupid <> 0 AND noderole = 'primary' AND isactive",
            )
            .fetch_one(pool)
            .await?;
            CitusMode::On {
                version,
                workers,
                schema_based_sharding: setting == "on",
            }
        }
    })
}

/// The provisioning hook: in Citus mode, places the new tenant's schema on a worker (every
/// table distributed, colocated) and lets the tenant's role log in to the workers with a
/// password made here for it alone (kept in `pg_dist_authinfo`, never shown), in the
/// caller's transaction — so a provisioning that fails leaves neither. Without Citus it
/// does nothing and returns false. Run right after `create_tenant_schema`.
pub async fn place_tenant(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    schema: &SchemaName,
) -> sqlx::Result<bool> {
    if !distribute_schema(&mut *conn, schema).await? {
        return Ok(false);
    }
    let password = worker_password();
    let verifier = crate::db::roles::scram_sha_256_verifier(
        &password,
        &crate::db::roles::random_salt(),
        crate::db::roles::SCRAM_ITERATIONS,
    );
    sqlx::query("SELECT public.citus_tenant_worker_login($1, $2, $3)")
        .bind(tenant_id)
        .bind(verifier)
        .bind(password)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// In Citus mode, distributes every table of `schema` that is still on the coordinator
/// (all of a new schema; a table a tenant migration just created). Without Citus, nothing
/// (false).
pub async fn distribute_schema(conn: &mut PgConnection, schema: &SchemaName) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT public.citus_distribute_tenant_schema($1)")
        .bind(schema.as_str())
        .fetch_one(conn)
        .await
}

/// In Citus mode, adds `public.audit_logs` (and the tables its foreign keys reach) to Citus's
/// metadata as coordinator-local tables, so a tenant transaction that writes a worker and
/// its audit row commits both with two-phase commit. Idempotent; false without Citus. Needs
/// the tables' owner (`capliquify migrate`'s role).
pub async fn prepare_public(pool: &PgPool) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT public.citus_prepare_public()")
        .fetch_one(pool)
        .await
}

/// What `capliquify migrate` did in Citus mode.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetPlacement {
    /// Tenants whose schema (or some table of it, or the role's worker login) was placed.
    pub placed: Vec<String>,
    /// Tenants that could not be, with the error; the others are done.
    pub failed: Vec<(String, String)>,
}

/// In Citus mode (`capliquify migrate`): prepares `public` ([`prepare_public`]), then places
/// every tenant schema at home that is not (wholly) distributed yet or whose role has no
/// worker login — tenants made before Citus was enabled, or by a provisioning that ran
/// without it — each in a transaction of its own. `None` without Citus.
pub async fn place_fleet(pool: &PgPool) -> sqlx::Result<Option<FleetPlacement>> {
    if !prepare_public(pool).await? {
        return Ok(None);
    }
    let pending: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT t.id, t.slug::text, t.schema_name::text
           FROM public.tenants t JOIN pg_namespace n ON n.nspname = t.schema_name
          WHERE t.cluster = 'home' AND t.moving_to IS NULL
            AND (NOT EXISTS (SELECT 1 FROM pg_dist_schema d WHERE d.schemaid = n.oid)
                 OR EXISTS (SELECT 1 FROM pg_depend dep JOIN pg_class c ON c.oid = dep.objid
                             WHERE dep.refclassid = 'pg_namespace'::regclass
                               AND dep.refobjid = n.oid AND dep.classid = 'pg_class'::regclass
                               AND dep.deptype = 'n' AND c.relkind IN ('r', 'p')
                               AND NOT EXISTS (SELECT 1 FROM pg_dist_partition p
                                                WHERE p.logicalrelid = c.oid))
                 OR NOT EXISTS (SELECT 1 FROM pg_dist_authinfo a
                                 WHERE a.rolename = public.tenant_role_name(t.id)))
          ORDER BY t.slug",
    )
    .fetch_all(pool)
    .await?;
    let mut report = FleetPlacement::default();
    for (id, slug, schema) in pending {
        let placed = async {
            let schema = SchemaName::parse(&schema).map_err(|e| e.to_string())?;
            let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
            place_tenant(&mut tx, id, &schema)
                .await
                .map_err(|e| crate::tenancy::migrate::describe_db_error(&e))?;
            tx.commit().await.map_err(|e| e.to_string())
        }
        .await;
        match placed {
            Ok(()) => report.placed.push(slug),
            Err(error) => report.failed.push((slug, error)),
        }
    }
    Ok(Some(report))
}

/// 32 random bytes, hex: a tenant role's password for the coordinator's connections to the
/// workers.
fn worker_password() -> String {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `doctor`'s line: PASS when off (nothing to check). When on: INFO with the version, the
/// workers and how many live tenant schemas are distributed; WARN when some are still on
/// the coordinator only (`capliquify migrate` distributes them) or no worker is registered.
pub async fn doctor_check(pool: &PgPool) -> sqlx::Result<Check> {
    let (result, details) = match detect(pool).await? {
        CitusMode::Off { reason } => ("PASS", format!("off: {reason}")),
        CitusMode::On {
            version,
            workers,
            schema_based_sharding,
        } => {
            let (tenants, distributed) = tenant_schemas(pool).await?;
            let left = tenants - distributed;
            let result = if left > 0 || workers == 0 {
                "WARN"
            } else {
                "INFO"
            };
            let mut details = format!(
                "on: Citus {version}, {workers} worker(s), schema-based sharding {}; {distributed} of {tenants} tenant schema(s) distributed",
                if schema_based_sharding { "on" } else { "off" }
            );
            if left > 0 {
                details.push_str(&format!(
                    "; {left} still on the coordinator only: run `capliquify migrate` (docs/scaling.md)"
                ));
            }
            if workers == 0 {
                details.push_str(
                    "; no worker registered: tenants stay on the coordinator until one is (SELECT citus_add_node(host, port))",
                );
            }
            (result, details)
        }
    };
    Ok(Check {
        test_name: "citus mode".to_owned(),
        result: result.to_owned(),
        details,
    })
}

/// Live tenants with a schema, and how many of those schemas Citus distributes (0, 0 where
/// the registry does not exist yet).
async fn tenant_schemas(pool: &PgPool) -> sqlx::Result<(i64, i64)> {
    let registry: bool = sqlx::query_scalar("SELECT to_regclass('public.tenants') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !registry {
        return Ok((0, 0));
    }
    sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE EXISTS (SELECT 1 FROM pg_dist_schema d
                                                WHERE d.schemaid = n.oid))
           FROM public.tenants t JOIN pg_namespace n ON n.nspname = t.schema_name
          WHERE t.deleted_at IS NULL",
    )
    .fetch_one(pool)
    .await
}
