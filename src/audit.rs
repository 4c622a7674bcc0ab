//! The audit trail: one `public.audit_logs` row per sensitive act, written in the same
//! transaction as the act so neither exists without the other.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

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
    /// A scheduled job of the service (`lifecycle`).
    System { job: &'static str },
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
            Self::Webhook { provider, event_id } => {
                serde_json::json!({ "kind": "webhook", "provider": provider, "event_id": event_id })
            }
            Self::System { job } => serde_json::json!({ "kind": "system", "job": job }),
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

/// Writes `entry` on `conn`, which must be the transaction of the act itself.
pub async fn record(conn: &mut PgConnection, actor: &Actor, entry: Entry<'_>) -> sqlx::Result<()> {
    let mut metadata = entry.metadata;
    if let Value::Object(map) = &mut metadata {
        map.insert("actor".into(), actor.describe());
    }
    sqlx::query(
        "INSERT INTO public.audit_logs (tenant_id, action, resource_type, resource_id, metadata)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(entry.tenant_id)
    .bind(entry.action)
    .bind(entry.resource_type)
    .bind(entry.resource_id)
    .bind(metadata)
    .execute(conn)
    .await?;
    Ok(())
}
