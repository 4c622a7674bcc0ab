//! Recurring revenue from `public.subscriptions`, per currency (amounts in different
//! currencies are never added together).
//!
//! Method ([`METHOD`]): every subscription that is `active` or `past_due`, of a tenant that
//! is not soft-deleted, counts at its `amount_cents` per month when billed monthly and at
//! `amount_cents / 12` when billed annually; trials, cancelled and suspended subscriptions
//! count nothing. ARR is 12 × MRR.

use serde::Serialize;
use sqlx::PgPool;

/// The method, said in one sentence where the numbers are shown.
pub const METHOD: &str = "Active and past-due subscriptions of tenants not deleted: monthly \
plans at their amount, annual plans at their amount ÷ 12, per currency; trials, cancelled and \
suspended subscriptions count nothing. ARR = 12 × MRR.";

/// Monthly recurring revenue in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Mrr {
    /// ISO 4217 code (`USD`).
    pub currency: String,
    /// MRR in the currency's minor unit (cents), rounded down.
    pub mrr_cents: i64,
    /// How many subscriptions count.
    pub subscriptions: i64,
}

impl Mrr {
    pub fn arr_cents(&self) -> i64 {
        self.mrr_cents * 12
    }
}

/// MRR per currency, largest first.
pub async fn mrr(pool: &PgPool) -> sqlx::Result<Vec<Mrr>> {
    sqlx::query_as(
        "SELECT s.currency::text,
                (sum(CASE s.billing_cycle WHEN 'annual' THEN s.amount_cents::numeric / 12
                                          ELSE s.amount_cents END))::bigint AS mrr_cents,
                count(*) AS subscriptions
           FROM public.subscriptions s JOIN public.tenants t ON t.id = s.tenant_id
          WHERE s.status IN ('active', 'past_due') AND t.deleted_at IS NULL
          GROUP BY s.currency ORDER BY 2 DESC, 1",
    )
    .fetch_all(pool)
    .await
}

/// `cents` of a currency written for people: `12,345.67`.
pub fn format_cents(cents: i64) -> String {
    let units = (cents / 100).abs();
    let digits = units.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{grouped}.{:02}", (cents % 100).abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_grouped_by_thousands_with_their_currency() {
        assert_eq!(format_cents(1_234_567), "12,345.67");
        assert_eq!(format_cents(5), "0.05");
        assert_eq!(format_cents(100_000_000), "1,000,000.00");
        assert_eq!(format_cents(-250), "-2.50");
    }
}
