//! The lifecycle job: what time alone changes. Runs inside `serve` every
//! `CAPLIQUIFY_LIFECYCLE_INTERVAL_SECS` and as `capliquify lifecycle run` (for cron).
//!
//! - a trial that ended without a live subscription → suspended;
//! - past due for longer than `--past-due-grace-days` → suspended;
//! - a cancelled subscription whose paid period is over → status `cancelled`;
//! - soft-deleted for longer than `--grace-days` → purged.
//!
//! Several service instances may run it: an advisory lock lets one run at a time
//! (the others skip). Every change goes through the lifecycle acts, so each is audited.
//! Each run that took the lock is recorded in `public.lifecycle_runs` ([`last_run`]).

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

use super::{Tenancy, TenancyError};
use crate::audit::{self, Actor, Entry};

/// Key of the advisory lock that lets one instance run the job at a time.
const JOB_LOCK: i64 = 0x6361_706c_6971_0002;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobReport {
    /// Another instance held the lock; nothing was done.
    pub skipped: bool,
    pub trials_suspended: Vec<String>,
    pub past_due_suspended: Vec<String>,
    pub subscriptions_ended: Vec<String>,
    pub purged: Vec<String>,
    /// Deleted beyond the grace period but placed on another cluster: purge works at home
    /// only, so these wait for `capliquify tenant move SLUG --to home`.
    pub purge_waits_for_move_home: Vec<String>,
    /// Tenants whose change failed, with the reason (the others went on).
    pub failed: Vec<(String, String)>,
}

impl JobReport {
    pub fn changes(&self) -> usize {
        self.trials_suspended.len()
            + self.past_due_suspended.len()
            + self.subscriptions_ended.len()
            + self.purged.len()
    }
}

/// Runs the job once.
pub async fn run(
    pool: &PgPool,
    deletion_grace_days: u32,
    past_due_grace_days: u32,
) -> Result<JobReport, TenancyError> {
    // A transaction-scoped lock held by a transaction that stays open for the run: if the
    // run is cancelled (the service stops), dropping the transaction rolls it back and the
    // lock goes with it, so it can never be left behind on a pooled connection.
    let mut lock_tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(JOB_LOCK)
        .fetch_one(&mut *lock_tx)
        .await?;
    if !locked {
        return Ok(JobReport {
            skipped: true,
            ..JobReport::default()
        });
    }
    let started_at = chrono::Utc::now();
    let result = run_locked(pool, deletion_grace_days, past_due_grace_days).await;
    // The record is the operators' view of the job, not part of its work: failing to
    // write it is logged, and the run's own result stands.
    if let Err(e) = record_run(pool, started_at, &result).await {
        tracing::warn!(error = %e, "lifecycle: the run could not be recorded");
    }
    lock_tx.rollback().await?;
    result
}

/// One recorded run of the job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Run {
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: chrono::DateTime<chrono::Utc>,
    /// `done` or `failed`.
    pub outcome: String,
    /// The [`JobReport`] of a run that went through.
    pub report: Option<sqlx::types::Json<JobReport>>,
    /// Why a failed run stopped.
    pub error: Option<String>,
}

/// How long recorded runs are kept.
const KEEP_RUNS_DAYS: i32 = 90;

async fn record_run(
    pool: &PgPool,
    started_at: chrono::DateTime<chrono::Utc>,
    result: &Result<JobReport, TenancyError>,
) -> sqlx::Result<()> {
    let (outcome, report, error) = match result {
        Ok(report) => ("done", serde_json::to_value(report).ok(), None),
        Err(e) => ("failed", None, Some(e.to_string())),
    };
    let mut tx = pool.begin().await?;
    sqlx::query(
        "DELETE FROM public.lifecycle_runs WHERE finished_at < now() - make_interval(days => $1)",
    )
    .bind(KEEP_RUNS_DAYS)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO public.lifecycle_runs (started_at, outcome, report, error)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(started_at)
    .bind(outcome)
    .bind(report)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The job's most recent recorded run, if it has run.
pub async fn last_run(pool: &PgPool) -> sqlx::Result<Option<Run>> {
    sqlx::query_as(
        "SELECT started_at, finished_at, outcome, report, error FROM public.lifecycle_runs
          ORDER BY finished_at DESC, id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
}

async fn slugs(pool: &PgPool, sql: &'static str, days: Option<u32>) -> sqlx::Result<Vec<String>> {
    let mut query = sqlx::query_scalar(sql);
    if let Some(days) = days {
        query = query.bind(i32::try_from(days).unwrap_or(i32::MAX));
    }
    query.fetch_all(pool).await
}

async fn run_locked(
    pool: &PgPool,
    deletion_grace_days: u32,
    past_due_grace_days: u32,
) -> Result<JobReport, TenancyError> {
    let tenancy = Tenancy::new(pool.clone(), deletion_grace_days);
    let actor = Actor::System { job: "lifecycle" };
    let mut report = JobReport::default();

    let trials = slugs(
        pool,
        "SELECT t.slug::text FROM public.tenants t
          WHERE t.deleted_at IS NULL AND t.subscription_status = 'trial' AND t.trial_ends_at < now()
            AND NOT EXISTS (SELECT 1 FROM public.subscriptions s
                             WHERE s.tenant_id = t.id AND s.status IN ('trial', 'active', 'past_due'))
          ORDER BY t.slug",
        None,
    )
    .await?;
    for slug in trials {
        match tenancy
            .suspend(
                &slug,
                Some("the trial ended without a subscription"),
                &actor,
            )
            .await
        {
            Ok(_) => report.trials_suspended.push(slug),
            Err(e) => report.failed.push((slug, e.to_string())),
        }
    }

    let past_due = slugs(
        pool,
        "SELECT slug::text FROM public.tenants
          WHERE deleted_at IS NULL AND subscription_status = 'past_due'
            AND past_due_since < now() - make_interval(days => $1)
          ORDER BY slug",
        Some(past_due_grace_days),
    )
    .await?;
    for slug in past_due {
        match tenancy
            .suspend(
                &slug,
                Some("payment past due beyond the grace period"),
                &actor,
            )
            .await
        {
            Ok(_) => report.past_due_suspended.push(slug),
            Err(e) => report.failed.push((slug, e.to_string())),
        }
    }

    // Cancelled subscriptions whose paid period is over: one transaction with its audit rows.
    let mut tx = pool.begin().await?;
    let ended: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "UPDATE public.tenants t SET subscription_status = 'cancelled'
           FROM public.subscriptions s
          WHERE s.tenant_id = t.id AND s.status = 'cancelled' AND t.deleted_at IS NULL
            AND t.subscription_status NOT IN ('cancelled', 'suspended')
            AND t.subscription_ends_at IS NOT NULL AND t.subscription_ends_at <= now()
          RETURNING t.id, t.slug::text",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (id, slug) in ended {
        audit::record(
            &mut tx,
            &actor,
            Entry {
                tenant_id: Some(id),
                action: "tenant.subscription_ended",
                resource_type: "tenant",
                resource_id: slug.clone(),
                metadata: json!({ "slug": slug }),
            },
        )
        .await?;
        report.subscriptions_ended.push(slug);
    }
    tx.commit().await?;

    let expired = slugs(
        pool,
        "SELECT slug::text FROM public.tenants
          WHERE deleted_at IS NOT NULL AND deleted_at < now() - make_interval(days => $1)
            AND cluster = 'home'
          ORDER BY slug",
        Some(deletion_grace_days),
    )
    .await?;
    report.purge_waits_for_move_home = slugs(
        pool,
        "SELECT slug::text FROM public.tenants
          WHERE deleted_at IS NOT NULL AND deleted_at < now() - make_interval(days => $1)
            AND cluster <> 'home'
          ORDER BY slug",
        Some(deletion_grace_days),
    )
    .await?;
    for slug in expired {
        match tenancy.purge(&slug, false, None, &actor).await {
            Ok(_) => report.purged.push(slug),
            Err(e) => report.failed.push((slug, e.to_string())),
        }
    }
    Ok(report)
}
