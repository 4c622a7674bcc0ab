//! The schema pool: tenant schemas made ahead of sign-ups (issue 16, migration 0017,
//! docs/scaling.md "The schema pool").
//!
//! Making a schema runs every tenant migration and creates the tenant's role; a sign-up that
//! claims a pooled schema instead only registers the tenant. [`super::lifecycle`]'s
//! provisioning claims one when the pool has one (`reserve_pooled_schema`, then
//! `create_tenant_schema` adopts it) and makes one otherwise, so the pool only ever saves
//! time. `serve` keeps the pool between half of `CAPLIQUIFY_SCHEMA_POOL_SIZE` and all of it
//! ([`refill_loop`], looking every [`REFILL_EVERY`], or every [`REFILL_EVERY_BUSY`] while
//! sign-ups claim, refilling in batches no larger than what is left, [`batch_size`]).
//! Operators fill, drain and inspect it with `capliquify schema-pool`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::ident::SchemaName;

/// How often the refill loop looks at the pool while nobody claims from it. Polling, not
/// `LISTEN` for claims: behind PgBouncer in transaction mode (docs/scaling.md) a `LISTEN` is
/// lost with its server connection. A look at the pool is a count of a few rows, so once a
/// second costs nothing.
pub const REFILL_EVERY: Duration = Duration::from_secs(1);

/// How often it looks while sign-ups claim ([`next_look`]): a second of a burst of sign-ups
/// could empty half a pool of 10 before the loop saw it, so it looks ten times as often
/// until the pool stops shrinking.
pub const REFILL_EVERY_BUSY: Duration = Duration::from_millis(100);

/// What the pool holds.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PoolStatus {
    /// Schemas made and not yet claimed.
    pub unclaimed: i64,
    /// Of those, how many are behind the newest tenant migration (`capliquify migrate`
    /// brings them up; a claim migrates the one it takes).
    pub behind: i64,
    /// When the oldest unclaimed schema was made.
    pub oldest: Option<DateTime<Utc>>,
}

/// The pool's contents against tenant migration `latest`.
pub async fn status(pool: &PgPool, latest: i64) -> sqlx::Result<PoolStatus> {
    sqlx::query_as(
        "SELECT count(*) AS unclaimed,
                count(*) FILTER (WHERE schema_version IS DISTINCT FROM $1) AS behind,
                min(created_at) AS oldest
           FROM public.tenant_schema_pool",
    )
    .bind(latest)
    .fetch_one(pool)
    .await
}

/// The most schemas [`fill`] makes per transaction.
pub const BATCH: u32 = 10;

/// Schemas [`fill`] makes in its next transaction when the pool holds `unclaimed`: as many
/// as are left, at least one, at most [`BATCH`]. A batch's schemas can be claimed only once
/// it commits, so a pool nearly emptied by sign-ups gets its next schema after one schema's
/// time rather than ten, while a pool with schemas to spare is filled [`BATCH`] at a time,
/// so that its roles cost each backend one rebuild of its role memberships (see
/// [`add_batch`]). From empty: 1, 1, 2, 4, 8, then 10 a transaction.
pub fn batch_size(unclaimed: i64) -> u32 {
    u32::try_from(unclaimed.clamp(1, i64::from(BATCH))).unwrap_or(BATCH)
}

/// Adds schemas in one transaction until the pool holds `target` or `max` were added: the
/// new schemas' names (none when the pool is full). Citus mode also places each on a worker
/// (as provisioning does), so a claim finds it there.
///
/// One transaction for many because every role created (each schema has its own) makes
/// every backend of the server rebuild its cached role memberships before its next `SET
/// ROLE`, which with thousands of tenant roles costs ~0.4-0.6 s of CPU per backend
/// (docs/scaling.md, "Role changes"); a batch makes that happen once for all its roles.
///
/// In Citus mode one schema per transaction, as `migrate` keeps one tenant per transaction
/// there: placing several schemas on workers in one transaction is not tried.
pub async fn add_batch(pool: &PgPool, target: u32, max: u32) -> sqlx::Result<Vec<String>> {
    let target = i32::try_from(target).unwrap_or(i32::MAX);
    let max = if crate::db::citus::is_on(pool).await? {
        max.min(1)
    } else {
        max
    };
    let mut tx = pool.begin().await?;
    let mut added = Vec::new();
    while added.len() < max as usize {
        let schema: Option<String> =
            sqlx::query_scalar("SELECT public.add_pooled_schema($1)::text")
                .bind(target)
                .fetch_one(&mut *tx)
                .await?;
        let Some(schema) = schema else {
            break;
        };
        // A statement of its own: the function's row is not in the snapshot of the
        // statement that called it.
        let id: Uuid = sqlx::query_scalar(
            "SELECT tenant_id FROM public.tenant_schema_pool WHERE schema_name = $1",
        )
        .bind(&schema)
        .fetch_one(&mut *tx)
        .await?;
        // (The pool's CHECK ties the schema's name to the id.)
        crate::db::citus::place_tenant(&mut tx, id, &SchemaName::for_tenant(id)).await?;
        added.push(schema);
    }
    tx.commit().await?;
    Ok(added)
}

/// Adds schemas, [`batch_size`] per transaction (one in Citus mode), until the pool holds
/// `target`; `on_added` is called with each new schema once its transaction committed (a
/// progress bar). Returns how many were added. Safe to run beside other fillers: they take
/// turns and none overfills.
pub async fn fill(pool: &PgPool, target: u32, on_added: impl Fn(&str)) -> sqlx::Result<u32> {
    let mut added = 0;
    loop {
        let batch = add_batch(pool, target, batch_size(unclaimed(pool).await?)).await?;
        for schema in &batch {
            on_added(schema);
        }
        if batch.is_empty() {
            return Ok(added);
        }
        added += batch.len() as u32;
    }
}

/// Drops every unclaimed schema (and its role), one transaction each; `on_dropped` is called
/// with each. A schema a sign-up is claiming right now is left to it. Returns how many were
/// dropped.
pub async fn drain(pool: &PgPool, on_dropped: impl Fn(&str)) -> sqlx::Result<u32> {
    let mut dropped = 0;
    while let Some(schema) =
        sqlx::query_scalar::<_, Option<String>>("SELECT public.drop_pooled_schema()::text")
            .fetch_one(pool)
            .await?
    {
        on_dropped(&schema);
        dropped += 1;
    }
    Ok(dropped)
}

/// Whether a pool of `target` holding `unclaimed` schemas is refilled: once it is down to
/// half its size, so that the roles of several sign-ups are made in one transaction
/// ([`add_batch`]) rather than one transaction (and one rebuild of every backend's role
/// memberships) per sign-up.
pub fn needs_refill(unclaimed: i64, target: u32) -> bool {
    target > 0 && unclaimed <= i64::from(target / 2)
}

/// When the refill loop looks again, having found `now` schemas after finding
/// `before` (`None`: at the first look, and after a look that failed): soon
/// ([`REFILL_EVERY_BUSY`]) while the pool shrinks, else after [`REFILL_EVERY`].
pub fn next_look(before: Option<i64>, now: i64) -> Duration {
    if before.is_some_and(|before| now < before) {
        REFILL_EVERY_BUSY
    } else {
        REFILL_EVERY
    }
}

/// The unclaimed schemas, counted.
async fn unclaimed(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM public.tenant_schema_pool")
        .fetch_one(pool)
        .await
}

/// Keeps the pool between half of `target` and `target` until the task is dropped: fills it
/// now, then looks every [`REFILL_EVERY`] (every [`REFILL_EVERY_BUSY`] while sign-ups claim,
/// [`next_look`]) and fills it again once half is claimed ([`needs_refill`]). Errors are
/// logged and retried at the next look; they never stop the service.
pub async fn refill_loop(pool: PgPool, target: u32) {
    let mut before = None;
    loop {
        let now = match unclaimed(&pool).await {
            Ok(n) => n,
            Err(err) => {
                tracing::warn!(error = %err, "reading the schema pool failed");
                before = None;
                tokio::time::sleep(REFILL_EVERY).await;
                continue;
            }
        };
        let mut after = now;
        if needs_refill(now, target) {
            match fill(&pool, target, |_| {}).await {
                Ok(0) => {}
                Ok(added) => {
                    tracing::debug!(added, target, "schema pool refilled");
                    // Claims made while it filled show as a shrink at the next look.
                    after = now + i64::from(added);
                }
                Err(err) => tracing::warn!(error = %err, "refilling the schema pool failed"),
            }
        }
        tokio::time::sleep(next_look(before, now)).await;
        before = Some(after);
    }
}
