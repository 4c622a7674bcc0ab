//! Webhooks: Clerk (organizations, memberships, users) and Stripe (subscriptions and
//! invoices) drive tenants through signed HTTP calls.
//!
//! Every delivery goes the same way ([`deliver`]): the signature is checked on the raw body,
//! the event is recorded in `public.webhook_events` and applied **in one transaction**. A
//! replay finds its row and changes nothing (200); an event older than the state it would
//! change is recorded as `stale`; unknown types are recorded as `ignored` (200); a failure
//! rolls the change back, is recorded as `failed` and answered 500 so the provider retries.

//!
//! This room verifies and applies; it knows nothing of HTTP answers. The axum receivers
//! (`crate::http::webhooks`) read the raw body, call [`clerk::receive`] or
//! [`stripe::receive`] and turn the [`Delivery`] or [`Refusal`] into a response.

pub mod clerk;
pub mod signature;
pub mod stripe;

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::billing::prices::PriceCatalog;
use signature::{StripeSecret, SvixSecret};

/// Secrets, the price catalog and grace periods; a provider without a secret answers 503.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub clerk: Option<SvixSecret>,
    pub stripe: Option<StripeSecret>,
    pub prices: PriceCatalog,
    /// Days a tenant deleted through Clerk can be restored (`--grace-days`).
    pub deletion_grace_days: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            clerk: None,
            stripe: None,
            prices: PriceCatalog::default(),
            deletion_grace_days: 30,
        }
    }
}

/// What processing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Ignored,
    Stale,
    /// Understood and refused for safety (e.g. billing that disagrees with the customer
    /// link); answered 200 so the provider stops retrying, and audited.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Ignored => "ignored",
            Self::Stale => "stale",
            Self::Refused => "refused",
        }
    }
}

/// The envelope of one delivery.
#[derive(Debug, Clone)]
pub struct Event {
    pub provider: &'static str,
    pub id: String,
    pub kind: String,
    pub subject: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

/// Processing of one event inside the delivery's transaction.
pub type Apply<'c> =
    Pin<Box<dyn Future<Output = anyhow::Result<(Outcome, Option<String>)>> + Send + 'c>>;

/// What became of a delivery that was signed right and readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Recorded and processed: applied, ignored or stale.
    Processed(Outcome),
    /// Already processed before: nothing changed.
    Duplicate,
    /// Processing failed and was rolled back; the failure is recorded and logged, and the
    /// provider should retry.
    Failed,
}

/// Why a delivery was not processed (nothing is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The provider's secret is not configured; names the setting.
    NotConfigured(&'static str),
    /// Not signed right, or not an event of the provider.
    Rejected(String),
}

/// Records `event` and runs `apply` in one transaction; see the module docs.
pub async fn deliver<F>(pool: &PgPool, event: Event, apply: F) -> Delivery
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> Apply<'c>,
{
    match try_deliver(pool, &event, apply).await {
        Ok(Some(outcome)) => Delivery::Processed(outcome),
        Ok(None) => Delivery::Duplicate,
        Err(err) => {
            tracing::error!(provider = event.provider, event_id = %event.id, kind = %event.kind, error = %format!("{err:#}"), "webhook failed");
            if let Err(e) = record_failure(pool, &event, &format!("{err:#}")).await {
                tracing::error!(error = %e, "could not record the failed webhook");
            }
            Delivery::Failed
        }
    }
}

async fn try_deliver<F>(pool: &PgPool, event: &Event, apply: F) -> anyhow::Result<Option<Outcome>>
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> Apply<'c>,
{
    let mut tx = pool.begin().await?;
    // New events, and events whose earlier delivery failed, are (re)claimed; the row lock
    // makes concurrent deliveries of one event wait for each other.
    let claimed: Option<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO public.webhook_events (provider, event_id, event_type, subject, event_created_at, outcome)
         VALUES ($1, $2, $3, $4, $5, 'failed')
         ON CONFLICT (provider, event_id) DO UPDATE SET received_at = now()
             WHERE public.webhook_events.outcome = 'failed'
         RETURNING id",
    )
    .bind(event.provider)
    .bind(&event.id)
    .bind(&event.kind)
    .bind(&event.subject)
    .bind(event.created_at)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = claimed else {
        return Ok(None);
    };
    let (outcome, note) = apply(&mut tx).await?;
    sqlx::query("UPDATE public.webhook_events SET outcome = $2, error = $3, processed_at = now() WHERE id = $1")
        .bind(row)
        .bind(outcome.as_str())
        .bind(note)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(outcome))
}

async fn record_failure(pool: &PgPool, event: &Event, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO public.webhook_events (provider, event_id, event_type, subject, event_created_at, outcome, error)
         VALUES ($1, $2, $3, $4, $5, 'failed', $6)
         ON CONFLICT (provider, event_id) DO UPDATE SET error = EXCLUDED.error, received_at = now()
             WHERE public.webhook_events.outcome = 'failed'",
    )
    .bind(event.provider)
    .bind(&event.id)
    .bind(&event.kind)
    .bind(&event.subject)
    .bind(event.created_at)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Seconds since the epoch, for signature tolerance.
pub fn now_secs() -> i64 {
    Utc::now().timestamp()
}
