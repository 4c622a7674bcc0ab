//! Hearing the database announce tenant and membership changes (public migration 0023),
//! so that the caller cache ([`CallerCache`]) may keep callers longer than
//! `CAPLIQUIFY_AUTH_CACHE_MS` and still forget a changed tenant's at once, on every
//! instance, whoever changed it.
//!
//! One task per service: a listener on the channel [`CHANNEL`], on a connection of its own
//! (a listening connection is held for good, so it is not taken from the service's pool),
//! and a heartbeat: a `pg_notify` on the same channel every quarter of the cache's ttl,
//! from a second connection of its own. What the listener hears proves its connection
//! alive; the cache keeps callers longer only while it heard something within the ttl, so
//! a connection that dies without an error (a silent network) costs at most the ttl. A
//! lost connection is reopened with backoff, and the cache told at once. Behind a
//! transaction pooler (PgBouncer in transaction mode) LISTEN cannot work: serve's
//! `--hear-changes off` (`CAPLIQUIFY_HEAR_CHANGES`) turns this off, and the heartbeat warns
//! when its beats reach the database but are never heard back.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};

use super::context::CallerCache;

/// The channel the triggers of public migration 0023 announce on.
pub const CHANNEL: &str = "capliquify_callers";
/// What the heartbeat sends: not a tenant, only a sign of life.
pub const HEARTBEAT: &str = "heartbeat";
/// One beat: a NOTIFY commits a transaction (it takes a transaction id), and a beat lost in
/// a crash matters to no one, so its commit does not wait for the WAL flush.
const HEARTBEAT_SQL: &str = "BEGIN; SET LOCAL synchronous_commit = off; \
     SELECT pg_notify('capliquify_callers', 'heartbeat'); COMMIT";
/// Beats sent in a row without anything heard before the heartbeat says so.
const UNHEARD_BEATS: u32 = 20;
/// The longest wait before reconnecting after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Starts hearing for `cache` on `pool`'s database (the home cluster, which holds
/// `public.tenants` and `public.users`); `None` when the cache is off. Abort the task to
/// stop.
pub fn spawn(pool: &PgPool, cache: Arc<CallerCache>) -> Option<tokio::task::JoinHandle<()>> {
    if cache.ttl().is_zero() {
        return None;
    }
    // Two connections of its own: one listens, one sends the heartbeat.
    let own = PgPoolOptions::new()
        .max_connections(2)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with((*pool.connect_options()).clone());
    let every = (cache.ttl() / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    Some(tokio::spawn(async move {
        tokio::join!(
            listen(own.clone(), cache.clone()),
            heartbeat(own, every, cache)
        );
    }))
}

/// The first wait before reconnecting.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

async fn listen(pool: PgPool, cache: Arc<CallerCache>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match listen_until_lost(&pool, &cache, &mut backoff).await {
            Ok(()) => tracing::warn!(
                "the connection hearing tenant and membership changes was lost; reconnecting \
                 (callers are kept CAPLIQUIFY_AUTH_CACHE_MS only meanwhile)"
            ),
            Err(err) => tracing::warn!(
                error = %err,
                "cannot hear tenant and membership changes; retrying in {} ms (callers are \
                 kept CAPLIQUIFY_AUTH_CACHE_MS only meanwhile)",
                backoff.as_millis()
            ),
        }
        cache.deaf();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Listens until the connection is lost (`Ok`) or fails; `backoff` starts over once it
/// listens.
async fn listen_until_lost(
    pool: &PgPool,
    cache: &CallerCache,
    backoff: &mut Duration,
) -> sqlx::Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is this module's to reopen, after telling the cache.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    *backoff = FIRST_BACKOFF;
    tracing::debug!(channel = CHANNEL, "hearing tenant and membership changes");
    while let Some(notification) = listener.try_recv().await? {
        cache.heard(notification.payload());
    }
    Ok(())
}

/// Beats every `every`; says once (until it hears again) when beats that reached the
/// database come back to nobody: a listener behind a transaction pooler never hears them.
async fn heartbeat(pool: PgPool, every: Duration, cache: Arc<CallerCache>) {
    let mut unheard = 0_u32;
    loop {
        match sqlx::raw_sql(HEARTBEAT_SQL).execute(&pool).await {
            Ok(_) if cache.hearing() => unheard = 0,
            Ok(_) => {
                unheard += 1;
                if unheard == UNHEARD_BEATS {
                    tracing::warn!(
                        "the heartbeat on {CHANNEL} reaches the database but is not heard back: \
                         behind PgBouncer in transaction mode? set CAPLIQUIFY_HEAR_CHANGES=off \
                         (callers are kept CAPLIQUIFY_AUTH_CACHE_MS only meanwhile)"
                    );
                }
            }
            Err(err) => tracing::debug!(error = %err, "the caller-change heartbeat failed"),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_is_sent_on_the_channel_and_read_as_one() {
        assert!(HEARTBEAT_SQL.contains(&format!("pg_notify('{CHANNEL}', '{HEARTBEAT}')")));
    }
}
