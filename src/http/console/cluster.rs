//! The Citus cluster page, `/console/cluster`: in Citus mode, the workers with their tenants
//! and bytes (what `capliquify cluster status` prints) and the busiest tenants (`capliquify
//! cluster tenants`), read-only, through the same [`crate::db::citus`] functions. Anywhere
//! else it says in one line that this is not a Citus coordinator.
//!
//! Its own page rather than a section of the System page: both reads ask every worker
//! (shard sizes, Citus's tenant statistics), which the System page should not wait for.

use axum::extract::State;
use maud::{Markup, html};

use super::session::Operator;
use super::views::{self, Section};
use super::{Console, ConsoleError};
use crate::db::citus::{self, CitusError, CitusMode};
use crate::tenancy::migrate;

/// Tenants listed as the busiest (`cluster tenants`' default).
const BUSIEST: i64 = 20;

/// `GET /console/cluster`.
pub async fn page(
    State(console): State<Console>,
    operator: Operator,
) -> Result<Markup, ConsoleError> {
    let pool = &console.app.pool;
    let body = match citus::detect(pool).await? {
        CitusMode::Off { reason } => html! {
            p { "Not a Citus coordinator: every tenant lives on this server or a "
                code { "CAPLIQUIFY_CLUSTERS" } " placement (" (reason) ")." }
        },
        CitusMode::On {
            version, workers, ..
        } => {
            // Each part says what went wrong in its place (a right the service's role lacks,
            // public migration 0022 not applied yet) instead of failing the page. A worker
            // that does not answer fails neither: Citus leaves its sizes and counts out.
            let status = citus::status(pool).await.map_err(|e| describe(&e));
            let stats = citus::tenant_stats(pool, BUSIEST)
                .await
                .map_err(|e| describe(&e));
            html! {
                p { "Citus " (version) ": this server is the coordinator of " (workers)
                    " active worker(s). Read-only: " code { "capliquify cluster …" }
                    " adds, drains and rebalances workers (docs/scaling.md)." }
                section.card aria-labelledby="workers" {
                    h2 #workers { "Workers (" code { "cluster status" } ")" }
                    @match &status {
                        Err(why) => p.error { "The workers could not be read: " (why) },
                        Ok(rows) if rows.is_empty() => p { "No worker registered: tenants stay on the \
                            coordinator until one is (" code { "capliquify cluster add-worker HOST:PORT" } ")." },
                        Ok(rows) => div.scroll tabindex="0" role="region" aria-label="Workers" { table {
                            thead { tr {
                                th scope="col" { "Worker" } th scope="col" { "State" }
                                th scope="col" { "Takes new tenants" } th.num scope="col" { "Tenants" }
                                th.num scope="col" { "Size" }
                            } }
                            tbody { @for w in rows { tr {
                                td { (w.worker) }
                                td { (views::status(if w.active { "active" } else { "inactive" })) }
                                td { @if w.accepts_tenants { "yes" } @else { "no (drained)" } }
                                td.num { (w.tenants) }
                                td.num { data value=(w.bytes) { (w.size) } }
                            } } }
                        } },
                    }
                    p.note { "Tenants: tenant schemas whose tables are on the worker. Size: their \
                        shards on disk (" code { "citus_shards.shard_size" } ")." }
                }
                section.card aria-labelledby="busiest" {
                    h2 #busiest { "Busiest tenants (" code { "cluster tenants" } ")" }
                    @match &stats {
                        Err(why) => p.error { "Citus's tenant statistics could not be read: " (why) },
                        Ok(stats) if stats.tracking == "none" => p {
                            "Citus does not count tenants' statements here: "
                            code { "citus.stat_tenants_track" } " is 'none'. Set it to 'all' on every \
                            node and reload (docs/scaling.md)." },
                        Ok(stats) if stats.tenants.is_empty() => p { "No tenant ran a statement in the \
                            last two periods (" (stats.period_seconds) " s each)." },
                        Ok(stats) => {
                            div.scroll tabindex="0" role="region" aria-label="Busiest tenants" { table {
                                thead { tr {
                                    th scope="col" { "Tenant" } th scope="col" { "Worker" }
                                    th.num scope="col" { "Statements" } th.num scope="col" { "Reads" }
                                    th.num scope="col" { "CPU s" }
                                    th.num scope="col" { "Statements, period before" }
                                    th.num scope="col" { "Reads, period before" }
                                    th.num scope="col" { "CPU s, period before" }
                                } }
                                tbody { @for t in &stats.tenants { tr {
                                    td { a href={ "/console/tenants/" (t.slug) } { (t.slug) } }
                                    td { (t.worker.as_deref().unwrap_or("—")) }
                                    td.num { (t.queries) } td.num { (t.reads) }
                                    td.num { (format!("{:.3}", t.cpu_seconds)) }
                                    td.num { (t.queries_last_period) } td.num { (t.reads_last_period) }
                                    td.num { (format!("{:.3}", t.cpu_seconds_last_period)) }
                                } } }
                            } }
                            p.note { "Periods of " (stats.period_seconds) " s (" code { "citus.stat_tenants_period" }
                                "), counted by Citus on each node and summed; at most " (BUSIEST) " tenants." }
                        },
                    }
                }
            }
        }
    };
    Ok(views::page(
        "Citus cluster",
        &operator,
        Section::Cluster,
        body,
    ))
}

/// What a Citus read's failure says on the page (a database error's own message and hint).
fn describe(err: &CitusError) -> String {
    match err {
        CitusError::Database(e) => migrate::describe_db_error(e),
        other => other.to_string(),
    }
}
