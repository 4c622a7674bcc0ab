//! `capliquify forecasts …`: the forecast jobs over the fleet.
//!
//! `refresh` regenerates demand forecasts of every live tenant whose plan has
//! `ai_forecasting`, through the code path of `POST /api/v1/forecasts/generate`
//! ([`forecast::generate_sales`]), one tenant transaction per batch of products, `--jobs`
//! batches at a time. Its runs and the batches they refreshed are recorded in the public
//! schema ([`refresh_runs`]), so running it again after a crash or a failure resumes.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::output;
use crate::billing::Features;
use crate::db::{Clusters, Database, TenantScope, scope};
use crate::domain::forecast::{self, ForecastType, Granularity, ModelChoice, Plan};
use crate::tenancy::registry::{Tenant, TenantState};
use crate::tenancy::{fleet, refresh_runs};

#[derive(Debug, Subcommand)]
pub enum ForecastsCommand {
    /// Regenerate the demand forecasts of every live tenant whose plan has ai_forecasting
    /// (what POST /api/v1/forecasts/generate does for all products), resumably.
    #[command(after_help = "\
What it does: for each live tenant whose plan has ai_forecasting (suspended and deleted
tenants and plans without it are skipped), it forecasts the demand (units sold) of every
active product from its sales history, with the model chosen by backtest (`auto`), and
replaces that product's previous demand forecast of the same granularity. Products go in
batches of --batch-size, each in its own tenant transaction (all of a batch or none of it),
--jobs batches at a time, across tenants and within a large tenant.

A failure (a tenant's broken data, a lost connection) is reported with the tenant's slug,
that tenant's remaining batches are left for later and the other tenants go on; the exit
code is then 1. Run the same command again to resume: the run's refreshed batches are
recorded (public.forecast_refresh_runs and forecast_refresh_batches), and an unfinished run
with the same options is resumed as long as its first forecast period is still the current
one (--fresh starts over). One refresh runs at a time.

Examples:
  capliquify forecasts refresh
  capliquify forecasts refresh --tenant acme --jobs 2
  capliquify forecasts refresh --granularity week --horizon 26 --json")]
    Refresh(RefreshArgs),
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

/// The length of a forecast period, on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Period {
    Day,
    Week,
    Month,
}

impl From<Period> for Granularity {
    fn from(p: Period) -> Self {
        match p {
            Period::Day => Granularity::Day,
            Period::Week => Granularity::Week,
            Period::Month => Granularity::Month,
        }
    }
}

#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// Only this tenant (slug); default every live tenant whose plan has ai_forecasting.
    #[arg(long)]
    pub tenant: Option<String>,
    /// How many batches to refresh at the same time, each on its own connection (keep it
    /// below --db-max-connections). Fitting the models is CPU work: about the number of cores.
    #[arg(long, short, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// The forecasts' period: history is summed per period, and the horizon counts them.
    #[arg(long, value_enum, default_value_t = Period::Month)]
    pub granularity: Period,
    /// How many periods ahead: up to 365 days, 104 weeks or 36 months.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=365))]
    pub horizon: u32,
    /// Products per batch (per tenant transaction), 1 to 100 (the API's limit per request).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub batch_size: u32,
    /// Start a new run even when an unfinished one with the same options could be resumed.
    #[arg(long)]
    pub fresh: bool,
}

pub async fn run(db: &Database, cmd: ForecastsCommand, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        ForecastsCommand::Refresh(args) => refresh(db, args, json).await,
        ForecastsCommand::Reconcile { tenant } => reconcile(db, tenant, json).await,
    }
}

// ---------------------------------------------------------------------------------------
// refresh

/// Why a tenant is not refreshed, or `None` when it is.
fn ineligible(t: &Tenant) -> Option<&'static str> {
    let features: Features = serde_json::from_value(t.features.clone()).unwrap_or_default();
    if t.state() != TenantState::Live {
        Some("not live (suspended)")
    } else if !features.ai_forecasting {
        Some("plan without ai_forecasting")
    } else if t.schema_version.is_none() {
        Some("no schema")
    } else if t.moving_to.is_some() {
        Some("being moved to another cluster (read-only)")
    } else {
        None
    }
}

/// One tenant's part of the run.
#[derive(Debug, Clone, Serialize)]
pub struct TenantRefresh {
    pub tenant: String,
    /// `refreshed`, `done_earlier` (every batch was refreshed by an earlier invocation of
    /// this run), `no_products`, or `failed`.
    pub status: &'static str,
    /// Products refreshed by this invocation.
    pub products: usize,
    pub batches: usize,
    /// Products already refreshed by this run before this invocation (resumed), skipped.
    pub skipped_done: usize,
    /// Batches not attempted after one of the tenant's batches failed (left for the resume).
    pub batches_left: usize,
    /// How many products each model was chosen for.
    pub models: BTreeMap<String, usize>,
    /// From the tenant's first batch starting to its last one ending.
    pub seconds: f64,
    pub error: Option<String>,
}

struct Batch {
    tenant: usize,
    tenant_id: Uuid,
    slug: String,
    scope: TenantScope,
    products: Vec<(Uuid, Uuid)>,
}

struct BatchDone {
    tenant: usize,
    slug: String,
    products: usize,
    models: Vec<String>,
    started: Instant,
    ended: Instant,
    /// Not attempted: an earlier batch of the tenant failed.
    not_attempted: bool,
    error: Option<String>,
}

/// What stays the same for every batch of the run.
struct Job {
    clusters: Clusters,
    home: sqlx::PgPool,
    plan: Plan,
    run: Uuid,
    today: chrono::NaiveDate,
    /// Tenants with a failed batch: their remaining batches are not attempted.
    failed: Mutex<Vec<usize>>,
}

async fn refresh_batch(job: &Job, batch: &Batch) -> anyhow::Result<Vec<String>> {
    let pool = job.clusters.pool(&batch.scope.cluster)?;
    let mut tx = scope::begin(pool, &batch.scope).await?;
    let runs = forecast::generate_sales(&mut tx, &job.plan, &batch.products, job.today).await?;
    tx.commit().await?;
    let (first, last) = (
        batch.products[0].0,
        batch.products[batch.products.len() - 1].0,
    );
    refresh_runs::record_batch(
        &job.home,
        job.run,
        batch.tenant_id,
        first,
        last,
        batch.products.len(),
    )
    .await?;
    Ok(runs.into_iter().map(|r| r.model).collect())
}

async fn run_batch(job: Arc<Job>, batch: Batch) -> BatchDone {
    let started = Instant::now();
    let skip = job
        .failed
        .lock()
        .map(|f| f.contains(&batch.tenant))
        .unwrap_or(false);
    let outcome = if skip {
        Ok(Vec::new())
    } else {
        refresh_batch(&job, &batch).await
    };
    let (models, error) = match outcome {
        Ok(models) => (models, None),
        Err(e) => {
            if let Ok(mut f) = job.failed.lock() {
                f.push(batch.tenant);
            }
            (Vec::new(), Some(format!("{e:#}")))
        }
    };
    BatchDone {
        tenant: batch.tenant,
        slug: batch.slug,
        products: if skip || error.is_some() {
            0
        } else {
            batch.products.len()
        },
        models,
        started,
        ended: Instant::now(),
        not_attempted: skip,
        error,
    }
}

/// The products of `all` (in id order) outside every `done` range.
fn remaining(all: Vec<(Uuid, Uuid)>, done: &[(Uuid, Uuid)]) -> Vec<(Uuid, Uuid)> {
    all.into_iter()
        .filter(|(id, _)| !done.iter().any(|(first, last)| first <= id && id <= last))
        .collect()
}

async fn refresh(db: &Database, args: RefreshArgs, json: bool) -> anyhow::Result<ExitCode> {
    let granularity = Granularity::from(args.granularity);
    let max = granularity.max_horizon();
    anyhow::ensure!(
        args.horizon <= max,
        "--horizon must be 1 to {max} for --granularity {}",
        granularity.as_str()
    );
    let mut tenants = crate::tenancy::registry::list(&db.pool, false).await?;
    tenants.sort_by(|a, b| a.slug.cmp(&b.slug));
    if let Some(slug) = &args.tenant {
        tenants.retain(|t| &t.slug == slug);
        let Some(t) = tenants.first() else {
            anyhow::bail!("no live tenant {slug:?}; see `capliquify tenant list`");
        };
        if let Some(why) = ineligible(t) {
            anyhow::bail!("tenant {slug:?} is not refreshed: {why}");
        }
    }
    let (eligible, skipped): (Vec<Tenant>, Vec<Tenant>) =
        tenants.into_iter().partition(|t| ineligible(t).is_none());

    let Some(lock) = refresh_runs::lock(&db.pool).await? else {
        anyhow::bail!(
            "another `capliquify forecasts refresh` is running on this database; wait for it to end"
        );
    };
    let today = chrono::Utc::now().date_naive();
    let options = json!({
        "forecast_type": ForecastType::Demand,
        "granularity": granularity,
        "horizon": args.horizon,
        "model": ModelChoice::Auto,
        "confidence_level": "95",
        "tenant": args.tenant,
    });
    let current = granularity.start_of(today);
    let run = refresh_runs::open(&db.pool, &options, today, args.fresh, |as_of| {
        granularity.start_of(as_of) == current
    })
    .await?;
    let plan = Plan {
        kind: ForecastType::Demand,
        granularity,
        horizon: args.horizon as usize,
        model: ModelChoice::Auto,
        level: Decimal::from(95),
        as_of: run.as_of,
    };
    if !json {
        eprintln!(
            "{} run {} (started {}): demand by {}, {} ahead, history before {}",
            if run.resumed { "resuming" } else { "new" },
            run.id,
            output::when(run.started_at),
            granularity.as_str(),
            args.horizon,
            granularity.start_of(run.as_of),
        );
    }

    // Plan: each eligible tenant's active products, less those this run already refreshed,
    // in batches.
    let mut rows: Vec<TenantRefresh> = Vec::with_capacity(eligible.len());
    let mut batches = Vec::new();
    for (i, t) in eligible.iter().enumerate() {
        let mut row = TenantRefresh {
            tenant: t.slug.clone(),
            status: "refreshed",
            products: 0,
            batches: 0,
            skipped_done: 0,
            batches_left: 0,
            models: BTreeMap::new(),
            seconds: 0.0,
            error: None,
        };
        let planned = async {
            let scope = t.scope()?;
            let pool = db.clusters.pool(&scope.cluster)?;
            let mut tx = scope::begin(pool, &scope).await?;
            let all = forecast::active_products(&mut tx).await?;
            tx.rollback().await?;
            let done = refresh_runs::done_ranges(&db.pool, run.id, t.id).await?;
            anyhow::Ok((scope, all.len(), remaining(all, &done)))
        }
        .await;
        match planned {
            Ok((_, 0, _)) => row.status = "no_products",
            Ok((_, all, left)) if left.is_empty() => {
                row.status = "done_earlier";
                row.skipped_done = all;
            }
            Ok((scope, all, left)) => {
                row.skipped_done = all - left.len();
                for chunk in left.chunks(args.batch_size as usize) {
                    batches.push(Batch {
                        tenant: i,
                        tenant_id: t.id,
                        slug: t.slug.clone(),
                        scope: scope.clone(),
                        products: chunk.to_vec(),
                    });
                }
            }
            Err(e) => {
                row.status = "failed";
                row.error = Some(format!("{e:#}"));
            }
        }
        rows.push(row);
    }

    let total: usize = batches.iter().map(|b| b.products.len()).sum();
    let bar = output::progress(total as u64, "products", json || total == 0)?;
    let progress = bar.clone();
    let on_done: Arc<dyn Fn(&BatchDone) + Send + Sync> = Arc::new(move |done: &BatchDone| {
        progress.inc(done.products as u64);
        progress.set_message(done.slug.clone());
        // Shown as it happens on a terminal; every failure is printed again at the end.
        if let Some(e) = &done.error {
            progress.println(format!("FAILED {}: {e}", done.slug));
        }
    });
    let job = Arc::new(Job {
        clusters: db.clusters.clone(),
        home: db.pool.clone(),
        plan,
        run: run.id,
        today,
        failed: Mutex::new(Vec::new()),
    });
    let started = Instant::now();
    let results = fleet::run_queue(
        batches,
        args.jobs as usize,
        move |batch| run_batch(job.clone(), batch),
        on_done,
    )
    .await;
    let elapsed = started.elapsed();
    bar.finish_and_clear();

    let mut spans: BTreeMap<usize, (Instant, Instant)> = BTreeMap::new();
    for done in results {
        let row = &mut rows[done.tenant];
        let span = spans
            .entry(done.tenant)
            .or_insert((done.started, done.ended));
        span.0 = span.0.min(done.started);
        span.1 = span.1.max(done.ended);
        if done.not_attempted {
            row.batches_left += 1;
        } else if let Some(e) = done.error {
            row.status = "failed";
            row.batches_left += 1;
            row.error.get_or_insert(e);
        } else {
            row.products += done.products;
            row.batches += 1;
            for model in done.models {
                *row.models.entry(model).or_default() += 1;
            }
        }
    }
    for (i, (from, to)) in spans {
        rows[i].seconds = to.duration_since(from).as_secs_f64();
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.status == "failed")
        .map(|r| r.tenant.as_str())
        .collect();
    if failed.is_empty() {
        refresh_runs::finish(&db.pool, run.id).await?;
    }
    lock.release().await?;

    let products: usize = rows.iter().map(|r| r.products).sum();
    let rate = rate(products, elapsed);
    if json {
        output::json(&json!({
            "run_id": run.id,
            "resumed": run.resumed,
            "finished": failed.is_empty(),
            "forecast_type": "demand",
            "granularity": granularity,
            "horizon": args.horizon,
            "as_of": run.as_of,
            "tenants": rows,
            "skipped": skipped.iter().map(|t| json!({
                "tenant": t.slug, "reason": ineligible(t),
            })).collect::<Vec<_>>(),
            "products": products,
            "seconds": elapsed.as_secs_f64(),
            "series_per_second": rate,
            "failed": failed,
        }))?;
    } else {
        let table = output::table(
            &[
                "TENANT", "STATUS", "PRODUCTS", "BATCHES", "EARLIER", "LEFT", "SECONDS", "MODELS",
            ],
            rows.iter().map(|r| {
                vec![
                    r.tenant.clone(),
                    r.status.to_owned(),
                    r.products.to_string(),
                    r.batches.to_string(),
                    r.skipped_done.to_string(),
                    r.batches_left.to_string(),
                    format!("{:.1}", r.seconds),
                    r.models
                        .iter()
                        .map(|(m, n)| format!("{m} {n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            }),
        );
        println!("{table}");
        println!(
            "{products} product(s) refreshed in {} tenant(s) in {:.1} s ({rate:.1} series/s); {} failed; {} tenant(s) skipped (not live, or no ai_forecasting)",
            rows.len(),
            elapsed.as_secs_f64(),
            failed.len(),
            skipped.len()
        );
        if failed.is_empty() {
            println!("run {} finished", run.id);
        } else {
            for r in rows.iter().filter(|r| r.status == "failed") {
                eprintln!(
                    "FAILED {}: {}",
                    r.tenant,
                    r.error.as_deref().unwrap_or_default()
                );
            }
            eprintln!(
                "run {} unfinished: run the same command again to resume it",
                run.id
            );
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn rate(products: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        products as f64 / secs
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------
// reconcile

async fn reconcile(db: &Database, tenant: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let mut tenants = crate::tenancy::registry::list(&db.pool, false).await?;
    if let Some(slug) = &tenant {
        tenants.retain(|t| &t.slug == slug);
        anyhow::ensure!(
            !tenants.is_empty(),
            "no live tenant {slug:?}; see `capliquify tenant list`"
        );
    }
    let bar = output::progress(tenants.len() as u64, "tenants", json)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_inside_a_done_range_are_not_refreshed_again() {
        let id = |n: u128| Uuid::from_u128(n);
        let company = id(999);
        let all: Vec<(Uuid, Uuid)> = (1..=10).map(|n| (id(n), company)).collect();
        let left = remaining(all, &[(id(1), id(3)), (id(7), id(8))]);
        let ids: Vec<u128> = left.iter().map(|(p, _)| p.as_u128()).collect();
        assert_eq!(ids, vec![4, 5, 6, 9, 10]);
    }
}
