//! `capliquify forecasts refresh` as operators run it, against a real PostgreSQL: only live
//! tenants whose plan has ai_forecasting are refreshed, `--tenant` limits it, a tenant that
//! fails does not stop the others (exit 1), and running it again resumes the run, skipping
//! the batches it already refreshed.

use std::process::{Command, Output};

use crate::common::TestDb;
use capliquify::audit::Actor;
use capliquify::billing::Tier;
use capliquify::tenancy::registry::Tenant;
use serde_json::Value;

fn refresh(db: &TestDb, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .args(["forecasts", "refresh"])
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run capliquify")
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {}\nstderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A tenant with one company and `products` products, each with one sale a month over the
/// 36 complete months before this one (a seasonal pattern scaled per product).
async fn tenant_with_sales(db: &TestDb, slug: &str, tier: Tier, products: usize) -> Tenant {
    let t = db.tenant(slug, tier).await;
    let s = &t.schema_name;
    db.exec(&format!(
        "INSERT INTO \"{s}\".companies (name) VALUES ('Works');
         INSERT INTO \"{s}\".products (company_id, sku, name, unit_cost, unit_price)
         SELECT c.id, 'P-' || i, 'Product ' || i, 5, 10
           FROM \"{s}\".companies c, generate_series(1, {products}) AS i;
         INSERT INTO \"{s}\".sales (company_id, product_id, sale_date, quantity, unit_price, total_amount)
         SELECT p.company_id, p.id, d::date + 14, q, 10, q * 10
           FROM \"{s}\".products p
          CROSS JOIN generate_series(date_trunc('month', current_date) - interval '36 months',
                                     date_trunc('month', current_date) - interval '1 month',
                                     interval '1 month') AS d
          CROSS JOIN LATERAL (SELECT (20 + substr(p.sku, 3)::int * 3
                 + 8 * sin(2 * pi() * extract(month FROM d) / 12))::int AS q) AS x;"
    ))
    .await;
    t
}

/// Demand forecast rows of the tenant, and how many distinct products they cover.
async fn demand_rows(db: &TestDb, t: &Tenant) -> (i64, i64) {
    let s = &t.schema_name;
    (
        db.scalar_i64(&format!(
            "SELECT count(*) FROM \"{s}\".forecasts WHERE forecast_type = 'demand'"
        ))
        .await,
        db.scalar_i64(&format!(
            "SELECT count(DISTINCT product_id) FROM \"{s}\".forecasts WHERE forecast_type = 'demand'"
        ))
        .await,
    )
}

/// The ids of the tenant's demand forecast rows, sorted: unchanged ids mean untouched rows.
async fn row_ids(db: &TestDb, t: &Tenant, products: &str) -> Vec<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT f.id::text FROM \"{}\".forecasts f JOIN \"{}\".products p ON p.id = f.product_id
          WHERE f.forecast_type = 'demand' AND {products} ORDER BY 1",
        t.schema_name, t.schema_name
    )))
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

fn tenant<'a>(report: &'a Value, slug: &str) -> &'a Value {
    report["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == slug)
        .unwrap_or_else(|| panic!("{slug} not in {report}"))
}

#[tokio::test]
async fn refresh_regenerates_only_live_tenants_with_ai_forecasting() {
    let db = TestDb::new().await;
    let pro = tenant_with_sales(&db, "rf-pro", Tier::Professional, 3).await;
    let ent = tenant_with_sales(&db, "rf-ent", Tier::Enterprise, 2).await;
    let starter = tenant_with_sales(&db, "rf-starter", Tier::Starter, 2).await;
    let paused = tenant_with_sales(&db, "rf-paused", Tier::Professional, 2).await;
    db.tenancy()
        .suspend("rf-paused", Some("test"), &Actor::operator())
        .await
        .unwrap();

    let out = refresh(&db, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    let refreshed: Vec<&str> = r["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(refreshed, ["rf-ent", "rf-pro"], "{r}");
    assert_eq!(tenant(&r, "rf-pro")["products"], 3);
    assert_eq!(tenant(&r, "rf-pro")["status"], "refreshed");
    assert_eq!(r["products"], 5);
    assert_eq!(r["finished"], true);
    let skipped: Vec<(&str, &str)> = r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["tenant"].as_str().unwrap(), s["reason"].as_str().unwrap()))
        .collect();
    assert!(
        skipped.contains(&("rf-starter", "plan without ai_forecasting")),
        "{r}"
    );
    assert!(
        skipped.contains(&("rf-paused", "not live (suspended)")),
        "{r}"
    );

    // 12 months ahead for each product; none for the others.
    assert_eq!(demand_rows(&db, &pro).await, (36, 3));
    assert_eq!(demand_rows(&db, &ent).await, (24, 2));
    assert_eq!(demand_rows(&db, &starter).await, (0, 0));
    assert_eq!(demand_rows(&db, &paused).await, (0, 0));
    // The API's code path: the stored parameters say how the model was chosen.
    let params: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT model_parameters FROM \"{}\".forecasts LIMIT 1",
        pro.schema_name
    )))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(params["requested_model"], "auto");
    assert_eq!(params["granularity"], "month");
    assert_eq!(params["history"]["periods"], 36, "{params}");
    assert!(
        params["backtest"]["scores"].as_object().unwrap().len() >= 2,
        "{params}"
    );

    // The table for people: aligned columns, a summary line.
    let out = refresh(&db, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].trim_start().starts_with("TENANT"), "{text}");
    let pro_line = lines
        .iter()
        .find(|l| l.trim_start().starts_with("rf-pro"))
        .unwrap();
    assert_eq!(
        lines[0].find("PRODUCTS"),
        pro_line.find(" 3 ").map(|i| i + 1),
        "{text}"
    );
    assert!(
        text.contains("5 product(s) refreshed in 2 tenant(s)"),
        "{text}"
    );
    assert!(text.contains("2 tenant(s) skipped"), "{text}");
}

#[tokio::test]
async fn refresh_of_one_tenant_leaves_the_others_alone() {
    let db = TestDb::new().await;
    let a = tenant_with_sales(&db, "rf-one-a", Tier::Professional, 2).await;
    let b = tenant_with_sales(&db, "rf-one-b", Tier::Professional, 2).await;
    tenant_with_sales(&db, "rf-one-starter", Tier::Starter, 1).await;

    let out = refresh(&db, &["--tenant", "rf-one-b", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    assert_eq!(r["tenants"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(tenant(&r, "rf-one-b")["products"], 2);
    assert_eq!(demand_rows(&db, &b).await, (24, 2));
    assert_eq!(demand_rows(&db, &a).await, (0, 0));

    // A tenant the job would not refresh, or none at all: refused, nothing done.
    let out = refresh(&db, &["--tenant", "rf-one-starter"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plan without ai_forecasting"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = refresh(&db, &["--tenant", "rf-nobody"]);
    assert_eq!(out.status.code(), Some(1));
    // One refresh at a time: while another holds the lock, a second one is refused.
    let mut other = db.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('capliquify:forecasts-refresh', 0))")
        .execute(&mut *other)
        .await
        .unwrap();
    let out = refresh(&db, &["--tenant", "rf-one-a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("another `capliquify forecasts refresh` is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *other)
        .await
        .unwrap();
    drop(other);
    // The horizon is checked against the granularity before anything runs.
    let out = refresh(&db, &["--granularity", "month", "--horizon", "48"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--horizon must be 1 to 36"));
    assert_eq!(demand_rows(&db, &a).await, (0, 0));
}

#[tokio::test]
async fn a_failing_tenant_does_not_stop_the_others_and_a_rerun_resumes_the_run() {
    let db = TestDb::new().await;
    let a = tenant_with_sales(&db, "rf-ok", Tier::Professional, 5).await;
    let b = tenant_with_sales(&db, "rf-broken", Tier::Professional, 5).await;
    // In id order, b's third product (the second batch of two) cannot be stored: a trigger
    // refuses its forecasts.
    let bs = &b.schema_name;
    let third: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id::text FROM \"{bs}\".products ORDER BY id OFFSET 2 LIMIT 1"
    )))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    db.exec(&format!(
        "CREATE FUNCTION \"{bs}\".refuse() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON \"{bs}\".forecasts FOR EACH ROW
             WHEN (NEW.product_id = '{third}') EXECUTE FUNCTION \"{bs}\".refuse();"
    ))
    .await;

    let args = ["--batch-size", "2", "--jobs", "1", "--json"];
    let out = refresh(&db, &args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    assert_eq!(r["failed"], serde_json::json!(["rf-broken"]));
    assert_eq!(r["finished"], false);
    let ok = tenant(&r, "rf-ok");
    assert_eq!(
        (ok["status"].as_str(), ok["products"].as_i64()),
        (Some("refreshed"), Some(5))
    );
    let broken = tenant(&r, "rf-broken");
    assert_eq!(broken["status"], "failed");
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("refused by the test"),
        "{r}"
    );
    // Its first batch committed; the failed one rolled back; the last was not attempted.
    assert_eq!(broken["products"], 2);
    assert_eq!(broken["batches_left"], 2);
    assert_eq!(demand_rows(&db, &a).await, (60, 5));
    assert_eq!(demand_rows(&db, &b).await, (24, 2));
    let run = r["run_id"].as_str().unwrap().to_owned();
    let a_ids = row_ids(&db, &a, "true").await;
    let b_first_ids = row_ids(&db, &b, "true").await;

    // The cause fixed, the same command resumes the run: only what is left is refreshed.
    db.exec(&format!("DROP TRIGGER refuse ON \"{bs}\".forecasts"))
        .await;
    let out = refresh(&db, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    assert_eq!(r["run_id"], run.as_str());
    assert_eq!(r["resumed"], true);
    assert_eq!(r["finished"], true);
    let ok = tenant(&r, "rf-ok");
    assert_eq!(ok["status"], "done_earlier");
    assert_eq!(
        (ok["products"].as_i64(), ok["skipped_done"].as_i64()),
        (Some(0), Some(5))
    );
    let broken = tenant(&r, "rf-broken");
    assert_eq!(broken["status"], "refreshed");
    assert_eq!(
        (broken["products"].as_i64(), broken["skipped_done"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        row_ids(&db, &a, "true").await,
        a_ids,
        "rf-ok was refreshed again"
    );
    let first_two = format!("p.id IN (SELECT id FROM \"{bs}\".products ORDER BY id LIMIT 2)");
    assert_eq!(row_ids(&db, &b, &first_two).await, b_first_ids);
    assert_eq!(demand_rows(&db, &b).await, (60, 5));

    // That run is finished: the next invocation starts a new one and refreshes everything.
    let out = refresh(&db, &args);
    assert!(out.status.success());
    let r = report(&out);
    assert_ne!(r["run_id"], run.as_str());
    assert_eq!(r["resumed"], false);
    assert_eq!(r["products"], 10);
    assert!(
        row_ids(&db, &a, "true")
            .await
            .iter()
            .all(|id| !a_ids.contains(id))
    );
}
