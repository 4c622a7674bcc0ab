//! `POST /webhooks/clerk`: organizations become tenants, memberships become users.
//!
//! Events (Svix-signed, `CLERK_WEBHOOK_SIGNING_SECRET`):
//! - `organization.created` / `organization.updated` → the tenant is provisioned (starter,
//!   14-day trial; slug from the organization's slug, else its name, made unique) or renamed;
//!   either event creates the tenant if it does not exist yet, so order does not matter;
//! - `organization.deleted` → soft delete (and a later, older create/update is stale);
//! - `organizationMembership.created|updated` → the user row (`org:admin` → admin,
//!   `org:member` → member, `org:viewer` → viewer, the organization's creator → owner);
//!   `…deleted` → the membership is removed (kept as a tombstone against late events);
//! - `user.updated` → email and full name; `user.deleted` → all the user's memberships removed.
//!
//! Ordering uses Clerk's `updated_at` on organizations and memberships: an event older than
//! the state held is `stale`. Membership events for an organization we do not know yet fail
//! (500), so Clerk retries them after the organization event arrives.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Apply, Delivery, Event, Outcome, Refusal, WebhookConfig, deliver, now_secs};
use crate::access::Role;
use crate::audit::{self, Actor, Entry};
use crate::billing::Tier;
use crate::tenancy::lifecycle::provision_in;
use crate::tenancy::members;
use crate::tenancy::{NewTenant, Tenancy, TenantSlug};

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    data: Value,
    /// Milliseconds since the epoch (newer Clerk payloads).
    timestamp: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
struct Organization {
    id: String,
    name: String,
    slug: Option<String>,
    created_by: Option<String>,
    updated_at: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
struct Deleted {
    id: String,
}

#[derive(Debug, Clone, Deserialize)]
struct OrgRef {
    id: String,
}

#[derive(Debug, Clone, Deserialize)]
struct PublicUserData {
    user_id: String,
    identifier: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Membership {
    id: String,
    role: String,
    organization: OrgRef,
    public_user_data: PublicUserData,
    updated_at: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
struct EmailAddress {
    id: String,
    email_address: String,
}

#[derive(Debug, Clone, Deserialize)]
struct User {
    id: String,
    #[serde(default)]
    email_addresses: Vec<EmailAddress>,
    primary_email_address_id: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

#[derive(Debug, Clone)]
enum Change {
    OrgUpsert(Organization),
    OrgDeleted(Deleted),
    MembershipUpsert(Membership),
    MembershipDeleted(Membership),
    UserUpdated(User),
    UserDeleted(Deleted),
    Unknown,
}

impl Change {
    fn parse(kind: &str, data: Value) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            "organization.created" | "organization.updated" => {
                Self::OrgUpsert(serde_json::from_value(data)?)
            }
            "organization.deleted" => Self::OrgDeleted(serde_json::from_value(data)?),
            "organizationMembership.created" | "organizationMembership.updated" => {
                Self::MembershipUpsert(serde_json::from_value(data)?)
            }
            "organizationMembership.deleted" => {
                Self::MembershipDeleted(serde_json::from_value(data)?)
            }
            "user.updated" => Self::UserUpdated(serde_json::from_value(data)?),
            "user.deleted" => Self::UserDeleted(serde_json::from_value(data)?),
            _ => Self::Unknown,
        })
    }

    fn subject(&self) -> Option<String> {
        match self {
            Self::OrgUpsert(o) => Some(o.id.clone()),
            Self::OrgDeleted(d) | Self::UserDeleted(d) => Some(d.id.clone()),
            Self::MembershipUpsert(m) | Self::MembershipDeleted(m) => {
                Some(m.public_user_data.user_id.clone())
            }
            Self::UserUpdated(u) => Some(u.id.clone()),
            Self::Unknown => None,
        }
    }
}

/// An organization name as a tenant name: trimmed, without control characters, at most 255
/// characters; `None` when nothing is left.
fn clean_name(raw: &str) -> Option<String> {
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(255)
        .collect();
    (!name.is_empty()).then_some(name)
}

fn millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// Verifies and applies one delivery of Clerk's (the raw `body` and its `headers`).
pub async fn receive(
    pool: &PgPool,
    config: &WebhookConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Delivery, Refusal> {
    let Some(secret) = config.clerk.as_ref() else {
        return Err(Refusal::NotConfigured("CLERK_WEBHOOK_SIGNING_SECRET"));
    };
    let rejected = |detail: String| Refusal::Rejected(detail);
    let id = secret
        .verify(headers, body, now_secs())
        .map_err(|err| rejected(format!("signature check failed: {err}")))?
        .to_owned();
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|err| rejected(format!("the body is not a Clerk event: {err}")))?;
    let change = Change::parse(&envelope.kind, envelope.data)
        .map_err(|err| rejected(format!("{} data is malformed: {err}", envelope.kind)))?;
    // The signed timestamp is the fallback for events without their own time.
    let signed_at = headers
        .get("svix-timestamp")
        .or_else(|| headers.get("webhook-timestamp"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .and_then(|s| DateTime::from_timestamp(s, 0));
    let event = Event {
        provider: "clerk",
        id,
        kind: envelope.kind,
        subject: change.subject(),
        created_at: envelope.timestamp.and_then(millis).or(signed_at),
    };
    let tenancy = Tenancy::new(pool.clone(), config.deletion_grace_days);
    let ev = event.clone();
    Ok(deliver(pool, event, move |conn| -> Apply<'_> {
        Box::pin(apply(conn, change, ev, tenancy))
    })
    .await)
}

async fn apply(
    conn: &mut PgConnection,
    change: Change,
    event: Event,
    tenancy: Tenancy,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let actor = Actor::Webhook {
        provider: "clerk",
        event_id: event.id.clone(),
    };
    let at = event.created_at;
    match change {
        Change::OrgUpsert(org) => upsert_organization(conn, &org, &actor).await,
        Change::OrgDeleted(d) => delete_organization(conn, &d.id, at, &actor, &tenancy).await,
        Change::MembershipUpsert(m) => upsert_membership(conn, &m, &actor).await,
        Change::MembershipDeleted(m) => remove_membership(conn, &m, at, &actor).await,
        Change::UserUpdated(u) => update_user(conn, &u, &actor).await,
        Change::UserDeleted(d) => delete_user(conn, &d.id, &actor).await,
        Change::Unknown => Ok((Outcome::Ignored, Some("event type not handled".into()))),
    }
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: Uuid,
    slug: String,
    name: String,
    deleted_at: Option<DateTime<Utc>>,
    clerk_updated_at: Option<DateTime<Utc>>,
    clerk_created_by: Option<String>,
}

async fn tenant_of(conn: &mut PgConnection, org_id: &str) -> sqlx::Result<Option<TenantRow>> {
    sqlx::query_as(
        "SELECT id, slug::text, name::text, deleted_at, clerk_updated_at, clerk_created_by::text
           FROM public.tenants WHERE clerk_organization_id = $1 FOR UPDATE",
    )
    .bind(org_id)
    .fetch_optional(conn)
    .await
}

fn audit_entry(
    tenant_id: Uuid,
    action: &'static str,
    resource_type: &'static str,
    resource_id: &str,
    metadata: Value,
) -> Entry<'static> {
    Entry {
        tenant_id: Some(tenant_id),
        action,
        resource_type,
        resource_id: resource_id.to_owned(),
        metadata,
    }
}

/// A free slug for a new organization: its own slug if usable, else one from its name,
/// with `-2`, `-3`… appended when taken.
async fn free_slug(conn: &mut PgConnection, org: &Organization) -> anyhow::Result<TenantSlug> {
    let base = org
        .slug
        .as_deref()
        .and_then(|s| TenantSlug::parse(&s.to_lowercase()).ok())
        .or_else(|| TenantSlug::from_name(&org.name))
        .or_else(|| TenantSlug::from_name(&format!("org-{}", org.id)))
        .ok_or_else(|| anyhow::anyhow!("no usable slug for organization {}", org.id))?;
    for n in 1..1000 {
        let candidate = if n == 1 {
            base.clone()
        } else {
            let suffix = format!("-{n}");
            let head: String = base.as_str().chars().take(50 - suffix.len()).collect();
            match TenantSlug::parse(&format!("{}{suffix}", head.trim_end_matches('-'))) {
                Ok(s) => s,
                Err(_) => continue,
            }
        };
        let taken: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM public.tenants WHERE slug = $1)")
                .bind(candidate.as_str())
                .fetch_one(&mut *conn)
                .await?;
        if !taken {
            return Ok(candidate);
        }
    }
    anyhow::bail!("no free slug for organization {}", org.id)
}

async fn was_deleted(conn: &mut PgConnection, org_id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM public.webhook_events WHERE provider = 'clerk'
             AND subject = $1 AND event_type = 'organization.deleted' AND outcome = 'applied')",
    )
    .bind(org_id)
    .fetch_one(conn)
    .await
}

async fn upsert_organization(
    conn: &mut PgConnection,
    org: &Organization,
    actor: &Actor,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let updated_at = org.updated_at.and_then(millis);
    let Some(tenant) = tenant_of(conn, &org.id).await? else {
        if was_deleted(conn, &org.id).await? {
            return Ok((Outcome::Stale, Some("the organization was deleted".into())));
        }
        let slug = free_slug(conn, org).await?;
        // Clerk requires a name, but a blank one must not make the event fail forever.
        let name = clean_name(&org.name).unwrap_or_else(|| slug.to_string());
        let new = NewTenant::parse(slug.as_str(), &name, Tier::Starter, &org.id)?;
        let tenant = provision_in(conn, &new, actor).await?;
        sqlx::query(
            "UPDATE public.tenants SET clerk_updated_at = $2, clerk_created_by = $3 WHERE id = $1",
        )
        .bind(tenant.id)
        .bind(updated_at)
        .bind(&org.created_by)
        .execute(&mut *conn)
        .await?;
        // A creator whose membership arrived first becomes owner now.
        if let Some(creator) = &org.created_by {
            members::make_owner(conn, tenant.id, creator).await?;
        }
        return Ok((Outcome::Applied, None));
    };
    if tenant.deleted_at.is_some() {
        return Ok((Outcome::Stale, Some("the tenant is deleted".into())));
    }
    if let (Some(held), Some(new)) = (tenant.clerk_updated_at, updated_at)
        && new <= held
    {
        return Ok((Outcome::Stale, None));
    }
    let mut note = None;
    let mut slug = tenant.slug.clone();
    if let Some(wanted) = org
        .slug
        .as_deref()
        .map(str::to_lowercase)
        .filter(|s| *s != tenant.slug)
    {
        match TenantSlug::parse(&wanted) {
            Ok(parsed) => {
                let taken: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM public.tenants WHERE slug = $1)",
                )
                .bind(parsed.as_str())
                .fetch_one(&mut *conn)
                .await?;
                if taken {
                    note = Some(format!("slug {wanted:?} is taken; kept {:?}", tenant.slug));
                } else {
                    slug = parsed.as_str().to_owned();
                }
            }
            Err(err) => note = Some(format!("slug kept: {err}")),
        }
    }
    let name = clean_name(&org.name).unwrap_or_else(|| tenant.name.clone());
    sqlx::query("UPDATE public.tenants SET name = $2, slug = $3, clerk_updated_at = coalesce($4, clerk_updated_at), clerk_created_by = coalesce(clerk_created_by, $5) WHERE id = $1")
        .bind(tenant.id)
        .bind(&name)
        .bind(&slug)
        .bind(updated_at)
        .bind(&org.created_by)
        .execute(&mut *conn)
        .await?;
    audit::record(
        conn,
        actor,
        audit_entry(
            tenant.id,
            "tenant.updated",
            "tenant",
            &tenant.id.to_string(),
            json!({ "name": name, "slug": slug, "from_slug": tenant.slug, "note": note }),
        ),
    )
    .await?;
    Ok((Outcome::Applied, note))
}

async fn delete_organization(
    conn: &mut PgConnection,
    org_id: &str,
    at: Option<DateTime<Utc>>,
    actor: &Actor,
    tenancy: &Tenancy,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let Some(tenant) = tenant_of(conn, org_id).await? else {
        // Recorded as applied: a late organization.created for it is then stale.
        return Ok((
            Outcome::Applied,
            Some("no tenant for this organization (yet)".into()),
        ));
    };
    if tenant.deleted_at.is_some() {
        return Ok((Outcome::Stale, Some("already deleted".into())));
    }
    tenancy.soft_delete_in(conn, &tenant.slug, actor).await?;
    sqlx::query(
        "UPDATE public.tenants SET clerk_updated_at = greatest(clerk_updated_at, $2) WHERE id = $1",
    )
    .bind(tenant.id)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok((Outcome::Applied, None))
}

fn role_for(membership: &Membership, tenant: &TenantRow) -> Role {
    if tenant.clerk_created_by.as_deref() == Some(membership.public_user_data.user_id.as_str()) {
        return Role::Owner;
    }
    match membership.role.as_str() {
        "org:admin" | "admin" => Role::Admin,
        "org:viewer" | "viewer" => Role::Viewer,
        _ => Role::Member,
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    tenant_id: Uuid,
    clerk_updated_at: Option<DateTime<Utc>>,
    removed_at: Option<DateTime<Utc>>,
}

async fn user_row(conn: &mut PgConnection, clerk_user_id: &str) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as("SELECT id, tenant_id, clerk_updated_at, removed_at FROM public.users WHERE clerk_user_id = $1 FOR UPDATE")
        .bind(clerk_user_id)
        .fetch_optional(conn)
        .await
}

fn full_name(first: &Option<String>, last: &Option<String>) -> Option<String> {
    let name = [first.as_deref(), last.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let name: String = name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(255)
        .collect();
    (!name.is_empty()).then_some(name)
}

async fn upsert_membership(
    conn: &mut PgConnection,
    m: &Membership,
    actor: &Actor,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let Some(tenant) = tenant_of(conn, &m.organization.id).await? else {
        // The organization's own event has not arrived yet: fail so Clerk retries.
        anyhow::bail!("organization {} has no tenant yet", m.organization.id);
    };
    let at = m.updated_at.and_then(millis);
    let user_id = &m.public_user_data.user_id;
    let existing = user_row(conn, user_id).await?;
    if let Some(u) = &existing {
        if u.tenant_id != tenant.id {
            return Ok((
                Outcome::Ignored,
                Some(format!("user {user_id} already belongs to another tenant")),
            ));
        }
        let newest = u.clerk_updated_at.max(u.removed_at);
        if let (Some(held), Some(new)) = (newest, at)
            && new <= held
        {
            return Ok((Outcome::Stale, None));
        }
    }
    let role = role_for(m, &tenant);
    let email: String = m
        .public_user_data
        .identifier
        .clone()
        .unwrap_or_default()
        .chars()
        .take(255)
        .collect();
    let name = full_name(
        &m.public_user_data.first_name,
        &m.public_user_data.last_name,
    );
    let profile = members::Profile {
        clerk_user_id: user_id,
        email: &email,
        full_name: name.as_deref(),
    };
    members::upsert(conn, tenant.id, &profile, role, at, Some(&m.id)).await?;
    let action = if existing.is_some() {
        "user.updated"
    } else {
        "user.added"
    };
    audit::record(
        conn,
        actor,
        audit_entry(
            tenant.id,
            action,
            "user",
            user_id,
            json!({ "role": role, "membership": m.id }),
        ),
    )
    .await?;
    Ok((Outcome::Applied, None))
}

async fn remove_membership(
    conn: &mut PgConnection,
    m: &Membership,
    at: Option<DateTime<Utc>>,
    actor: &Actor,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let Some(tenant) = tenant_of(conn, &m.organization.id).await? else {
        anyhow::bail!("organization {} has no tenant yet", m.organization.id);
    };
    let at = m
        .updated_at
        .and_then(millis)
        .or(at)
        .unwrap_or_else(Utc::now);
    let user_id = &m.public_user_data.user_id;
    match user_row(conn, user_id).await? {
        Some(u) if u.tenant_id != tenant.id => {
            return Ok((
                Outcome::Ignored,
                Some(format!("user {user_id} belongs to another tenant")),
            ));
        }
        Some(u)
            if u.clerk_updated_at
                .max(u.removed_at)
                .is_some_and(|held| at <= held) =>
        {
            return Ok((Outcome::Stale, None));
        }
        Some(u) => members::remove(conn, tenant.id, u.id, at).await?,
        None => members::tombstone(conn, tenant.id, user_id, at, &m.id).await?,
    }
    audit::record(
        conn,
        actor,
        audit_entry(
            tenant.id,
            "user.removed",
            "user",
            user_id,
            json!({ "membership": m.id }),
        ),
    )
    .await?;
    Ok((Outcome::Applied, None))
}

async fn update_user(
    conn: &mut PgConnection,
    u: &User,
    actor: &Actor,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let Some(row) = user_row(conn, &u.id).await? else {
        return Ok((Outcome::Ignored, Some("user has no membership".into())));
    };
    let email = u
        .email_addresses
        .iter()
        .find(|e| Some(&e.id) == u.primary_email_address_id.as_ref())
        .or(u.email_addresses.first())
        .map(|e| e.email_address.chars().take(255).collect::<String>());
    members::update_profile(
        conn,
        row.id,
        email.as_deref(),
        full_name(&u.first_name, &u.last_name).as_deref(),
    )
    .await?;
    audit::record(
        conn,
        actor,
        audit_entry(
            row.tenant_id,
            "user.profile_updated",
            "user",
            &u.id,
            json!({}),
        ),
    )
    .await?;
    Ok((Outcome::Applied, None))
}

async fn delete_user(
    conn: &mut PgConnection,
    clerk_user_id: &str,
    actor: &Actor,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let Some(row) = user_row(conn, clerk_user_id).await? else {
        return Ok((Outcome::Ignored, Some("user has no membership".into())));
    };
    if row.removed_at.is_some() {
        return Ok((Outcome::Stale, Some("already removed".into())));
    }
    members::remove(conn, row.tenant_id, row.id, Utc::now()).await?;
    audit::record(
        conn,
        actor,
        audit_entry(
            row.tenant_id,
            "user.removed",
            "user",
            clerk_user_id,
            json!({ "reason": "user.deleted" }),
        ),
    )
    .await?;
    Ok((Outcome::Applied, None))
}
