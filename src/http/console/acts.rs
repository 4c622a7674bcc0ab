//! The operators' acts on one tenant (suspend, reactivate, extend a trial, change the
//! tier, soft delete, undelete, purge): a confirmation page (`GET`), then the act (`POST`,
//! with the session's CSRF token). Each is the same [`Tenancy`] method `capliquify tenant
//! …` calls, so it writes the same audit row in the same transaction, with the signed-in
//! operator as its actor.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::pages::see_other;
use super::session::Operator;
use super::views::{self, Section};
use super::{Console, ConsoleError};
use crate::billing::Tier;
use crate::tenancy::lifecycle::MAX_TRIAL_EXTENSION_DAYS;
use crate::tenancy::{Tenancy, Tenant, TenantState, registry};

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
                    Self::Delete,
                ]
            }
            TenantState::Live => vec![Self::Suspend, Self::ChangeTier, Self::Delete],
            TenantState::Suspended => vec![Self::Reactivate, Self::ChangeTier, Self::Delete],
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
