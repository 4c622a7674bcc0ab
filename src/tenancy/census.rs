//! The fleet in numbers and tenants found by what operators know of them: counts by
//! status and tier, trials about to end, tenants that came and went this month, and the
//! registry searched by slug, name, Clerk organization or Stripe customer with keyset
//! pages. Read-only queries over `public.tenants` (the console's overview and tenant list).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::TenancyError;
use super::registry::{TENANT_COLUMNS, Tenant};

/// How many tenants there are in each state and on each tier.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Census {
    /// Not soft-deleted tenants by `subscription_status` (trial, active, past_due,
    /// cancelled, suspended), in that order, then `deleted` for soft-deleted ones.
    pub by_status: Vec<(String, i64)>,
    /// Not soft-deleted tenants by tier (starter, professional, enterprise).
    pub by_tier: Vec<(String, i64)>,
    /// Tenants created since the start of this month (UTC).
    pub new_this_month: i64,
    /// Tenants that left this month: soft-deleted, or whose subscription was cancelled,
    /// since the start of this month (UTC), each counted once.
    pub churned_this_month: i64,
}

/// Counts the registry in one pass.
pub async fn census(pool: &PgPool) -> Result<Census, TenancyError> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT CASE WHEN deleted_at IS NOT NULL THEN 'deleted' ELSE subscription_status::text END,
                subscription_tier::text, count(*)
           FROM public.tenants GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    let statuses = [
        "trial",
        "active",
        "past_due",
        "cancelled",
        "suspended",
        "deleted",
    ];
    let tiers = ["starter", "professional", "enterprise"];
    let by_status = statuses
        .iter()
        .map(|s| {
            let n = rows.iter().filter(|r| r.0 == *s).map(|r| r.2).sum();
            ((*s).to_owned(), n)
        })
        .collect();
    let by_tier = tiers
        .iter()
        .map(|t| {
            let n = rows
                .iter()
                .filter(|r| r.1 == *t && r.0 != "deleted")
                .map(|r| r.2)
                .sum();
            ((*t).to_owned(), n)
        })
        .collect();
    let (new_this_month, churned_this_month): (i64, i64) = sqlx::query_as(
        "WITH month AS (SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS start)
         SELECT (SELECT count(*) FROM public.tenants, month WHERE created_at >= month.start),
                (SELECT count(*) FROM public.tenants t, month
                  WHERE t.deleted_at >= month.start
                     OR EXISTS (SELECT 1 FROM public.subscriptions s
                                 WHERE s.tenant_id = t.id AND s.cancelled_at >= month.start))",
    )
    .fetch_one(pool)
    .await?;
    Ok(Census {
        by_status,
        by_tier,
        new_this_month,
        churned_this_month,
    })
}

/// Live tenants on trial whose trial ends within `days` days, soonest first.
pub async fn trials_ending(pool: &PgPool, days: i32) -> Result<Vec<Tenant>, TenancyError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {TENANT_COLUMNS} FROM public.tenants
          WHERE deleted_at IS NULL AND subscription_status = 'trial'
            AND trial_ends_at < now() + make_interval(days => $1)
          ORDER BY trial_ends_at, slug LIMIT 100"
    ));
    Ok(sqlx::query_as::<_, Tenant>(sql)
        .bind(days)
        .fetch_all(pool)
        .await?)
}

/// What to look for in the registry.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Part of the slug or the name (any case), or a whole Clerk organization id or Stripe
    /// customer id.
    pub text: Option<String>,
    /// `trial`, `active`, `past_due`, `cancelled`, `suspended` (not deleted), or `deleted`.
    pub status: Option<String>,
    pub tier: Option<crate::billing::Tier>,
    pub cluster: Option<String>,
    /// Leave soft-deleted tenants out (when no status is asked for).
    pub live_only: bool,
    pub order: Order,
    /// Keyset position: the last tenant of the previous page.
    pub after: Option<After>,
    pub limit: i64,
}

/// The order of [`search`]'s results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// By slug (the registry's unique index).
    #[default]
    Slug,
    /// Newest first (then by slug).
    Newest,
}

/// Where the previous page ended, in the page's order.
#[derive(Debug, Clone)]
pub enum After {
    Slug(String),
    Newest(DateTime<Utc>, String),
}

impl After {
    /// The position after `tenant` in `order`.
    pub fn of(tenant: &Tenant, order: Order) -> Self {
        match order {
            Order::Slug => Self::Slug(tenant.slug.clone()),
            Order::Newest => Self::Newest(tenant.created_at, tenant.slug.clone()),
        }
    }

    /// The position as a URL parameter: the slug, or `<RFC 3339 time>~<slug>`.
    pub fn encode(&self) -> String {
        match self {
            Self::Slug(slug) => slug.clone(),
            Self::Newest(at, slug) => format!(
                "{}~{slug}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
        }
    }

    /// A newest-first position as the operators' commands take it (`--after`): clap's
    /// value parser, so a wrong one is refused naming the flag.
    pub fn parse_newest(raw: &str) -> Result<Self, String> {
        Self::decode(raw, Order::Newest)
            .ok_or_else(|| "not a position a previous page printed (TIME~SLUG)".to_owned())
    }

    /// Reads [`After::encode`]'s form back for `order`; `None` when it is not one.
    pub fn decode(raw: &str, order: Order) -> Option<Self> {
        match order {
            Order::Slug => Some(Self::Slug(raw.to_owned())),
            Order::Newest => {
                let (at, slug) = raw.split_once('~')?;
                let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
                Some(Self::Newest(at, slug.to_owned()))
            }
        }
    }
}

/// The statuses [`Search::status`] accepts.
pub const SEARCH_STATUSES: [&str; 6] = [
    "trial",
    "active",
    "past_due",
    "cancelled",
    "suspended",
    "deleted",
];

/// Tenants matching `search` in its order; one more than `limit` tells the caller there is
/// a next page. Keyset pages (by slug on its unique index, or by creation time), so a page
/// costs no more at any depth than the filter does.
pub async fn search(pool: &PgPool, search: &Search) -> Result<Vec<Tenant>, TenancyError> {
    let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
        "SELECT {TENANT_COLUMNS} FROM public.tenants t WHERE true"
    ));
    if let Some(text) = search
        .text
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let pattern = format!(
            "%{}%",
            text.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        qb.push(" AND (t.slug ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR t.name ILIKE ")
            .push_bind(pattern)
            .push(" OR t.clerk_organization_id = ")
            .push_bind(text.to_owned())
            .push(" OR t.stripe_customer_id = ")
            .push_bind(text.to_owned())
            .push(" OR EXISTS (SELECT 1 FROM public.subscriptions s WHERE s.tenant_id = t.id AND s.stripe_customer_id = ")
            .push_bind(text.to_owned())
            .push("))");
    }
    match search.status.as_deref() {
        None if search.live_only => {
            qb.push(" AND t.deleted_at IS NULL");
        }
        None => {}
        Some("deleted") => {
            qb.push(" AND t.deleted_at IS NOT NULL");
        }
        Some(status) => {
            qb.push(" AND t.deleted_at IS NULL AND t.subscription_status::text = ")
                .push_bind(status.to_owned());
        }
    }
    if let Some(tier) = search.tier {
        qb.push(" AND t.subscription_tier = ").push_bind(tier);
    }
    if let Some(cluster) = &search.cluster {
        qb.push(" AND t.cluster = ").push_bind(cluster.clone());
    }
    match &search.after {
        None => {}
        Some(After::Slug(slug)) => {
            qb.push(" AND t.slug > ").push_bind(slug.clone());
        }
        Some(After::Newest(at, slug)) => {
            qb.push(" AND (t.created_at, t.slug) < (")
                .push_bind(*at)
                .push(", ")
                .push_bind(slug.clone())
                .push(")");
        }
    }
    qb.push(match search.order {
        Order::Slug => " ORDER BY t.slug LIMIT ",
        Order::Newest => " ORDER BY t.created_at DESC, t.slug DESC LIMIT ",
    })
    .push_bind(search.limit + 1);
    Ok(qb.build_query_as::<Tenant>().fetch_all(pool).await?)
}

/// A tenant's member as operators see them.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Member {
    pub clerk_user_id: String,
    pub email: String,
    pub full_name: Option<String>,
    pub role: String,
    pub last_login_at: Option<DateTime<Utc>>,
}

/// The tenant's members, owners first.
pub async fn members(pool: &PgPool, tenant: uuid::Uuid) -> Result<Vec<Member>, TenancyError> {
    Ok(sqlx::query_as(
        "SELECT clerk_user_id::text, email::text, full_name::text, role::text, last_login_at
           FROM public.users WHERE tenant_id = $1 AND removed_at IS NULL
          ORDER BY role, email LIMIT 1000",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

/// A tenant's subscription as Stripe last reported it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Subscription {
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub billing_cycle: String,
    pub amount_cents: i32,
    pub currency: String,
    pub status: String,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// The tenant's subscription, if it has one.
pub async fn subscription(
    pool: &PgPool,
    tenant: uuid::Uuid,
) -> Result<Option<Subscription>, TenancyError> {
    Ok(sqlx::query_as(
        "SELECT stripe_customer_id::text, stripe_subscription_id::text, billing_cycle::text,
                amount_cents, currency::text, status::text, current_period_end,
                cancel_at_period_end, cancelled_at
           FROM public.subscriptions WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(pool)
    .await?)
}

/// Tenants at the end of each of the last `months` months (the current month up to now),
/// oldest first, as `(first day of the month, tenants)`: registered by then and not
/// soft-deleted by then. Purged tenants are gone from the registry, so months before a
/// purge count them no more.
pub async fn tenants_by_month(
    pool: &PgPool,
    months: i32,
) -> Result<Vec<(chrono::NaiveDate, i64)>, TenancyError> {
    Ok(sqlx::query_as(
        "WITH months AS (
             SELECT m::date AS month,
                    least(m + interval '1 month', now()) AS month_end
               FROM generate_series(date_trunc('month', now()) - make_interval(months => $1 - 1),
                                    date_trunc('month', now()), interval '1 month') AS m
         )
         SELECT months.month,
                (SELECT count(*) FROM public.tenants t
                  WHERE t.created_at < months.month_end
                    AND (t.deleted_at IS NULL OR t.deleted_at >= months.month_end))
           FROM months ORDER BY months.month",
    )
    .bind(months)
    .fetch_all(pool)
    .await?)
}
