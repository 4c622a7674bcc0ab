//! Forecasts, working-capital metrics and scenarios: the planning records.

use super::*;

// ---------------------------------------------------------------------------------------
// Forecasts: demand, revenue and cash_flow.

/// A forecast row being made.
pub(super) struct Forecast {
    pub(super) id: Uuid,
    pub(super) company: Uuid,
    pub(super) product: Option<Uuid>,
    pub(super) date: Option<NaiveDate>,
    pub(super) kind: &'static str,
    pub(super) model_type: Option<String>,
    pub(super) predicted: Option<Decimal>,
    pub(super) lower: Option<Decimal>,
    pub(super) upper: Option<Decimal>,
    pub(super) confidence: Option<Decimal>,
    pub(super) actual: Option<Decimal>,
    pub(super) accuracy: Option<Decimal>,
    pub(super) parameters: Value,
}

/// Our row, or why the forecast cannot be one. Swapped bounds are put right (noted); a
/// predicted value outside its bounds is refused, as our table refuses it.
pub(super) fn forecast_row(f: Forecast, tally: &mut Tally) -> Option<Row> {
    let Some(predicted) = f.predicted.and_then(signed_money) else {
        tally.skip("no predicted value, or one too large");
        return None;
    };
    let Some(date) = f.date else {
        tally.skip("no forecast date");
        return None;
    };
    let (mut lower, mut upper) = (
        f.lower.and_then(signed_money),
        f.upper.and_then(signed_money),
    );
    if let (Some(l), Some(u)) = (lower, upper)
        && l > u
    {
        tally.note("lower and upper bounds swapped back");
        (lower, upper) = (Some(u), Some(l));
    }
    if lower.is_some_and(|l| l > predicted) || upper.is_some_and(|u| predicted > u) {
        tally.skip("the predicted value lies outside its bounds");
        return None;
    }
    let confidence = f.confidence.and_then(|c| percent(c, "confidence", tally));
    let accuracy = f.accuracy.and_then(|a| {
        let v = numeric(a * Decimal::ONE_HUNDRED, 5, 2);
        if v.is_none() {
            tally.note("accuracy out of range dropped");
        }
        v
    });
    let model_type = f.model_type.map(|m| cut(m.to_lowercase(), 50));
    Some(Row {
        id: f.id,
        cells: vec![
            ("company_id", Cell::Uuid(Some(f.company))),
            ("product_id", Cell::Uuid(f.product)),
            ("forecast_date", Cell::Date(Some(date))),
            ("forecast_type", Cell::Text(Some(f.kind.to_owned()))),
            ("model_type", Cell::Text(model_type)),
            ("predicted_value", Cell::Dec(Some(predicted))),
            ("lower_bound", Cell::Dec(lower)),
            ("upper_bound", Cell::Dec(upper)),
            ("confidence_level", Cell::Dec(confidence)),
            ("actual_value", Cell::Dec(f.actual.and_then(signed_money))),
            ("accuracy_percentage", Cell::Dec(accuracy)),
            ("model_parameters", Cell::Json(Some(f.parameters))),
        ],
    })
}

/// A 0–1 share as a percent (×100); a value above 1 is taken to be a percent already
/// (a heuristic, noted); one outside 0–100 is dropped.
pub(super) fn percent(value: Decimal, what: &str, tally: &mut Tally) -> Option<Decimal> {
    let v = if value <= Decimal::ONE {
        value * Decimal::ONE_HUNDRED
    } else {
        tally.note(format!("{what} above 1 taken as a percent"));
        value
    };
    let v = v.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    if v < Decimal::ZERO || v > Decimal::ONE_HUNDRED {
        tally.note(format!("{what} outside 0–100 dropped"));
        return None;
    }
    Some(v)
}

pub(super) async fn forecasts(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    if cx.snap.has("forecasts", &["predicted_demand"]) {
        let src = cx
            .snap
            .rows(
                "SELECT id::text, 'entity:' || entity_id AS company, product_id::text,
                        sales_channel_id::text, forecast_date, forecast_period::text,
                        forecast_horizon_days::int4, predicted_demand::numeric,
                        demand_lower_bound::numeric, demand_upper_bound::numeric,
                        confidence_score::numeric, predicted_revenue::numeric,
                        revenue_lower_bound::numeric, revenue_upper_bound::numeric,
                        seasonal_factor::numeric, trend_factor::numeric, promotional_factor::numeric,
                        model_type::text, model_version::text, model_accuracy_score::numeric,
                        status::text, is_approved, actual_demand::numeric, actual_revenue::numeric,
                        forecast_accuracy::numeric, series_id::text
                   FROM forecasts ORDER BY forecast_date, id"
                    .into(),
            )
            .await?;
        let mut demand = (Tally::default(), Vec::new());
        let mut revenue = (Tally::default(), Vec::new(), 0usize);
        for r in &src {
            let has_revenue = dec(r, "predicted_revenue")?.is_some();
            if has_revenue {
                revenue.2 += 1;
            }
            let product = text(r, "product_id")?.and_then(|p| cx.products.get(&p).cloned());
            let company = cx.company(text(r, "company")?);
            let (product, company) = match (product, company) {
                (Some(p), Ok(c)) => (p, c),
                (None, _) | (_, Err(_)) => {
                    let why = "its product or company was not imported";
                    demand.0.skip(why);
                    if has_revenue {
                        revenue.0.skip(why);
                    }
                    continue;
                }
            };
            let source_id = text(r, "id")?.unwrap_or_default();
            let parameters = json!({
                "source": "sentia.forecasts", "sales_channel_id": text(r, "sales_channel_id")?,
                "period": text(r, "forecast_period")?, "horizon_days": int(r, "forecast_horizon_days")?,
                "seasonal_factor": dec(r, "seasonal_factor")?, "trend_factor": dec(r, "trend_factor")?,
                "promotional_factor": dec(r, "promotional_factor")?,
                "model_version": text(r, "model_version")?,
                "model_accuracy_score": dec(r, "model_accuracy_score")?,
                "status": text(r, "status")?, "is_approved": get::<bool>(r, "is_approved")?,
                "series_id": text(r, "series_id")?,
            });
            let base = |kind: &'static str, predicted, lower, upper, actual| Forecast {
                id: derived(&["forecasts", &source_id, kind]),
                company: company.id,
                product: Some(product.id),
                date: None,
                kind,
                model_type: None,
                predicted,
                lower,
                upper,
                confidence: None,
                actual,
                accuracy: None,
                parameters: parameters.clone(),
            };
            let date = get::<NaiveDate>(r, "forecast_date")?;
            let confidence = dec(r, "confidence_score")?;
            let model_type = text(r, "model_type")?;
            let mut f = base(
                "demand",
                dec(r, "predicted_demand")?,
                dec(r, "demand_lower_bound")?,
                dec(r, "demand_upper_bound")?,
                dec(r, "actual_demand")?,
            );
            f.date = date;
            f.confidence = confidence;
            f.model_type = model_type.clone();
            f.accuracy = dec(r, "forecast_accuracy")?;
            if let Some(row) = forecast_row(f, &mut demand.0) {
                demand.1.push(row);
            }
            if has_revenue {
                let mut f = base(
                    "revenue",
                    dec(r, "predicted_revenue")?,
                    dec(r, "revenue_lower_bound")?,
                    dec(r, "revenue_upper_bound")?,
                    dec(r, "actual_revenue")?,
                );
                f.date = date;
                f.confidence = confidence;
                f.model_type = model_type;
                if let Some(row) = forecast_row(f, &mut revenue.0) {
                    revenue.1.push(row);
                }
            }
        }
        let read = src.len();
        cx.push(
            "forecasts",
            "forecasts: demand",
            Generation::A,
            read,
            demand.0,
            Rows::Table("forecasts", demand.1),
        );
        cx.push(
            "forecasts",
            "forecasts: revenue",
            Generation::A,
            revenue.2,
            revenue.0,
            Rows::Table("forecasts", revenue.1),
        );
    } else if cx.snap.has("demand_forecasts", &["forecasted_demand"]) {
        let src = cx
            .snap
            .rows(
                "SELECT id::text, product_id::text, (forecast_date AT TIME ZONE 'UTC')::date AS forecast_date,
                        period::text, horizon::int4, baseline_demand::int4,
                        seasonal_factor::numeric, trend_factor::numeric,
                        forecasted_demand::numeric, lower_bound::numeric, upper_bound::numeric,
                        confidence::numeric, model_type::text, model_version::text,
                        accuracy::numeric, ai_adjustment::numeric, ai_rationale::text,
                        (expires_at AT TIME ZONE 'UTC') AS expires_at
                   FROM demand_forecasts ORDER BY forecast_date, id"
                    .into(),
            )
            .await?;
        let mut tally = Tally::default();
        let mut rows = Vec::new();
        for r in &src {
            let Some(product) = text(r, "product_id")?.and_then(|p| cx.products.get(&p).cloned())
            else {
                tally.skip("its product was not imported");
                continue;
            };
            let source_id = text(r, "id")?.unwrap_or_default();
            let f = Forecast {
                id: uuid_of("demand_forecasts", &source_id),
                company: product.company.id,
                product: Some(product.id),
                date: get::<NaiveDate>(r, "forecast_date")?,
                kind: "demand",
                model_type: text(r, "model_type")?,
                predicted: dec(r, "forecasted_demand")?,
                lower: dec(r, "lower_bound")?,
                upper: dec(r, "upper_bound")?,
                confidence: dec(r, "confidence")?,
                actual: None,
                accuracy: None,
                parameters: json!({
                    "source": "sentia.demand_forecasts", "period": text(r, "period")?,
                    "horizon": int(r, "horizon")?, "baseline_demand": int(r, "baseline_demand")?,
                    "seasonal_factor": dec(r, "seasonal_factor")?, "trend_factor": dec(r, "trend_factor")?,
                    "model_version": text(r, "model_version")?, "accuracy": dec(r, "accuracy")?,
                    "ai_adjustment": dec(r, "ai_adjustment")?, "ai_rationale": text(r, "ai_rationale")?,
                    "expires_at": get::<DateTime<Utc>>(r, "expires_at")?,
                }),
            };
            if let Some(row) = forecast_row(f, &mut tally) {
                rows.push(row);
            }
        }
        cx.push(
            "forecasts",
            "demand_forecasts",
            Generation::B,
            src.len(),
            tally,
            Rows::Table("forecasts", rows),
        );
    } else {
        cx.missing("forecasts");
        cx.missing("demand_forecasts");
    }

    // Cash flow: B cash_flow_forecasts (closing balance), A wc_projections (ending cash).
    let (source, generation, sql) = if cx.snap.has("cash_flow_forecasts", &["closing_balance"]) {
        (
            "cash_flow_forecasts",
            Generation::B,
            "SELECT c.id::text, 'org:' || w.organization_id AS company,
                    (c.forecast_date AT TIME ZONE 'UTC')::date AS forecast_date,
                    c.closing_balance::numeric AS predicted, c.confidence::numeric,
                    NULL::text AS model, jsonb_build_object(
                      'source', 'sentia.cash_flow_forecasts', 'model_version', c.model_version,
                      'working_capital_id', c.working_capital_id,
                      'horizon', c.horizon, 'opening_balance', c.opening_balance,
                      'cash_inflows', c.cash_inflows, 'cash_outflows', c.cash_outflows,
                      'sales_receipts', c.sales_receipts, 'supplier_payments', c.supplier_payments,
                      'payroll_expenses', c.payroll_expenses, 'overhead_expenses', c.overhead_expenses,
                      'capital_expenses', c.capital_expenses, 'cash_runway', c.cash_runway,
                      'burn_rate', c.burn_rate, 'assumptions', c.assumptions::jsonb) AS parameters
               FROM cash_flow_forecasts c LEFT JOIN working_capital w ON w.id = c.working_capital_id
              ORDER BY c.forecast_date, c.id",
        )
    } else if cx.snap.has("wc_projections", &["ending_cash"]) {
        (
            "wc_projections",
            Generation::A,
            "SELECT id::text, NULL::text AS company, month AS forecast_date,
                    ending_cash::numeric AS predicted, NULL::numeric AS confidence,
                    NULL::text AS model, jsonb_build_object(
                      'source', 'sentia.wc_projections', 'run_id', run_id, 'scenario', scenario,
                      'cash_in', cash_in, 'cash_out', cash_out, 'net_change', net_change,
                      'currency_code', currency_code) AS parameters
               FROM wc_projections ORDER BY month, id",
        )
    } else {
        cx.missing("cash_flow_forecasts");
        cx.missing("wc_projections");
        return Ok(());
    };
    let src = cx.snap.rows(sql.into()).await?;
    let mut tally = Tally::default();
    let mut rows = Vec::new();
    for r in &src {
        let company = match cx.company(text(r, "company")?) {
            Ok(c) => c,
            Err(why) => {
                tally.skip(why);
                continue;
            }
        };
        let source_id = text(r, "id")?.unwrap_or_default();
        let f = Forecast {
            id: uuid_of(source, &source_id),
            company: company.id,
            product: None,
            date: get::<NaiveDate>(r, "forecast_date")?,
            kind: "cash_flow",
            model_type: text(r, "model")?,
            predicted: dec(r, "predicted")?,
            lower: None,
            upper: None,
            confidence: dec(r, "confidence")?,
            actual: None,
            accuracy: None,
            parameters: get::<Value>(r, "parameters")?.unwrap_or(Value::Null),
        };
        if let Some(row) = forecast_row(f, &mut tally) {
            rows.push(row);
        }
    }
    cx.push(
        "forecasts",
        source,
        generation,
        src.len(),
        tally,
        Rows::Table("forecasts", rows),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Working-capital metrics.

/// A period's type from its length in days.
pub(super) fn period_type(days: i64) -> Option<&'static str> {
    match days {
        27..=31 => Some("monthly"),
        88..=92 => Some("quarterly"),
        364..=366 => Some("annual"),
        _ => None,
    }
}

pub(super) async fn metrics(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    let Some(generation) = cx.snap.generation("working_capital") else {
        cx.missing("working_capital");
        return Ok(());
    };
    let sql = match generation {
        Generation::A => "SELECT id::text, 'entity:' || entity_id AS company, projection_date AS period_date,
                    lower(projection_period) AS period, NULL::int4 AS days,
                    product_id IS NOT NULL OR market_code IS NOT NULL OR sales_channel_id IS NOT NULL AS breakdown,
                    lower(coalesce(scenario_type, 'actual')) AS scenario,
                    currency_code::text AS currency, currency_code_base::text AS base_currency,
                    fx_rate_to_base::numeric AS fx_rate,
                    accounts_receivable::numeric AS ar, inventory_value::numeric AS inventory,
                    accounts_payable::numeric AS ap, working_capital_requirement::numeric AS wc,
                    NULL::numeric AS current_ratio, NULL::numeric AS quick_ratio,
                    days_sales_outstanding::numeric AS dso, days_inventory_outstanding::numeric AS dio,
                    days_payable_outstanding::numeric AS dpo, cash_conversion_cycle_days::numeric AS ccc,
                    actual_sales_revenue::numeric AS revenue, cost_of_goods_sold::numeric AS cogs,
                    NULL::int4 AS runway
               FROM working_capital ORDER BY projection_date, updated_at DESC NULLS LAST, id"
            .to_owned(),
        Generation::B => {
            let runway = if cx.snap.has("cash_flow_forecasts", &["cash_runway"]) {
                "(SELECT c.cash_runway FROM cash_flow_forecasts c WHERE c.working_capital_id = w.id
                   ORDER BY c.forecast_date DESC, c.id DESC LIMIT 1)::int4"
            } else {
                "NULL::int4"
            };
            format!(
                "SELECT w.id::text, 'org:' || w.organization_id AS company,
                        (w.period_end AT TIME ZONE 'UTC')::date AS period_date, NULL::text AS period,
                        ((w.period_end AT TIME ZONE 'UTC')::date - (w.period_start AT TIME ZONE 'UTC')::date + 1)::int4 AS days,
                        false AS breakdown, 'actual' AS scenario, NULL::text AS currency,
                        NULL::text AS base_currency, NULL::numeric AS fx_rate,
                        w.accounts_receivable::numeric AS ar, w.inventory::numeric AS inventory,
                        w.accounts_payable::numeric AS ap, w.working_capital::numeric AS wc,
                        w.current_ratio::numeric, w.quick_ratio::numeric, w.dso::numeric, w.dio::numeric,
                        w.dpo::numeric, w.ccc::numeric, w.revenue::numeric, w.cogs::numeric,
                        {runway} AS runway
                   FROM working_capital w ORDER BY w.period_end, w.updated_at DESC, w.id"
            )
        }
    };
    let src = cx.snap.rows(sql).await?;
    let mut tally = Tally::default();
    let mut rows = Vec::new();
    let mut periods: HashSet<(Uuid, &'static str, NaiveDate)> = HashSet::new();
    for r in &src {
        if get::<bool>(r, "breakdown")?.unwrap_or(false) {
            tally.skip("a breakdown by product, market or channel (not a company total)");
            continue;
        }
        let scenario = text(r, "scenario")?.unwrap_or_default();
        if scenario != "actual" {
            tally.skip(format!(
                "a projection (scenario_type {scenario}), not an actual"
            ));
            continue;
        }
        let company = match cx.company(text(r, "company")?) {
            Ok(c) => c,
            Err(why) => {
                tally.skip(why);
                continue;
            }
        };
        let Some(period_date) = get::<NaiveDate>(r, "period_date")? else {
            tally.skip("no period date");
            continue;
        };
        let period = match (text(r, "period")?, int(r, "days")?) {
            (Some(p), _) => match p.as_str() {
                "month" | "monthly" => Some("monthly"),
                "quarter" | "quarterly" => Some("quarterly"),
                "year" | "yearly" | "annual" | "annually" => Some("annual"),
                _ => None,
            },
            (None, Some(days)) => period_type(i64::from(days)),
            (None, None) => None,
        };
        let Some(period) = period else {
            tally.skip("a period that is neither a month, a quarter nor a year");
            continue;
        };
        // Amounts in another currency are converted with the row's own rate to its base,
        // when that base is the company's currency.
        let mut rate = Decimal::ONE;
        if let Some(cur) = text(r, "currency")?
            && cur != company.currency
        {
            match (dec(r, "fx_rate")?, text(r, "base_currency")?) {
                (Some(fx), Some(base)) if base == company.currency && fx > Decimal::ZERO => {
                    rate = fx;
                    tally.note("converted to the company's currency with fx_rate_to_base");
                }
                _ => {
                    tally.skip("in another currency than the company's, with no rate to it");
                    continue;
                }
            }
        }
        if !periods.insert((company.id, period, period_date)) {
            tally.skip("the same company and period as a newer row");
            continue;
        }
        let mut balance = |column: &str| -> Result<Option<Decimal>, SentiaError> {
            Ok(dec(r, column)?.and_then(|v| {
                let m = money(v * rate);
                if m.is_none() {
                    tally.note(format!("negative or too large {column} dropped"));
                }
                m
            }))
        };
        let ar = balance("ar")?;
        let inventory = balance("inventory")?;
        let ap = balance("ap")?;
        let revenue = balance("revenue")?;
        let cogs = balance("cogs")?;
        let mut num = |column: &str, p, s| -> Result<Option<Decimal>, SentiaError> {
            Ok(dec(r, column)?.and_then(|v| {
                let m = numeric(v, p, s);
                if m.is_none() {
                    tally.note(format!("{column} too large, dropped"));
                }
                m
            }))
        };
        let cells = vec![
            ("company_id", Cell::Uuid(Some(company.id))),
            ("period_date", Cell::Date(Some(period_date))),
            ("period_type", Cell::Text(Some(period.to_owned()))),
            ("accounts_receivable", Cell::Dec(ar)),
            ("inventory", Cell::Dec(inventory)),
            ("accounts_payable", Cell::Dec(ap)),
            (
                "working_capital",
                Cell::Dec(dec(r, "wc")?.and_then(|v| signed_money(v * rate))),
            ),
            ("current_ratio", Cell::Dec(num("current_ratio", 10, 4)?)),
            ("quick_ratio", Cell::Dec(num("quick_ratio", 10, 4)?)),
            ("days_sales_outstanding", Cell::Dec(num("dso", 10, 2)?)),
            ("days_inventory_outstanding", Cell::Dec(num("dio", 10, 2)?)),
            ("days_payables_outstanding", Cell::Dec(num("dpo", 10, 2)?)),
            ("cash_conversion_cycle", Cell::Dec(num("ccc", 10, 2)?)),
            (
                "cash_runway_days",
                Cell::Int(int(r, "runway")?.filter(|d| *d >= 0)),
            ),
            ("revenue", Cell::Dec(revenue)),
            ("cost_of_goods_sold", Cell::Dec(cogs)),
        ];
        let source_id = text(r, "id")?.unwrap_or_default();
        rows.push(Row {
            id: uuid_of("working_capital", &source_id),
            cells,
        });
    }
    cx.push(
        "working_capital_metrics",
        "working_capital",
        generation,
        src.len(),
        tally,
        Rows::Table("working_capital_metrics", rows),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Scenarios.

pub(super) async fn scenarios(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    let (source, generation, sql) = if cx.snap.has("what_if_scenarios", &["id"]) {
        (
            "what_if_scenarios",
            Generation::B,
            "SELECT s.id::text, 'org:' || w.organization_id AS company, s.name::text,
                    s.description::text, lower(s.type) AS scenario_type, s.is_active,
                    NULL::text AS created_by,
                    jsonb_build_object('revenue_change_pct', s.revenue_change,
                      'cogs_change_pct', s.cogs_change, 'dso_change', s.dso_change,
                      'dio_change', s.dio_change, 'dpo_change', s.dpo_change,
                      'working_capital_id', s.working_capital_id) AS parameters,
                    jsonb_build_object('projected_revenue', s.projected_revenue,
                      'projected_cogs', s.projected_cogs, 'projected_wc', s.projected_wc,
                      'projected_ccc', s.projected_ccc, 'impact', s.impact) AS results
               FROM what_if_scenarios s LEFT JOIN working_capital w ON w.id = s.working_capital_id
              ORDER BY s.created_at, s.id"
                .to_owned(),
        )
    } else if cx.snap.has("wc_scenarios", &["id"]) {
        let results = if cx.snap.has("wc_projections", &["run_id"]) {
            "(SELECT jsonb_build_object('projections', jsonb_agg(jsonb_build_object(
                  'month', p.month, 'scenario', p.scenario, 'cash_in', p.cash_in,
                  'cash_out', p.cash_out, 'net_change', p.net_change, 'ending_cash', p.ending_cash,
                  'currency_code', p.currency_code) ORDER BY p.month, p.scenario))
                FROM wc_projections p WHERE p.run_id = s.run_id HAVING count(*) > 0)"
        } else {
            "NULL::jsonb"
        };
        (
            "wc_scenarios",
            Generation::A,
            format!(
                "SELECT s.id::text, NULL::text AS company, s.name::text, s.description::text,
                        s.scenario_type::text, true AS is_active, s.created_by::text,
                        CASE WHEN jsonb_typeof(s.parameters::jsonb) = 'object' THEN s.parameters::jsonb
                             ELSE jsonb_build_object('value', s.parameters::jsonb) END
                          || jsonb_build_object('status', s.status, 'run_id', s.run_id) AS parameters,
                        {results} AS results
                   FROM wc_scenarios s ORDER BY s.created_at, s.id"
            ),
        )
    } else {
        cx.missing("what_if_scenarios");
        cx.missing("wc_scenarios");
        return Ok(());
    };
    let src = cx.snap.rows(sql).await?;
    let mut tally = Tally::default();
    let mut rows = Vec::new();
    for r in &src {
        if !get::<bool>(r, "is_active")?.unwrap_or(true) {
            tally.skip("inactive in Sentia");
            continue;
        }
        let company = match cx.company(text(r, "company")?) {
            Ok(c) => c,
            Err(why) => {
                tally.skip(why);
                continue;
            }
        };
        let Some(name) = text(r, "name")?.filter(|n| fits(n, 255)) else {
            tally.skip("no name, or one longer than 255 characters");
            continue;
        };
        let scenario_type = text(r, "scenario_type")?.map(|t| cut(t, 50));
        let is_baseline = scenario_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("baseline"));
        let source_id = text(r, "id")?.unwrap_or_default();
        rows.push(Row {
            id: uuid_of(source, &source_id),
            cells: vec![
                ("company_id", Cell::Uuid(Some(company.id))),
                ("name", Cell::Text(Some(name))),
                ("description", Cell::Text(text(r, "description")?)),
                ("scenario_type", Cell::Text(scenario_type)),
                (
                    "parameters",
                    Cell::Json(Some(get::<Value>(r, "parameters")?.unwrap_or(json!({})))),
                ),
                ("results", Cell::Json(get::<Value>(r, "results")?)),
                ("is_baseline", Cell::Bool(is_baseline)),
                (
                    "created_by_user_id",
                    Cell::Text(text(r, "created_by")?.and_then(|u| cx.clerk_ids.get(&u).cloned())),
                ),
            ],
        });
    }
    cx.push(
        "scenarios",
        source,
        generation,
        src.len(),
        tally,
        Rows::Table("scenarios", rows),
    );
    Ok(())
}
