//! `capliquify cluster …`: the Citus cluster's workers (docs/scaling.md, "Citus mode").
//! The work is `db::citus`'s; this room parses, prints and maps errors.

use std::process::ExitCode;

use clap::Subcommand;

use super::output;
use crate::audit::Actor;
use crate::db::citus::{self, Worker};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Register a PostgreSQL server running Citus as a worker of this coordinator.
    #[command(after_help = "\
The server needs Citus loaded (shared_preload_libraries = 'citus'), wal_level = logical,
CREATE EXTENSION citus in this database, and a pg_hba.conf that admits the coordinator
(docs/scaling.md). Citus copies the roles, functions and metadata to it; every tenant role
then gets a fresh worker password, so tenants can be placed there. New tenants are spread
over all workers; existing ones move with `cluster rebalance` or `tenant move --to-worker`.

Example:
  capliquify cluster add-worker 10.0.0.13:5432")]
    AddWorker {
        /// The worker, as HOST:PORT (the address the coordinator connects to).
        worker: String,
    },
    /// Show the workers: tenants and bytes on each, and whether it takes new tenants.
    Status,
    /// Show the busiest tenants: statements and CPU time per tenant.
    #[command(after_help = "\
Citus counts each tenant's statements on the nodes that run them
(citus_stat_tenants) over short periods (citus.stat_tenants_period, 60 s
by default): QUERIES, READS and CPU S are the current period's, the (LAST)
columns the period before; older periods are forgotten. READS are the
SELECTs among the QUERIES; CPU S is CPU time in seconds. Tenants without a
statement in either period are not listed.

Counting needs citus.stat_tenants_track = 'all' on every node (the
coordinator and each worker; off by default); with it off the command says
so. Use it to find a noisy tenant, then move it with
`capliquify tenant move SLUG --to-worker HOST:PORT`.

Examples:
  capliquify cluster tenants
  capliquify cluster tenants --limit 5 --json")]
    Tenants {
        /// At most this many tenants, busiest first.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
    /// Spread tenants evenly over the workers (Citus's rebalancer), showing its progress.
    #[command(after_help = "\
Each tenant is moved online (logical replication): reads and writes go on, and its writes
wait only for the final switch. The command waits for the rebalancer's job to finish.")]
    Rebalance,
    /// Move every tenant off a worker (before removing it) and stop placing tenants there.
    #[command(after_help = "\
Each tenant is moved online to the other workers, as with `cluster rebalance`.

Example:
  capliquify cluster drain 10.0.0.12:5432")]
    Drain {
        /// The worker to empty, as HOST:PORT (as `cluster status` shows it).
        worker: String,
    },
}

pub async fn run(pool: &sqlx::PgPool, cmd: ClusterCommand, json: bool) -> anyhow::Result<ExitCode> {
    let actor = Actor::operator();
    match cmd {
        ClusterCommand::AddWorker { worker } => {
            let worker = Worker::parse(&worker)?;
            let added = citus::add_worker(pool, &worker, &actor).await?;
            if json {
                output::json(&added)?;
            } else {
                println!(
                    "added worker {} ({} tenant role(s) may log in there)",
                    added.worker, added.tenant_roles
                );
            }
        }
        ClusterCommand::Status => {
            let workers = citus::status(pool).await?;
            if json {
                output::json(&workers)?;
            } else {
                let rows = workers.iter().map(|w| {
                    vec![
                        w.worker.clone(),
                        if w.active { "active" } else { "inactive" }.to_owned(),
                        if w.accepts_tenants {
                            "yes"
                        } else {
                            "no (drained)"
                        }
                        .to_owned(),
                        w.tenants.to_string(),
                        w.bytes.to_string(),
                    ]
                });
                println!(
                    "{}",
                    output::table(
                        &["WORKER", "STATE", "TAKES TENANTS", "TENANTS", "BYTES"],
                        rows
                    )
                );
            }
        }
        ClusterCommand::Tenants { limit } => {
            let stats = citus::tenant_stats(pool, limit).await?;
            if json {
                output::json(&stats)?;
            } else {
                if stats.tracking == "none" {
                    println!(
                        "Citus does not count tenants' statements here: citus.stat_tenants_track is 'none'.\n\
                         Set citus.stat_tenants_track = 'all' on every node and reload (docs/scaling.md)."
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                if stats.tenants.is_empty() {
                    println!(
                        "no tenant ran a statement in the last two periods ({} s each)",
                        stats.period_seconds
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                let rows = stats.tenants.iter().map(|t| {
                    vec![
                        t.slug.clone(),
                        output::opt(t.worker.as_deref()),
                        t.queries.to_string(),
                        t.reads.to_string(),
                        format!("{:.3}", t.cpu_seconds),
                        t.queries_last_period.to_string(),
                        t.reads_last_period.to_string(),
                        format!("{:.3}", t.cpu_seconds_last_period),
                    ]
                });
                println!(
                    "{}",
                    output::table(
                        &[
                            "TENANT",
                            "WORKER",
                            "QUERIES",
                            "READS",
                            "CPU S",
                            "QUERIES (LAST)",
                            "READS (LAST)",
                            "CPU S (LAST)"
                        ],
                        rows
                    )
                );
                println!(
                    "periods of {} s: (LAST) is the period before the current one",
                    stats.period_seconds
                );
            }
        }
        ClusterCommand::Rebalance => {
            let bar = output::progress(0, "moves", json)?;
            let shown = bar.clone();
            let report = citus::rebalance(pool, &actor, &move |r| {
                shown.set_length(r.moves.max(0) as u64);
                shown.set_position(r.moves_done.max(0) as u64);
            })
            .await?;
            bar.finish_and_clear();
            if json {
                output::json(&report)?;
            } else if report.job.is_none() {
                println!("the tenants are balanced already: nothing to move");
            } else {
                println!(
                    "rebalance {}: {} of {} move(s) done in {} ms",
                    report.state, report.moves_done, report.moves, report.millis
                );
            }
            if report.job.is_some() && report.state != "finished" {
                return Ok(ExitCode::FAILURE);
            }
        }
        ClusterCommand::Drain { worker } => {
            let worker = Worker::parse(&worker)?;
            citus::drain(pool, &worker, &actor).await?;
            if json {
                output::json(&serde_json::json!({ "drained": worker.to_string() }))?;
            } else {
                println!("drained worker {worker}: no tenant is left on it");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
