//! Which Stripe price is which plan: `CAPLIQUIFY_STRIPE_PRICES`, a comma-separated list of
//! `<price id>=<tier>:<billing cycle>`, e.g.
//! `price_1Pstarter_m=starter:monthly,price_1Ppro_y=professional:annual`.

use std::collections::HashMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Tier;

/// `public.billing_cycle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Encode, sqlx::Decode)]
#[sqlx(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum BillingCycle {
    Monthly,
    Annual,
}

crate::db::public_enum_type!(BillingCycle, "billing_cycle");

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceCatalog(HashMap<String, (Tier, BillingCycle)>);

impl PriceCatalog {
    pub fn get(&self, price_id: &str) -> Option<(Tier, BillingCycle)> {
        self.0.get(price_id).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for PriceCatalog {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut map = HashMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || {
                format!(
                    "{entry:?} is not <price id>=<starter|professional|enterprise>:<monthly|annual>"
                )
            };
            let (price, plan) = entry.split_once('=').ok_or_else(bad)?;
            let (tier, cycle) = plan.split_once(':').ok_or_else(bad)?;
            let tier = match tier {
                "starter" => Tier::Starter,
                "professional" => Tier::Professional,
                "enterprise" => Tier::Enterprise,
                _ => return Err(bad()),
            };
            let cycle = match cycle {
                "monthly" => BillingCycle::Monthly,
                "annual" => BillingCycle::Annual,
                _ => return Err(bad()),
            };
            if price.is_empty() || map.insert(price.to_owned(), (tier, cycle)).is_some() {
                return Err(format!("{entry:?}: empty or repeated price id"));
            }
        }
        Ok(Self(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_parses_and_refuses_nonsense() {
        let c: PriceCatalog = "price_a=starter:monthly, price_b=enterprise:annual"
            .parse()
            .unwrap();
        assert_eq!(
            c.get("price_b"),
            Some((Tier::Enterprise, BillingCycle::Annual))
        );
        assert_eq!(c.get("price_x"), None);
        for bad in [
            "price_a",
            "price_a=gold:monthly",
            "price_a=starter:weekly",
            "=starter:monthly",
            "p=starter:monthly,p=starter:annual",
        ] {
            assert!(bad.parse::<PriceCatalog>().is_err(), "{bad}");
        }
    }
}
