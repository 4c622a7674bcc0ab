//! Citus mode (issue 17): detected from the connected database, never configured.
//!
//! Citus is on when the `citus` extension is installed in the database and its library is
//! loaded (`citus.enable_schema_based_sharding` exists only then). `doctor` shows the mode.
//! Nothing else changes with it yet: tenant schemas are not distributed, so in Citus mode
//! every tenant stays on the coordinator — `doctor` says so rather than pass silently.

use serde::Serialize;
use sqlx::PgPool;

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

/// `doctor`'s line: PASS when off (nothing to check); INFO when on, saying that capliquify
/// does not distribute tenant schemas yet (not a failure: everything works on the
/// coordinator, as on a server without Citus).
pub async fn doctor_check(pool: &PgPool) -> sqlx::Result<Check> {
    let (result, details) = match detect(pool).await? {
        CitusMode::Off { reason } => ("PASS", format!("off: {reason}")),
        CitusMode::On {
            version,
            workers,
            schema_based_sharding,
        } => (
            "INFO",
            format!(
                "on: Citus {version}, {workers} worker(s), schema-based sharding {}; capliquify does not distribute tenant schemas yet, so every tenant stays on the coordinator (docs/scaling.md)",
                if schema_based_sharding { "on" } else { "off" }
            ),
        ),
    };
    Ok(Check {
        test_name: "citus mode".to_owned(),
        result: result.to_owned(),
        details,
    })
}
