//! Who switched a tenant off, and what billing may lift (docs/webhooks.md, "Suspensions").
//!
//! `tenants.suspended_by` records the source of a suspension:
//! - `operator`: only an operator's `tenant reactivate` lifts it; billing then changes the
//!   status the tenant returns to (`status_before_suspension`);
//! - `lifecycle`: the lifecycle job (trial over, payment past due); a payment — billing
//!   reporting the tenant `active` or `trial` — lifts it;
//! - `billing`: Stripe paused the subscription; any other status billing reports lifts it.
//!
//! Billing's changes go through [`apply_billing_status`], so a paying customer is never left
//! locked out by a suspension that was about payment.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{self, Actor, Entry};
use crate::billing::SubscriptionStatus;

/// `public.suspension_source`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Encode, sqlx::Decode,
)]
#[sqlx(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum SuspendedBy {
    Operator,
    Lifecycle,
    Billing,
}

crate::db::public_enum_type!(SuspendedBy, "suspension_source");

impl SuspendedBy {
    /// The source an actor's suspension counts as. Anyone but the lifecycle job and Stripe
    /// counts as an operator, so that a suspension nobody can classify stands.
    pub fn of(actor: &Actor) -> Self {
        match actor {
            Actor::System { job: "lifecycle" } => Self::Lifecycle,
            Actor::Webhook {
                provider: "stripe", ..
            } => Self::Billing,
            _ => Self::Operator,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Lifecycle => "lifecycle",
            Self::Billing => "billing",
        }
    }

    /// Whether billing reporting `status` ends this suspension.
    fn lifted_by(self, status: SubscriptionStatus) -> bool {
        match self {
            Self::Operator => false,
            // The job suspended for want of payment: a payment (or a trial Stripe grants)
            // ends it; past due or cancelled does not.
            Self::Lifecycle => matches!(
                status,
                SubscriptionStatus::Active | SubscriptionStatus::Trial
            ),
            // The pause was the reason: whatever the subscription is now, billing decides.
            Self::Billing => status != SubscriptionStatus::Suspended,
        }
    }
}

/// What [`apply_billing_status`] did to the tenant's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingChange {
    /// The status (or the status a suspended tenant returns to) was set; no suspension
    /// began or ended.
    Set,
    /// A `paused` subscription switched the tenant off (`suspended_by = billing`).
    Suspended,
    /// Billing lifted a billing or lifecycle suspension.
    Reactivated { was_suspended_by: SuspendedBy },
}

#[derive(sqlx::FromRow)]
struct Row {
    slug: String,
    subscription_status: SubscriptionStatus,
    suspended_by: Option<SuspendedBy>,
}

/// Sets the billing status of tenant `id` from a Stripe event created at `created` (the
/// caller has already checked the event is not stale), and the newest-event mark. `None`
/// leaves the status alone and moves the mark only.
///
/// A live tenant takes the status; `suspended` (a paused subscription) suspends it, by
/// billing. A suspended tenant is reactivated when its suspension's source is lifted by the
/// status ([`SuspendedBy`]); otherwise the status becomes the one it returns to. Beginning
/// or ending a suspension writes its own audit row (`tenant.suspended` /
/// `tenant.reactivated`, actor Stripe, with the reason) on `conn`, the caller's transaction.
pub async fn apply_billing_status(
    conn: &mut PgConnection,
    id: Uuid,
    status: Option<SubscriptionStatus>,
    created: DateTime<Utc>,
    actor: &Actor,
    reason: &str,
) -> sqlx::Result<BillingChange> {
    let row: Row = sqlx::query_as(
        "SELECT slug::text, subscription_status, suspended_by FROM public.tenants WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    let suspended = row.subscription_status == SubscriptionStatus::Suspended;
    // A suspended row without a source predates the column or was written by hand: it
    // stands, as an operator's would.
    let by = row.suspended_by.unwrap_or(SuspendedBy::Operator);
    let change = match status {
        Some(SubscriptionStatus::Suspended) if !suspended => BillingChange::Suspended,
        Some(new) if suspended && by.lifted_by(new) => BillingChange::Reactivated {
            was_suspended_by: by,
        },
        _ => BillingChange::Set,
    };
    let sql = match change {
        BillingChange::Suspended => {
            "UPDATE public.tenants SET status_before_suspension = subscription_status,
                 subscription_status = 'suspended', suspended_by = 'billing', stripe_event_at = $3
             WHERE id = $1"
        }
        BillingChange::Reactivated { .. } => {
            "UPDATE public.tenants SET subscription_status = $2, suspended_by = NULL,
                 status_before_suspension = NULL, stripe_event_at = $3,
                 past_due_since = CASE WHEN $2 = 'past_due' THEN coalesce(past_due_since, $3) END
             WHERE id = $1"
        }
        // A suspension that stands: billing sets the status the tenant returns to. A pause
        // under a lifecycle suspension becomes billing's (both end with a payment, but only
        // the pause's end should decide once the subscription is paused).
        BillingChange::Set if suspended => {
            "UPDATE public.tenants SET status_before_suspension = coalesce($2, status_before_suspension),
                 suspended_by = CASE WHEN $2 = 'suspended' AND suspended_by = 'lifecycle' THEN 'billing'
                                     ELSE suspended_by END,
                 stripe_event_at = $3,
                 past_due_since = CASE WHEN coalesce($2, status_before_suspension) = 'past_due'
                                       THEN coalesce(past_due_since, $3) END
             WHERE id = $1"
        }
        BillingChange::Set => {
            "UPDATE public.tenants SET subscription_status = coalesce($2, subscription_status),
                 stripe_event_at = $3,
                 past_due_since = CASE WHEN coalesce($2, subscription_status) = 'past_due'
                                       THEN coalesce(past_due_since, $3) END
             WHERE id = $1"
        }
    };
    sqlx::query(sql)
        .bind(id)
        .bind(status)
        .bind(created)
        .execute(&mut *conn)
        .await?;
    let (action, metadata) = match change {
        BillingChange::Set => return Ok(change),
        BillingChange::Suspended => (
            "tenant.suspended",
            json!({ "slug": row.slug, "reason": reason, "suspended_by": SuspendedBy::Billing,
                    "from_status": row.subscription_status }),
        ),
        BillingChange::Reactivated { was_suspended_by } => (
            "tenant.reactivated",
            json!({ "slug": row.slug, "reason": reason, "was_suspended_by": was_suspended_by,
                    "from_status": row.subscription_status, "to_status": status }),
        ),
    };
    audit::record(
        conn,
        actor,
        Entry {
            tenant_id: Some(id),
            action,
            resource_type: "tenant",
            resource_id: row.slug.clone(),
            metadata,
        },
    )
    .await?;
    Ok(change)
}
