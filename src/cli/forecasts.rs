//! `capliquify forecasts …`: the forecast jobs over the fleet.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use super::output;
use crate::db::{Database, scope};
use crate::domain::forecast;

#[derive(Debug, Subcommand)]
pub enum ForecastsCommand {
    /// Fill in actual_value and accuracy_percentage of forecasts whose period is over and
    /// has sales (the same step `POST /api/v1/forecasts/generate` runs for its products).
    #[command(after_help = "\
One transaction per tenant; a tenant that fails is reported and the others go on (exit 1).
Running it again is harmless: it recomputes the same actuals.

Examples:
  capliquify forecasts reconcile
  capliquify forecasts reconcile --tenant acme-manufacturing --json")]
    Reconcile {
        /// Only this tenant (slug); default every live tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
}

pub async fn run(db: &Database, cmd: ForecastsCommand, json: bool) -> anyhow::Result<ExitCode> {
    let ForecastsCommand::Reconcile { tenant } = cmd;
    let mut tenants = crate::tenancy::registry::list(&db.pool, false).await?;
    if let Some(slug) = &tenant {
        tenants.retain(|t| &t.slug == slug);
        anyhow::ensure!(
            !tenants.is_empty(),
            "no live tenant {slug:?}; see `capliquify tenant list`"
        );
    }
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(tenants.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tenants  {elapsed}  {msg}")
            .context("progress bar template")?,
    );
    let today = chrono::Utc::now().date_naive();
    let (mut results, mut failed) = (Vec::new(), Vec::new());
    for t in &tenants {
        bar.inc(1);
        if t.schema_version.is_none() {
            continue;
        }
        let outcome = async {
            let scope = t.scope()?;
            let pool = db.clusters.pool(&scope.cluster)?;
            let mut tx = scope::begin(pool, &scope).await?;
            let n = forecast::reconcile(&mut tx, today, None).await?;
            tx.commit().await?;
            anyhow::Ok(n)
        }
        .await;
        match outcome {
            Ok(n) => results.push((t.slug.clone(), n)),
            Err(e) => {
                bar.println(format!("FAILED {}: {e:#}", t.slug));
                failed.push((t.slug.clone(), format!("{e:#}")));
            }
        }
    }
    bar.finish_and_clear();
    if json {
        output::json(&serde_json::json!({
            "reconciled": results.iter().map(|(slug, n)| serde_json::json!({ "tenant": slug, "forecasts": n })).collect::<Vec<_>>(),
            "failed": failed,
        }))?;
    } else {
        let rows = results
            .iter()
            .map(|(slug, n)| vec![slug.clone(), n.to_string()]);
        println!(
            "{}",
            output::table(&["TENANT", "FORECASTS RECONCILED"], rows)
        );
        for (slug, e) in &failed {
            eprintln!("FAILED {slug}: {e}");
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
