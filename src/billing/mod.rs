//! Plans: what each subscription tier allows (shared/SCHEMA.md, "Reference values").
//!
//! Tenancy reads these defaults when it provisions a tenant; the Stripe integration will
//! move a tenant between tiers with the same table.

pub mod prices;
pub mod revenue;

use serde::{Deserialize, Serialize};

/// `public.subscription_tier`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Encode,
    sqlx::Decode,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[sqlx(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Starter,
    Professional,
    Enterprise,
}

crate::db::public_enum_type!(Tier, "subscription_tier");

/// `public.subscription_status`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Encode,
    sqlx::Decode,
    utoipa::ToSchema,
)]
#[sqlx(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Trial,
    Active,
    PastDue,
    Cancelled,
    Suspended,
}

crate::db::public_enum_type!(SubscriptionStatus, "subscription_status");

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trial => "trial",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Cancelled => "cancelled",
            Self::Suspended => "suspended",
        }
    }
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starter => "starter",
            Self::Professional => "professional",
            Self::Enterprise => "enterprise",
        }
    }

    /// The limits and features a tenant on this tier starts with.
    pub fn plan(self) -> Plan {
        let (max_users, max_entities) = match self {
            Self::Starter => (5, 1),
            Self::Professional => (25, 5),
            Self::Enterprise => (100, 999),
        };
        Plan {
            max_users,
            max_entities,
            features: Features {
                ai_forecasting: self != Self::Starter,
                what_if: self != Self::Starter,
                api_integrations: true,
                advanced_reports: self == Self::Enterprise,
            },
        }
    }
}

/// Limits and features of a tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub max_users: i32,
    pub max_entities: i32,
    pub features: Features,
}

/// The `tenants.features` document. A key missing from the stored document (rows written
/// by hand, as in the guide's SQL example) reads as off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Features {
    pub ai_forecasting: bool,
    pub what_if: bool,
    pub api_integrations: bool,
    pub advanced_reports: bool,
}

/// Length of the free trial a new tenant gets.
pub const TRIAL_DAYS: i64 = 14;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_match_the_reference_values() {
        let s = Tier::Starter.plan();
        assert_eq!((s.max_users, s.max_entities), (5, 1));
        assert!(!s.features.ai_forecasting && !s.features.what_if);
        assert!(s.features.api_integrations && !s.features.advanced_reports);
        let p = Tier::Professional.plan();
        assert_eq!((p.max_users, p.max_entities), (25, 5));
        assert!(p.features.ai_forecasting && p.features.what_if && !p.features.advanced_reports);
        let e = Tier::Enterprise.plan();
        assert_eq!((e.max_users, e.max_entities), (100, 999));
        assert!(e.features.advanced_reports);
    }
}
