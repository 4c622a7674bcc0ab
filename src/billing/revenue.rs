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

/// How [`mrr_by_month`] reconstructs past months, said where the chart is shown.
pub const HISTORY_METHOD: &str = "Each month's MRR is counted at its end (this month: now) with \
the method above, from what subscriptions keep: a subscription counts from its creation; a \
cancelled or suspended one until it was cancelled (or, without that date, last changed); a \
deleted tenant's until its deletion; at its current amount and cycle (past prices are not \
kept). Trials never count; purged tenants are gone from every month.";

/// MRR of one currency at the end of one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct MonthMrr {
    /// The month's first day.
    pub month: chrono::NaiveDate,
    pub currency: String,
    pub mrr_cents: i64,
}

/// MRR per currency at the end of each of the last `months` months (this month: now),
/// oldest first, as [`HISTORY_METHOD`] says; a currency without revenue in a month has no
/// row for it. This month's figures equal [`mrr`]'s.
pub async fn mrr_by_month(pool: &PgPool, months: i32) -> sqlx::Result<Vec<MonthMrr>> {
    sqlx::query_as(
        "WITH months AS (
             SELECT m::date AS month,
                    least(m + interval '1 month', now()) AS month_end
               FROM generate_series(date_trunc('month', now()) - make_interval(months => $1 - 1),
                                    date_trunc('month', now()), interval '1 month') AS m
         )
         SELECT months.month, s.currency::text,
                (sum(CASE s.billing_cycle WHEN 'annual' THEN s.amount_cents::numeric / 12
                                          ELSE s.amount_cents END))::bigint AS mrr_cents
           FROM months
           JOIN public.subscriptions s ON s.created_at < months.month_end
           JOIN public.tenants t ON t.id = s.tenant_id
          WHERE (t.deleted_at IS NULL OR t.deleted_at >= months.month_end)
            AND (s.status IN ('active', 'past_due')
                 OR (s.status IN ('cancelled', 'suspended')
                     AND coalesce(s.cancelled_at, s.updated_at) >= months.month_end))
          GROUP BY months.month, s.currency
          ORDER BY months.month, s.currency",
    )
    .bind(months)
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
