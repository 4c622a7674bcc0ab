//! `POST /webhooks/stripe`: subscriptions drive the tenant's tier, limits, features and
//! status.
//!
//! Events (`Stripe-Signature`, `STRIPE_WEBHOOK_SECRET`):
//! - `checkout.session.completed` links the Stripe customer to the tenant whose **id** is
//!   `client_reference_id` (or `metadata.tenant_id`); a tenant already linked to another
//!   customer is not relinked (`refused`, audited);
//! - `customer.subscription.created|updated` upserts `subscriptions`; the price maps to a
//!   tier and billing cycle (`CAPLIQUIFY_STRIPE_PRICES`), and the tenant's tier, limits,
//!   features and status follow;
//! - `customer.subscription.deleted` cancels; access ends at the period's end;
//! - `invoice.payment_failed` → past due (the lifecycle job suspends after the grace period);
//!   `invoice.paid` → active again, out of a suspension by billing or the lifecycle job
//!   (`tenancy::suspension`; an operator's stands).
//!
//! Ordering: two watermarks of Stripe's `created`. `subscriptions.stripe_event_at` is the
//! newest subscription event applied: an older one does not touch the plan, price or
//! period (every subscription event carries the whole subscription, so the newest alone
//! decides). `tenants.stripe_event_at` is the newest event that set the tenant's billing
//! status, from subscription and invoice events alike. An event older than both is `stale`.
//!
//! Binding: billing finds its tenant by id, never by slug (slugs change and are reused after
//! a purge). Once a customer is linked, the link is the authority: a subscription or invoice
//! event goes to the customer's tenant, and one whose `metadata.tenant_id` names another
//! tenant is `refused` (200, audited, nothing else changes). The legacy `metadata.tenant` /
//! slug `client_reference_id` is not followed.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Apply, Delivery, Event, Outcome, Refusal, WebhookConfig, deliver, now_secs};
use crate::audit::{self, Actor, Entry};
use crate::billing::SubscriptionStatus;
use crate::billing::prices::PriceCatalog;
use crate::tenancy::members;
use crate::tenancy::suspension::apply_billing_status;

#[derive(Debug, Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    data: Data,
}

#[derive(Debug, Deserialize)]
struct Data {
    object: Value,
}

#[derive(Debug, Clone, Deserialize)]
struct CheckoutSession {
    client_reference_id: Option<String>,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
    customer: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Price {
    id: String,
    unit_amount: Option<i64>,
    currency: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Item {
    price: Price,
    current_period_start: Option<i64>,
    current_period_end: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
struct Items {
    data: Vec<Item>,
}

#[derive(Debug, Clone, Deserialize)]
struct Subscription {
    id: String,
    customer: String,
    status: String,
    items: Items,
    current_period_start: Option<i64>,
    current_period_end: Option<i64>,
    #[serde(default)]
    cancel_at_period_end: bool,
    canceled_at: Option<i64>,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Invoice {
    customer: String,
}

#[derive(Debug, Clone)]
enum Change {
    Checkout(CheckoutSession),
    SubscriptionUpsert(Subscription),
    SubscriptionDeleted(Subscription),
    PaymentFailed(Invoice),
    Paid(Invoice),
    Unknown,
}

impl Change {
    fn parse(kind: &str, object: Value) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            "checkout.session.completed" => Self::Checkout(serde_json::from_value(object)?),
            "customer.subscription.created" | "customer.subscription.updated" => {
                Self::SubscriptionUpsert(serde_json::from_value(object)?)
            }
            "customer.subscription.deleted" => {
                Self::SubscriptionDeleted(serde_json::from_value(object)?)
            }
            "invoice.payment_failed" => Self::PaymentFailed(serde_json::from_value(object)?),
            "invoice.paid" => Self::Paid(serde_json::from_value(object)?),
            _ => Self::Unknown,
        })
    }

    fn subject(&self) -> Option<String> {
        match self {
            Self::Checkout(c) => c.customer.clone(),
            Self::SubscriptionUpsert(s) | Self::SubscriptionDeleted(s) => Some(s.id.clone()),
            Self::PaymentFailed(i) | Self::Paid(i) => Some(i.customer.clone()),
            Self::Unknown => None,
        }
    }
}

/// Verifies and applies one delivery of Stripe's (the raw `body` and its `headers`).
pub async fn receive(
    pool: &PgPool,
    config: &WebhookConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Delivery, Refusal> {
    let Some(secret) = config.stripe.as_ref() else {
        return Err(Refusal::NotConfigured("STRIPE_WEBHOOK_SECRET"));
    };
    let rejected = |detail: String| Refusal::Rejected(detail);
    secret
        .verify(headers, body, now_secs())
        .map_err(|err| rejected(format!("signature check failed: {err}")))?;
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|err| rejected(format!("the body is not a Stripe event: {err}")))?;
    let change = Change::parse(&envelope.kind, envelope.data.object)
        .map_err(|err| rejected(format!("{} object is malformed: {err}", envelope.kind)))?;
    let event = Event {
        provider: "stripe",
        id: envelope.id,
        kind: envelope.kind,
        subject: change.subject(),
        created_at: DateTime::from_timestamp(envelope.created, 0),
    };
    let prices = config.prices.clone();
    let ev = event.clone();
    Ok(deliver(pool, event, move |conn| -> Apply<'_> {
        Box::pin(apply(conn, change, ev, prices))
    })
    .await)
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: Uuid,
    slug: String,
    stripe_event_at: Option<DateTime<Utc>>,
}

const TENANT_ROW: &str = "SELECT id, slug::text, stripe_event_at FROM public.tenants";

async fn tenant_by_id(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<TenantRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{TENANT_ROW} WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The Stripe customer the tenant is linked to, if any (its row is locked already).
async fn linked_customer(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT stripe_customer_id FROM public.tenants WHERE id = $1")
        .bind(tenant)
        .fetch_one(conn)
        .await
}

/// The tenant id an object's metadata names (`metadata.tenant_id`): `Ok(None)` when absent,
/// `Err` with a note when present but not a UUID.
fn metadata_tenant_id(
    metadata: &std::collections::HashMap<String, String>,
) -> Result<Option<Uuid>, String> {
    match metadata.get("tenant_id") {
        None => Ok(None),
        Some(raw) => Uuid::parse_str(raw)
            .map(Some)
            .map_err(|_| format!("metadata.tenant_id {raw:?} is not a tenant id")),
    }
}

/// Records, in the event's transaction, that billing was refused for `tenant`, and why.
async fn refuse(
    conn: &mut PgConnection,
    actor: &Actor,
    tenant: &TenantRow,
    resource: &str,
    reason: String,
    metadata: Value,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let mut metadata = metadata;
    if let Value::Object(map) = &mut metadata {
        map.insert("reason".into(), json!(reason));
    }
    audit::record(
        conn,
        actor,
        entry(tenant, "billing.event_refused", resource, metadata),
    )
    .await?;
    tracing::warn!(tenant = %tenant.slug, %reason, "stripe event refused");
    Ok((Outcome::Refused, Some(reason)))
}

async fn tenant_by_customer(
    conn: &mut PgConnection,
    customer: &str,
) -> sqlx::Result<Option<TenantRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{TENANT_ROW} WHERE stripe_customer_id = $1 FOR UPDATE"
    )))
    .bind(customer)
    .fetch_optional(conn)
    .await
}

fn entry(
    tenant: &TenantRow,
    action: &'static str,
    resource: &str,
    metadata: Value,
) -> Entry<'static> {
    Entry {
        tenant_id: Some(tenant.id),
        action,
        resource_type: "subscription",
        resource_id: resource.to_owned(),
        metadata,
    }
}

/// Stripe's subscription status in ours.
fn map_status(stripe: &str) -> SubscriptionStatus {
    match stripe {
        "trialing" => SubscriptionStatus::Trial,
        "active" => SubscriptionStatus::Active,
        "canceled" | "incomplete_expired" => SubscriptionStatus::Cancelled,
        "paused" => SubscriptionStatus::Suspended,
        // past_due, unpaid, incomplete: payment is owed.
        _ => SubscriptionStatus::PastDue,
    }
}

async fn apply(
    conn: &mut PgConnection,
    change: Change,
    event: Event,
    prices: PriceCatalog,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let actor = Actor::Webhook {
        provider: "stripe",
        event_id: event.id.clone(),
    };
    let created = event.created_at.unwrap_or_else(Utc::now);
    match change {
        Change::Checkout(session) => link_customer(conn, &session, &actor).await,
        Change::SubscriptionUpsert(sub) => {
            upsert_subscription(conn, &sub, false, created, &prices, &actor).await
        }
        Change::SubscriptionDeleted(sub) => {
            upsert_subscription(conn, &sub, true, created, &prices, &actor).await
        }
        Change::PaymentFailed(invoice) => {
            payment(conn, &invoice.customer, false, created, &actor).await
        }
        Change::Paid(invoice) => payment(conn, &invoice.customer, true, created, &actor).await,
        Change::Unknown => Ok((Outcome::Ignored, Some("event type not handled".into()))),
    }
}

async fn link_customer(
    conn: &mut PgConnection,
    session: &CheckoutSession,
    actor: &Actor,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let from_reference = match session.client_reference_id.as_deref() {
        None => None,
        Some(raw) => match Uuid::parse_str(raw) {
            Ok(id) => Some(id),
            // A slug (the old form) is not followed: it may now name another tenant.
            Err(_) => {
                return Ok((
                    Outcome::Ignored,
                    Some(format!("client_reference_id {raw:?} is not a tenant id")),
                ));
            }
        },
    };
    let from_metadata = match metadata_tenant_id(&session.metadata) {
        Ok(id) => id,
        Err(note) => return Ok((Outcome::Ignored, Some(note))),
    };
    let tenant_id = match (from_reference, from_metadata) {
        (Some(a), Some(b)) if a != b => {
            return Ok((
                Outcome::Ignored,
                Some("client_reference_id and metadata.tenant_id name different tenants".into()),
            ));
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => {
            return Ok((
                Outcome::Ignored,
                Some("no client_reference_id or metadata.tenant_id".into()),
            ));
        }
    };
    let Some(customer) = &session.customer else {
        return Ok((Outcome::Ignored, Some("the session has no customer".into())));
    };
    let Some(tenant) = tenant_by_id(conn, tenant_id).await? else {
        return Ok((
            Outcome::Ignored,
            Some(format!("no tenant with id {tenant_id}")),
        ));
    };
    let linked = linked_customer(conn, tenant.id).await?;
    match linked.as_deref() {
        Some(current) if current == customer => {
            return Ok((
                Outcome::Ignored,
                Some("the customer is already linked".into()),
            ));
        }
        Some(current) => {
            let reason = format!(
                "the tenant is linked to customer {current}; a checkout does not relink it to {customer}"
            );
            let metadata = json!({ "customer": customer, "linked_customer": current });
            return refuse(conn, actor, &tenant, customer, reason, metadata).await;
        }
        None => {}
    }
    if tenant_by_customer(conn, customer).await?.is_some() {
        // Not naming the holder: this row is in the asking tenant's trail.
        let reason = format!("customer {customer} is linked to another tenant");
        let metadata = json!({ "customer": customer });
        return refuse(conn, actor, &tenant, customer, reason, metadata).await;
    }
    sqlx::query("UPDATE public.tenants SET stripe_customer_id = $2 WHERE id = $1")
        .bind(tenant.id)
        .bind(customer)
        .execute(&mut *conn)
        .await?;
    audit::record(
        conn,
        actor,
        entry(
            &tenant,
            "billing.customer_linked",
            customer,
            json!({ "customer": customer }),
        ),
    )
    .await?;
    Ok((Outcome::Applied, None))
}

/// The tenant a subscription event is for: the customer's link when there is one (and
/// `metadata.tenant_id`, if given, must agree with it); before any link, the tenant
/// `metadata.tenant_id` names, if it is linked to no other customer.
enum Billed {
    Tenant(TenantRow),
    Refused(TenantRow, String),
    Ignored(String),
}

async fn billed_tenant(
    conn: &mut PgConnection,
    customer: &str,
    metadata: &std::collections::HashMap<String, String>,
) -> anyhow::Result<Option<Billed>> {
    let named = match metadata_tenant_id(metadata) {
        Ok(id) => id,
        Err(note) => return Ok(Some(Billed::Ignored(note))),
    };
    if let Some(tenant) = tenant_by_customer(conn, customer).await? {
        return Ok(Some(match named {
            Some(id) if id != tenant.id => Billed::Refused(
                tenant,
                format!(
                    "metadata.tenant_id {id} is not the tenant customer {customer} is linked to"
                ),
            ),
            _ => Billed::Tenant(tenant),
        }));
    }
    let Some(id) = named else {
        return Ok(None);
    };
    let Some(tenant) = tenant_by_id(conn, id).await? else {
        return Ok(Some(Billed::Ignored(format!("no tenant with id {id}"))));
    };
    let linked = linked_customer(conn, tenant.id).await?;
    Ok(Some(match linked {
        Some(other) => Billed::Refused(
            tenant,
            format!("the tenant is linked to customer {other}, not {customer}"),
        ),
        None => Billed::Tenant(tenant),
    }))
}

fn ts(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
}

async fn upsert_subscription(
    conn: &mut PgConnection,
    sub: &Subscription,
    deleted: bool,
    created: DateTime<Utc>,
    prices: &PriceCatalog,
    actor: &Actor,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let tenant = match billed_tenant(conn, &sub.customer, &sub.metadata).await? {
        Some(Billed::Tenant(tenant)) => tenant,
        Some(Billed::Refused(tenant, reason)) => {
            let metadata = json!({ "customer": sub.customer, "subscription": sub.id });
            return refuse(conn, actor, &tenant, &sub.id, reason, metadata).await;
        }
        Some(Billed::Ignored(note)) => return Ok((Outcome::Ignored, Some(note))),
        None => {
            // checkout.session.completed may not have arrived yet: fail so Stripe retries.
            anyhow::bail!(
                "no tenant for customer {} (no checkout linked it yet)",
                sub.customer
            );
        }
    };
    let held: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "SELECT stripe_event_at FROM public.subscriptions WHERE tenant_id = $1 FOR UPDATE",
    )
    .bind(tenant.id)
    .fetch_optional(&mut *conn)
    .await?;
    let plan_stale = held.flatten().is_some_and(|held| created < held);
    let status_stale = tenant.stripe_event_at.is_some_and(|held| created < held);
    if plan_stale && status_stale {
        return Ok((Outcome::Stale, None));
    }
    let item = sub
        .items
        .data
        .first()
        .ok_or_else(|| anyhow::anyhow!("subscription {} has no items", sub.id))?;
    let (tier, cycle) = prices.get(&item.price.id).ok_or_else(|| {
        anyhow::anyhow!("price {} is not in CAPLIQUIFY_STRIPE_PRICES", item.price.id)
    })?;
    let status = if deleted {
        SubscriptionStatus::Cancelled
    } else {
        map_status(&sub.status)
    };
    let period_start = ts(sub.current_period_start.or(item.current_period_start));
    let period_end = ts(sub.current_period_end.or(item.current_period_end));
    if !plan_stale {
        let sub_row = SubscriptionRow {
            tenant_id: tenant.id,
            customer: &sub.customer,
            subscription: &sub.id,
            price: &item.price.id,
            cycle,
            amount_cents: i32::try_from(item.price.unit_amount.unwrap_or(0)).unwrap_or(i32::MAX),
            currency: item
                .price
                .currency
                .clone()
                .unwrap_or_else(|| "usd".into())
                .to_uppercase(),
            status,
            period_start,
            period_end,
            cancel_at_period_end: sub.cancel_at_period_end,
            cancelled_at: if deleted {
                ts(sub.canceled_at).or(Some(created))
            } else {
                ts(sub.canceled_at)
            },
            event_at: created,
        };
        store_subscription(conn, &sub_row).await?;
        // A cancelled subscription keeps access until its period ends (the lifecycle job
        // then marks the tenant cancelled).
        let access_ends = if deleted || sub.cancel_at_period_end {
            period_end
        } else {
            None
        };
        members::apply_plan(conn, tenant.id, tier).await?;
        sqlx::query(
            "UPDATE public.tenants SET stripe_customer_id = coalesce(stripe_customer_id, $2),
                 subscription_starts_at = coalesce(subscription_starts_at, $3), subscription_ends_at = $4
             WHERE id = $1",
        )
        .bind(tenant.id)
        .bind(&sub.customer)
        .bind(period_start)
        .bind(access_ends)
        .execute(&mut *conn)
        .await?;
    }
    if !status_stale {
        // A cancellation whose paid period is still running leaves the status alone.
        let tenant_status = match status {
            SubscriptionStatus::Cancelled if period_end.is_some_and(|end| end > Utc::now()) => None,
            other => Some(other),
        };
        let reason = format!("Stripe subscription {} is {}", sub.id, sub.status);
        set_tenant_billing(conn, &tenant, tenant_status, created, actor, &reason).await?;
    }
    let action = if deleted {
        "subscription.cancelled"
    } else {
        "subscription.updated"
    };
    let metadata = json!({ "tier": tier, "status": status, "stripe_status": sub.status, "price": item.price.id,
                           "plan_stale": plan_stale, "status_stale": status_stale });
    audit::record(conn, actor, entry(&tenant, action, &sub.id, metadata)).await?;
    Ok((Outcome::Applied, None))
}

/// One `public.subscriptions` row as a subscription event describes it.
struct SubscriptionRow<'a> {
    tenant_id: Uuid,
    customer: &'a str,
    subscription: &'a str,
    price: &'a str,
    cycle: crate::billing::prices::BillingCycle,
    amount_cents: i32,
    currency: String,
    status: SubscriptionStatus,
    period_start: Option<DateTime<Utc>>,
    period_end: Option<DateTime<Utc>>,
    cancel_at_period_end: bool,
    cancelled_at: Option<DateTime<Utc>>,
    event_at: DateTime<Utc>,
}

async fn store_subscription(
    conn: &mut PgConnection,
    row: &SubscriptionRow<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO public.subscriptions (tenant_id, stripe_customer_id, stripe_subscription_id, stripe_price_id,
             billing_cycle, amount_cents, currency, status, current_period_start, current_period_end,
             cancel_at_period_end, cancelled_at, stripe_event_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (tenant_id) DO UPDATE SET stripe_customer_id = EXCLUDED.stripe_customer_id,
             stripe_subscription_id = EXCLUDED.stripe_subscription_id, stripe_price_id = EXCLUDED.stripe_price_id,
             billing_cycle = EXCLUDED.billing_cycle, amount_cents = EXCLUDED.amount_cents, currency = EXCLUDED.currency,
             status = EXCLUDED.status, current_period_start = EXCLUDED.current_period_start,
             current_period_end = EXCLUDED.current_period_end, cancel_at_period_end = EXCLUDED.cancel_at_period_end,
             cancelled_at = EXCLUDED.cancelled_at, stripe_event_at = EXCLUDED.stripe_event_at",
    )
    .bind(row.tenant_id)
    .bind(row.customer)
    .bind(row.subscription)
    .bind(row.price)
    .bind(row.cycle)
    .bind(row.amount_cents)
    .bind(&row.currency)
    .bind(row.status)
    .bind(row.period_start)
    .bind(row.period_end)
    .bind(row.cancel_at_period_end)
    .bind(row.cancelled_at)
    .bind(row.event_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets the tenant's status (unless `None`) and the newest-event mark. Whether this begins,
/// ends or leaves a suspension (an operator's stands; billing lifts its own and the
/// lifecycle job's when the customer pays) is [`apply_billing_status`]'s to decide.
async fn set_tenant_billing(
    conn: &mut PgConnection,
    tenant: &TenantRow,
    status: Option<SubscriptionStatus>,
    created: DateTime<Utc>,
    actor: &Actor,
    reason: &str,
) -> sqlx::Result<()> {
    apply_billing_status(conn, tenant.id, status, created, actor, reason).await?;
    Ok(())
}

async fn payment(
    conn: &mut PgConnection,
    customer: &str,
    paid: bool,
    created: DateTime<Utc>,
    actor: &Actor,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let Some(tenant) = tenant_by_customer(conn, customer).await? else {
        anyhow::bail!("no tenant for customer {customer} (no checkout linked it yet)");
    };
    if tenant.stripe_event_at.is_some_and(|held| created < held) {
        return Ok((Outcome::Stale, None));
    }
    let status = if paid {
        SubscriptionStatus::Active
    } else {
        SubscriptionStatus::PastDue
    };
    let reason = if paid {
        "an invoice was paid"
    } else {
        "an invoice payment failed"
    };
    set_tenant_billing(conn, &tenant, Some(status), created, actor, reason).await?;
    sqlx::query("UPDATE public.subscriptions SET status = $2 WHERE tenant_id = $1 AND status <> 'cancelled'")
        .bind(tenant.id)
        .bind(status)
        .execute(&mut *conn)
        .await?;
    let action = if paid {
        "billing.payment_succeeded"
    } else {
        "billing.payment_failed"
    };
    audit::record(
        conn,
        actor,
        entry(&tenant, action, customer, json!({ "slug": tenant.slug })),
    )
    .await?;
    Ok((Outcome::Applied, None))
}
