//! The audit trail: one `public.audit_logs` row per sensitive act, written in the same
//! transaction as the act so neither exists without the other.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db::{Clusters, TenantScope};

/// Who did it.
#[derive(Debug, Clone)]
pub enum Actor {
    /// An operator at the command line; `who` is the OS user when known.
    Operator { who: Option<String> },
    /// A provider's webhook; the event id ties the change to the delivery.
    Webhook {
        provider: &'static str,
        event_id: String,
    },
    /// An operator signed in to the console (`/console`); `operator` names how
    /// (`admin-token`), and the request's address and browser are kept with the row.
    Console {
        operator: String,
        ip: Option<std::net::IpAddr>,
        user_agent: Option<String>,
    },
    /// A scheduled job of the service (`lifecycle`).
    System { job: &'static str },
    /// A member of a tenant, through the API.
    Member {
        user_id: Uuid,
        clerk_user_id: String,
        ip: Option<std::net::IpAddr>,
        user_agent: Option<String>,
    },
}

impl Actor {
    pub fn operator() -> Self {
        Self::Operator {
            who: std::env::var("USER").ok().filter(|u| !u.is_empty()),
        }
    }

    fn describe(&self) -> Value {
        match self {
            Self::Operator { who } => serde_json::json!({ "kind": "operator", "who": who }),
            Self::Console { operator, .. } => {
                serde_json::json!({ "kind": "operator", "who": operator, "via": "console" })
            }
            Self::Webhook { provider, event_id } => {
                serde_json::json!({ "kind": "webhook", "provider": provider, "event_id": event_id })
            }
            Self::System { job } => serde_json::json!({ "kind": "system", "job": job }),
            Self::Member { clerk_user_id, .. } => {
                serde_json::json!({ "kind": "member", "clerk_user_id": clerk_user_id })
            }
        }
    }
}

/// One audit entry. `tenant_id` is `None` only for acts whose tenant row is gone by commit
/// (purge); the tenant's id and slug then travel in `metadata`.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub tenant_id: Option<Uuid>,
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: String,
    pub metadata: Value,
}

/// Writes `entry` on `conn`, which must be the transaction of the act itself, on the home
/// cluster (registry acts, webhooks, jobs).
pub async fn record(conn: &mut PgConnection, actor: &Actor, entry: Entry<'_>) -> sqlx::Result<()> {
    insert(conn, Trail::Home, actor, entry).await
}

/// Writes `entry` in a tenant transaction on `scope`'s cluster: into `public.audit_logs` on
/// the home cluster, else into that cluster's `public.audit_outbox` (drained home by
/// [`drain`]). Either way in the act's own transaction.
pub async fn record_in_tenant(
    conn: &mut PgConnection,
    scope: &TenantScope,
    actor: &Actor,
    entry: Entry<'_>,
) -> sqlx::Result<()> {
    let trail = if scope.cluster.is_home() {
        Trail::Home
    } else {
        Trail::Outbox
    };
    insert(conn, trail, actor, entry).await
}

#[derive(Clone, Copy)]
enum Trail {
    Home,
    Outbox,
}

async fn insert(
    conn: &mut PgConnection,
    trail: Trail,
    actor: &Actor,
    entry: Entry<'_>,
) -> sqlx::Result<()> {
    let mut metadata = entry.metadata;
    if let Value::Object(map) = &mut metadata {
        map.insert("actor".into(), actor.describe());
    }
    let (user_id, ip, user_agent) = match actor {
        Actor::Member {
            user_id,
            ip,
            user_agent,
            ..
        } => (
            Some(*user_id),
            ip.map(|ip| ip.to_string()),
            user_agent.clone(),
        ),
        Actor::Console { ip, user_agent, .. } => {
            (None, ip.map(|ip| ip.to_string()), user_agent.clone())
        }
        _ => (None, None, None),
    };
    let sql = match trail {
        Trail::Home => {
            "INSERT INTO public.audit_logs (tenant_id, user_id, action, resource_type, resource_id,
                                            ip_address, user_agent, metadata)
             VALUES ($1, $2, $3, $4, $5, $6::inet, $7, $8)"
        }
        Trail::Outbox => {
            "INSERT INTO public.audit_outbox (tenant_id, user_id, action, resource_type, resource_id,
                                              ip_address, user_agent, metadata)
             VALUES ($1, $2, $3, $4, $5, $6::inet, $7, $8)"
        }
    };
    sqlx::query(sql)
        .bind(entry.tenant_id)
        .bind(user_id)
        .bind(entry.action)
        .bind(entry.resource_type)
        .bind(entry.resource_id)
        .bind(ip)
        .bind(user_agent)
        .bind(metadata)
        .execute(conn)
        .await?;
    Ok(())
}

/// Which audit rows to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tenant_id: Option<Uuid>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    /// The member's Clerk user id.
    pub user: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Who did it, as [`Row::actor`] names them: a member's Clerk user id, an operator's
    /// name (`who`), a webhook's provider or a job's name.
    pub actor: Option<String>,
    /// Keyset position: rows strictly older than this (created_at, id).
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// A time bound of the audit filters: RFC 3339, or a plain date (`YYYY-MM-DD`) meaning its
/// midnight UTC — what `GET /api/v1/audit-logs` accepts for `from` and `to`.
pub fn parse_instant(value: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!("{value:?} is neither an RFC 3339 time (2026-11-01T00:00:00Z) nor a date (2026-11-01)")
        })
}

/// One audit row as operators and tenant admins read it. A tenant's own id never appears:
/// for tenant acts `resource_id` is the tenant's slug.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Row {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    /// The tenant's slug (absent for acts whose tenant is gone, such as a purge).
    pub tenant: Option<String>,
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// The member's Clerk user id, when a member did it.
    pub user: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub metadata: Option<Value>,
}

/// Metadata keys that describe *another* tenant (a clone's source): its id, slug, the
/// archive's file name (which carries the slug) and its row counts. The operators' trail
/// keeps them; a tenant's API does not.
const OTHER_TENANT_KEYS: [&str; 4] = ["source_tenant_id", "source_slug", "file", "rows"];

impl Row {
    /// The row as the tenant's own admins see it through the API: no tenant id at all (any
    /// metadata key ending in `tenant_id`), and nothing about another tenant (a clone's
    /// source). Operators' commands read the whole row.
    pub fn for_tenant_api(mut self) -> Self {
        if let Some(Value::Object(map)) = &mut self.metadata {
            let clone = self.action == "tenant.cloned";
            map.retain(|key, _| {
                let other_tenant = clone && OTHER_TENANT_KEYS.contains(&key.as_str());
                !(key.ends_with("tenant_id") || other_tenant)
            });
        }
        self
    }
}

impl Row {
    /// Who did it, in one line: the member's Clerk user id, `operator <who>`,
    /// `<provider> <event id>` for a webhook, or the job's kind (`capliquify audit` and the
    /// console show this).
    pub fn actor(&self) -> String {
        let actor = self.metadata.as_ref().and_then(|m| m.get("actor"));
        let field = |name: &str| {
            actor
                .and_then(|a| a.get(name))
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned()
        };
        let by = match actor.and_then(|a| a.get("kind")).and_then(|k| k.as_str()) {
            Some("member") => self.user.clone().unwrap_or_else(|| "member".into()),
            Some("webhook") => {
                let provider = field("provider");
                let provider = if provider.is_empty() {
                    "webhook".into()
                } else {
                    provider
                };
                format!("{provider} {}", field("event_id"))
            }
            Some("operator") => format!("operator {}", field("who")),
            Some("system") => format!("system {}", field("job")),
            Some(kind) => kind.to_owned(),
            None => "-".into(),
        };
        by.trim().to_owned()
    }
}

/// Reads audit rows matching `filter`, newest first.
pub async fn list(conn: &mut PgConnection, filter: &Filter) -> sqlx::Result<Vec<Row>> {
    let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(
        "SELECT a.id, a.created_at, t.slug::text AS tenant, a.action::text,
                a.resource_type::text,
                CASE WHEN a.resource_type = 'tenant' AND t.slug IS NOT NULL THEN t.slug::text
                     ELSE a.resource_id::text END AS resource_id,
                u.clerk_user_id::text AS \"user\", host(a.ip_address) AS ip_address,
                a.user_agent, a.metadata
           FROM public.audit_logs a
           LEFT JOIN public.tenants t ON t.id = a.tenant_id
           LEFT JOIN public.users u ON u.id = a.user_id
          WHERE true",
    );
    if let Some(tenant) = filter.tenant_id {
        qb.push(" AND a.tenant_id = ").push_bind(tenant);
    }
    if let Some(action) = &filter.action {
        qb.push(" AND a.action = ").push_bind(action.clone());
    }
    if let Some(resource_type) = &filter.resource_type {
        qb.push(" AND a.resource_type = ")
            .push_bind(resource_type.clone());
    }
    if let Some(user) = &filter.user {
        qb.push(" AND u.clerk_user_id = ").push_bind(user.clone());
    }
    if let Some(actor) = &filter.actor {
        qb.push(" AND (u.clerk_user_id = ")
            .push_bind(actor.clone())
            .push(" OR a.metadata->'actor'->>'who' = ")
            .push_bind(actor.clone())
            .push(" OR a.metadata->'actor'->>'provider' = ")
            .push_bind(actor.clone())
            .push(" OR a.metadata->'actor'->>'job' = ")
            .push_bind(actor.clone())
            .push(")");
    }
    if let Some(from) = filter.from {
        qb.push(" AND a.created_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        qb.push(" AND a.created_at < ").push_bind(to);
    }
    if let Some((at, id)) = filter.before {
        qb.push(" AND (a.created_at, a.id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    qb.push(" ORDER BY a.created_at DESC, a.id DESC LIMIT ")
        .push_bind(filter.limit);
    qb.build_query_as::<Row>().fetch_all(conn).await
}

/// Moves the audit rows waiting in `cluster`'s outbox (only `tenant`'s when given) into the
/// home `public.audit_logs`; returns how many. Exactly-once in effect: the rows are deleted
/// from the outbox in a transaction that commits only after the home insert committed, and
/// the home insert skips ids it already has, so a crash between the two commits re-drains
/// rows that are then ignored. Rows of a tenant that no longer exists (purged since) are
/// dropped, as purging drops a tenant's trail; a row's member must be of its tenant. Works
/// in batches of [`DRAIN_BATCH`], so one call never holds an unbounded transaction.
pub async fn drain(home: &PgPool, cluster: &PgPool, tenant: Option<Uuid>) -> sqlx::Result<u64> {
    let mut total = 0;
    loop {
        let moved = drain_batch(home, cluster, tenant).await?;
        total += moved;
        if moved < DRAIN_BATCH {
            return Ok(total);
        }
    }
}

/// Outbox rows moved per transaction by [`drain`].
pub const DRAIN_BATCH: u64 = 1000;

async fn drain_batch(home: &PgPool, cluster: &PgPool, tenant: Option<Uuid>) -> sqlx::Result<u64> {
    let mut source = cluster.begin().await?;
    let rows: Vec<OutboxRow> = sqlx::query_as(
        "DELETE FROM public.audit_outbox
          WHERE id IN (SELECT id FROM public.audit_outbox
                        WHERE $1::uuid IS NULL OR tenant_id = $1
                        ORDER BY created_at, id LIMIT $2)
         RETURNING id, tenant_id, user_id, action::text, resource_type::text,
                   resource_id::text, host(ip_address) AS ip_address, user_agent, metadata,
                   created_at",
    )
    .bind(tenant)
    .bind(DRAIN_BATCH as i64)
    .fetch_all(&mut *source)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut target = home.begin().await?;
    for row in &rows {
        // A member removed since keeps the row, without the link (as ON DELETE SET NULL).
        sqlx::query(
            "INSERT INTO public.audit_logs (id, tenant_id, user_id, action, resource_type,
                                            resource_id, ip_address, user_agent, metadata, created_at)
             SELECT $1, $2, (SELECT id FROM public.users WHERE id = $3 AND tenant_id = $2), $4, $5,
                    $6, $7::inet, $8, $9, $10
              WHERE EXISTS (SELECT 1 FROM public.tenants WHERE id = $2)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(row.id)
        .bind(row.tenant_id)
        .bind(row.user_id)
        .bind(&row.action)
        .bind(&row.resource_type)
        .bind(&row.resource_id)
        .bind(&row.ip_address)
        .bind(&row.user_agent)
        .bind(&row.metadata)
        .bind(row.created_at)
        .execute(&mut *target)
        .await?;
    }
    target.commit().await?;
    source.commit().await?;
    Ok(rows.len() as u64)
}

/// [`drain`] for every secondary cluster; the first error is returned after all were tried.
pub async fn drain_all(clusters: &Clusters, tenant: Option<Uuid>) -> sqlx::Result<u64> {
    let mut total = 0;
    let mut first_error = None;
    for (name, pool) in clusters.secondaries() {
        match drain(clusters.home(), pool, tenant).await {
            Ok(n) => total += n,
            Err(err) => {
                tracing::warn!(cluster = %name, error = %err, "draining the audit outbox failed");
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(total),
    }
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: Uuid,
    tenant_id: Uuid,
    user_id: Option<Uuid>,
    action: String,
    resource_type: Option<String>,
    resource_id: Option<String>,
    ip_address: Option<String>,
    user_agent: Option<String>,
    metadata: Option<Value>,
    created_at: DateTime<Utc>,
}
