//! Fleet queries: one read-only query run in every tenant schema (or some), in parallel —
//! the cross-tenant reporting that schema-per-tenant otherwise lacks (`capliquify fleet sql`).
//!
//! Each tenant's run is its own `BEGIN READ ONLY` transaction with the tenant's search path,
//! running as the tenant's database role, with a statement timeout: the query cannot change
//! data, cannot read another tenant's schema, and cannot run away. The query
//! is wrapped as a subquery (`SELECT json_agg(q) FROM (<query>) q`), so it must be a single
//! row-returning statement; rows come back as JSON objects with the tenant's slug added.
//! It is an operators' tool: the SQL is theirs, run with the service's database credentials.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::migrate::describe_db_error;
use super::registry::Tenant;
use crate::db::Clusters;
use serde::Serialize;
use serde_json::Value;

/// The rows one tenant returned, or why it could not answer.
#[derive(Debug, Clone, Serialize)]
pub struct TenantRows {
    pub tenant: String,
    pub rows: Vec<Value>,
    pub error: Option<String>,
}

/// Runs `query` in each tenant's schema, `jobs` at a time; results in tenant order.
pub async fn query(
    clusters: impl Into<Clusters>,
    tenants: Vec<Tenant>,
    query: &str,
    jobs: usize,
    timeout: Duration,
) -> Vec<TenantRows> {
    let clusters = clusters.into();
    let total = tenants.len();
    let queue = Arc::new(Mutex::new(VecDeque::from(tenants)));
    let results = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let sql: Arc<str> = Arc::from(format!(
        "SELECT coalesce(json_agg(q), '[]'::json) FROM ({query}\n) q"
    ));
    let timeout_ms = i64::try_from(timeout.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..jobs.clamp(1, total.max(1)) {
        let (clusters, queue, results, sql) = (
            clusters.clone(),
            queue.clone(),
            results.clone(),
            sql.clone(),
        );
        workers.spawn(async move {
            loop {
                let next = queue.lock().map(|mut q| q.pop_front()).ok().flatten();
                let Some(tenant) = next else { break };
                let outcome = run_one(&clusters, &tenant, &sql, timeout_ms).await;
                let entry = match outcome {
                    Ok(rows) => TenantRows {
                        tenant: tenant.slug.clone(),
                        rows,
                        error: None,
                    },
                    Err(e) => TenantRows {
                        tenant: tenant.slug.clone(),
                        rows: Vec::new(),
                        error: Some(describe_db_error(&e)),
                    },
                };
                if let Ok(mut all) = results.lock() {
                    all.push(entry);
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let mut results = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    results.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    results
}

async fn run_one(
    clusters: &Clusters,
    tenant: &Tenant,
    sql: &str,
    timeout_ms: i64,
) -> sqlx::Result<Vec<Value>> {
    let scope = tenant
        .scope()
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let pool = clusters
        .pool(&scope.cluster)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    // The tenant's search path and role (db::scope), plus a timeout: an integer.
    let mut tx = pool
        .begin_with(sqlx::AssertSqlSafe(format!(
            "{}; SET LOCAL statement_timeout = {timeout_ms}",
            crate::db::scope::begin_statement(&scope, "BEGIN READ ONLY")
        )))
        .await?;
    // The operator's own SQL, by design (see the module docs).
    let rows: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut *tx)
        .await?;
    tx.rollback().await?;
    let mut rows = match rows {
        Value::Array(rows) => rows,
        other => vec![other],
    };
    for row in &mut rows {
        if let Value::Object(map) = row {
            map.insert("tenant".into(), Value::String(tenant.slug.clone()));
        }
    }
    Ok(rows)
}
