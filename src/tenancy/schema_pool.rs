//! The schema pool: tenant schemas made ahead of sign-ups (issue 16, migration 0017,
//! docs/scaling.md "The schema pool").
//!
//! Making a schema runs every tenant migration and creates the tenant's role; a sign-up that
//! claims a pooled schema instead only registers the tenant. [`super::lifecycle`]'s
//! provisioning claims one when the pool has one (`reserve_pooled_schema`, then
//! `create_tenant_schema` adopts it) and makes one otherwise, so the pool only ever saves
//! time. `serve` keeps the pool at `CAPLIQUIFY_SCHEMA_POOL_SIZE` ([`refill_loop`], every
//! [`REFILL_EVERY`]). Operators fill, drain and inspect it with `capliquify schema-pool`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::ident::SchemaName;

/// How often the refill loop tops the pool up. Polling, not `LISTEN` for claims: behind
/// PgBouncer in transaction mode (docs/scaling.md) a `LISTEN` is lost with its server
/// connection. A look at a full pool is one small function call (an advisory lock and a
/// count of a few rows), so once a second costs nothing, and a pool of 10 absorbs sign-ups
/// arriving faster than that.
pub const REFILL_EVERY: Duration = Duration::from_secs(1);

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

/// Adds one schema unless the pool holds `target` already: the new schema's name, or `None`
/// when the pool is full. One short transaction, in which Citus mode also places the schema
/// on a worker (as provisioning does), so a claim finds it there.
pub async fn add_one(pool: &PgPool, target: u32) -> sqlx::Result<Option<String>> {
    let target = i32::try_from(target).unwrap_or(i32::MAX);
    let mut tx = pool.begin().await?;
    let added: Option<String> = sqlx::query_scalar("SELECT public.add_pooled_schema($1)::text")
        .bind(target)
        .fetch_one(&mut *tx)
        .await?;
    let Some(schema) = added else {
        return Ok(None);
    };
    // A statement of its own: the function's row is not in the snapshot of the statement
    // that called it.
    let id: Uuid = sqlx::query_scalar(
        "SELECT tenant_id FROM public.tenant_schema_pool WHERE schema_name = $1",
    )
    .bind(&schema)
    .fetch_one(&mut *tx)
    .await?;
    // (The pool's CHECK ties the schema's name to the id.)
    crate::db::citus::place_tenant(&mut tx, id, &SchemaName::for_tenant(id)).await?;
    tx.commit().await?;
    Ok(Some(schema))
}

/// Adds schemas one transaction at a time until the pool holds `target`; `on_added` is
/// called with each new schema (a progress bar). Returns how many were added. Safe to run
/// beside other fillers: they take turns and none overfills.
pub async fn fill(pool: &PgPool, target: u32, on_added: impl Fn(&str)) -> sqlx::Result<u32> {
    let mut added = 0;
    while let Some(schema) = add_one(pool, target).await? {
        on_added(&schema);
        added += 1;
    }
    Ok(added)
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

/// Keeps the pool at `target` until the task is dropped: fills it now, then every
/// [`REFILL_EVERY`]. Errors are logged and retried at the next tick; they never stop the
/// service.
pub async fn refill_loop(pool: PgPool, target: u32) {
    let mut ticker = tokio::time::interval(REFILL_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match fill(&pool, target, |_| {}).await {
            Ok(0) => {}
            Ok(added) => tracing::debug!(added, target, "schema pool refilled"),
            Err(err) => tracing::warn!(error = %err, "refilling the schema pool failed"),
        }
    }
}
