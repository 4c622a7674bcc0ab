//! The cash-flow projection: forecast revenue collected DSO days later, forecast cost of
//! goods sold paid DPO days later, and the cash balance they leave period by period from
//! the latest stored cash. The first period that ends below zero is where the runway ends.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

/// What a projection is made from. Flows are per period, oldest first; `*_history` are the
/// complete periods before the first forecast period (as many as the longest lag needs).
#[derive(Debug, Clone)]
pub struct Inputs {
    pub opening_cash: Decimal,
    pub dso_days: Decimal,
    pub dpo_days: Decimal,
    /// Days of each forecast period.
    pub period_days: Vec<i64>,
    pub revenue_history: Vec<Decimal>,
    pub cogs_history: Vec<Decimal>,
    pub revenue_forecast: Vec<Decimal>,
    pub cogs_forecast: Vec<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    pub receipts: Decimal,
    pub payments: Decimal,
    pub net: Decimal,
    /// Cash at the period's end.
    pub balance: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Projection {
    pub periods: Vec<Period>,
    /// Index of the first period ending below zero.
    pub runway_end: Option<usize>,
}

/// The flow `lag` periods before forecast period `t` (fractional lags interpolate between
/// the two whole periods around them); before the history starts, nothing.
fn lagged(history: &[Decimal], forecast: &[Decimal], t: usize, lag: Decimal) -> Decimal {
    let whole = lag.trunc();
    let fraction = lag - whole;
    let whole = usize::try_from(whole).unwrap_or(usize::MAX);
    let at = |back: usize| -> Decimal {
        // Position in history ++ forecast of period t − back.
        let position = (history.len() + t).checked_sub(back);
        match position {
            Some(p) if p < history.len() => history[p],
            Some(p) => forecast.get(p - history.len()).copied().unwrap_or_default(),
            None => Decimal::ZERO,
        }
    };
    at(whole) * (Decimal::ONE - fraction) + at(whole.saturating_add(1)) * fraction
}

pub fn project(inputs: &Inputs) -> Projection {
    let mut balance = inputs.opening_cash;
    let mut periods = Vec::with_capacity(inputs.revenue_forecast.len());
    let mut runway_end = None;
    for t in 0..inputs.revenue_forecast.len() {
        let days = Decimal::from(inputs.period_days.get(t).copied().unwrap_or(30).max(1));
        let receipts = lagged(
            &inputs.revenue_history,
            &inputs.revenue_forecast,
            t,
            (inputs.dso_days / days).max(Decimal::ZERO),
        );
        let payments = lagged(
            &inputs.cogs_history,
            &inputs.cogs_forecast,
            t,
            (inputs.dpo_days / days).max(Decimal::ZERO),
        );
        let round =
            |v: Decimal| v.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        let (receipts, payments) = (round(receipts), round(payments));
        let net = receipts - payments;
        balance += net;
        if balance < Decimal::ZERO && runway_end.is_none() {
            runway_end = Some(t);
        }
        periods.push(Period {
            receipts,
            payments,
            net,
            balance,
        });
    }
    Projection {
        periods,
        runway_end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: i64) -> Decimal {
        Decimal::from(v)
    }

    #[test]
    fn receipts_and_payments_follow_revenue_and_cogs_by_dso_and_dpo() {
        let inputs = Inputs {
            opening_cash: d(1000),
            // One period (30 days) to collect, half a period to pay.
            dso_days: d(30),
            dpo_days: d(15),
            period_days: vec![30; 4],
            revenue_history: vec![d(100), d(200)],
            cogs_history: vec![d(80), d(160)],
            revenue_forecast: vec![d(300), d(400), d(500), d(600)],
            cogs_forecast: vec![d(900), d(900), d(900), d(900)],
        };
        let p = project(&inputs);
        // Receipts: revenue one period earlier: 200, 300, 400, 500.
        let receipts: Vec<_> = p.periods.iter().map(|x| x.receipts).collect();
        assert_eq!(receipts, [d(200), d(300), d(400), d(500)]);
        // Payments: half this period's COGS and half the previous one's.
        let payments: Vec<_> = p.periods.iter().map(|x| x.payments).collect();
        assert_eq!(payments, [d(530), d(900), d(900), d(900)]);
        // 1000 − 330 = 670; − 600 = 70; − 500 = −430 (runway ends in the third period).
        assert_eq!(p.periods[2].balance, d(-430));
        assert_eq!(p.runway_end, Some(2));
    }

    #[test]
    fn a_business_that_collects_more_than_it_pays_has_no_runway_end() {
        let inputs = Inputs {
            opening_cash: d(0),
            dso_days: d(0),
            dpo_days: d(0),
            period_days: vec![31, 28],
            revenue_history: vec![],
            cogs_history: vec![],
            revenue_forecast: vec![d(10), d(10)],
            cogs_forecast: vec![d(4), d(4)],
        };
        let p = project(&inputs);
        assert_eq!(p.periods[1].balance, d(12));
        assert_eq!(p.runway_end, None);
    }
}
