//! A tenant's members (`public.users`): every write to them goes through here, so the rules
//! of a membership — one row per Clerk user, a removal kept as a tombstone against late
//! events, members beyond the plan's `max_users` marked and refused — live in one place.
//! Callers (the Clerk webhook, the demo, restore) give their own transaction: a member
//! change is always part of a larger act with its audit row.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::billing::Tier;

use crate::access::Role;

/// Who a member is, as Clerk describes them.
#[derive(Debug, Clone)]
pub struct Profile<'a> {
    pub clerk_user_id: &'a str,
    pub email: &'a str,
    pub full_name: Option<&'a str>,
}

/// Adds `profile` to `tenant` with `role`, or brings the user's row back into the tenant
/// (a removed membership revived, a role or profile changed). `updated_at` is Clerk's
/// watermark of the membership; `membership` its id.
pub async fn upsert(
    conn: &mut PgConnection,
    tenant: Uuid,
    profile: &Profile<'_>,
    role: Role,
    updated_at: Option<DateTime<Utc>>,
    membership: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO public.users (clerk_user_id, email, full_name, tenant_id, role, clerk_updated_at, clerk_membership_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (clerk_user_id) DO UPDATE SET email = EXCLUDED.email, full_name = coalesce(EXCLUDED.full_name, public.users.full_name),
             role = EXCLUDED.role, clerk_updated_at = EXCLUDED.clerk_updated_at, clerk_membership_id = EXCLUDED.clerk_membership_id,
             removed_at = NULL",
    )
    .bind(profile.clerk_user_id)
    .bind(profile.email)
    .bind(profile.full_name)
    .bind(tenant)
    .bind(role)
    .bind(updated_at)
    .bind(membership)
    .execute(&mut *conn)
    .await?;
    refresh_limits(conn, tenant).await
}

/// Adds an account to `tenant` with `role` without touching Clerk's watermark or
/// membership id (a migration, not a Clerk event: the webhook's later events still apply).
/// The caller runs [`refresh_limits`] once it has added everyone.
pub async fn add(
    conn: &mut PgConnection,
    tenant: Uuid,
    profile: &Profile<'_>,
    role: Role,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO public.users (clerk_user_id, email, full_name, tenant_id, role)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (clerk_user_id) DO UPDATE SET role = EXCLUDED.role
          WHERE public.users.tenant_id = EXCLUDED.tenant_id",
    )
    .bind(profile.clerk_user_id)
    .bind(profile.email)
    .bind(profile.full_name)
    .bind(tenant)
    .bind(role)
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives the member whose row is `user` the role `role`. The caller runs
/// [`refresh_limits`] (an owner is counted first).
pub async fn set_role(conn: &mut PgConnection, user: Uuid, role: Role) -> sqlx::Result<()> {
    sqlx::query("UPDATE public.users SET role = $2 WHERE id = $1")
        .bind(user)
        .bind(role)
        .execute(conn)
        .await?;
    Ok(())
}

/// Makes `clerk_user_id` the owner of `tenant` (the organization's creator, whose
/// membership may have arrived before the organization).
pub async fn make_owner(
    conn: &mut PgConnection,
    tenant: Uuid,
    clerk_user_id: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE public.users SET role = 'owner' WHERE tenant_id = $1 AND clerk_user_id = $2",
    )
    .bind(tenant)
    .bind(clerk_user_id)
    .execute(&mut *conn)
    .await?;
    refresh_limits(conn, tenant).await
}

/// Removes the member whose row is `user` from `tenant`, as of `at`; the row stays as a
/// tombstone (so the membership's late events are stale).
pub async fn remove(
    conn: &mut PgConnection,
    tenant: Uuid,
    user: Uuid,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE public.users SET removed_at = $2, over_plan_limit = false WHERE id = $1")
        .bind(user)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    refresh_limits(conn, tenant).await
}

/// Records a removal that arrived before the membership itself: a tombstone, so that the
/// membership's late `created` event is stale.
pub async fn tombstone(
    conn: &mut PgConnection,
    tenant: Uuid,
    clerk_user_id: &str,
    at: DateTime<Utc>,
    membership: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO public.users (clerk_user_id, email, tenant_id, role, removed_at, clerk_membership_id)
         VALUES ($1, '', $2, 'member', $3, $4)",
    )
    .bind(clerk_user_id)
    .bind(tenant)
    .bind(at)
    .bind(membership)
    .execute(&mut *conn)
    .await?;
    refresh_limits(conn, tenant).await
}

/// A member's new email and name (each kept when Clerk sends none).
pub async fn update_profile(
    conn: &mut PgConnection,
    user: Uuid,
    email: Option<&str>,
    full_name: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE public.users SET email = coalesce($2, email), full_name = coalesce($3, full_name) WHERE id = $1",
    )
    .bind(user)
    .bind(email)
    .bind(full_name)
    .execute(conn)
    .await?;
    Ok(())
}

/// Puts tenant `id` on `tier`: the tier, its plan's limits and features ([`Tier::plan`]),
/// and the members beyond the new `max_users` ([`refresh_limits`]). In the caller's
/// transaction: a Stripe subscription event and an operator's `tenant set-tier` share it.
pub async fn apply_plan(conn: &mut PgConnection, id: Uuid, tier: Tier) -> sqlx::Result<()> {
    let plan = tier.plan();
    let features = serde_json::to_value(&plan.features).unwrap_or_else(|_| serde_json::json!({}));
    sqlx::query(
        "UPDATE public.tenants SET subscription_tier = $2, max_users = $3, max_entities = $4,
                features = $5
          WHERE id = $1",
    )
    .bind(id)
    .bind(tier)
    .bind(plan.max_users)
    .bind(plan.max_entities)
    .bind(features)
    .execute(&mut *conn)
    .await?;
    refresh_limits(conn, id).await
}

/// Recomputes which members are beyond the plan's `max_users`: the owner first, then by
/// joining order; the later ones are marked and refused until the plan grows. Every write
/// above ends with it; a plan change (Stripe) calls it too.
pub async fn refresh_limits(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE public.users u SET over_plan_limit = ranked.over
           FROM (SELECT x.id, t.max_users IS NOT NULL
                          AND row_number() OVER (ORDER BY (x.role = 'owner') DESC, x.created_at, x.id) > t.max_users AS over
                   FROM public.users x JOIN public.tenants t ON t.id = x.tenant_id
                  WHERE x.tenant_id = $1 AND x.removed_at IS NULL) ranked
          WHERE u.id = ranked.id AND u.over_plan_limit IS DISTINCT FROM ranked.over",
    )
    .bind(tenant)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE public.users SET over_plan_limit = false WHERE tenant_id = $1 AND removed_at IS NOT NULL AND over_plan_limit")
        .bind(tenant)
        .execute(conn)
        .await?;
    Ok(())
}

/// Puts back the member rows of a backup archive (`public.users` rows as JSON), as they
/// were; returns how many.
pub async fn restore_rows(conn: &mut PgConnection, rows: serde_json::Value) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "INSERT INTO public.users SELECT * FROM jsonb_populate_recordset(NULL::public.users, $1)",
    )
    .bind(rows)
    .execute(conn)
    .await?
    .rows_affected())
}
