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
    /// The result's columns in the SELECT's order (rows are JSON objects, whose keys come
    /// out sorted); empty when no row came back.
    pub columns: Vec<String>,
    pub error: Option<String>,
}

/// Keywords a row-returning statement can start with.
const QUERY_STARTS: [&str; 4] = ["select", "with", "values", "table"];

/// Refuses what cannot be one read-only, row-returning statement before any tenant runs it,
/// so that `DELETE FROM products` is told what is allowed rather than failing with a
/// syntax error in every tenant. Returns the query without a trailing `;` (as typed in
/// psql). This is for a clear message only: the read-only transaction is the guard.
pub fn check_query(query: &str) -> Result<&str, String> {
    let query = query
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    let first: String = query
        .trim_start_matches(|c: char| c == '(' || c.is_whitespace())
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_lowercase();
    if QUERY_STARTS.contains(&first.as_str()) {
        return Ok(query);
    }
    let got = if first.is_empty() {
        "an empty query".to_owned()
    } else {
        format!("a statement starting with {}", first.to_ascii_uppercase())
    };
    Err(format!(
        "only one read-only SELECT is allowed (WITH, VALUES and TABLE too): it runs as a subquery in each tenant's read-only transaction; got {got}"
    ))
}

/// Runs `work` on each item, `jobs` at a time (a fixed pool of workers taking items in
/// order from one queue), and calls `on_done` with each result as it comes: the fleet jobs'
/// shape (the refresh job's batches; `fleet sql` and `migrate` follow the same pattern).
/// Results come back in completion order.
pub async fn run_queue<T, R, F, Fut>(
    items: Vec<T>,
    jobs: usize,
    work: F,
    on_done: Arc<dyn Fn(&R) + Send + Sync>,
) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let total = items.len();
    let queue = Arc::new(Mutex::new(VecDeque::from(items)));
    let results = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let work = Arc::new(work);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..jobs.clamp(1, total.max(1)) {
        let (queue, results, work, on_done) = (
            queue.clone(),
            results.clone(),
            work.clone(),
            on_done.clone(),
        );
        workers.spawn(async move {
            loop {
                // The guard is dropped before the await below.
                let next = queue.lock().map(|mut q| q.pop_front()).ok().flatten();
                let Some(item) = next else { break };
                let result = work(item).await;
                on_done(&result);
                if let Ok(mut all) = results.lock() {
                    all.push(result);
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()))
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
    // `json` (not `jsonb`) keeps the columns' order, which json_object_keys then reads off
    // the first row.
    let sql: Arc<str> = Arc::from(format!(
        "WITH r AS (SELECT json_agg(q) AS rows FROM ({query}\n) q)
         SELECT coalesce(r.rows, '[]'::json),
                coalesce((SELECT array_agg(k ORDER BY n)
                            FROM json_object_keys(r.rows -> 0) WITH ORDINALITY AS c(k, n)),
                         '{{}}')
           FROM r"
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
                    Ok((rows, columns)) => TenantRows {
                        tenant: tenant.slug.clone(),
                        rows,
                        columns,
                        error: None,
                    },
                    Err(e) => TenantRows {
                        tenant: tenant.slug.clone(),
                        rows: Vec::new(),
                        columns: Vec::new(),
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
) -> sqlx::Result<(Vec<Value>, Vec<String>)> {
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
    let (rows, columns): (Value, Vec<String>) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
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
    Ok((rows, columns))
}
