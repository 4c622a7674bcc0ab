//! The operators' acts on one tenant (suspend, reactivate, extend a trial, change the
//! tier, soft delete, undelete, purge, repair, take a backup): a confirmation page (`GET`),
//! then the act (`POST`, with the session's CSRF token). Each is the same [`Tenancy`] (or
//! [`backup`]) function `capliquify tenant …` calls, so it writes the same audit row, with
//! the signed-in operator as its actor.

use axum::Form;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tokio::io::AsyncReadExt as _;

use super::pages::see_other;
use super::session::Operator;
use super::views::{self, Section};
use super::{Console, ConsoleError};
use crate::billing::Tier;
use crate::tenancy::backup::{self, BackupError};
use crate::tenancy::lifecycle::MAX_TRIAL_EXTENSION_DAYS;
use crate::tenancy::{Tenancy, TenancyError, Tenant, TenantState, registry};

/// What an operator can do to a tenant from the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Suspend,
    Reactivate,
    ExtendTrial,
    ChangeTier,
    Delete,
    Undelete,
    Purge,
    Repair,
    Backup,
}

impl Act {
    fn parse(path: &str) -> Option<Self> {
        Some(match path {
            "suspend" => Self::Suspend,
            "reactivate" => Self::Reactivate,
            "extend-trial" => Self::ExtendTrial,
            "change-tier" => Self::ChangeTier,
            "delete" => Self::Delete,
            "undelete" => Self::Undelete,
            "purge" => Self::Purge,
            "repair" => Self::Repair,
            "backup" => Self::Backup,
            _ => return None,
        })
    }

    pub fn path(self) -> &'static str {
        match self {
            Self::Suspend => "suspend",
            Self::Reactivate => "reactivate",
            Self::ExtendTrial => "extend-trial",
            Self::ChangeTier => "change-tier",
            Self::Delete => "delete",
            Self::Undelete => "undelete",
            Self::Purge => "purge",
            Self::Repair => "repair",
            Self::Backup => "backup",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Suspend => "Suspend",
            Self::Reactivate => "Reactivate",
            Self::ExtendTrial => "Extend the trial",
            Self::ChangeTier => "Change the tier",
            Self::Delete => "Soft delete",
            Self::Undelete => "Undelete",
            Self::Purge => "Purge",
            Self::Repair => "Repair",
            Self::Backup => "Take a backup",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Self::Suspend => {
                "Its members are refused (403) until it is reactivated; its data is kept. \
                 Billing does not lift an operator's suspension."
            }
            Self::Reactivate => "It returns to the status it had before it was suspended.",
            Self::ExtendTrial => {
                "Its trial ends this many days later than now planned (or than today, when \
                 it has passed)."
            }
            Self::ChangeTier => {
                "It gets the new plan's limits and features at once. A tenant with a Stripe \
                 subscription is set back to its price's tier by the subscription's next event."
            }
            Self::Delete => {
                "It becomes unusable at once; its data is kept for the deletion grace period, \
                 during which it can be undeleted, and may be purged after it."
            }
            Self::Undelete => {
                "It returns as it was before the soft delete (within the grace period)."
            }
            Self::Purge => {
                "Its schema, its registry row, its members, its subscription and its audit rows \
                 are dropped for good. This cannot be undone."
            }
            Self::Repair => {
                "A missing schema is created, empty, at the newest version. The other repairs \
                 (rebuilding a half-made schema, applying pending migrations, granting the \
                 tenant's role again) need the database owner's rights, which the service's \
                 role does not have: the console says so, and `capliquify tenant repair` run \
                 as the owner does them."
            }
            Self::Backup => {
                "Its schema's data and its public rows are written, from one snapshot, to an \
                 archive your browser downloads (`capliquify tenant restore FILE` reads it). \
                 Nothing in the tenant changes."
            }
        }
    }

    /// The acts `tenant`'s state allows, as `capliquify tenant …` would accept them.
    pub fn available(tenant: &Tenant) -> Vec<Self> {
        match tenant.state() {
            TenantState::Live
                if tenant.subscription_status == crate::billing::SubscriptionStatus::Trial =>
            {
                vec![
                    Self::Suspend,
                    Self::ExtendTrial,
                    Self::ChangeTier,
                    Self::Repair,
                    Self::Backup,
                    Self::Delete,
                ]
            }
            TenantState::Live => vec![
                Self::Suspend,
                Self::ChangeTier,
                Self::Repair,
                Self::Backup,
                Self::Delete,
            ],
            TenantState::Suspended => vec![
                Self::Reactivate,
                Self::ChangeTier,
                Self::Repair,
                Self::Backup,
                Self::Delete,
            ],
            TenantState::Deleted => vec![Self::Undelete, Self::Purge],
        }
    }
}

/// `GET /console/tenants/{slug}/{act}`: what the act will do, and the form that does it.
pub async fn confirm(
    State(console): State<Console>,
    operator: Operator,
    Path((slug, act)): Path<(String, String)>,
) -> Result<Markup, ConsoleError> {
    let act = Act::parse(&act).ok_or_else(|| ConsoleError::NotFound("act".into()))?;
    let tenant = registry::find(&console.app.pool, &slug).await?;
    let title = format!("{} {}?", act.label(), tenant.name);
    let body = html! {
        form.card method="post" action={ "/console/tenants/" (tenant.slug) "/" (act.path()) } {
            (views::csrf(&operator))
            p { "Tenant " strong { (tenant.slug) } " (" (tenant.name) ") is now "
                (views::status(tenant.state().as_str())) ". " (act.explain()) }
            @if act == Act::Suspend {
                label for="reason" { "Reason (kept in the audit log)" }
                textarea #reason name="reason" required maxlength="500" rows="3" {}
            }
            @if act == Act::ExtendTrial {
                p { "The trial now ends: " (views::opt_time(tenant.trial_ends_at)) " (UTC)." }
                label for="days" { "Days to add (1 to " (MAX_TRIAL_EXTENSION_DAYS) ")" }
                input #days type="number" name="days" required min="1"
                    max=(MAX_TRIAL_EXTENSION_DAYS) value="14";
            }
            @if act == Act::ChangeTier {
                p { "It is now on " strong { (tenant.subscription_tier.as_str()) } "." }
                label for="tier" { "New tier" }
                select #tier name="tier" required {
                    @for tier in TIERS {
                        @if tier != tenant.subscription_tier.as_str() {
                            option value=(tier) { (tier) }
                        }
                    }
                }
            }
            @if act == Act::Backup {
                div {
                    input #with_audit type="checkbox" name="with_audit" value="on";
                    label for="with_audit" { " Include its audit rows" }
                }
                @if console.config.backup_key.is_some() {
                    p { "The archive is signed with " code { "CAPLIQUIFY_BACKUP_KEY" } "." }
                } @else {
                    p.note { code { "CAPLIQUIFY_BACKUP_KEY" } " is not set, so the archive is not \
                        signed: " code { "tenant restore" } " refuses it unless given "
                        code { "--insecure-unsigned" } "." }
                }
            }
            @if act == Act::Purge {
                label for="confirm" { "Type the slug, " code { (tenant.slug) } ", to confirm" }
                input #confirm name="confirm" required autocomplete="off";
                div {
                    input #early type="checkbox" name="early" value="on";
                    label for="early" { " Purge before the deletion grace period ends" }
                }
            }
            div.actions {
                button type="submit" { (act.label()) }
                a href={ "/console/tenants/" (tenant.slug) } { "Cancel" }
            }
        }
    };
    Ok(views::page(&title, &operator, Section::Tenants, body))
}

#[derive(Deserialize)]
pub struct ActForm {
    csrf: Option<String>,
    reason: Option<String>,
    days: Option<String>,
    tier: Option<String>,
    confirm: Option<String>,
    early: Option<String>,
    with_audit: Option<String>,
}

const TIERS: [&str; 3] = ["starter", "professional", "enterprise"];

/// `POST /console/tenants/{slug}/{act}`: checks the CSRF token before anything else, then
/// acts and returns to the tenant's page.
pub async fn perform(
    State(console): State<Console>,
    operator: Operator,
    Path((slug, act)): Path<(String, String)>,
    Form(form): Form<ActForm>,
) -> Result<Response, ConsoleError> {
    operator.check_csrf(form.csrf.as_deref())?;
    let act = Act::parse(&act).ok_or_else(|| ConsoleError::NotFound("act".into()))?;
    let tenancy = Tenancy::new(
        console.app.pool.clone(),
        console.app.webhooks.deletion_grace_days,
    );
    let actor = operator.actor();
    match act {
        Act::Suspend => {
            let reason = reason(form.reason.as_deref())?;
            tenancy.suspend(&slug, Some(&reason), &actor).await?;
        }
        Act::Reactivate => {
            tenancy.reactivate(&slug, &actor).await?;
        }
        Act::ExtendTrial => {
            let days = form
                .days
                .as_deref()
                .and_then(|d| d.trim().parse::<u32>().ok())
                .filter(|d| (1..=MAX_TRIAL_EXTENSION_DAYS).contains(d))
                .ok_or_else(|| {
                    ConsoleError::BadInput(format!(
                        "Days must be a whole number from 1 to {MAX_TRIAL_EXTENSION_DAYS}. \
                         Nothing was changed."
                    ))
                })?;
            tenancy.extend_trial(&slug, days, &actor).await?;
        }
        Act::ChangeTier => {
            let tier = form
                .tier
                .as_deref()
                .and_then(|t| <Tier as clap::ValueEnum>::from_str(t.trim(), false).ok())
                .ok_or_else(|| {
                    ConsoleError::BadInput(
                        "The tier must be starter, professional or enterprise. Nothing was changed."
                            .into(),
                    )
                })?;
            tenancy.set_tier(&slug, tier, &actor).await?;
        }
        Act::Delete => {
            tenancy.soft_delete(&slug, &actor).await?;
        }
        Act::Undelete => {
            tenancy.restore(&slug, false, &actor).await?;
        }
        Act::Repair => {
            let (tenant, repair) = tenancy
                .repair(&slug, &actor)
                .await
                .map_err(|e| needs_owner(e, &format!("capliquify tenant repair {slug}")))?;
            console.app.callers.clear();
            let body = html! {
                div.card {
                    p role="status" { "Tenant " strong { (tenant.slug) } ": " (repair.describe()) "." }
                    p { a href={ "/console/tenants/" (tenant.slug) } { "Back to the tenant" } }
                }
            };
            return Ok(views::page("Repaired", &operator, Section::Tenants, body).into_response());
        }
        Act::Backup => {
            let with_audit = form.with_audit.as_deref() == Some("on");
            return download_backup(&console, &slug, with_audit, &actor).await;
        }
        Act::Purge => {
            // The typed slug is required whether or not the grace period is over (the CLI
            // asks for it only before); early purges also need the box ticked (--force).
            let typed = form.confirm.as_deref().unwrap_or("").trim();
            if typed != slug {
                return Err(ConsoleError::BadInput(
                    "The slug typed does not match the tenant's. Nothing was purged.".into(),
                ));
            }
            let early = form.early.as_deref() == Some("on");
            tenancy.purge(&slug, early, Some(typed), &actor).await?;
            console.app.callers.clear();
            return Ok(see_other("/console/tenants", None));
        }
    }
    // The caller cache holds a resolved tenant for a moment; forgetting it makes the act
    // take effect on the tenant's next request.
    console.app.callers.clear();
    Ok(see_other(&format!("/console/tenants/{slug}"), None))
}

/// Takes a backup of `slug` exactly as `capliquify tenant backup` does (same archive,
/// same signature, same `tenant.backup` audit row) into a private temporary folder, and
/// streams the finished file as a download. The file is unlinked as soon as it is open, so
/// nothing stays on the server's disk, whether or not the download completes.
async fn download_backup(
    console: &Console,
    slug: &str,
    with_audit: bool,
    actor: &crate::audit::Actor,
) -> Result<Response, ConsoleError> {
    let folder = tempfile::tempdir().map_err(ConsoleError::internal)?;
    let name = backup::default_file_name(slug, chrono::Utc::now());
    let report = backup::backup(
        &console.app.pool,
        slug,
        Some(&folder.path().join(&name)),
        with_audit,
        console.config.backup_key.as_deref(),
        actor,
        &|_| {},
    )
    .await
    .map_err(|e| match e {
        BackupError::Tenancy(e) => ConsoleError::from(e),
        BackupError::Refused(message) => ConsoleError::Conflict(message),
        other => ConsoleError::internal(other),
    })?;
    let file = tokio::fs::File::open(&report.file)
        .await
        .map_err(ConsoleError::internal)?;
    drop(folder);
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        let mut buffer = vec![0u8; 64 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buffer)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let headers = [
        (header::CONTENT_TYPE, "application/x-tar".to_owned()),
        (header::CONTENT_LENGTH, report.bytes.to_string()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ),
    ];
    Ok((headers, Body::from_stream(chunks)).into_response())
}

/// `err`, or when the database refused the service's role (SQLSTATE 42501: rebuilding a
/// half-made schema drops it, which only its owner may), a 409 naming the command an
/// owner runs instead.
fn needs_owner(err: TenancyError, command: &str) -> ConsoleError {
    if let TenancyError::Database(e) = &err
        && e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42501")
    {
        return ConsoleError::Conflict(format!(
            "This needs the database owner's rights, which the service's role does not have \
             (least privilege). Nothing was changed; run `{command}` as the owner."
        ));
    }
    err.into()
}

/// A suspension's reason: required, at most 500 characters, no control characters but
/// line breaks.
fn reason(raw: Option<&str>) -> Result<String, ConsoleError> {
    let reason = raw.unwrap_or("").trim();
    if reason.is_empty() {
        return Err(ConsoleError::BadInput(
            "A suspension needs a reason. Nothing was changed.".into(),
        ));
    }
    if reason.chars().count() > 500 {
        return Err(ConsoleError::BadInput(
            "The reason is longer than 500 characters. Nothing was changed.".into(),
        ));
    }
    if reason
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r')
    {
        return Err(ConsoleError::BadInput(
            "The reason contains control characters. Nothing was changed.".into(),
        ));
    }
    Ok(reason.to_owned())
}
