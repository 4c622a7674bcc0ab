//! Moving a tenant's schema between PostgreSQL clusters (`capliquify tenant move`).
//!
//! The registry row on the home cluster is the truth about where a tenant lives
//! (`tenants.cluster`). A move:
//!
//! 1. flags the tenant read-only (`tenants.moving_to`; the API answers writes 503 with
//!    `Retry-After`) and waits `drain` so that every service instance's caller cache has
//!    seen the flag;
//! 2. opens the target transaction and checks the schema is not there yet;
//! 3. opens the source transaction and locks every table of the schema `IN SHARE MODE`:
//!    this waits for writes already under way (a request that passed the gate just
//!    before the flag) and blocks any later one until the source is dropped, so no write
//!    can land on the source after its rows were copied;
//! 4. builds the target schema with `CREATE SCHEMA` and `migrate_tenant_schema` at the
//!    source's version — the same catalog and function every schema is built with — and
//!    copies table by table with `COPY … TO STDOUT` → `COPY … FROM STDIN` (binary), in
//!    foreign-key order;
//! 5. verifies row counts and checksums per table on both sides, inside both
//!    transactions, then commits the target;
//! 6. flips the placement and clears the flag in one home transaction, with the
//!    `tenant.moved` audit row;
//! 7. waits `drain` again (cached callers still route to the source, which stays
//!    readable), drops the source schema and commits.
//!
//! Any failure before step 6 rolls the target transaction back (or drops the committed
//! copy), rolls the source back and clears the flag with a `tenant.move_failed` audit
//! row: the tenant stays where it was, intact and writable again.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde::Serialize;
use serde_json::json;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, Transaction};

use super::TenancyError;
use super::catalog::{self, CatalogError, SchemaTable};
use super::ident::{ObjectName, SchemaName};
use super::migrate::{self, describe_db_error};
use super::registry::{self, Tenant};
use crate::audit::{self, Actor, Entry};
use crate::db::{ClusterName, Clusters};

/// How a move behaves.
#[derive(Debug, Clone)]
pub struct MoveOptions {
    /// How long to wait after setting the read-only flag, and again after the flip before
    /// dropping the source: at least the services' caller cache (`CAPLIQUIFY_AUTH_CACHE_MS`).
    pub drain: Duration,
    /// How long the source may wait for writes under way before the move gives up.
    pub lock_timeout: Duration,
}

impl Default for MoveOptions {
    fn default() -> Self {
        Self {
            drain: Duration::from_secs(3),
            lock_timeout: Duration::from_secs(30),
        }
    }
}

/// One table as copied and verified.
#[derive(Debug, Clone, Serialize)]
pub struct TableCopy {
    pub table: String,
    pub rows: i64,
    /// Sum of the first 64 bits of each row's md5 (order-independent), as text.
    pub checksum: String,
}

/// What a move did.
#[derive(Debug, Clone, Serialize)]
pub struct MoveReport {
    pub slug: String,
    pub from: String,
    pub to: String,
    pub schema_version: i64,
    pub tables: Vec<TableCopy>,
    pub rows: i64,
    pub millis: u64,
    /// Set when the move succeeded but the source copy could not be dropped.
    pub warning: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    #[error("tenant {slug:?} is already on cluster {cluster:?}; nothing to move")]
    AlreadyThere { slug: String, cluster: String },
    #[error(
        "tenant {slug:?} is being moved by another process right now; wait for that move to end (a move whose process died is cleaned up by the next `tenant move`)"
    )]
    AlreadyMoving { slug: String },
    #[error("tenant {slug:?} has no schema to move; run `capliquify tenant repair {slug}` first")]
    NoSchema { slug: String },
    #[error("cluster {cluster:?} is not ready for tenants: {cause}")]
    TargetNotReady {
        cluster: String,
        cause: migrate::MigrateError,
    },
    #[error(
        "cluster {cluster:?} already has a schema {schema}, probably left by an interrupted move; the registry places the tenant elsewhere, so after checking it drop it there (DROP SCHEMA {schema} CASCADE) and move again"
    )]
    TargetHasSchema { cluster: String, schema: String },
    #[error(
        "moving tenant {slug:?} to cluster {to:?} failed while {step}: {cause}; the tenant stays on {from:?}, intact and writable, and nothing was left on {to:?}"
    )]
    Failed {
        slug: String,
        from: String,
        to: String,
        step: &'static str,
        cause: String,
    },
}

/// Moves tenant `slug` to cluster `to`. See the module documentation for the steps.
pub async fn move_tenant(
    clusters: &Clusters,
    slug: &str,
    to: &str,
    actor: &Actor,
    options: &MoveOptions,
) -> Result<MoveReport, MoveError> {
    let started = Instant::now();
    let home = clusters.home();
    let tenant = registry::find(home, slug).await?;
    let (target, target_pool) = clusters.named(to).map_err(TenancyError::from)?;
    let source = ClusterName::parse(&tenant.cluster).map_err(TenancyError::from)?;
    let source_pool = clusters.pool(&source).map_err(TenancyError::from)?;
    migrate::ensure_current(target_pool)
        .await
        .map_err(|cause| MoveError::TargetNotReady {
            cluster: target.to_string(),
            cause,
        })?;
    // One mover per tenant: a session-level advisory lock on a connection of its own, held
    // for the whole move. PostgreSQL releases it when that session ends, so a move whose
    // process died leaves the lock free and its `moving_to` flag behind: the next move
    // sees both and cleans up (see `mark_moving`).
    let mut guard = home.acquire().await.map_err(TenancyError::from)?.detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("capliquify:tenant-move:{}", tenant.id))
        .fetch_one(&mut guard)
        .await
        .map_err(TenancyError::from)?;
    if !locked {
        return Err(MoveError::AlreadyMoving { slug: tenant.slug });
    }
    let tenant = mark_moving(clusters, slug, &target, actor).await?;
    let schema = SchemaName::parse(&tenant.schema_name).map_err(TenancyError::from)?;
    let job = Job {
        tenant: &tenant,
        schema: &schema,
        source: &source,
        target: &target,
        source_pool,
        target_pool,
        options,
    };
    let outcome = job.copy_and_flip(home, actor, started).await;
    match outcome {
        Ok(mut report) => {
            report.millis = elapsed_millis(started);
            Ok(report)
        }
        Err(failure) => {
            let error = MoveError::Failed {
                slug: tenant.slug.clone(),
                from: source.to_string(),
                to: target.to_string(),
                step: failure.step,
                cause: failure.cause,
            };
            if let Err(e) = clear_moving(home, &tenant, &target, actor, &error).await {
                tracing::error!(tenant = %tenant.slug, error = %e, "could not clear the moving flag");
            }
            Err(error)
        }
    }
}

/// A failed step, before the move is undone.
struct StepFailure {
    step: &'static str,
    cause: String,
}

fn at<E: std::fmt::Display>(step: &'static str) -> impl Fn(E) -> StepFailure {
    move |e| StepFailure {
        step,
        cause: e.to_string(),
    }
}

fn db_at(step: &'static str) -> impl Fn(sqlx::Error) -> StepFailure {
    move |e| StepFailure {
        step,
        cause: describe_db_error(&e),
    }
}

/// Locks the registry row, checks the tenant can move, and sets the read-only flag.
/// Called with the tenant's move lock held: a flag already set is a move whose process
/// died. Its placement never flipped, so its copy on the cluster it was moving to is a
/// leftover: dropped there, then the flag is taken over (audited `tenant.move_abandoned`).
async fn mark_moving(
    clusters: &Clusters,
    slug: &str,
    to: &ClusterName,
    actor: &Actor,
) -> Result<Tenant, MoveError> {
    let home = clusters.home();
    let mut tx = home.begin().await.map_err(TenancyError::from)?;
    let tenant = registry::fetch(&mut tx, slug, true).await?;
    if let Some(abandoned) = &tenant.moving_to {
        let leftover = ClusterName::parse(abandoned).map_err(TenancyError::from)?;
        let schema = SchemaName::parse(&tenant.schema_name).map_err(TenancyError::from)?;
        if leftover.as_str() != tenant.cluster.as_str() {
            let pool = clusters.pool(&leftover).map_err(TenancyError::from)?;
            sqlx::query(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                schema.quoted()
            )))
            .execute(pool)
            .await
            .map_err(TenancyError::from)?;
        }
        tracing::warn!(tenant = %tenant.slug, to = %abandoned, "cleaning up a move whose process died");
        audit::record(
            &mut tx,
            actor,
            Entry {
                tenant_id: Some(tenant.id),
                action: "tenant.move_abandoned",
                resource_type: "tenant",
                resource_id: tenant.slug.clone(),
                metadata: json!({ "slug": tenant.slug, "from": tenant.cluster, "to": abandoned }),
            },
        )
        .await
        .map_err(TenancyError::from)?;
    }
    if tenant.cluster == to.as_str() {
        return Err(MoveError::AlreadyThere {
            slug: tenant.slug,
            cluster: tenant.cluster,
        });
    }
    if tenant.schema_version.is_none() {
        return Err(MoveError::NoSchema { slug: tenant.slug });
    }
    sqlx::query("UPDATE public.tenants SET moving_to = $2 WHERE id = $1")
        .bind(tenant.id)
        .bind(to.as_str())
        .execute(&mut *tx)
        .await
        .map_err(TenancyError::from)?;
    let tenant = registry::fetch(&mut tx, slug, false).await?;
    tx.commit().await.map_err(TenancyError::from)?;
    Ok(tenant)
}

/// Undoes the flag after a failed move and records the failure.
async fn clear_moving(
    home: &PgPool,
    tenant: &Tenant,
    to: &ClusterName,
    actor: &Actor,
    error: &MoveError,
) -> sqlx::Result<()> {
    let mut tx = home.begin().await?;
    sqlx::query("UPDATE public.tenants SET moving_to = NULL WHERE id = $1 AND moving_to = $2")
        .bind(tenant.id)
        .bind(to.as_str())
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        actor,
        Entry {
            tenant_id: Some(tenant.id),
            action: "tenant.move_failed",
            resource_type: "tenant",
            resource_id: tenant.slug.clone(),
            metadata: json!({ "slug": tenant.slug, "from": tenant.cluster, "to": to.as_str(), "error": error.to_string() }),
        },
    )
    .await?;
    tx.commit().await
}

struct Job<'a> {
    tenant: &'a Tenant,
    schema: &'a SchemaName,
    source: &'a ClusterName,
    target: &'a ClusterName,
    source_pool: &'a PgPool,
    target_pool: &'a PgPool,
    options: &'a MoveOptions,
}

/// Settings that make a row's text form the same on both clusters, whatever their
/// defaults, so checksums compare; and the session's wait for locks.
fn begin_statement(lock_timeout: Duration) -> String {
    format!(
        "BEGIN; SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; \
         SET LOCAL IntervalStyle = 'postgres'; SET LOCAL extra_float_digits = 1; \
         SET LOCAL bytea_output = 'hex'; SET LOCAL lock_timeout = {}",
        lock_timeout.as_millis().max(1)
    )
}

impl Job<'_> {
    async fn copy_and_flip(
        &self,
        home: &PgPool,
        actor: &Actor,
        started: Instant,
    ) -> Result<MoveReport, StepFailure> {
        tokio::time::sleep(self.options.drain).await;
        let begin = begin_statement(self.options.lock_timeout);
        let schema = self.schema.as_str();

        // The target first, so a target that refuses costs the source nothing.
        let mut dst = self
            .target_pool
            .begin_with(AssertSqlSafe(begin.clone()))
            .await
            .map_err(db_at("connecting to the target cluster"))?;
        let exists: bool =
            sqlx::query_scalar("SELECT to_regnamespace(quote_ident($1)) IS NOT NULL")
                .bind(schema)
                .fetch_one(&mut *dst)
                .await
                .map_err(db_at("checking the target cluster"))?;
        if exists {
            return Err(StepFailure {
                step: "checking the target cluster",
                cause: MoveError::TargetHasSchema {
                    cluster: self.target.to_string(),
                    schema: schema.to_owned(),
                }
                .to_string(),
            });
        }

        let mut src = self
            .source_pool
            .begin_with(AssertSqlSafe(begin))
            .await
            .map_err(db_at("connecting to the source cluster"))?;
        // Schema migrations of this tenant wait for the move (migrate_tenant_schema takes
        // the same lock).
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('capliquify:tenant-schema:' || $1, 0))",
        )
        .bind(schema)
        .execute(&mut *src)
        .await
        .map_err(db_at("locking the source schema"))?;
        let tables = catalog::tables(&mut src, self.schema)
            .await
            .map_err(catalog_at("reading the source schema"))?;
        let locked = std::iter::once(format!("{}.schema_migrations", self.schema.quoted()))
            .chain(
                tables
                    .iter()
                    .map(|t| format!("{}.{}", self.schema.quoted(), t.name.quoted())),
            )
            .collect::<Vec<_>>()
            .join(", ");
        // Waits for writes under way; blocks later ones until this transaction ends.
        sqlx::query(AssertSqlSafe(format!("LOCK TABLE {locked} IN SHARE MODE")))
            .execute(&mut *src)
            .await
            .map_err(db_at("waiting for writes under way on the source"))?;
        let version: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT coalesce(max(version), 0) FROM {}.schema_migrations",
            self.schema.quoted()
        )))
        .fetch_one(&mut *src)
        .await
        .map_err(db_at("reading the source version"))?;

        sqlx::query(AssertSqlSafe(format!(
            "CREATE SCHEMA {}",
            self.schema.quoted()
        )))
        .execute(&mut *dst)
        .await
        .map_err(db_at("creating the target schema"))?;
        sqlx::query("SELECT public.migrate_tenant_schema($1, $2)")
            .bind(schema)
            .bind(version)
            .execute(&mut *dst)
            .await
            .map_err(db_at("migrating the target schema"))?;
        // Roles belong to each cluster: the tenant's role is created (if needed) and
        // granted on the target in this transaction, before the placement flips.
        sqlx::query("SELECT public.grant_tenant_role($1, $2)")
            .bind(self.tenant.id)
            .bind(schema)
            .execute(&mut *dst)
            .await
            .map_err(db_at("granting the tenant's role on the target"))?;
        let target_tables = catalog::tables(&mut dst, self.schema)
            .await
            .map_err(catalog_at("reading the target schema"))?;
        let names = |ts: &[SchemaTable]| ts.iter().map(|t| t.name.to_string()).collect::<Vec<_>>();
        if names(&tables) != names(&target_tables) {
            return Err(StepFailure {
                step: "comparing the schemas",
                cause: format!(
                    "the source has tables {:?} but a schema built at version {version} has {:?}",
                    names(&tables),
                    names(&target_tables)
                ),
            });
        }

        for table in &tables {
            copy_table(&mut src, &mut dst, self.schema, table).await?;
        }

        let mut copies = Vec::with_capacity(tables.len());
        for table in &tables {
            let (rows, sum) = table_checksum(&mut src, self.schema, &table.name)
                .await
                .map_err(db_at("verifying the source"))?;
            let (target_rows, target_sum) = table_checksum(&mut dst, self.schema, &table.name)
                .await
                .map_err(db_at("verifying the target"))?;
            if (rows, &sum) != (target_rows, &target_sum) {
                return Err(StepFailure {
                    step: "verifying the copy",
                    cause: format!(
                        "table {}: source has {rows} rows (checksum {sum}), target {target_rows} (checksum {target_sum})",
                        table.name
                    ),
                });
            }
            copies.push(TableCopy {
                table: table.name.to_string(),
                rows,
                checksum: sum,
            });
        }
        dst.commit()
            .await
            .map_err(db_at("committing the target copy"))?;

        let rows = copies.iter().map(|c| c.rows).sum();
        let mut report = MoveReport {
            slug: self.tenant.slug.clone(),
            from: self.source.to_string(),
            to: self.target.to_string(),
            schema_version: version,
            tables: copies,
            rows,
            millis: 0,
            warning: None,
        };
        if let Err(failure) = self.flip(home, actor, &report, started).await {
            // A COMMIT whose answer was lost may still have happened: ask before dropping
            // anything, and drop the target copy only when the placement surely did not flip.
            let placed: sqlx::Result<Option<String>> =
                sqlx::query_scalar("SELECT cluster FROM public.tenants WHERE id = $1")
                    .bind(self.tenant.id)
                    .fetch_optional(home)
                    .await;
            match placed {
                Ok(Some(cluster)) if cluster == self.target.as_str() => {
                    tracing::warn!(tenant = %self.tenant.slug, "the placement switch reported an error but had committed");
                }
                Ok(_) => {
                    self.drop_target_copy().await;
                    return Err(failure);
                }
                Err(e) => {
                    return Err(StepFailure {
                        step: failure.step,
                        cause: format!(
                            "{}; whether the placement switched could not be checked ({}): both copies are kept, see `capliquify tenant show {}`",
                            failure.cause,
                            describe_db_error(&e),
                            self.tenant.slug
                        ),
                    });
                }
            }
        }

        // Placed: from here on the move has happened, whatever follows.
        tokio::time::sleep(self.options.drain).await;
        report.warning = self.drop_source(src).await.err();
        if !self.source.is_home()
            && let Err(e) = audit::drain(home, self.source_pool, Some(self.tenant.id)).await
        {
            tracing::warn!(tenant = %self.tenant.slug, error = %e, "audit outbox not drained yet");
        }
        Ok(report)
    }

    /// Flips the placement and clears the flag, with the audit row, in one home transaction.
    async fn flip(
        &self,
        home: &PgPool,
        actor: &Actor,
        report: &MoveReport,
        started: Instant,
    ) -> Result<(), StepFailure> {
        let step = "switching the placement";
        let mut tx = home.begin().await.map_err(db_at(step))?;
        let flipped = sqlx::query(
            "UPDATE public.tenants SET cluster = $2, moving_to = NULL
              WHERE id = $1 AND cluster = $3 AND moving_to = $2",
        )
        .bind(self.tenant.id)
        .bind(self.target.as_str())
        .bind(self.source.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_at(step))?
        .rows_affected();
        if flipped != 1 {
            return Err(StepFailure {
                step,
                cause: "the registry row changed during the move (moving flag cleared by hand?)"
                    .into(),
            });
        }
        audit::record(
            &mut tx,
            actor,
            Entry {
                tenant_id: Some(self.tenant.id),
                action: "tenant.moved",
                resource_type: "tenant",
                resource_id: self.tenant.slug.clone(),
                metadata: json!({
                    "slug": self.tenant.slug, "from": report.from, "to": report.to,
                    "schema_version": report.schema_version, "rows": report.rows,
                    "tables": report.tables, "copy_millis": elapsed_millis(started),
                }),
            },
        )
        .await
        .map_err(db_at(step))?;
        tx.commit().await.map_err(db_at(step))
    }

    /// After a failed flip: the committed target copy must not stay behind.
    async fn drop_target_copy(&self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema.quoted());
        if let Err(e) = sqlx::query(AssertSqlSafe(sql))
            .execute(self.target_pool)
            .await
        {
            tracing::error!(
                tenant = %self.tenant.slug, cluster = %self.target, schema = %self.schema, error = %e,
                "could not drop the target copy of a failed move; drop it by hand"
            );
        }
    }

    /// Drops the source schema in the transaction that has held its tables since the copy.
    async fn drop_source(&self, mut src: Transaction<'static, Postgres>) -> Result<(), String> {
        let failed = |what: &str, e: &sqlx::Error| {
            format!(
                "the tenant now lives on {}, but its old schema {} on {} could not be dropped ({}: {}); drop it there by hand",
                self.target,
                self.schema,
                self.source,
                what,
                describe_db_error(e)
            )
        };
        // First, in the transaction that still holds the old tables: the tenant's role loses
        // its writes on them. Should the drop fail, committing this releases the locks
        // without letting a write that waited for them land in a copy nobody reads any
        // more: it fails (42501) and its client retries on the new placement.
        let revoke = format!(
            "REVOKE INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} FROM \"{}\"",
            self.schema.quoted(),
            crate::db::scope::role_name(self.tenant.id)
        );
        if let Err(e) = sqlx::query(AssertSqlSafe(revoke)).execute(&mut *src).await {
            return Err(failed(
                "revoking writes on it failed, then the locks were released",
                &e,
            ));
        }
        let dropped = async {
            sqlx::query("SAVEPOINT drop_source")
                .execute(&mut *src)
                .await?;
            sqlx::query(AssertSqlSafe(format!(
                "DROP SCHEMA {} CASCADE",
                self.schema.quoted()
            )))
            .execute(&mut *src)
            .await?;
            // The tenant's role on the source cluster has nothing left to do there.
            sqlx::query("SELECT public.drop_tenant_role($1)")
                .bind(self.tenant.id)
                .execute(&mut *src)
                .await
                .map(|_| ())
        }
        .await;
        match dropped {
            Ok(()) => src.commit().await.map_err(|e| failed("commit", &e)),
            Err(e) => {
                // Back to the savepoint: the revoke stays, and is committed.
                let kept = match sqlx::query("ROLLBACK TO SAVEPOINT drop_source")
                    .execute(&mut *src)
                    .await
                {
                    Ok(_) => src.commit().await,
                    Err(e) => Err(e),
                };
                Err(match kept {
                    Ok(()) => failed("writes to it are refused", &e),
                    Err(_) => failed(
                        "revoking writes on it failed, then the locks were released",
                        &e,
                    ),
                })
            }
        }
    }
}

/// The failed step of reading a schema's tables.
fn catalog_at(step: &'static str) -> impl Fn(CatalogError) -> StepFailure {
    move |e| match e {
        CatalogError::Db(e) => db_at(step)(e),
        other => at(step)(other),
    }
}

/// Streams one table from the source transaction into the target transaction.
async fn copy_table(
    src: &mut PgConnection,
    dst: &mut PgConnection,
    schema: &SchemaName,
    table: &SchemaTable,
) -> Result<(), StepFailure> {
    let target = format!(
        "{}.{} ({})",
        schema.quoted(),
        table.name.quoted(),
        table.column_list()
    );
    let step = "copying the data";
    let mut copy_in = dst
        .copy_in_raw(&format!("COPY {target} FROM STDIN (FORMAT binary)"))
        .await
        .map_err(db_at(step))?;
    let mut copy_out = match src
        .copy_out_raw(&format!("COPY {target} TO STDOUT (FORMAT binary)"))
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            let _ = copy_in.abort("source failed").await;
            return Err(db_at(step)(e));
        }
    };
    while let Some(chunk) = copy_out.next().await {
        let sent = match chunk {
            Ok(bytes) => copy_in.send(bytes).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            let _ = copy_in.abort("copy failed").await;
            return Err(StepFailure {
                step,
                cause: format!("table {}: {}", table.name, describe_db_error(&e)),
            });
        }
    }
    drop(copy_out);
    copy_in.finish().await.map_err(|e| StepFailure {
        step,
        cause: format!("table {}: {}", table.name, describe_db_error(&e)),
    })?;
    Ok(())
}

/// Row count and an order-independent checksum of a table: the sum of the first 64 bits
/// of each row's md5 over its text form (generated columns included, so they are checked
/// too). Text forms are made comparable by [`begin_statement`]'s settings.
async fn table_checksum(
    conn: &mut PgConnection,
    schema: &SchemaName,
    table: &ObjectName,
) -> sqlx::Result<(i64, String)> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0)::text
           FROM {}.{} t",
        schema.quoted(),
        table.quoted()
    )))
    .fetch_one(conn)
    .await
}

fn elapsed_millis(started: Instant) -> u64 {
    started.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}
