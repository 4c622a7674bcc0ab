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

/// True when the database is a Citus coordinator ([`detect`] says on).
pub async fn is_on(pool: &PgPool) -> sqlx::Result<bool> {
    Ok(matches!(detect(pool).await?, CitusMode::On { .. }))
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
    worker_login(&mut *conn, tenant_id).await?;
    Ok(true)
}

/// In Citus mode, ends the workers' sessions of a tenant's role before the role is dropped
/// (a purge). They are Citus's cached connections of coordinator backends that served the
/// tenant; a session outlives the DROP ROLE of its role, and if the tenant came back (a
/// restore of its archive makes the role again, with a new identity) such a backend would
/// reuse it and be refused its own schema ("permission denied") until Citus's connection
/// lifetime ran out. Ended, Citus sees the closed socket and opens a new connection.
/// Best effort: a node that cannot be reached, or a caller without the right to end them
/// (not a superuser), leaves them, and the count says how many workers did it. Nothing
/// without Citus.
pub async fn end_worker_sessions(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<i64> {
    let citus: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
            .fetch_one(&mut *conn)
            .await?;
    if !citus {
        return Ok(0);
    }
    // In a savepoint: whatever fails here (a caller not allowed to run it) must not fail
    // the purge.
    let mut savepoint = sqlx::Connection::begin(&mut *conn).await?;
    let ended = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE success) FROM run_command_on_workers(format(
             'SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %L',
             public.tenant_role_name($1)))",
    )
    .bind(tenant_id)
    .fetch_one(&mut *savepoint)
    .await;
    match ended {
        Ok(n) => {
            savepoint.commit().await?;
            Ok(n)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not end the workers' sessions of a purged tenant's role");
            savepoint.rollback().await?;
            Ok(0)
        }
    }
}

/// Citus copies a table's rows to its shard when it distributes it, and leaves them in the
/// coordinator's table as well (hidden: every query goes to the shard, but the bytes stay,
/// and so would the data of a tenant later moved or purged). After [`place_tenant`] placed
/// a schema that had rows — a restore, a clone, a tenant made before Citus was enabled —
/// this empties the coordinator's copies (`truncate_local_data_after_distributing_table`;
/// the shards keep theirs). Needs the tables' owner (`capliquify migrate`'s role, the
/// operators' commands); a new tenant's empty schema does not need it.
pub async fn drop_local_copies(conn: &mut PgConnection, schema: &SchemaName) -> sqlx::Result<()> {
    sqlx::query(
        "SELECT truncate_local_data_after_distributing_table(p.logicalrelid)
           FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
          WHERE c.relnamespace = to_regnamespace(quote_ident($1))",
    )
    .bind(schema.as_str())
    .execute(conn)
    .await?;
    Ok(())
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
            drop_local_copies(&mut tx, &schema)
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

/// Why a Citus operation (`cluster …`, `tenant move --to-worker`) refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CitusError {
    #[error(
        "Citus mode is off on this database ({0}); `cluster` commands and `tenant move --to-worker` need the coordinator of a Citus cluster (docs/scaling.md)"
    )]
    Off(String),
    #[error("invalid worker {0:?}: give HOST:PORT, e.g. 10.0.0.12:5432")]
    BadWorker(String),
    #[error(
        "{0} is not an active worker of this coordinator; `capliquify cluster status` lists them"
    )]
    UnknownWorker(String),
    #[error("no tenant with slug {0:?}")]
    UnknownTenant(String),
    #[error(
        "tenant {0}'s schema is not distributed (it is on the coordinator only): run `capliquify migrate` first"
    )]
    NotDistributed(String),
    #[error("tenant {slug} is already on {worker}")]
    AlreadyThere { slug: String, worker: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A worker node: `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Worker {
    pub host: String,
    pub port: u16,
}

impl Worker {
    /// Parses `HOST:PORT` (a host name or IPv4 address, or `[IPv6]:PORT`).
    pub fn parse(value: &str) -> Result<Self, CitusError> {
        let bad = || CitusError::BadWorker(value.to_owned());
        let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| bad())?;
        let plain = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
        if !plain || port == 0 {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Refuses unless the database is a Citus coordinator.
pub async fn require_on(pool: &PgPool) -> Result<(), CitusError> {
    match detect(pool).await? {
        CitusMode::On { .. } => Ok(()),
        CitusMode::Off { reason } => Err(CitusError::Off(reason)),
    }
}

/// One worker as `cluster status` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct WorkerStatus {
    /// `HOST:PORT`.
    pub worker: String,
    pub active: bool,
    /// False once drained: the rebalancer places no tenant there.
    pub accepts_tenants: bool,
    /// Tenant schemas whose tables are on this worker.
    pub tenants: i64,
    /// Their tables' size on disk (Citus's `citus_shards.shard_size`).
    pub bytes: i64,
    /// The same, written for people (`pg_size_pretty`).
    pub size: String,
}

/// Every worker, with its tenants and their bytes (one query on Citus's views). The shards
/// and their sizes come through `public.citus_schema_shards()` (public migration 0022), so
/// the service's login (the console) reads the same bytes as a superuser.
pub async fn status(pool: &PgPool) -> Result<Vec<WorkerStatus>, CitusError> {
    require_on(pool).await?;
    Ok(sqlx::query_as(
        "SELECT CASE WHEN n.nodename LIKE '%:%' THEN '[' || n.nodename || ']' ELSE n.nodename END
                    || ':' || n.nodeport AS worker,
                n.isactive AS active, n.shouldhaveshards AS accepts_tenants,
                count(DISTINCT s.colocation_id) AS tenants,
                coalesce(sum(s.shard_size), 0)::bigint AS bytes,
                pg_size_pretty(coalesce(sum(s.shard_size), 0)::bigint) AS size
           FROM pg_dist_node n
           LEFT JOIN public.citus_schema_shards() s
                  ON s.nodename = n.nodename AND s.nodeport = n.nodeport
          WHERE n.groupid <> 0 AND n.noderole = 'primary'
          GROUP BY n.nodeid, n.nodename, n.nodeport, n.isactive, n.shouldhaveshards
          ORDER BY n.nodename, n.nodeport",
    )
    .fetch_all(pool)
    .await?)
}

/// One tenant's load as `cluster tenants` shows it, from Citus's `citus_stat_tenants`
/// (summed over the nodes that ran its statements).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TenantLoad {
    pub slug: String,
    /// The worker holding the tenant's schema now (`HOST:PORT`); `None` when it is not
    /// distributed.
    pub worker: Option<String>,
    /// Statements of the tenant in the current period (`citus.stat_tenants_period`).
    pub queries: i64,
    /// Of those, the reads (`SELECT`s).
    pub reads: i64,
    /// CPU seconds they used.
    pub cpu_seconds: f64,
    /// The same for the period before.
    pub queries_last_period: i64,
    pub reads_last_period: i64,
    pub cpu_seconds_last_period: f64,
}

/// What `cluster tenants` reports: the tracking settings and the tenants Citus counted.
#[derive(Debug, Clone, Serialize)]
pub struct TenantStats {
    /// `citus.stat_tenants_track` on the coordinator: `all` counts, `none` does not.
    pub tracking: String,
    /// `citus.stat_tenants_period`, in seconds: the length of one period.
    pub period_seconds: i64,
    /// Busiest first (statements this period, then last period, then CPU).
    pub tenants: Vec<TenantLoad>,
}

/// Per-tenant statement counts and CPU from `citus_stat_tenants(true)` (every tenant Citus
/// tracks, not only its top `citus.stat_tenants_limit`): the rows of a tenant's schema
/// (Citus names a schema-based tenant by its schema) from every node, summed, joined to the
/// registry. Tenants with no statement in the last two periods are not listed. Read through
/// `public.citus_tenant_statements()` (public migration 0022: Citus grants
/// `citus_stat_tenants` to `pg_monitor` only), so the service's login (the console) may
/// call it; the worker of each tenant comes from Citus's metadata tables (no round trip).
pub async fn tenant_stats(pool: &PgPool, limit: i64) -> Result<TenantStats, CitusError> {
    require_on(pool).await?;
    let (tracking, period_seconds): (String, i64) = sqlx::query_as(
        "SELECT current_setting('citus.stat_tenants_track'),
                current_setting('citus.stat_tenants_period')::bigint",
    )
    .fetch_one(pool)
    .await?;
    let tenants = sqlx::query_as(
        "WITH s AS (SELECT * FROM public.citus_tenant_statements())
         SELECT t.slug::text AS slug,
                (SELECT CASE WHEN n.nodename LIKE '%:%' THEN '[' || n.nodename || ']'
                             ELSE n.nodename END || ':' || n.nodeport
                   FROM pg_dist_schema d
                   JOIN pg_dist_partition p ON p.colocationid = d.colocationid
                   JOIN pg_dist_shard sh ON sh.logicalrelid = p.logicalrelid
                   JOIN pg_dist_placement pl ON pl.shardid = sh.shardid AND pl.shardstate = 1
                   JOIN pg_dist_node n ON n.groupid = pl.groupid AND n.noderole = 'primary'
                  WHERE d.schemaid = to_regnamespace(quote_ident(t.schema_name))
                  LIMIT 1) AS worker,
                s.queries, s.reads, s.cpu_seconds,
                s.queries_last_period, s.reads_last_period, s.cpu_seconds_last_period
           FROM s JOIN public.tenants t ON t.schema_name = s.schema_name
          WHERE s.queries + s.queries_last_period > 0
          ORDER BY s.queries DESC, s.queries_last_period DESC, s.cpu_seconds DESC, t.slug
          LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(TenantStats {
        tracking,
        period_seconds,
        tenants,
    })
}

/// The active worker `w`, or [`CitusError::UnknownWorker`].
async fn require_worker(pool: &PgPool, w: &Worker) -> Result<(), CitusError> {
    let known: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_dist_node WHERE nodename = $1 AND nodeport = $2
                          AND groupid <> 0 AND noderole = 'primary' AND isactive)",
    )
    .bind(&w.host)
    .bind(i32::from(w.port))
    .fetch_one(pool)
    .await?;
    if known {
        Ok(())
    } else {
        Err(CitusError::UnknownWorker(w.to_string()))
    }
}

/// What `cluster add-worker` did.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerAdded {
    pub worker: String,
    /// Tenant roles given a fresh worker password (valid on the new worker too).
    pub tenant_roles: usize,
}

/// Registers a worker (`citus_add_node`: Citus copies roles, functions and the metadata to
/// it), then gives every tenant role a fresh worker password: Citus copies a role to a new
/// node as the coordinator has it (NOLOGIN), so the workers' LOGIN and password are set
/// again, on every worker. Audited (`cluster.worker_added`).
pub async fn add_worker(
    pool: &PgPool,
    w: &Worker,
    actor: &crate::audit::Actor,
) -> Result<WorkerAdded, CitusError> {
    require_on(pool).await?;
    sqlx::query("SELECT citus_add_node($1, $2)")
        .bind(&w.host)
        .bind(i32::from(w.port))
        .execute(pool)
        .await?;
    let tenants: Vec<Uuid> = sqlx::query_scalar(
        "SELECT t.id FROM public.tenants t
          WHERE to_regrole(quote_ident(public.tenant_role_name(t.id))) IS NOT NULL
          ORDER BY t.slug",
    )
    .fetch_all(pool)
    .await?;
    let mut tx = pool.begin().await?;
    for id in &tenants {
        worker_login(&mut tx, *id).await?;
    }
    crate::audit::record(
        &mut tx,
        actor,
        worker_entry(
            "cluster.worker_added",
            w,
            serde_json::json!({ "tenant_roles": tenants.len() }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(WorkerAdded {
        worker: w.to_string(),
        tenant_roles: tenants.len(),
    })
}

/// Empties a worker: `citus_drain_node` moves every tenant on it to the others (online,
/// logical replication) and marks it as taking no more. Audited (`cluster.worker_drained`),
/// before (the attempt) and after.
pub async fn drain(
    pool: &PgPool,
    w: &Worker,
    actor: &crate::audit::Actor,
) -> Result<(), CitusError> {
    require_on(pool).await?;
    require_worker(pool, w).await?;
    record(
        pool,
        actor,
        worker_entry("cluster.worker_draining", w, serde_json::json!({})),
    )
    .await?;
    sqlx::query("SELECT citus_drain_node($1, $2)")
        .bind(&w.host)
        .bind(i32::from(w.port))
        .execute(pool)
        .await?;
    record(
        pool,
        actor,
        worker_entry("cluster.worker_drained", w, serde_json::json!({})),
    )
    .await?;
    Ok(())
}

/// Progress of a rebalance: tasks (one per tenant moved) done of all.
#[derive(Debug, Clone, Serialize)]
pub struct RebalanceReport {
    /// The background job's id; `None` when nothing needed moving.
    pub job: Option<i64>,
    pub state: String,
    pub moves_done: i64,
    pub moves: i64,
    pub millis: u64,
}

/// Spreads tenants over the workers with Citus's rebalancer (`citus_rebalance_start`: a
/// background job of moves, each online), and waits for it, calling `progress` as moves
/// finish. Audited (`cluster.rebalanced`, with the counts), the start too.
pub async fn rebalance(
    pool: &PgPool,
    actor: &crate::audit::Actor,
    progress: &(dyn Fn(&RebalanceReport) + Send + Sync),
) -> Result<RebalanceReport, CitusError> {
    require_on(pool).await?;
    let started = std::time::Instant::now();
    record(
        pool,
        actor,
        cluster_entry("cluster.rebalance_started", serde_json::json!({})),
    )
    .await?;
    let job: Option<i64> = sqlx::query_scalar("SELECT citus_rebalance_start()")
        .fetch_one(pool)
        .await?;
    let mut report = RebalanceReport {
        job,
        state: "finished".to_owned(),
        moves_done: 0,
        moves: 0,
        millis: 0,
    };
    if let Some(job) = job {
        loop {
            let (state, done, all): (String, i64, i64) = sqlx::query_as(
                "SELECT j.state::text,
                        count(t.task_id) FILTER (WHERE t.status = 'done'), count(t.task_id)
                   FROM pg_dist_background_job j
                   LEFT JOIN pg_dist_background_task t ON t.job_id = j.job_id
                  WHERE j.job_id = $1 GROUP BY j.state",
            )
            .bind(job)
            .fetch_one(pool)
            .await?;
            report.state = state;
            report.moves_done = done;
            report.moves = all;
            report.millis = started.elapsed().as_millis() as u64;
            progress(&report);
            if matches!(
                report.state.as_str(),
                "finished" | "failed" | "cancelled" | "failing" | "cancelling"
            ) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    report.millis = started.elapsed().as_millis() as u64;
    record(
        pool,
        actor,
        cluster_entry(
            "cluster.rebalanced",
            serde_json::json!({ "job": report.job, "state": report.state, "moves": report.moves, "moves_done": report.moves_done }),
        ),
    )
    .await?;
    Ok(report)
}

/// What `tenant move --to-worker` did.
#[derive(Debug, Clone, Serialize)]
pub struct TenantMoved {
    pub slug: String,
    pub from: String,
    pub to: String,
    pub millis: u64,
}

/// Moves a tenant's schema to another worker with `citus_schema_move`: Citus copies it
/// with logical replication while reads and writes go on, and blocks writes only for the
/// final switch. Audited: `tenant.move_started` before, `tenant.moved` after (the move runs
/// outside any transaction of ours, so it cannot share one with its row).
pub async fn move_tenant(
    pool: &PgPool,
    slug: &str,
    to: &Worker,
    actor: &crate::audit::Actor,
) -> Result<TenantMoved, CitusError> {
    require_on(pool).await?;
    let tenant: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, schema_name::text FROM public.tenants WHERE slug = $1")
            .bind(slug)
            .fetch_optional(pool)
            .await?;
    let Some((id, schema)) = tenant else {
        return Err(CitusError::UnknownTenant(slug.to_owned()));
    };
    let from = tenant_worker(pool, &schema)
        .await?
        .ok_or_else(|| CitusError::NotDistributed(slug.to_owned()))?;
    require_worker(pool, to).await?;
    if from == *to {
        return Err(CitusError::AlreadyThere {
            slug: slug.to_owned(),
            worker: to.to_string(),
        });
    }
    let started = std::time::Instant::now();
    let meta = serde_json::json!({ "slug": slug, "from": from.to_string(), "to": to.to_string(), "via": "citus_schema_move" });
    record(
        pool,
        actor,
        tenant_entry(id, slug, "tenant.move_started", meta.clone()),
    )
    .await?;
    sqlx::query("SELECT citus_schema_move(to_regnamespace(quote_ident($1)), $2, $3)")
        .bind(&schema)
        .bind(&to.host)
        .bind(i32::from(to.port))
        .execute(pool)
        .await?;
    let millis = started.elapsed().as_millis() as u64;
    let mut meta = meta;
    meta["millis"] = serde_json::json!(millis);
    record(pool, actor, tenant_entry(id, slug, "tenant.moved", meta)).await?;
    Ok(TenantMoved {
        slug: slug.to_owned(),
        from: from.to_string(),
        to: to.to_string(),
        millis,
    })
}

/// The worker holding `schema`'s tables, `None` when the schema is not distributed.
pub async fn tenant_worker(pool: &PgPool, schema: &str) -> Result<Option<Worker>, CitusError> {
    let node: Option<(String, i32)> = sqlx::query_as(
        "SELECT s.nodename::text, s.nodeport FROM citus_shards s
          JOIN pg_dist_partition p ON p.logicalrelid = s.table_name
          JOIN pg_dist_schema d ON d.colocationid = p.colocationid
         WHERE d.schemaid = to_regnamespace(quote_ident($1))
         LIMIT 1",
    )
    .bind(schema)
    .fetch_optional(pool)
    .await?;
    Ok(node.map(|(host, port)| Worker {
        host,
        port: u16::try_from(port).unwrap_or_default(),
    }))
}

async fn worker_login(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<()> {
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
        .execute(conn)
        .await?;
    Ok(())
}

async fn record(
    pool: &PgPool,
    actor: &crate::audit::Actor,
    entry: crate::audit::Entry<'_>,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    crate::audit::record(&mut tx, actor, entry).await?;
    tx.commit().await
}

fn worker_entry<'a>(
    action: &'a str,
    w: &Worker,
    metadata: serde_json::Value,
) -> crate::audit::Entry<'a> {
    crate::audit::Entry {
        tenant_id: None,
        action,
        resource_type: "citus_worker",
        resource_id: w.to_string(),
        metadata,
    }
}

fn cluster_entry(action: &str, metadata: serde_json::Value) -> crate::audit::Entry<'_> {
    crate::audit::Entry {
        tenant_id: None,
        action,
        resource_type: "citus_cluster",
        resource_id: "coordinator".to_owned(),
        metadata,
    }
}

fn tenant_entry<'a>(
    id: Uuid,
    slug: &str,
    action: &'a str,
    metadata: serde_json::Value,
) -> crate::audit::Entry<'a> {
    crate::audit::Entry {
        tenant_id: Some(id),
        action,
        resource_type: "tenant",
        resource_id: slug.to_owned(),
        metadata,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_host_and_port() {
        assert_eq!(
            Worker::parse("10.0.0.12:5432").unwrap(),
            Worker {
                host: "10.0.0.12".into(),
                port: 5432
            }
        );
        assert_eq!(
            Worker::parse("db-2.internal:6432").unwrap().to_string(),
            "db-2.internal:6432"
        );
        assert_eq!(Worker::parse("[::1]:5432").unwrap().host, "::1");
        for bad in [
            "",
            "host",
            "host:",
            ":5432",
            "host:0",
            "host:99999",
            "a b:5432",
            "h;x:1",
        ] {
            let err = Worker::parse(bad).unwrap_err();
            assert!(err.to_string().contains("HOST:PORT"), "{bad}: {err}");
        }
    }
}
