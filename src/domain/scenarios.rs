//! What-if scenarios: a scenario's `parameters` applied to a baseline period's metrics.
//!
//! The projected balances are rebuilt from days outstanding — AR = DSO / days × revenue,
//! AP = DPO / days × COGS, inventory = DIO / days × COGS — and the projected figures go
//! through the same [`working_capital::compute`] as stored periods, so a ratio has one
//! implementation. The formulas and the price elasticity are in `docs/domain.md`.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use serde_json::Value;

use super::working_capital::{self, MetricInputs, Metrics, Period, PeriodType, StoredMetric};

/// Demand moves by this much per unit of price change: a 10 % price rise loses 12 % of
/// volume. A common middle estimate for industrial goods (elastic but not strongly); it is
/// an assumption every result states.
pub const PRICE_ELASTICITY: Decimal = Decimal::from_parts(12, 0, 0, true, 1);

/// A parameter or baseline the scenario cannot be run with; `field` names it
/// (`parameters.dso_days`, `company_id`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScenarioError {
    pub field: String,
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> ScenarioError {
    ScenarioError {
        field: field.into(),
        message: message.into(),
    }
}

/// A change in days outstanding of inventory: absolute or relative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DioChange {
    Days(Decimal),
    Pct(Decimal),
}

/// The parameters a scenario may hold; every one is optional (absent = no change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Parameters {
    /// Revenue change, % (price and volume together), −100 to 1000.
    pub revenue_pct: Decimal,
    /// Unit-cost change, % of COGS, −100 to 1000.
    pub cogs_pct: Decimal,
    /// Price change, %, −100 to 1000; volume follows at [`PRICE_ELASTICITY`].
    pub price_pct: Decimal,
    /// Volume change, % of both revenue and COGS, −100 to 1000.
    pub demand_pct: Decimal,
    /// Days added to DSO, −365 to 365.
    pub dso_days: Decimal,
    /// Days added to DPO, −365 to 365.
    pub dpo_days: Decimal,
    /// Days added to DIO (−365 to 365) or % change of DIO (−100 to 1000); not both.
    pub dio: Option<DioChange>,
    /// A one-off cash change (money, may be negative).
    pub cash_delta: Decimal,
    /// Days over which the margin change accrues to cash, 1 to 1825; default the
    /// baseline period's length.
    pub horizon_days: Option<i64>,
}

/// Parameter name → (lowest, highest) allowed value.
const RANGES: [(&str, i64, i64); 9] = [
    ("revenue_pct", -100, 1000),
    ("cogs_pct", -100, 1000),
    ("price_pct", -100, 1000),
    ("demand_pct", -100, 1000),
    ("dso_days", -365, 365),
    ("dpo_days", -365, 365),
    ("dio_days", -365, 365),
    ("dio_pct", -100, 1000),
    ("horizon_days", 1, 1825),
];

/// Names a scenario's `parameters` may use.
pub const PARAMETER_NAMES: [&str; 10] = [
    "revenue_pct",
    "cogs_pct",
    "price_pct",
    "demand_pct",
    "dso_days",
    "dpo_days",
    "dio_days",
    "dio_pct",
    "cash_delta",
    "horizon_days",
];

fn number(field: &str, value: &Value) -> Result<Decimal, ScenarioError> {
    let parsed = match value {
        Value::Number(n) => {
            Decimal::from_str(&n.to_string()).or_else(|_| Decimal::from_scientific(&n.to_string()))
        }
        Value::String(s) => Decimal::from_str(s.trim()),
        _ => {
            return Err(error(field, format!("{field} must be a number")));
        }
    };
    let value = parsed.map_err(|_| error(field, format!("{field} must be a number")))?;
    if value.normalize().scale() > 6 {
        return Err(error(
            field,
            format!("{field} must have at most 6 decimals"),
        ));
    }
    Ok(value)
}

impl Parameters {
    /// Reads a scenario's stored `parameters` object, refusing unknown names and values out
    /// of range (each error names `parameters.<name>`).
    pub fn parse(value: &Value) -> Result<Self, ScenarioError> {
        let object = value
            .as_object()
            .ok_or_else(|| error("parameters", "parameters must be a JSON object"))?;
        let mut p = Self::default();
        let mut dio_days = None;
        let mut dio_pct = None;
        for (name, raw) in object {
            let field = format!("parameters.{name}");
            if !PARAMETER_NAMES.contains(&name.as_str()) {
                return Err(error(
                    field,
                    format!(
                        "unknown parameter {name:?}; allowed: {}",
                        PARAMETER_NAMES.join(", ")
                    ),
                ));
            }
            if raw.is_null() {
                continue;
            }
            let value = number(&field, raw)?;
            if let Some((_, lo, hi)) = RANGES.iter().find(|(n, ..)| *n == name)
                && (value < Decimal::from(*lo) || value > Decimal::from(*hi))
            {
                return Err(error(
                    field,
                    format!("{name} must be from {lo} to {hi}, not {value}"),
                ));
            }
            match name.as_str() {
                "revenue_pct" => p.revenue_pct = value,
                "cogs_pct" => p.cogs_pct = value,
                "price_pct" => p.price_pct = value,
                "demand_pct" => p.demand_pct = value,
                "dso_days" => p.dso_days = value,
                "dpo_days" => p.dpo_days = value,
                "dio_days" => dio_days = Some(value),
                "dio_pct" => dio_pct = Some(value),
                "cash_delta" => {
                    if value.normalize().scale() > 2
                        || value.abs() >= Decimal::from(10_000_000_000_000_i64)
                    {
                        return Err(error(
                            field,
                            "cash_delta must be an amount with at most 2 decimals and 13 digits",
                        ));
                    }
                    p.cash_delta = value;
                }
                _ => {
                    if !value.fract().is_zero() {
                        return Err(error(field, "horizon_days must be a whole number"));
                    }
                    p.horizon_days = i64::try_from(value).ok();
                }
            }
        }
        p.dio = match (dio_days, dio_pct) {
            (Some(_), Some(_)) => {
                return Err(error(
                    "parameters.dio_pct",
                    "give dio_days or dio_pct, not both",
                ));
            }
            (Some(days), None) => Some(DioChange::Days(days)),
            (None, Some(pct)) => Some(DioChange::Pct(pct)),
            (None, None) => None,
        };
        Ok(p)
    }
}

/// The period a scenario starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub period: Period,
    pub revenue: Decimal,
    pub cogs: Decimal,
    pub cash: Decimal,
    pub accounts_receivable: Decimal,
    pub inventory: Decimal,
    pub accounts_payable: Decimal,
    pub short_term_debt: Decimal,
    /// Average fall of cash per day over the last three periods before the baseline
    /// (negative: cash grew); `None` without an earlier period.
    pub daily_burn: Option<Decimal>,
}

impl Baseline {
    /// The baseline of a stored period; `earlier_cash` as for
    /// [`working_capital::MetricInputs::earlier_cash`].
    pub fn from_stored(
        row: &StoredMetric,
        earlier_cash: &[(NaiveDate, Decimal)],
    ) -> Result<Self, ScenarioError> {
        let kind = PeriodType::parse(&row.period_type)
            .ok_or_else(|| error("company_id", "the baseline period has an unknown type"))?;
        let period = Period::ending(kind, row.period_date)
            .map_err(|e| error("period_date", e.to_string()))?;
        let need = |name: &str, value: Option<Decimal>| {
            value.ok_or_else(|| {
                error(
                    "company_id",
                    format!(
                        "the baseline period {} has no {name}; compute it with POST /api/v1/working-capital-metrics/compute",
                        row.period_date
                    ),
                )
            })
        };
        let cash = need("cash", row.cash)?;
        let daily_burn = earlier_cash
            .iter()
            .filter(|(date, _)| *date < period.end)
            .take(3)
            .last()
            .map(|(from, then)| {
                let days = Decimal::from((period.end - *from).num_days().max(1));
                (*then - cash) / days
            });
        Ok(Self {
            period,
            revenue: need("revenue", row.revenue)?,
            cogs: need("cost_of_goods_sold", row.cost_of_goods_sold)?,
            cash,
            accounts_receivable: need("accounts_receivable", row.accounts_receivable)?,
            inventory: need("inventory", row.inventory)?,
            accounts_payable: need("accounts_payable", row.accounts_payable)?,
            short_term_debt: need("short_term_debt", row.short_term_debt)?,
            daily_burn,
        })
    }
}

/// One period's figures, baseline or projected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    pub revenue: Decimal,
    pub cost_of_goods_sold: Decimal,
    pub cash: Decimal,
    pub accounts_receivable: Decimal,
    pub inventory: Decimal,
    pub accounts_payable: Decimal,
    pub short_term_debt: Decimal,
    pub working_capital: Decimal,
    pub current_ratio: Option<Decimal>,
    pub quick_ratio: Option<Decimal>,
    pub days_sales_outstanding: Option<Decimal>,
    pub days_inventory_outstanding: Option<Decimal>,
    pub days_payables_outstanding: Option<Decimal>,
    pub cash_conversion_cycle: Option<Decimal>,
    pub cash_runway_days: Option<i64>,
}

/// A figure's change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Impact {
    pub current: Option<Decimal>,
    pub projected: Option<Decimal>,
    pub delta: Option<Decimal>,
    /// Null when the current value is zero or either side is unavailable.
    pub delta_pct: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunwayChange {
    pub baseline_days: Option<i64>,
    pub projected_days: Option<i64>,
    pub change_days: Option<i64>,
}

/// What a run writes to `scenarios.results`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub baseline_period: Period,
    pub baseline: Figures,
    pub projected: Figures,
    pub impact: BTreeMap<&'static str, Impact>,
    /// Net working capital (AR + inventory − AP) freed by the scenario: positive released
    /// into cash, negative absorbed from it.
    pub cash_released: Decimal,
    /// The change in gross margin (revenue − COGS) accrued over the horizon.
    pub margin_change_over_horizon: Decimal,
    pub horizon_days: i64,
    pub runway: RunwayChange,
    pub parameters: Parameters,
    pub assumptions: Vec<String>,
}

fn overflow() -> ScenarioError {
    error("parameters", "the projection is too large to compute")
}

fn mul(a: Decimal, b: Decimal) -> Result<Decimal, ScenarioError> {
    a.checked_mul(b).ok_or_else(overflow)
}

fn div(a: Decimal, b: Decimal) -> Result<Decimal, ScenarioError> {
    a.checked_div(b).ok_or_else(overflow)
}

fn money(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

fn pct(value: Decimal) -> Decimal {
    Decimal::ONE + value / Decimal::ONE_HUNDRED
}

/// Runway in whole days of `cash` at `daily_burn`; none when cash is not falling.
fn runway_days(cash: Decimal, daily_burn: Option<Decimal>) -> Option<i64> {
    let burn = daily_burn.filter(|b| *b > Decimal::ZERO)?;
    if cash <= Decimal::ZERO {
        return Some(0);
    }
    // A burn close to zero would overflow the quotient: no runway end in sight then.
    i64::try_from(cash.checked_div(burn)?.floor()).ok()
}

/// `balances` are cash, receivables, inventory, payables and short-term debt.
fn metrics(
    period: Period,
    (revenue, cogs): (Decimal, Decimal),
    balances: [Decimal; 5],
) -> Result<Metrics, ScenarioError> {
    let [cash, receivable, inventory, payable, debt] = balances;
    working_capital::compute(&MetricInputs {
        period,
        revenue,
        cogs,
        inventory,
        cash,
        accounts_receivable: receivable,
        accounts_payable: payable,
        short_term_debt: debt,
        earlier_cash: Vec::new(),
    })
    .map_err(|e| error("parameters", e.message))
}

fn figures(
    m: &Metrics,
    flows: (Decimal, Decimal),
    balances: [Decimal; 5],
    runway: Option<i64>,
) -> Figures {
    let [cash, receivable, inventory, payable, debt] = balances;
    Figures {
        revenue: flows.0,
        cost_of_goods_sold: flows.1,
        cash,
        accounts_receivable: receivable,
        inventory,
        accounts_payable: payable,
        short_term_debt: debt,
        working_capital: m.working_capital,
        current_ratio: m.current_ratio,
        quick_ratio: m.quick_ratio,
        days_sales_outstanding: m.days_sales_outstanding,
        days_inventory_outstanding: m.days_inventory_outstanding,
        days_payables_outstanding: m.days_payables_outstanding,
        cash_conversion_cycle: m.cash_conversion_cycle,
        cash_runway_days: runway,
    }
}

/// Days outstanding of `balance` against `flow` over `days`, exact (not rounded);
/// `None` when the flow is zero.
fn days_of(
    balance: Decimal,
    flow: Decimal,
    days: Decimal,
) -> Result<Option<Decimal>, ScenarioError> {
    if flow.is_zero() {
        Ok(None)
    } else {
        div(mul(balance, days)?, flow).map(Some)
    }
}

/// Rebuilds a balance from its days outstanding; with no baseline days (a zero flow), the
/// baseline balance is held.
fn rebuild(
    days_now: Option<Decimal>,
    change: impl Fn(Decimal) -> Decimal,
    flow: Decimal,
    days: Decimal,
    held: Decimal,
) -> Result<(Decimal, bool), ScenarioError> {
    match days_now {
        Some(d) => {
            let projected = change(d).max(Decimal::ZERO);
            Ok((
                money(div(mul(projected, flow)?, days)?),
                change(d) < Decimal::ZERO,
            ))
        }
        None => Ok((held, false)),
    }
}

/// Applies `p` to `base`.
pub fn run(base: &Baseline, p: &Parameters) -> Result<Outcome, ScenarioError> {
    let days = Decimal::from(base.period.days());
    let mut assumptions = vec![
        format!(
            "baseline: the {} period {} to {} ({} days)",
            base.period.kind.as_str(),
            base.period.start,
            base.period.end,
            base.period.days()
        ),
        "AR = DSO / days × revenue, AP = DPO / days × COGS, inventory = DIO / days × COGS"
            .to_owned(),
    ];
    // Volume follows price at the stated elasticity; it cannot fall below nothing.
    let price_volume = pct(mul(PRICE_ELASTICITY, p.price_pct)?).max(Decimal::ZERO);
    if !p.price_pct.is_zero() {
        assumptions.push(format!(
            "price elasticity of demand {PRICE_ELASTICITY}: a {}% price change moves volume by {}%",
            p.price_pct,
            money((price_volume - Decimal::ONE) * Decimal::ONE_HUNDRED)
        ));
    }
    let volume = mul(pct(p.demand_pct), price_volume)?;
    let revenue = money(mul(
        mul(base.revenue, pct(p.revenue_pct))?,
        mul(volume, pct(p.price_pct))?,
    )?);
    let cogs = money(mul(mul(base.cogs, pct(p.cogs_pct))?, volume)?);

    let dso = days_of(base.accounts_receivable, base.revenue, days)?;
    let dpo = days_of(base.accounts_payable, base.cogs, days)?;
    let dio = days_of(base.inventory, base.cogs, days)?;
    let (receivable, dso_clamped) = rebuild(
        dso,
        |d| d + p.dso_days,
        revenue,
        days,
        base.accounts_receivable,
    )?;
    let (payable, dpo_clamped) =
        rebuild(dpo, |d| d + p.dpo_days, cogs, days, base.accounts_payable)?;
    let dio_change = |d: Decimal| match p.dio {
        Some(DioChange::Days(x)) => d + x,
        Some(DioChange::Pct(x)) => d * pct(x),
        None => d,
    };
    let (inventory, dio_clamped) = rebuild(dio, dio_change, cogs, days, base.inventory)?;
    for (clamped, name) in [
        (dso_clamped, "DSO"),
        (dpo_clamped, "DPO"),
        (dio_clamped, "DIO"),
    ] {
        if clamped {
            assumptions.push(format!("{name} would fall below zero; held at 0 days"));
        }
    }
    if dso.is_none() {
        assumptions.push("baseline revenue is zero: receivables held at the baseline".to_owned());
    }
    if dpo.is_none() {
        assumptions
            .push("baseline COGS is zero: payables and inventory held at the baseline".to_owned());
    }

    let horizon = p.horizon_days.unwrap_or(base.period.days());
    let cash_released = money(
        (base.accounts_receivable + base.inventory - base.accounts_payable)
            - (receivable + inventory - payable),
    );
    let margin_change = (revenue - cogs) - (base.revenue - base.cogs);
    let margin_over_horizon = money(div(mul(margin_change, Decimal::from(horizon))?, days)?);
    let cash = money(base.cash + p.cash_delta + cash_released + margin_over_horizon);
    assumptions.push(format!(
        "projected cash = baseline cash + cash_delta + working capital released + margin change over {horizon} days"
    ));

    let baseline_runway = runway_days(base.cash, base.daily_burn);
    let projected_burn = match base.daily_burn {
        Some(burn) => Some(burn - div(margin_change, days)?),
        None => {
            assumptions.push(
                "no stored period before the baseline: the cash burn, and so the runway, is unknown"
                    .to_owned(),
            );
            None
        }
    };
    let projected_runway = runway_days(cash, projected_burn);

    let base_flows = (base.revenue, base.cogs);
    let base_balances = [
        base.cash,
        base.accounts_receivable,
        base.inventory,
        base.accounts_payable,
        base.short_term_debt,
    ];
    let flows = (revenue, cogs);
    let balances = [cash, receivable, inventory, payable, base.short_term_debt];
    let baseline = figures(
        &metrics(base.period, base_flows, base_balances)?,
        base_flows,
        base_balances,
        baseline_runway,
    );
    let projected = figures(
        &metrics(base.period, flows, balances)?,
        flows,
        balances,
        projected_runway,
    );
    Ok(Outcome {
        baseline_period: base.period,
        impact: impacts(&baseline, &projected),
        baseline,
        projected,
        cash_released,
        margin_change_over_horizon: margin_over_horizon,
        horizon_days: horizon,
        runway: RunwayChange {
            baseline_days: baseline_runway,
            projected_days: projected_runway,
            change_days: baseline_runway.zip(projected_runway).map(|(b, p)| p - b),
        },
        parameters: p.clone(),
        assumptions,
    })
}

fn impacts(b: &Figures, p: &Figures) -> BTreeMap<&'static str, Impact> {
    let pairs: [(&'static str, Option<Decimal>, Option<Decimal>); 15] = [
        ("revenue", Some(b.revenue), Some(p.revenue)),
        (
            "cost_of_goods_sold",
            Some(b.cost_of_goods_sold),
            Some(p.cost_of_goods_sold),
        ),
        ("cash", Some(b.cash), Some(p.cash)),
        (
            "accounts_receivable",
            Some(b.accounts_receivable),
            Some(p.accounts_receivable),
        ),
        ("inventory", Some(b.inventory), Some(p.inventory)),
        (
            "accounts_payable",
            Some(b.accounts_payable),
            Some(p.accounts_payable),
        ),
        (
            "short_term_debt",
            Some(b.short_term_debt),
            Some(p.short_term_debt),
        ),
        (
            "working_capital",
            Some(b.working_capital),
            Some(p.working_capital),
        ),
        ("current_ratio", b.current_ratio, p.current_ratio),
        ("quick_ratio", b.quick_ratio, p.quick_ratio),
        (
            "days_sales_outstanding",
            b.days_sales_outstanding,
            p.days_sales_outstanding,
        ),
        (
            "days_inventory_outstanding",
            b.days_inventory_outstanding,
            p.days_inventory_outstanding,
        ),
        (
            "days_payables_outstanding",
            b.days_payables_outstanding,
            p.days_payables_outstanding,
        ),
        (
            "cash_conversion_cycle",
            b.cash_conversion_cycle,
            p.cash_conversion_cycle,
        ),
        (
            "cash_runway_days",
            b.cash_runway_days.map(Decimal::from),
            p.cash_runway_days.map(Decimal::from),
        ),
    ];
    pairs
        .into_iter()
        .map(|(name, current, projected)| {
            let delta = current.zip(projected).map(|(c, p)| p - c);
            let delta_pct = current
                .zip(delta)
                .filter(|(c, _)| !c.is_zero())
                .and_then(|(c, d)| d.checked_mul(Decimal::ONE_HUNDRED)?.checked_div(c.abs()))
                .map(|x| x.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero));
            (
                name,
                Impact {
                    current,
                    projected,
                    delta,
                    delta_pct,
                },
            )
        })
        .collect()
}

/// A ready scenario.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Preset {
    /// `optimistic`, `conservative` or `stress`: the path segment that creates it.
    pub key: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    /// The scenario's `parameters`.
    #[schema(value_type = Object)]
    pub parameters: Value,
}

/// The ready scenarios: optimistic, conservative, stress.
pub fn presets() -> Vec<Preset> {
    use serde_json::json;
    vec![
        Preset {
            key: "optimistic",
            name: "Optimistic",
            description: "Sales up 10 %, customers pay 5 days sooner, suppliers paid 5 days later, 10 % leaner stock",
            parameters: json!({ "revenue_pct": 10, "dso_days": -5, "dpo_days": 5, "dio_pct": -10, "horizon_days": 90 }),
        },
        Preset {
            key: "conservative",
            name: "Conservative",
            description: "Sales down 5 %, customers pay 5 days later, 5 % more stock",
            parameters: json!({ "revenue_pct": -5, "dso_days": 5, "dio_pct": 5, "horizon_days": 90 }),
        },
        Preset {
            key: "stress",
            name: "Stress",
            description: "Sales down 25 %, costs up 5 %, customers pay 20 days later, suppliers want payment 10 days sooner, 20 % more stock",
            parameters: json!({ "revenue_pct": -25, "cogs_pct": 5, "dso_days": 20, "dpo_days": -10, "dio_pct": 20, "horizon_days": 90 }),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// March 2026 (31 days): revenue 310 000, COGS 186 000, so DSO 10, DIO 20, DPO 10.
    fn base() -> Baseline {
        Baseline {
            period: Period::ending(
                PeriodType::Monthly,
                NaiveDate::from_ymd_opt(2026, 3, 31).unwrap(),
            )
            .unwrap(),
            revenue: d("310000"),
            cogs: d("186000"),
            cash: d("50000"),
            accounts_receivable: d("100000"),
            inventory: d("120000"),
            accounts_payable: d("60000"),
            short_term_debt: d("40000"),
            daily_burn: Some(d("500")),
        }
    }

    #[test]
    fn no_parameters_reproduce_the_baseline() {
        let out = run(&base(), &Parameters::default()).unwrap();
        assert_eq!(out.projected, out.baseline);
        assert_eq!(out.cash_released, Decimal::ZERO);
        assert_eq!(out.baseline.days_sales_outstanding, Some(d("10")));
        // 50 000 / 500 a day
        assert_eq!(out.runway.baseline_days, Some(100));
    }

    #[test]
    fn collecting_ten_days_sooner_releases_ten_days_of_revenue() {
        let p = Parameters::parse(&json!({ "dso_days": -10 })).unwrap();
        let out = run(&base(), &p).unwrap();
        // DSO 10 → 0: all 100 000 of receivables come in as cash.
        assert_eq!(out.projected.accounts_receivable, Decimal::ZERO);
        assert_eq!(out.cash_released, d("100000"));
        assert_eq!(out.projected.cash, d("150000"));
        assert_eq!(out.impact["cash"].delta, Some(d("100000")));
        assert_eq!(out.impact["cash"].delta_pct, Some(d("200")));
        // Margin unchanged, so the burn is too: 150 000 / 500.
        assert_eq!(out.runway.projected_days, Some(300));
        assert_eq!(out.runway.change_days, Some(200));
    }

    #[test]
    fn revenue_and_cost_changes_move_balances_through_days_outstanding() {
        let p = Parameters::parse(
            &json!({ "revenue_pct": 10, "cogs_pct": "-5", "dpo_days": 5, "dio_pct": 50, "horizon_days": 62 }),
        )
        .unwrap();
        let out = run(&base(), &p).unwrap();
        // By hand: revenue 341 000; COGS 176 700; AR = 10/31 × 341 000 = 110 000;
        // AP = 15/31 × 176 700 = 85 500; inventory = 30/31 × 176 700 = 171 000.
        assert_eq!(out.projected.revenue, d("341000"));
        assert_eq!(out.projected.cost_of_goods_sold, d("176700"));
        assert_eq!(out.projected.accounts_receivable, d("110000"));
        assert_eq!(out.projected.accounts_payable, d("85500"));
        assert_eq!(out.projected.inventory, d("171000"));
        // Net working capital 160 000 → 195 500: 35 500 absorbed.
        assert_eq!(out.cash_released, d("-35500"));
        // Margin 124 000 → 164 300, +40 300 a month; over 62 days: 80 600.
        assert_eq!(out.margin_change_over_horizon, d("80600"));
        assert_eq!(out.projected.cash, d("95100"));
        assert_eq!(out.projected.days_payables_outstanding, Some(d("15")));
        assert_eq!(out.projected.days_inventory_outstanding, Some(d("30")));
        // Burn 500 − 40 300/31 = −800 a day: cash grows, no runway end.
        assert_eq!(out.runway.projected_days, None);
    }

    #[test]
    fn price_changes_move_volume_at_the_stated_elasticity() {
        let p = Parameters::parse(&json!({ "price_pct": 10 })).unwrap();
        let out = run(&base(), &p).unwrap();
        // Volume × (1 − 1.2 × 0.10) = 0.88; revenue × 1.10 × 0.88; COGS × 0.88.
        assert_eq!(out.projected.revenue, d("300080"));
        assert_eq!(out.projected.cost_of_goods_sold, d("163680"));
        assert!(out.assumptions.iter().any(|a| a.contains("-1.2")));
    }

    #[test]
    fn unknown_or_out_of_range_parameters_name_the_field() {
        for (params, field) in [
            (json!({ "dso_days": -366 }), "parameters.dso_days"),
            (json!({ "revenue_pct": 1000.5 }), "parameters.revenue_pct"),
            (json!({ "horizon_days": 0 }), "parameters.horizon_days"),
            (json!({ "horizon_days": 1.5 }), "parameters.horizon_days"),
            (json!({ "growth": 1 }), "parameters.growth"),
            (json!({ "dio_days": 1, "dio_pct": 1 }), "parameters.dio_pct"),
            (json!({ "cash_delta": "1.001" }), "parameters.cash_delta"),
            (json!({ "cogs_pct": "lots" }), "parameters.cogs_pct"),
            (json!({ "cogs_pct": [1] }), "parameters.cogs_pct"),
            (json!([1]), "parameters"),
        ] {
            let err = Parameters::parse(&params).unwrap_err();
            assert_eq!(err.field, field, "{params}");
        }
    }

    #[test]
    fn every_preset_parses_and_runs() {
        for preset in presets() {
            let p = Parameters::parse(&preset.parameters).unwrap();
            run(&base(), &p).unwrap();
        }
        let stress = Parameters::parse(&presets()[2].parameters).unwrap();
        let out = run(&base(), &stress).unwrap();
        assert!(out.cash_released < Decimal::ZERO, "stress absorbs cash");
        assert!(out.runway.projected_days < out.runway.baseline_days);
    }

    #[test]
    fn a_delay_beyond_zero_days_is_held_at_zero_and_said() {
        let p = Parameters::parse(&json!({ "dpo_days": -30 })).unwrap();
        let out = run(&base(), &p).unwrap();
        assert_eq!(out.projected.accounts_payable, Decimal::ZERO);
        assert!(
            out.assumptions
                .iter()
                .any(|a| a.contains("DPO would fall below zero"))
        );
    }
}
