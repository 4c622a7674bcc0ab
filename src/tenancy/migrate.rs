//! Migrations: the public schema, the tenant-migration catalog, and the fleet of tenant
//! schemas.
//!
//! `migrations/public/` is applied once by sqlx's migrator (versioned, checksummed, behind
//! an advisory lock). `migrations/tenant/` is embedded in the binary by the same macro, then
//! *synced* into `public.tenant_migrations`, from where the SQL function
//! `migrate_tenant_schema` applies it inside each tenant schema: batches of tenants per
//! transaction (`migrate_tenant_schemas`), each tenant in its own subtransaction.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;
use sqlx::migrate::{Migration, Migrator};
use uuid::Uuid;

use crate::db::{ClusterName, Clusters};
use crate::tenancy::ident::SchemaName;

/// `migrations/public/`, embedded at build time.
pub static PUBLIC_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/public");
/// `migrations/tenant/`, embedded at build time.
pub static TENANT_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/tenant");

/// Key of the advisory lock that serialises catalog syncs.
const CATALOG_LOCK: i64 = 0x6361_706c_6971_0001;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("public schema migration failed: {0}")]
    Public(#[from] sqlx::migrate::MigrateError),
    #[error(
        "tenant migration {version} ({description}) was changed after it was applied: its checksum differs from the catalog's; restore the original file and add a new migration instead"
    )]
    ChecksumChanged { version: i64, description: String },
    #[error(
        "the database has tenant migration {version} ({description}) that this build of capliquify does not know; run a newer capliquify"
    )]
    UnknownToThisBuild { version: i64, description: String },
    #[error(
        "the database is not migrated: {0}; run `capliquify migrate` (with the same DATABASE_URL)"
    )]
    NotMigrated(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Applies pending public migrations (refusing changed ones), then syncs the tenant catalog.
pub async fn migrate_public(
    pool: &PgPool,
    tenant: &[Migration],
) -> Result<CatalogSync, MigrateError> {
    PUBLIC_MIGRATIONS.run(pool).await?;
    let mut tx = begin_catalog(pool).await?;
    // Installs pg_stat_statements once PostgreSQL has loaded it (migration 0007): a setting
    // an operator may change after the migration ran. Under the catalog lock: two
    // overlapping runs re-granting the same functions at once fail with "tuple concurrently
    // updated" (PostgreSQL does not serialise concurrent GRANT/REVOKE on one object).
    let stats: String = sqlx::query_scalar("SELECT public.ensure_query_stats()")
        .fetch_one(&mut *tx)
        .await?;
    if stats != "installed" {
        tracing::debug!(%stats, "per-tenant query statistics unavailable");
    }
    let sync = sync_catalog_in(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(sync)
}

/// What a catalog sync did.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogSync {
    pub added: Vec<i64>,
    pub latest: i64,
}

/// A transaction holding the lock that serialises catalog syncs (and the statistics grants).
async fn begin_catalog(pool: &PgPool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CATALOG_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Makes `public.tenant_migrations` hold exactly `migrations`: adds new ones, refuses a
/// changed checksum or a version this build does not know. Safe to run concurrently.
pub async fn sync_catalog(
    pool: &PgPool,
    migrations: &[Migration],
) -> Result<CatalogSync, MigrateError> {
    let mut tx = begin_catalog(pool).await?;
    let sync = sync_catalog_in(&mut tx, migrations).await?;
    tx.commit().await?;
    Ok(sync)
}

/// [`sync_catalog`]'s work, in a transaction from [`begin_catalog`].
async fn sync_catalog_in(
    tx: &mut sqlx::PgConnection,
    migrations: &[Migration],
) -> Result<CatalogSync, MigrateError> {
    let existing: BTreeMap<i64, (String, Vec<u8>)> = sqlx::query_as::<_, (i64, String, Vec<u8>)>(
        "SELECT version, description, checksum FROM public.tenant_migrations",
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(v, d, c)| (v, (d, c)))
    .collect();

    for (version, (description, _)) in &existing {
        if !migrations.iter().any(|m| m.version == *version) {
            return Err(MigrateError::UnknownToThisBuild {
                version: *version,
                description: description.clone(),
            });
        }
    }
    let mut added = Vec::new();
    for m in migrations {
        match existing.get(&m.version) {
            Some((_, checksum)) if checksum.as_slice() == m.checksum.as_ref() => {}
            Some(_) => {
                return Err(MigrateError::ChecksumChanged {
                    version: m.version,
                    description: m.description.to_string(),
                });
            }
            None => {
                sqlx::query(
                    "INSERT INTO public.tenant_migrations (version, description, sql, checksum)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(m.version)
                .bind(m.description.as_ref())
                .bind(m.sql.as_str())
                .bind(m.checksum.as_ref())
                .execute(&mut *tx)
                .await?;
                added.push(m.version);
            }
        }
    }
    Ok(CatalogSync {
        added,
        latest: latest_version(migrations),
    })
}

/// The newest version in `migrations` (0 when empty).
pub fn latest_version(migrations: &[Migration]) -> i64 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The embedded tenant migrations.
pub fn tenant_migrations() -> &'static [Migration] {
    &TENANT_MIGRATIONS.migrations
}

/// Errors unless the public schema and the tenant catalog are as new as this build.
pub async fn ensure_current(pool: &PgPool) -> Result<(), MigrateError> {
    let public_latest = latest_version(&PUBLIC_MIGRATIONS.migrations);
    let (public_applied, catalog): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT max(version) FROM public._sqlx_migrations WHERE success),
                (SELECT max(version) FROM public.tenant_migrations)",
    )
    .fetch_one(pool)
    .await
    .map_err(|e| match e.as_database_error().and_then(|d| d.code()) {
        Some(code) if code == "42P01" => {
            MigrateError::NotMigrated("the public schema has no capliquify tables".into())
        }
        _ => MigrateError::Database(e),
    })?;
    if public_applied.unwrap_or(0) < public_latest {
        return Err(MigrateError::NotMigrated(format!(
            "public schema at version {} of {public_latest}",
            public_applied.unwrap_or(0)
        )));
    }
    let tenant_latest = latest_version(tenant_migrations());
    if catalog.unwrap_or(0) < tenant_latest {
        return Err(MigrateError::NotMigrated(format!(
            "tenant migration catalog at version {} of {tenant_latest}",
            catalog.unwrap_or(0)
        )));
    }
    Ok(())
}

/// A tenant whose schema is behind the catalog.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PendingTenant {
    pub id: Uuid,
    pub slug: String,
    pub schema_name: String,
    /// `None` when the schema does not exist (it needs `tenant repair`, not `migrate`).
    pub schema_version: Option<i64>,
    /// The cluster holding the schema.
    pub cluster: String,
}

/// Every tenant whose schema is not at `latest`, found with one query on the registry.
/// Soft-deleted tenants whose schema was already dropped are not pending.
pub async fn pending_tenants(pool: &PgPool, latest: i64) -> sqlx::Result<Vec<PendingTenant>> {
    sqlx::query_as(
        "SELECT id, slug, schema_name, schema_version, cluster FROM public.tenants
          WHERE schema_version IS DISTINCT FROM $1
            AND NOT (deleted_at IS NOT NULL AND schema_version IS NULL)
          ORDER BY slug",
    )
    .bind(latest)
    .fetch_all(pool)
    .await
}

/// Unclaimed schemas of the schema pool ([`super::schema_pool`]) not at `latest`, oldest
/// first.
pub async fn pending_pooled(pool: &PgPool, latest: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT schema_name::text FROM public.tenant_schema_pool
          WHERE schema_version IS DISTINCT FROM $1
          ORDER BY created_at, schema_name",
    )
    .bind(latest)
    .fetch_all(pool)
    .await
}

/// What migrating the schema pool did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolReport {
    pub pending: usize,
    pub migrated: usize,
    /// Claimed by a sign-up meanwhile (the claim migrates it) or drained.
    pub skipped: usize,
    /// Schema and error.
    pub failed: Vec<(String, String)>,
}

/// Brings the pool's unclaimed `schemas` to `latest` (`migrate_pooled_schema`), one
/// transaction each, in order. The pool is small (`CAPLIQUIFY_SCHEMA_POOL_SIZE`), so one at
/// a time.
pub async fn migrate_pooled(pool: &PgPool, schemas: &[String], latest: i64) -> PoolReport {
    let mut report = PoolReport {
        pending: schemas.len(),
        ..PoolReport::default()
    };
    for schema in schemas {
        let applied: sqlx::Result<Option<i32>> =
            sqlx::query_scalar("SELECT public.migrate_pooled_schema($1, $2)")
                .bind(schema)
                .bind(latest)
                .fetch_one(pool)
                .await;
        match applied {
            Ok(Some(_)) => report.migrated += 1,
            Ok(None) => report.skipped += 1,
            Err(err) => report
                .failed
                .push((schema.clone(), describe_db_error(&err))),
        }
    }
    report
}

/// How one tenant's migration ended.
#[derive(Debug, Clone, Serialize)]
pub struct TenantOutcome {
    pub slug: String,
    pub from_version: Option<i64>,
    /// Migrations applied; `None` when it failed.
    pub applied: Option<i32>,
    pub error: Option<String>,
    pub millis: u64,
}

/// The result of a fleet migration.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub latest: i64,
    pub pending: usize,
    pub migrated: usize,
    pub failed: Vec<TenantOutcome>,
    pub outcomes: Vec<TenantOutcome>,
    pub millis: u64,
}

/// Home-cluster schemas handed to `migrate_tenant_schemas` in one call (public 0017): one
/// round trip and one commit for up to this many tenants, each in its own subtransaction.
pub const MIGRATION_BATCH: usize = 16;
/// How long one batch may keep taking schemas before it commits (the longest a migrated
/// tenant waits for the commit that releases its tables), in milliseconds.
pub const MIGRATION_BATCH_BUDGET_MS: i32 = 50;

/// Brings every pending tenant to `latest`, `jobs` workers at a time. Tenants on the home
/// cluster go in batches of up to [`MIGRATION_BATCH`] per transaction, each tenant in its
/// own subtransaction: a failing tenant is rolled back alone and recorded, the others go on.
/// Tenants placed elsewhere, and every tenant in Citus mode, go one per transaction.
/// `on_done` is called after each tenant (for a progress bar).
pub async fn migrate_fleet(
    clusters: impl Into<Clusters>,
    pending: Vec<PendingTenant>,
    latest: i64,
    jobs: usize,
    on_done: Arc<dyn Fn(&TenantOutcome) + Send + Sync>,
) -> FleetReport {
    let clusters = clusters.into();
    let started = Instant::now();
    let total = pending.len();
    // In Citus mode a migration's new tables must be distributed in its transaction, which
    // the one-tenant path does (`migrate_placed`): no batches there (nor when the mode
    // cannot be read).
    let batch = match crate::db::citus::is_on(clusters.home()).await {
        Ok(false) => MIGRATION_BATCH,
        Ok(true) | Err(_) => 1,
    };
    let queue = Arc::new(Mutex::new(VecDeque::from(pending)));
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..jobs.max(1).min(total.max(1)) {
        let (clusters, queue, outcomes, on_done) = (
            clusters.clone(),
            queue.clone(),
            outcomes.clone(),
            on_done.clone(),
        );
        workers.spawn(async move {
            loop {
                // The guard is dropped before the awaits below.
                let next = next_batch(&queue, batch);
                let Some(first) = next.first() else { break };
                let done = if batch > 1 && first.cluster == crate::db::cluster::HOME {
                    migrate_batch(&clusters, &next, latest, &queue).await
                } else {
                    vec![migrate_one(&clusters, first, latest).await]
                };
                for outcome in done {
                    on_done(&outcome);
                    if let Ok(mut all) = outcomes.lock() {
                        all.push(outcome);
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let mut outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|p| p.into_inner()));
    outcomes.sort_by(|a, b| a.slug.cmp(&b.slug));
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| o.error.is_some())
        .cloned()
        .collect();
    FleetReport {
        latest,
        pending: total,
        migrated: total - failed.len(),
        failed,
        outcomes,
        millis: started.elapsed().as_millis() as u64,
    }
}

/// The queue's next tenants: one placed elsewhere, or up to `size` on the home cluster
/// (stopping at the first that is not).
fn next_batch(queue: &Mutex<VecDeque<PendingTenant>>, size: usize) -> Vec<PendingTenant> {
    let Ok(mut queue) = queue.lock() else {
        return Vec::new();
    };
    let mut batch = Vec::new();
    while let Some(front) = queue.front() {
        let home = front.cluster == crate::db::cluster::HOME;
        if !batch.is_empty() && (!home || batch.len() >= size) {
            break;
        }
        batch.extend(queue.pop_front());
        if !home {
            break;
        }
    }
    batch
}

/// One row of `migrate_tenant_schemas`: schema, migrations applied, error.
type BatchRow = (String, Option<i32>, Option<String>);

/// Migrates `batch` (home-cluster tenants) in one `migrate_tenant_schemas` call; the
/// tenants the call did not reach within its time budget go back to the front of `queue`.
/// When the whole call fails (a lost connection, a cancelled statement), every tenant of
/// the batch failed with that error and stays at its old version.
async fn migrate_batch(
    clusters: &Clusters,
    batch: &[PendingTenant],
    latest: i64,
    queue: &Mutex<VecDeque<PendingTenant>>,
) -> Vec<TenantOutcome> {
    let started = Instant::now();
    let schemas: Vec<&str> = batch.iter().map(|t| t.schema_name.as_str()).collect();
    let rows: Result<Vec<BatchRow>, String> = sqlx::query_as(
        "SELECT schema_name, applied, error FROM public.migrate_tenant_schemas($1, $2, $3)",
    )
    .bind(&schemas)
    .bind(latest)
    .bind(MIGRATION_BATCH_BUDGET_MS)
    .fetch_all(clusters.home())
    .await
    .map_err(|e| describe_db_error(&e));
    // The time of the call, shared among the tenants it migrated.
    let each = |n: usize| elapsed_millis(started.elapsed()) / n.max(1) as u64;
    match rows {
        Err(error) => batch
            .iter()
            .map(|t| outcome(t, None, Some(error.clone()), each(batch.len())))
            .collect(),
        Ok(rows) => {
            let reached = rows.len().min(batch.len());
            if let Ok(mut queue) = queue.lock() {
                for rest in batch[reached..].iter().rev() {
                    queue.push_front(rest.clone());
                }
            }
            batch[..reached]
                .iter()
                .zip(rows)
                .map(|(t, (_, applied, error))| {
                    let applied = if error.is_some() { None } else { applied };
                    outcome(t, applied, error, each(reached))
                })
                .collect()
        }
    }
}

fn outcome(
    tenant: &PendingTenant,
    applied: Option<i32>,
    error: Option<String>,
    millis: u64,
) -> TenantOutcome {
    TenantOutcome {
        slug: tenant.slug.clone(),
        from_version: tenant.schema_version,
        applied,
        error,
        millis,
    }
}

async fn migrate_one(clusters: &Clusters, tenant: &PendingTenant, latest: i64) -> TenantOutcome {
    let started = Instant::now();
    let (applied, error) = match migrate_placed(clusters, tenant, latest).await {
        Ok(n) => (Some(n), None),
        Err(e) => (None, Some(e)),
    };
    outcome(tenant, applied, error, elapsed_millis(started.elapsed()))
}

/// Migrates one schema on the cluster of its placement.
async fn migrate_placed(
    clusters: &Clusters,
    tenant: &PendingTenant,
    latest: i64,
) -> Result<i32, String> {
    let cluster = ClusterName::parse(&tenant.cluster).map_err(|e| e.to_string())?;
    let pool = clusters.pool(&cluster).map_err(|e| e.to_string())?;
    // One transaction: the function's DDL and version record commit together or not at
    // all. (New tables reach the tenant's role through the default
    // privileges grant_tenant_role set in its schema, on whichever cluster it is.)
    let mut tx = pool.begin().await.map_err(|e| describe_db_error(&e))?;
    let applied: i32 = sqlx::query_scalar("SELECT public.migrate_tenant_schema($1, $2)")
        .bind(&tenant.schema_name)
        .bind(latest)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| describe_db_error(&e))?;
    if applied > 0 && cluster.is_home() {
        // Citus mode: a table a migration created stays on the coordinator until it is
        // distributed, in the same transaction (nothing without Citus).
        let schema = SchemaName::parse(&tenant.schema_name).map_err(|e| e.to_string())?;
        crate::db::citus::distribute_schema(&mut tx, &schema)
            .await
            .map_err(|e| describe_db_error(&e))?;
    }
    tx.commit().await.map_err(|e| describe_db_error(&e))?;
    if !cluster.is_home() {
        // On another cluster the function finds no registry row to mirror the version into;
        // the home mirror is written here, after the schema's own commit. If this fails the
        // tenant stays pending and the next run applies nothing and writes it.
        sqlx::query("UPDATE public.tenants SET schema_version = $2 WHERE id = $1")
            .bind(tenant.id)
            .bind(latest)
            .execute(clusters.home())
            .await
            .map_err(|e| describe_db_error(&e))?;
    }
    Ok(applied)
}

fn elapsed_millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// A database error as one line: message, then the server's hint when it gave one.
pub fn describe_db_error(err: &sqlx::Error) -> String {
    match err.as_database_error() {
        Some(db) => {
            let hint = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|pg| pg.hint().map(str::to_owned));
            match hint {
                Some(hint) => format!("{} ({hint})", db.message()),
                None => db.message().to_owned(),
            }
        }
        None => err.to_string(),
    }
}

/// Applies the public migrations and syncs the tenant catalog on every secondary cluster,
/// so a tenant schema is built there by the same SQL functions from the same catalog.
/// Returns the clusters that failed, with the error; the others are done.
pub async fn migrate_secondaries(
    clusters: &Clusters,
    tenant: &[Migration],
) -> Vec<(String, MigrateError)> {
    let mut failed = Vec::new();
    for (name, pool) in clusters.secondaries() {
        if let Err(err) = migrate_public(pool, tenant).await {
            failed.push((name.to_string(), err));
        }
    }
    failed
}
