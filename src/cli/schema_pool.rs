//! `capliquify schema-pool`: the tenant schemas made ahead of sign-ups
//! ([`crate::tenancy::schema_pool`]).

use std::process::ExitCode;

use clap::Subcommand;

use super::output;
use crate::db::Database;
use crate::tenancy::migrate;
use crate::tenancy::schema_pool;

#[derive(Debug, Subcommand)]
#[command(after_help = "\
A sign-up takes a schema from the pool when there is one, so the new tenant
only needs its registry row: no DDL while the customer waits. `capliquify serve`
keeps the pool at CAPLIQUIFY_SCHEMA_POOL_SIZE by itself; these commands are for
looking at it, for filling it ahead of a launch, and for emptying it (e.g.
before setting the service's size to 0). `capliquify migrate` migrates
unclaimed schemas along with the tenants.")]
pub enum SchemaPoolCommand {
    /// How many schemas wait unclaimed, how many are behind the newest tenant migration,
    /// and when the oldest was made.
    Status,
    /// Make schemas until the pool holds SIZE (none if it already does). Safe beside
    /// running services: fillers take turns and never overfill.
    Fill {
        /// The number of unclaimed schemas to reach.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        size: u32,
    },
    /// Drop every unclaimed schema and its role. Tenants are never touched; a schema a
    /// sign-up is claiming at that moment is left to it. A running service refills the
    /// pool: set its CAPLIQUIFY_SCHEMA_POOL_SIZE to 0 first to keep it empty.
    Drain,
}

pub async fn run(db: &Database, cmd: SchemaPoolCommand, json: bool) -> anyhow::Result<ExitCode> {
    let latest = migrate::latest_version(migrate::tenant_migrations());
    match cmd {
        SchemaPoolCommand::Status => {
            let status = schema_pool::status(&db.pool, latest).await?;
            if json {
                output::json(&status)?;
            } else {
                let rows = [
                    vec!["unclaimed schemas".to_owned(), status.unclaimed.to_string()],
                    vec![
                        format!("behind tenant migration {latest}"),
                        status.behind.to_string(),
                    ],
                    vec![
                        "oldest made".to_owned(),
                        output::opt(status.oldest.map(output::when)),
                    ],
                ];
                println!("{}", output::table(&["SCHEMA POOL", ""], rows));
                if status.behind > 0 {
                    println!("run `capliquify migrate` to bring them to version {latest}");
                }
            }
        }
        SchemaPoolCommand::Fill { size } => {
            let before = schema_pool::status(&db.pool, latest).await?.unclaimed;
            let wanted = u64::try_from(i64::from(size) - before).unwrap_or(0);
            let bar = output::progress(wanted, "schemas", json || wanted == 0)?;
            let added = schema_pool::fill(&db.pool, size, |schema| {
                bar.set_message(schema.to_owned());
                bar.inc(1);
            })
            .await;
            bar.finish_and_clear();
            let added = added?;
            let after = schema_pool::status(&db.pool, latest).await?.unclaimed;
            if json {
                output::json(&serde_json::json!({ "added": added, "unclaimed": after }))?;
            } else {
                println!("{added} schema(s) added; the pool holds {after} (asked for {size})");
            }
        }
        SchemaPoolCommand::Drain => {
            let before = schema_pool::status(&db.pool, latest).await?.unclaimed;
            let bar = output::progress(before.max(0) as u64, "schemas", json || before == 0)?;
            let dropped = schema_pool::drain(&db.pool, |schema| {
                bar.set_message(schema.to_owned());
                bar.inc(1);
            })
            .await;
            bar.finish_and_clear();
            let dropped = dropped?;
            if json {
                output::json(&serde_json::json!({ "dropped": dropped }))?;
            } else {
                println!("{dropped} unclaimed schema(s) dropped with their roles");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
