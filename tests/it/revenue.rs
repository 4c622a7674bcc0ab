//! Recurring revenue (`billing::revenue`): the 12-month MRR history against an expectation
//! computed here, month by month, from a small fixture of subscriptions.

use capliquify::billing::Tier;
use capliquify::billing::revenue::{self, MonthMrr};
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};

use crate::common::TestDb;

/// The first day of the month `k` months before this one.
fn month(k: u32) -> NaiveDate {
    let today = Utc::now().date_naive();
    NaiveDate::from_ymd_opt(today.year(), today.month(), 1)
        .unwrap()
        .checked_sub_months(Months::new(k))
        .unwrap()
}

/// Noon of the 15th of the month `k` months ago: far from any month's edge, whatever the
/// database's time zone.
fn mid(k: u32) -> DateTime<Utc> {
    month(k)
        .with_day(15)
        .unwrap()
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc()
}

struct Subscription {
    slug: &'static str,
    cycle: &'static str,
    amount_cents: i64,
    currency: &'static str,
    status: &'static str,
    created: u32,
    cancelled: Option<u32>,
    deleted: Option<u32>,
}

impl Subscription {
    /// Whether it counts at the end of the month `k` months ago, by the stated method: from
    /// its creation, until its cancellation or its tenant's deletion, never as a trial.
    fn counts_in(&self, k: u32) -> bool {
        let ended = |at: Option<u32>| at.is_some_and(|at| at >= k);
        self.status != "trial"
            && self.created >= k
            && !ended(self.cancelled)
            && !ended(self.deleted)
    }

    /// Its monthly amount in twelfths of a cent (annual plans ÷ 12, exactly).
    fn twelfths(&self) -> i64 {
        match self.cycle {
            "annual" => self.amount_cents,
            _ => self.amount_cents * 12,
        }
    }
}

fn fixture() -> Vec<Subscription> {
    let s = |slug, cycle, amount_cents, currency, status, created| Subscription {
        slug,
        cycle,
        amount_cents,
        currency,
        status,
        created,
        cancelled: None,
        deleted: None,
    };
    vec![
        // Older than the chart: every month.
        s("rev-old", "monthly", 10_000, "USD", "active", 14),
        // Annual: 1,200.00 a year is 100.00 a month, from five months ago.
        s("rev-annual", "annual", 120_000, "USD", "active", 5),
        // Cancelled three months ago: counts from eight months ago to four.
        Subscription {
            cancelled: Some(3),
            ..s("rev-gone", "monthly", 5_000, "EUR", "cancelled", 8)
        },
        // A trial never counts.
        s("rev-trial", "monthly", 7_000, "USD", "trial", 10),
        // Its tenant was deleted two months ago: counts from six months ago to three.
        Subscription {
            deleted: Some(2),
            ..s("rev-deleted", "monthly", 3_000, "USD", "active", 6)
        },
        // Annual 10.00: 0.8333… a month, the sum rounded once.
        s("rev-small", "annual", 1_000, "USD", "past_due", 1),
    ]
}

#[tokio::test]
async fn twelve_months_of_mrr_match_the_fixture_computed_month_by_month() {
    let db = TestDb::new().await;
    let fixture = fixture();
    for sub in &fixture {
        let tenant = db.tenant(sub.slug, Tier::Professional).await;
        sqlx::query(
            "INSERT INTO public.subscriptions
                    (tenant_id, billing_cycle, amount_cents, currency, status, created_at, cancelled_at)
             VALUES ($1, $2::public.billing_cycle, $3, $4, $5::public.subscription_status, $6, $7)",
        )
        .bind(tenant.id)
        .bind(sub.cycle)
        .bind(i32::try_from(sub.amount_cents).unwrap())
        .bind(sub.currency)
        .bind(sub.status)
        .bind(mid(sub.created))
        .bind(sub.cancelled.map(mid))
        .execute(&db.pool)
        .await
        .unwrap();
        if let Some(deleted) = sub.deleted {
            sqlx::query("UPDATE public.tenants SET deleted_at = $2 WHERE id = $1")
                .bind(tenant.id)
                .bind(mid(deleted))
                .execute(&db.pool)
                .await
                .unwrap();
        }
    }

    let mut expected = Vec::new();
    for k in (0..12).rev() {
        for currency in ["EUR", "USD"] {
            let twelfths: i64 = fixture
                .iter()
                .filter(|s| s.currency == currency && s.counts_in(k))
                .map(Subscription::twelfths)
                .sum();
            if twelfths > 0 {
                expected.push(MonthMrr {
                    month: month(k),
                    currency: currency.to_owned(),
                    // Rounded half up, as PostgreSQL rounds numeric to bigint.
                    mrr_cents: (twelfths + 6) / 12,
                });
            }
        }
    }
    let history = revenue::mrr_by_month(&db.pool, 12).await.unwrap();
    assert_eq!(history, expected);
    // Spot checks of the expectation itself: this month 100 + 100 + 0.83 USD; five months
    // ago also the deleted tenant's 30 and the cancelled EUR 50.
    let at = |k: u32, currency: &str| {
        expected
            .iter()
            .find(|m| m.month == month(k) && m.currency == currency)
            .map(|m| m.mrr_cents)
    };
    assert_eq!(at(0, "USD"), Some(20_083));
    assert_eq!(at(5, "USD"), Some(23_000));
    assert_eq!(at(5, "EUR"), Some(5_000));
    assert_eq!(at(3, "EUR"), None);
    assert_eq!(at(11, "USD"), Some(10_000));

    // This month's figures are the MRR the overview shows.
    let now = revenue::mrr(&db.pool).await.unwrap();
    let this_month: Vec<(String, i64)> = history
        .iter()
        .filter(|m| m.month == month(0))
        .map(|m| (m.currency.clone(), m.mrr_cents))
        .collect();
    let current: Vec<(String, i64)> = now
        .iter()
        .map(|m| (m.currency.clone(), m.mrr_cents))
        .collect();
    assert_eq!(this_month, current);
}
