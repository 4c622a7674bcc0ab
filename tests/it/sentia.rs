//! `capliquify import sentia` against real PostgreSQL: a Sentia database of each generation
//! built from DDL written from SENTIA-SOURCE.md (tests/fixtures/sentia/), with awkward data,
//! migrated into a tenant through the binary. The report's numbers are checked against sums
//! taken on both databases here; a re-run changes nothing; a dry run writes nothing; a
//! checksum that disagrees refuses the migration; secrets never show in plain text.

use std::process::{Command, Output};

use capliquify::billing::Tier;
use capliquify::crypto::Keyring;
use serde_json::Value;
use sqlx::AssertSqlSafe;

use crate::common::TestDb;
use crate::common::api::ENCRYPTION_KEY;

const GENERATION_A: &str = include_str!("../fixtures/sentia/generation_a.sql");
const GENERATION_A_DATA: &str = include_str!("../fixtures/sentia/generation_a_data.sql");
const GENERATION_B: &str = include_str!("../fixtures/sentia/generation_b.sql");

/// The plaintext API key of the generation-A fixture.
const SECRET: &str = "shpat_PLAINTEXT_SECRET_123";

/// A Sentia database made of `sql`.
async fn source(sql: &[&str]) -> TestDb {
    let db = TestDb::empty().await;
    for s in sql {
        db.exec(s).await;
    }
    db
}

fn run(db: &TestDb, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("ENCRYPTION_KEY", ENCRYPTION_KEY)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run capliquify")
}

/// Runs the migration with `--json` and returns the report.
#[track_caller]
fn migrate(db: &TestDb, args: &[&str]) -> (Value, Output) {
    let mut all = vec!["import", "sentia"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = run(db, &all);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON report: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, out)
}

/// (read, inserted, updated, unchanged, skipped) of the report's row for `source`.
#[track_caller]
fn counts(report: &Value, source: &str) -> [u64; 5] {
    let t = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["source"] == source)
        .unwrap_or_else(|| panic!("no {source} in {report:#}"));
    ["read", "inserted", "updated", "unchanged", "skipped"].map(|k| t[k].as_u64().unwrap())
}

/// The skip reasons of `source`, as (reason, rows).
fn reasons(report: &Value, source: &str, key: &str) -> Vec<(String, u64)> {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["source"] == source)
        .flat_map(|t| t[key].as_array().unwrap().clone())
        .map(|r| {
            (
                r["reason"].as_str().unwrap().to_owned(),
                r["rows"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[track_caller]
fn checksum(report: &Value, name: &str) -> (String, String, String, bool) {
    let c = report["checksums"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no checksum {name} in {report:#}"));
    let s = |k: &str| c[k].as_str().unwrap().to_owned();
    (
        s("source"),
        s("not_carried"),
        s("target"),
        c["agrees"].as_bool().unwrap(),
    )
}

async fn text(db: &TestDb, sql: &str) -> String {
    sqlx::query_scalar::<_, String>(AssertSqlSafe(sql.to_owned()))
        .fetch_one(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Every row of every table of `schema` as text, to search for leaked plaintext.
async fn dump(db: &TestDb, schema: &str) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(schema)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut all = String::new();
    for t in tables {
        all.push_str(
            &text(
                db,
                &format!("SELECT coalesce(string_agg(row_to_json(t)::text, E'\\n'), '') FROM \"{schema}\".\"{t}\" t"),
            )
            .await,
        );
    }
    all
}

#[tokio::test]
async fn generation_a_migrates_with_a_reconciled_report_and_a_rerun_changes_nothing() {
    let src = source(&[GENERATION_A, GENERATION_A_DATA]).await;
    let db = TestDb::new().await;
    let t = db.tenant("sentia-a", Tier::Professional).await;
    let s = &t.schema_name;
    // The admin has a Clerk account in this tenant already; the operator (by another
    // case of the email) is listed in the users file; the viewer has none.
    db.exec(&format!(
        "INSERT INTO public.users (clerk_user_id, email, tenant_id, role)
         VALUES ('user_admin', 'ADMIN@sentia.example', '{}', 'member')",
        t.id
    ))
    .await;
    db.exec(&format!(
        "INSERT INTO {s}.user_preferences (user_id, preferences) VALUES ('user_ops', '{{\"mine\": true}}')"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.csv");
    std::fs::write(&users, "email,clerk_user_id\nops@sentia.example,user_ops\n").unwrap();
    let users = users.to_str().unwrap();
    let args = [
        "--source-url",
        &src.url,
        "--tenant",
        "sentia-a",
        "--users",
        users,
        "--owner",
        "admin@sentia.example",
    ];

    // A dry run reports the same and writes nothing.
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let (dry_report, out) = migrate(&db, &dry);
    let report = dry_report.clone();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["status"], "dry_run");
    assert_eq!(counts(&report, "products (A)"), [4, 3, 0, 0, 1]);
    for table in [
        "companies",
        "products",
        "sales",
        "inventory",
        "forecasts",
        "api_credentials",
    ] {
        assert_eq!(
            db.scalar_i64(&format!("SELECT count(*) FROM {s}.{table}"))
                .await,
            0,
            "{table}"
        );
    }
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM public.users WHERE clerk_user_id = 'user_ops'")
            .await,
        0
    );

    let (report, out) = migrate(&db, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["status"], "imported", "{report:#}");
    // The dry run told the same story, table by table and in money.
    assert_eq!(report["tables"], dry_report["tables"]);
    assert_eq!(report["checksums"], dry_report["checksums"]);

    // Per table: read, inserted, updated, unchanged, skipped.
    assert_eq!(counts(&report, "entities (A)"), [1, 1, 0, 0, 0]);
    assert_eq!(counts(&report, "products (A)"), [4, 3, 0, 0, 1]);
    assert_eq!(counts(&report, "inventory_levels (A)"), [5, 3, 0, 0, 2]);
    assert_eq!(counts(&report, "historical_sales (A)"), [8, 4, 0, 0, 4]);
    assert_eq!(counts(&report, "forecasts: demand (A)"), [4, 3, 0, 0, 1]);
    assert_eq!(counts(&report, "forecasts: revenue (A)"), [2, 2, 0, 0, 0]);
    assert_eq!(counts(&report, "wc_projections (A)"), [2, 2, 0, 0, 0]);
    assert_eq!(counts(&report, "working_capital (A)"), [5, 2, 0, 0, 3]);
    assert_eq!(counts(&report, "wc_scenarios (A)"), [2, 2, 0, 0, 0]);
    assert_eq!(counts(&report, "ApiKey (A)"), [5, 2, 0, 0, 2]);
    assert_eq!(counts(&report, "users (A)"), [5, 1, 1, 0, 3]);
    assert_eq!(counts(&report, "users: preferences (A)"), [2, 1, 0, 0, 1]);
    let sale_reasons = reasons(&report, "historical_sales (A)", "skip_reasons");
    for expected in [
        "the same order line (order_id:order_item_id) as an earlier row",
        "quantity_sold is not positive",
        "gross_revenue is negative or too large",
        "its product was not imported",
    ] {
        assert!(
            sale_reasons.contains(&(expected.to_owned(), 1)),
            "{expected}: {sale_reasons:?}"
        );
    }
    let user_reasons = reasons(&report, "users (A)", "skip_reasons");
    assert!(
        user_reasons
            .iter()
            .any(|(r, n)| r.starts_with("no Clerk account") && *n == 1)
    );
    assert!(user_reasons.contains(&("deleted in Sentia".to_owned(), 1)));
    assert!(user_reasons.contains(&("the same email as an earlier user".to_owned(), 1)));
    let notes = reasons(&report, "forecasts: demand (A)", "notes");
    assert!(
        notes.contains(&("confidence above 1 taken as a percent".to_owned(), 1)),
        "{notes:?}"
    );
    assert!(
        notes.contains(&("lower and upper bounds swapped back".to_owned(), 1)),
        "{notes:?}"
    );

    // The money, summed here on both sides.
    let source_sales = text(
        &src,
        "SELECT sum(gross_revenue)::text FROM historical_sales",
    )
    .await;
    let target_sales = text(
        &db,
        &format!("SELECT sum(total_amount)::text FROM {s}.sales"),
    )
    .await;
    let (source, not_carried, target, agrees) = checksum(&report, "Σ sales.total_amount");
    assert_eq!(
        (source.as_str(), target.as_str()),
        (source_sales.as_str(), target_sales.as_str())
    );
    // Skipped: the duplicate (49.98), zero quantity (10.00), refund (-20.00), lost product (15.00).
    assert_eq!(not_carried, "54.98");
    assert!(agrees);
    let source_stock = text(
        &src,
        "SELECT sum((available_quantity + coalesce(reserved_quantity, 0))
                    * round(CASE WHEN currency_code_valuation <> currency_code_base THEN unit_cost_base ELSE unit_cost END, 2))::text
           FROM (SELECT DISTINCT ON (product_id, location_id) * FROM inventory_levels
                  ORDER BY product_id, location_id, snapshot_date DESC) latest",
    )
    .await;
    let target_stock = text(
        &db,
        &format!("SELECT sum(total_value)::text FROM {s}.inventory"),
    )
    .await;
    let (source, not_carried, target, agrees) = checksum(&report, "Σ inventory.total_value");
    assert_eq!(
        (source.as_str(), target.as_str()),
        (source_stock.as_str(), target_stock.as_str())
    );
    assert_eq!(not_carried, "-45.00"); // the negative snapshot, skipped
    assert!(agrees);

    // What landed where.
    assert_eq!(
        text(
            &db,
            &format!(
                "SELECT concat_ws(' ', name, legal_name, tax_id, currency) FROM {s}.companies"
            )
        )
        .await,
        "Sentia Spirits Ltd Sentia Spirits Ltd GB123456789 GBP"
    );
    assert_eq!(
        text(&db, &format!(
            "SELECT concat_ws(' ', currency, reorder_point, reorder_quantity, unit_price) FROM {s}.products WHERE sku = 'GABA_RED_UK'"
        ))
        .await,
        "GBP 50 250 24.99"
    );
    assert_eq!(
        text(&db, &format!("SELECT concat_ws(' ', currency, coalesce(unit_price::text, 'null')) FROM {s}.products WHERE sku IN ('GABA_GOLD_USA', 'GABA_BLACK_UK') ORDER BY sku LIMIT 1")).await,
        "GBP null"
    );
    assert_eq!(
        text(&db, &format!(
            "SELECT string_agg(concat_ws(' ', external_id, currency, channel, total_amount), ', ' ORDER BY external_id) FROM {s}.sales"
        ))
        .await,
        "ORD-1:1 GBP Amazon UK 49.98, ORD-1:2 GBP Amazon UK 24.99, ORD-5:1 GBP Amazon UK 30.00, \
         sentia:historical_sales:50000000-0000-4000-8000-000000000004 USD Shopify US 100.20"
    );
    assert_eq!(
        text(&db, &format!(
            "SELECT string_agg(concat_ws(' ', warehouse_location, quantity_on_hand, quantity_reserved, unit_cost, to_char(last_counted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')), ', ' ORDER BY warehouse_location, unit_cost) FROM {s}.inventory"
        ))
        .await,
        "US-3PL 22 2 11.88, WH-001 95 5 8.50 2025-02-01 00:00, WH-001 50 0 12.00 2025-02-01 00:00"
    );
    assert_eq!(
        text(&db, &format!(
            "SELECT string_agg(concat_ws(' ', forecast_type, predicted_value, lower_bound, upper_bound, confidence_level, accuracy_percentage), ', ' ORDER BY forecast_type, forecast_date, predicted_value) FROM {s}.forecasts"
        ))
        .await,
        "cash_flow 5000.00, cash_flow 5500.00, demand 50.00 40.00 60.00 92.50, demand 100.00 80.00 120.00 85.00 91.23, \
         demand 30.00 20.00 40.00 60.00, revenue 1700.00 1500.00 2000.00 70.00, revenue 2499.00 2000.00 3000.00 85.00"
    );
    assert_eq!(
        text(&db, &format!(
            "SELECT string_agg(concat_ws(' ', period_date, accounts_receivable, working_capital, cash_conversion_cycle), ', ' ORDER BY period_date) FROM {s}.working_capital_metrics"
        ))
        .await,
        "2025-01-31 1000.00 2500.00 55.00, 2025-02-28 850.00 2125.00 55.00"
    );
    assert_eq!(
        text(&db, &format!(
            "SELECT string_agg(concat_ws(' ', name, is_baseline, parameters->>'growth', jsonb_array_length(results->'projections'), created_by_user_id), ', ' ORDER BY name) FROM {s}.scenarios"
        ))
        .await,
        "Baseline 2025 t 0.1 2 user_ops, Slow Q2 f"
    );
    assert_eq!(
        text(&db, "SELECT string_agg(concat_ws(' ', clerk_user_id, email, role), ', ' ORDER BY clerk_user_id) FROM public.users").await,
        "user_admin ADMIN@sentia.example owner, user_ops Ops@Sentia.example member"
    );

    assert_eq!(
        text(
            &db,
            &format!("SELECT string_agg(user_id || ' ' || preferences::text, ', ' ORDER BY user_id) FROM {s}.user_preferences")
        )
        .await,
        r#"user_admin {"theme": "dark", "timezone": "Europe/London"}, user_ops {"mine": true}"#
    );

    // The API keys: sealed per service, opening to the plaintext; never shown anywhere.
    assert_eq!(
        text(
            &db,
            &format!("SELECT string_agg(service, ',' ORDER BY service) FROM {s}.api_credentials")
        )
        .await,
        "shopify,unleashed"
    );
    let (id, creds): (uuid::Uuid, Value) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, credentials FROM {s}.api_credentials WHERE service = 'shopify'"
    )))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let keys = Keyring::from_settings(Some(ENCRYPTION_KEY), "k1", None).unwrap();
    let secrets =
        capliquify::credentials::open(&keys, &t.scope().unwrap(), id, &creds, None, None).unwrap();
    assert_eq!(secrets.credentials["SHOPIFY_UK_ACCESS_TOKEN"], SECRET);
    assert_eq!(
        secrets.credentials["SHOPIFY_US_ACCESS_TOKEN"],
        "shpat_US_SECRET_456"
    );
    let audit = text(
        &db,
        &format!(
            "SELECT string_agg(metadata::text, '') FROM public.audit_logs WHERE tenant_id = '{}'",
            t.id
        ),
    )
    .await;
    let public_users = text(
        &db,
        "SELECT string_agg(row_to_json(u)::text, '') FROM public.users u",
    )
    .await;
    let tenant_rows = dump(&db, s).await;
    for (place, text) in [
        ("stdout", String::from_utf8_lossy(&out.stdout).into_owned()),
        ("stderr", String::from_utf8_lossy(&out.stderr).into_owned()),
        ("audit", audit.clone()),
        ("tenant tables", tenant_rows),
        ("public.users", public_users.clone()),
    ] {
        for secret in [
            SECRET,
            "unl_SECRET_789",
            "HASH_NEVER_COPIED",
            "TOTP_NEVER_COPIED",
        ] {
            assert!(!text.contains(secret), "{secret} in {place}");
        }
    }
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM public.audit_logs WHERE tenant_id = '{}' AND action = 'import.sentia'
               AND metadata->'actor'->>'kind' = 'operator' AND (metadata->>'written')::int = 27",
            t.id
        ))
        .await,
        1,
        "{audit}"
    );

    // The same again: nothing written, every row unchanged, and the text report says so.
    let (again, out) = migrate(&db, &args);
    assert!(out.status.success());
    assert_eq!(again["status"], "imported");
    for t in again["tables"].as_array().unwrap() {
        let first = report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["source"] == t["source"])
            .unwrap();
        let written = first["inserted"].as_u64().unwrap() + first["updated"].as_u64().unwrap();
        assert_eq!(
            (
                t["inserted"].as_u64(),
                t["updated"].as_u64(),
                t["unchanged"].as_u64()
            ),
            (
                Some(0),
                Some(0),
                Some(written + first["unchanged"].as_u64().unwrap())
            ),
            "{}",
            t["source"]
        );
    }
    let out = run(
        &db,
        &[
            "import",
            "sentia",
            "--source-url",
            &src.url,
            "--tenant",
            "sentia-a",
            "--users",
            users,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Sentia into sentia-a (imported): 0 rows written"),
        "{text}"
    );
    assert!(
        text.contains("Σ sales.total_amount") && text.contains("ok"),
        "{text}"
    );
    assert!(!text.contains(SECRET));
}

#[tokio::test]
async fn generation_b_migrates_and_a_rerun_changes_nothing() {
    let src = source(&[GENERATION_B]).await;
    let db = TestDb::new().await;
    let t = db.tenant("sentia-b", Tier::Professional).await;
    let s = &t.schema_name;
    db.exec(&format!(
        "INSERT INTO public.users (clerk_user_id, email, tenant_id, role)
         VALUES ('user_boss', 'boss@sentia-b.example', '{}', 'viewer')",
        t.id
    ))
    .await;

    // Organizations state no currency: the operator must.
    let out = run(
        &db,
        &[
            "import",
            "sentia",
            "--source-url",
            &src.url,
            "--tenant",
            "sentia-b",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--currency"));

    let args = [
        "--source-url",
        src.url.as_str(),
        "--tenant",
        "sentia-b",
        "--currency",
        "GBP",
    ];
    let (report, out) = migrate(&db, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["status"], "imported", "{report:#}");
    assert_eq!(counts(&report, "organizations (B)"), [1, 1, 0, 0, 0]);
    assert_eq!(counts(&report, "products (B)"), [2, 2, 0, 0, 0]);
    assert_eq!(counts(&report, "inventory_items (B)"), [3, 2, 0, 0, 1]);
    assert_eq!(counts(&report, "demand_forecasts (B)"), [2, 1, 0, 0, 1]);
    assert_eq!(counts(&report, "cash_flow_forecasts (B)"), [1, 1, 0, 0, 0]);
    assert_eq!(counts(&report, "working_capital (B)"), [3, 2, 0, 0, 1]);
    assert_eq!(counts(&report, "what_if_scenarios (B)"), [2, 1, 0, 0, 1]);
    assert_eq!(counts(&report, "users (B)"), [3, 0, 1, 0, 2]);
    assert_eq!(counts(&report, "users: preferences (B)"), [1, 1, 0, 0, 0]);
    assert_eq!(counts(&report, "admin_integrations (B)"), [2, 1, 0, 0, 1]);
    let missing: Vec<&str> = report["missing_tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        missing.contains(&"historical_sales") && missing.contains(&"ApiKey"),
        "{missing:?}"
    );
    assert!(
        report["checksums"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "Σ sales.total_amount")
    );
    let source_stock = text(
        &src,
        "SELECT sum(quantity_on_hand * unit_cost)::text FROM inventory_items",
    )
    .await;
    let (source, not_carried, target, agrees) = checksum(&report, "Σ inventory.total_value");
    assert_eq!(source, source_stock);
    assert_eq!(not_carried, "182.00"); // 30 reserved of 20 on hand: skipped
    assert_eq!(
        target,
        text(
            &db,
            &format!("SELECT sum(total_value)::text FROM {s}.inventory")
        )
        .await
    );
    assert!(agrees);

    assert_eq!(
        text(&db, &format!("SELECT concat_ws(' ', id, name, currency, settings->'source'->>'domain', settings::text LIKE '%never%') FROM {s}.companies")).await,
        "0b000000-0000-4000-8000-000000000001 Sentia Spirits Manufacturing GBP sentia-spirits.local f"
    );
    // A text id that is no UUID gets a stable UUIDv5; a discontinued product is inactive.
    assert_eq!(
        text(&db, &format!("SELECT concat_ws(' ', sku, is_active, lead_time_days) FROM {s}.products WHERE id <> '2b000000-0000-4000-8000-000000000001'")).await,
        "SENTIA-BLACK-750 f 21"
    );
    assert_eq!(
        text(&db, &format!("SELECT string_agg(concat_ws(' ', warehouse_location, quantity_on_hand, to_char(last_counted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')), ', ' ORDER BY warehouse_location) FROM {s}.inventory")).await,
        "WH-LON-01/A1 #B1 100 2025-03-01 23:30, WH-LON-01/A1 #B2 50"
    );
    assert_eq!(
        text(&db, &format!("SELECT string_agg(concat_ws(' ', forecast_type, forecast_date, predicted_value, confidence_level, model_type), ', ' ORDER BY forecast_type) FROM {s}.forecasts")).await,
        "cash_flow 2025-02-28 12000.00 80.00, demand 2025-04-30 100.00 95.00 ensemble"
    );
    assert_eq!(
        text(&db, &format!("SELECT string_agg(concat_ws(' ', period_type, period_date, current_ratio, cash_runway_days, revenue), ', ' ORDER BY period_type) FROM {s}.working_capital_metrics")).await,
        "monthly 2025-01-31 2.1000 120 10000.00, quarterly 2025-03-31 2.0000 30000.00"
    );
    assert_eq!(
        text(
            &db,
            "SELECT concat_ws(' ', clerk_user_id, role) FROM public.users"
        )
        .await,
        "user_boss admin"
    );

    // The integration's secrets are sealed and open to what Sentia held.
    let (id, creds, access, refresh, state): (uuid::Uuid, Value, Option<String>, Option<String>, String) =
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, credentials, oauth_access_token, oauth_refresh_token,
                    concat_ws(' ', service, is_active, last_sync_status, last_sync_error,
                              to_char(oauth_token_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'))
               FROM {s}.api_credentials"
        )))
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(state, "xero t FAILED token expired 2025-06-01 12:00");
    let keys = Keyring::from_settings(Some(ENCRYPTION_KEY), "k1", None).unwrap();
    let secrets = capliquify::credentials::open(
        &keys,
        &t.scope().unwrap(),
        id,
        &creds,
        access.as_deref(),
        refresh.as_deref(),
    )
    .unwrap();
    assert_eq!(
        secrets.oauth_access_token.as_deref(),
        Some("xero_ACCESS_SECRET")
    );
    assert_eq!(
        secrets.oauth_refresh_token.as_deref(),
        Some("xero_REFRESH_SECRET")
    );
    assert_eq!(secrets.credentials["api_key"], "xero_CLIENT_ID");
    let tenant_rows = dump(&db, s).await;
    for secret in [
        "xero_ACCESS_SECRET",
        "xero_REFRESH_SECRET",
        "xero_CLIENT_ID",
        "bcrypt$NEVER",
    ] {
        assert!(
            !tenant_rows.contains(secret),
            "{secret} in the tenant's tables"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
    }

    let (again, out) = migrate(&db, &args);
    assert!(out.status.success());
    let written: u64 = again["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["inserted"].as_u64().unwrap() + t["updated"].as_u64().unwrap())
        .sum();
    assert_eq!(written, 0, "{again:#}");
    assert_eq!(counts(&again, "products (B)"), [2, 0, 0, 2, 0]);
}

#[tokio::test]
async fn a_checksum_that_disagrees_refuses_the_migration() {
    let src = source(&[GENERATION_A, GENERATION_A_DATA]).await;
    let db = TestDb::new().await;
    let t = db.tenant("sentia-sum", Tier::Professional).await;
    let s = &t.schema_name;
    // A trigger in the tenant that changes amounts on the way in: the write "succeeds",
    // the reconciliation must notice.
    db.exec(&format!(
        "CREATE FUNCTION {s}.skew() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN NEW.total_amount := NEW.total_amount + 0.01; RETURN NEW; END $$;
         CREATE TRIGGER skew BEFORE INSERT ON {s}.sales FOR EACH ROW EXECUTE FUNCTION {s}.skew();"
    ))
    .await;
    let (report, out) = migrate(&db, &["--source-url", &src.url, "--tenant", "sentia-sum"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report["status"], "checksum_mismatch");
    let (_, _, _, agrees) = checksum(&report, "Σ sales.total_amount");
    assert!(!agrees);
    assert!(checksum(&report, "Σ inventory.total_value").3);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was written"));
    for table in ["companies", "products", "sales", "api_credentials"] {
        assert_eq!(
            db.scalar_i64(&format!("SELECT count(*) FROM {s}.{table}"))
                .await,
            0
        );
    }
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM public.audit_logs WHERE tenant_id = '{}' AND action = 'import.sentia'",
            t.id
        ))
        .await,
        0
    );
}

#[tokio::test]
async fn bad_sources_and_unknown_tenants_are_refused_with_nothing_written() {
    let db = TestDb::new().await;
    let t = db.tenant("sentia-bad", Tier::Starter).await;
    let s = &t.schema_name;
    let fail = |args: &[&str]| {
        let mut all = vec!["import", "sentia"];
        all.extend_from_slice(args);
        let out = run(&db, &all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let err = fail(&[
        "--source-url",
        "postgres://nobody@127.0.0.1:1/sentia",
        "--tenant",
        "sentia-bad",
    ]);
    assert!(
        err.contains("source database") && err.contains("cannot connect"),
        "{err}"
    );

    let empty = source(&["CREATE TABLE unrelated (id int)"]).await;
    let err = fail(&["--source-url", &empty.url, "--tenant", "sentia-bad"]);
    assert!(err.contains("not a Sentia database"), "{err}");

    let src = source(&[GENERATION_A, GENERATION_A_DATA]).await;
    let err = fail(&["--source-url", &src.url, "--tenant", "no-such-tenant"]);
    assert!(err.contains("no-such-tenant"), "{err}");

    // An owner who is not among the imported users names nobody.
    let err = fail(&[
        "--source-url",
        &src.url,
        "--tenant",
        "sentia-bad",
        "--owner",
        "viewer@sentia.example",
    ]);
    assert!(err.contains("--owner"), "{err}");

    // The starter plan allows one company; one made beside an existing one is refused.
    db.exec(&format!(
        "INSERT INTO {s}.companies (name) VALUES ('Already here')"
    ))
    .await;
    let err = fail(&["--source-url", &src.url, "--tenant", "sentia-bad"]);
    assert!(err.contains("the plan allows 1 company"), "{err}");
    assert_eq!(
        db.scalar_i64(&format!("SELECT count(*) FROM {s}.products"))
            .await,
        0
    );
    assert_eq!(
        db.scalar_i64(&format!("SELECT count(*) FROM {s}.companies"))
            .await,
        1
    );

    // The source was only read.
    assert_eq!(
        src.scalar_i64("SELECT count(*) FROM historical_sales")
            .await,
        8
    );
}
