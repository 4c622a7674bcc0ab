//! `POST /api/v1/forecasts/generate` through the real API on a real PostgreSQL: the
//! AirPassengers series loaded as monthly sales and forecast against the published
//! seasonal-naive figures; actuals and accuracy; replacement of the previous run; fallbacks
//! for sparse histories; refusals and gates.

use crate::common::api::{TestApp, TestTenant};
use capliquify::access::Role;
use capliquify::billing::Tier;
use reqwest::StatusCode;
use serde_json::{Value, json};

const GENERATE: &str = "/api/v1/forecasts/generate";

/// AirPassengers 1949–1960, monthly, oldest first (tests/fixtures/air_passengers.csv).
fn air_passengers() -> Vec<i32> {
    include_str!("../fixtures/air_passengers.csv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("month"))
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect()
}

/// A product whose monthly sales (on the 15th, price 1.00) are `series` from January 1949.
async fn product_with_monthly_sales(
    app: &TestApp,
    t: &TestTenant,
    sku: &str,
    series: &[i32],
) -> String {
    let company = app.company(t, "Airline").await;
    let reply = app
        .post(
            &app.token_for(t, Role::Owner),
            "/api/v1/products",
            json!({ "company_id": company, "sku": sku, "name": sku, "unit_cost": "0.50", "unit_price": "1.00" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let product = reply.body["id"].as_str().unwrap().to_owned();
    let schema = &t.tenant.schema_name;
    let values: Vec<String> = series.iter().map(i32::to_string).collect();
    app.db
        .exec(&format!(
            "INSERT INTO \"{schema}\".sales (company_id, product_id, sale_date, quantity, unit_price, total_amount)
             SELECT '{company}', '{product}', (date '1949-01-15' + make_interval(months => (i - 1)::int))::date, q, 1, q
               FROM unnest(ARRAY[{}]::int[]) WITH ORDINALITY AS s(q, i)",
            values.join(",")
        ))
        .await;
    product
}

fn num(v: &Value) -> f64 {
    v.as_str()
        .unwrap_or_else(|| panic!("decimal string: {v}"))
        .parse()
        .unwrap()
}

/// MAE and MAPE (%) of the run's predictions against `actual`.
fn errors(run: &Value, actual: &[i32]) -> (f64, f64) {
    let rows = run["forecasts"].as_array().unwrap();
    assert_eq!(rows.len(), actual.len());
    let n = actual.len() as f64;
    let (mut mae, mut mape) = (0.0, 0.0);
    for (row, a) in rows.iter().zip(actual) {
        let (p, a) = (num(&row["predicted_value"]), f64::from(*a));
        mae += (p - a).abs() / n;
        mape += ((p - a) / a).abs() * 100.0 / n;
    }
    (mae, mape)
}

#[tokio::test]
async fn air_passengers_auto_beats_the_published_seasonal_naive_figures_through_the_api() {
    let app = TestApp::spawn().await;
    let t = app.tenant("fc-air", Tier::Professional).await;
    let series = air_passengers();
    let product = product_with_monthly_sales(&app, &t, "AIR", &series).await;
    let member = app.token_for(&t, Role::Member);
    let test = &series[120..];
    let run = |model: &str| {
        json!({ "product_id": product, "forecast_type": "demand", "granularity": "month",
                "horizon": 24, "model": model, "as_of": "1959-01-01" })
    };

    let naive = app.post(&member, GENERATE, run("seasonal_naive")).await;
    assert_eq!(naive.status, StatusCode::OK, "{}", naive.text);
    let (mae, mape) = errors(&naive.body["runs"][0], test);
    // Published for train 1949–1958, test 1959–1960: MAE 71.25, MAPE 15.52 %.
    assert!(
        (mae - 71.25).abs() < 0.01 && (mape - 15.52).abs() < 0.01,
        "{mae} {mape}"
    );

    let auto = app.post(&member, GENERATE, run("auto")).await;
    assert_eq!(auto.status, StatusCode::OK, "{}", auto.text);
    let r = &auto.body["runs"][0];
    assert_eq!(r["history_periods"], 120);
    let (mae, mape) = errors(r, test);
    eprintln!(
        "auto via the API: model {}, MAE {mae:.2}, MAPE {mape:.2}%",
        r["model"]
    );
    assert!(
        mape <= 8.0,
        "MAPE {mape} with {}: {}",
        r["model"],
        r["model_parameters"]
    );
    assert!(mae < 71.25);
    let rows = r["forecasts"].as_array().unwrap();
    assert_eq!(rows[0]["forecast_date"], "1959-01-01");
    assert_eq!(rows[23]["forecast_date"], "1960-12-01");
    for (row, a) in rows.iter().zip(test) {
        assert_eq!(row["forecast_type"], "demand");
        assert!(num(&row["lower_bound"]) <= num(&row["predicted_value"]));
        assert!(num(&row["predicted_value"]) <= num(&row["upper_bound"]));
        assert_eq!(num(&row["confidence_level"]), 95.0);
        // The periods are over and have sales: actuals and accuracy are filled in.
        assert_eq!(num(&row["actual_value"]), f64::from(*a));
        let ape = (num(&row["predicted_value"]) - f64::from(*a)).abs() / f64::from(*a) * 100.0;
        assert!((num(&row["accuracy_percentage"]) - (100.0 - ape).max(0.0)).abs() < 0.006);
    }
    let scores = &r["model_parameters"]["backtest"]["scores"];
    for model in ["seasonal_naive", "ets", "mstl", "mstl_log"] {
        let s = &scores[model];
        assert!(
            s["mase"].is_number() && s["smape"].is_number() && s["coverage"].is_number(),
            "{scores}"
        );
    }
    // The second run replaced the first: 24 rows for this product, type and granularity.
    let schema = &t.tenant.schema_name;
    let stored = app
        .db
        .scalar_i64(&format!(
            "SELECT count(*) FROM \"{schema}\".forecasts WHERE product_id = '{product}'"
        ))
        .await;
    assert_eq!(stored, 24);
}

#[tokio::test]
async fn sparse_histories_fall_back_and_bad_requests_are_refused_writing_nothing() {
    let app = TestApp::spawn().await;
    let t = app.tenant("fc-sparse", Tier::Professional).await;
    let product = product_with_monthly_sales(&app, &t, "NEW", &[10, 12, 11]).await;
    let member = app.token_for(&t, Role::Member);
    let body = json!({ "product_ids": [product], "forecast_type": "revenue", "granularity": "month",
                       "horizon": 6, "model": "mstl", "as_of": "1949-04-01", "confidence_level": 80 });
    let r = app.post(&member, GENERATE, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let run = &r.body["runs"][0];
    assert_eq!(run["model"], "naive");
    assert!(
        run["fallback"]
            .as_str()
            .unwrap()
            .contains("mstl needs more history")
    );
    assert_eq!(run["forecasts"].as_array().unwrap().len(), 6);
    assert_eq!(num(&run["forecasts"][0]["predicted_value"]), 11.0);

    let schema = &t.tenant.schema_name;
    let count = format!("SELECT count(*) FROM \"{schema}\".forecasts");
    let before = app.db.scalar_i64(&count).await;
    let cases = [
        ("horizon", json!({ "horizon": 37 })),
        ("horizon", json!({ "horizon": 0 })),
        ("product_id", json!({ "all": true })),
        // Cash flow needs the company's computed metrics, and it has none.
        ("company_id", json!({ "forecast_type": "cash_flow" })),
        ("confidence_level", json!({ "confidence_level": 99.95 })),
        (
            "product_ids",
            json!({ "product_ids": [uuid::Uuid::new_v4()] }),
        ),
        (
            "product_ids",
            json!({ "product_ids": (0..101).map(|_| uuid::Uuid::new_v4()).collect::<Vec<_>>() }),
        ),
        ("granularity", json!({ "granularity": "year" })),
        // Periods past 2200-12-31 could not be shown as dates (schemathesis found this).
        (
            "as_of",
            json!({ "as_of": "2200-12-08", "granularity": "week", "horizon": 14 }),
        ),
        ("as_of", json!({ "as_of": "2200-07-15", "horizon": 6 })),
    ];
    for (field, change) in cases {
        let mut b = body.clone();
        for (k, v) in change.as_object().unwrap() {
            b[k] = v.clone();
        }
        let r = app.post(&member, GENERATE, b).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {}",
            r.text
        );
        assert_eq!(r.body["field"], field, "{}", r.text);
    }
    assert_eq!(app.db.scalar_i64(&count).await, before);

    app.post(&app.token_for(&t, Role::Viewer), GENERATE, body.clone())
        .await
        .problem(StatusCode::FORBIDDEN, "insufficient_role");
    let starter = app.tenant("fc-starter", Tier::Starter).await;
    app.post(&app.token_for(&starter, Role::Member), GENERATE, body)
        .await
        .problem(StatusCode::FORBIDDEN, "feature_not_in_plan");
}

#[tokio::test]
async fn forecasts_reconcile_fills_in_actuals_from_the_command_line() {
    let app = TestApp::spawn().await;
    let t = app.tenant("fc-cli", Tier::Professional).await;
    let series = air_passengers();
    let product = product_with_monthly_sales(&app, &t, "AIR", &series).await;
    let r = app
        .post(
            &app.token_for(&t, Role::Member),
            GENERATE,
            json!({ "product_id": product, "forecast_type": "revenue", "granularity": "month",
                    "horizon": 24, "model": "seasonal_naive", "as_of": "1959-01-01" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let schema = &t.tenant.schema_name;
    app.db
        .exec(&format!(
            "UPDATE \"{schema}\".forecasts SET actual_value = NULL, accuracy_percentage = NULL"
        ))
        .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .args(["forecasts", "reconcile", "--tenant", "fc-cli", "--json"])
        .env("DATABASE_URL", &app.db.url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run capliquify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["reconciled"][0],
        json!({ "tenant": "fc-cli", "forecasts": 24 })
    );
    // Revenue actuals are the monthly totals (price 1.00): 1959–1960 of the series.
    let total: i64 = series[120..].iter().map(|v| i64::from(*v)).sum();
    let stored = app
        .db
        .scalar_i64(&format!(
            "SELECT sum(actual_value)::bigint FROM \"{schema}\".forecasts"
        ))
        .await;
    assert_eq!(stored, total);
}

#[tokio::test]
async fn the_cash_flow_forecast_collects_revenue_after_dso_and_finds_the_runway_end() {
    let app = TestApp::spawn().await;
    let t = app.tenant("fc-cash", Tier::Professional).await;
    let series = air_passengers();
    let product = product_with_monthly_sales(&app, &t, "AIR", &series[..120]).await;
    let member = app.token_for(&t, Role::Member);
    let company = app
        .get(&member, &format!("/api/v1/products/{product}"))
        .await
        .body["company_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // December 1958: revenue 337 (price 1.00), COGS 168.50 (unit cost 0.50). With AR equal
    // to a month's revenue, DSO is 31 days; with no payables, DPO is 0.
    let december = series[119];
    let m = app
        .post(
            &member,
            "/api/v1/working-capital-metrics/compute",
            json!({ "company_id": company, "period_type": "monthly", "period_date": "1958-12-31",
                    "cash": "100", "accounts_receivable": december.to_string(), "accounts_payable": "0", "short_term_debt": "0" }),
        )
        .await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text);
    assert_eq!(num(&m.body["metric"]["days_sales_outstanding"]), 31.0);
    let r = app
        .post(
            &member,
            GENERATE,
            json!({ "all": true, "forecast_type": "cash_flow", "granularity": "month", "horizon": 12, "as_of": "1959-01-01" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let run = &r.body["runs"][0];
    assert!(run["product_id"].is_null());
    assert_eq!(run["company_id"], company.as_str());
    let params = &run["model_parameters"];
    let periods = params["periods"].as_array().unwrap();
    // January 1959 (31 days) collects exactly December's revenue.
    assert_eq!(num(&periods[0]["receipts"]), f64::from(december));
    // The balance runs from the stored cash, and each stored row is that period's balance.
    let mut balance = 100.0;
    let rows = run["forecasts"].as_array().unwrap();
    let mut first_negative = None;
    for (p, row) in periods.iter().zip(rows) {
        balance += num(&p["receipts"]) - num(&p["payments"]);
        assert!((num(&p["balance"]) - balance).abs() < 0.005);
        assert!((num(&row["predicted_value"]) - balance).abs() < 0.005);
        assert_eq!(row["forecast_type"], "cash_flow");
        assert!(num(&row["lower_bound"]) <= num(&row["predicted_value"]));
        if balance < 0.0 && first_negative.is_none() {
            first_negative = Some(p["period"].clone());
        }
    }
    assert_eq!(params["runway_end"], first_negative.unwrap_or(Value::Null));
    // Receipts lag revenue by a month and payments do not: a growing seller stays positive.
    assert!(balance > 100.0, "{params}");
}
