//! Monitoring: usage against limits, slow queries attributed to their tenant through the
//! tenant's database role (pg_stat_statements), and the admin endpoints that serve both.

use std::process::Command;
use std::sync::Arc;

use crate::common::api::{Reply, TestApp};
use capliquify::access::Role;
use capliquify::billing::Tier;
use capliquify::http::HttpConfig;
use capliquify::monitor;
use reqwest::StatusCode;
use serde_json::Value;

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789abcdef";

async fn app_with_admin() -> TestApp {
    TestApp::spawn_with(
        HttpConfig {
            admin_token: Some(Arc::from(ADMIN_TOKEN)),
            ..HttpConfig::default()
        },
        4,
    )
    .await
}

async fn admin_get(app: &TestApp, token: Option<&str>, path: &str) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().get(app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn slow_queries_are_attributed_to_the_tenant_that_ran_them() {
    let app = app_with_admin().await;
    let a = app.tenant("stats-a", Tier::Professional).await;
    let b = app.tenant("stats-b", Tier::Professional).await;
    let (ta, tb) = (
        app.token_for(&a, Role::Owner),
        app.token_for(&b, Role::Owner),
    );
    app.company(&a, "A Co").await;
    for _ in 0..5 {
        let r: Reply = app.get(&ta, "/api/v1/companies?limit=5").await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = app.get(&tb, "/api/v1/products").await;
    assert_eq!(r.status, StatusCode::OK);

    let pool = &app.db.pool;
    let of_a = monitor::slow_queries(pool, Some(a.tenant.id), 100)
        .await
        .unwrap();
    assert!(
        !of_a.is_empty(),
        "tenant A's statements are attributed to it"
    );
    assert!(of_a.iter().all(|q| q.tenant == "stats-a"));
    let companies = of_a
        .iter()
        .find(|q| q.query.contains("companies") && q.query.starts_with("SELECT"))
        .unwrap_or_else(|| panic!("A's company listing is among its statements: {of_a:#?}"));
    assert!(companies.calls >= 5, "{companies:?}");
    let of_b = monitor::slow_queries(pool, Some(b.tenant.id), 100)
        .await
        .unwrap();
    assert!(of_b.iter().all(|q| q.tenant == "stats-b"));
    assert!(of_b.iter().any(|q| q.query.contains("products")));
    assert!(
        !of_b
            .iter()
            .any(|q| q.query.contains("companies") && q.calls >= 5),
        "A's calls are not counted for B"
    );
    let all = monitor::slow_queries(pool, None, 1000).await.unwrap();
    assert!(all.iter().any(|q| q.tenant == "stats-a") && all.iter().any(|q| q.tenant == "stats-b"));

    // The guide's attribution by query text finds none of it: our SQL never names a schema.
    let by_text: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM capliquify_stats.pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND query LIKE '%' || $1 || '%'",
    )
    .bind(&a.tenant.schema_name)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(by_text, 0);

    // The same through the admin API and the CLI.
    let (status, body) = admin_get(
        &app,
        Some(ADMIN_TOKEN),
        "/admin/api/slow-queries?tenant=stats-a&limit=50",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body.as_array().unwrap();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["tenant"] == "stats-a"),
        "{body}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .env("DATABASE_URL", &app.db.url)
        .args([
            "monitor",
            "slow-queries",
            "--tenant",
            "stats-b",
            "--limit",
            "5",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("TENANT") && stdout.contains("stats-b") && !stdout.contains("stats-a"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_says_what_is_wrong() {
    let app = app_with_admin().await;
    let t = app.tenant("admin-seen", Tier::Starter).await;
    app.company(&t, "One").await;

    let (status, body) = admin_get(&app, None, "/admin/api/tenants").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = admin_get(
        &app,
        Some("wrong-token-wrong-token-wrong-token"),
        "/admin/api/tenants",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A tenant's Clerk token is not an admin token.
    let owner = app.token_for(&t, Role::Owner);
    let (status, _) = admin_get(&app, Some(&owner), "/admin/api/sizes").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = admin_get(&app, Some(ADMIN_TOKEN), "/admin/api/tenants").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let row = body
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["slug"] == "admin-seen")
        .cloned()
        .expect("the tenant is listed");
    // TestApp adds one member per role; one company was created.
    assert_eq!(
        (row["user_count"].as_i64(), row["entity_count"].as_i64()),
        (Some(4), Some(1)),
        "{row}"
    );
    assert!(row["max_entities"].is_number(), "{row}");

    let (status, body) = admin_get(&app, Some(ADMIN_TOKEN), "/admin/api/sizes?limit=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");

    for (path, status, field) in [
        ("/admin/api/sizes?limit=0", StatusCode::BAD_REQUEST, "limit"),
        (
            "/admin/api/sizes?limit=lots",
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        ("/admin/api/tenants?drop=1", StatusCode::BAD_REQUEST, "drop"),
        (
            "/admin/api/slow-queries?tenant=no-such-tenant",
            StatusCode::NOT_FOUND,
            "tenant",
        ),
        (
            "/admin/api/slow-queries?tenant=..%2F..",
            StatusCode::NOT_FOUND,
            "tenant",
        ),
    ] {
        let (got, body) = admin_get(&app, Some(ADMIN_TOKEN), path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["field"], field, "{path}: {body}");
    }

    // Without a configured token the endpoints are off, and say how to turn them on.
    let off = TestApp::spawn().await;
    let (status, body) = admin_get(&off, Some(ADMIN_TOKEN), "/admin/api/tenants").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("CAPLIQUIFY_ADMIN_TOKEN"),
        "{body}"
    );
}

#[tokio::test]
async fn monitor_tenants_shows_usage_against_limits() {
    let app = TestApp::spawn().await;
    let t = app.tenant("usage-cli", Tier::Professional).await;
    app.company(&t, "First").await;
    app.company(&t, "Second").await;
    let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .env("DATABASE_URL", &app.db.url)
        .args(["monitor", "tenants"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("usage-cli"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(stdout.contains("ENTITIES"), "{stdout}");
    assert!(
        line.contains("4/") && line.contains("2/"),
        "users 4/…, entities 2/…: {line}"
    );
}

/// `monitor sizes` ranks by the catalog's page counts and measures only the largest
/// candidates (30 at least): with more tenants than that, the largest is still found once
/// autovacuum (here: ANALYZE) has seen it, and its size is the exact one.
#[tokio::test]
async fn sizes_finds_the_largest_of_many_tenants_and_measures_it_exactly() {
    let db = crate::common::TestDb::new().await;
    let mut schemas = Vec::new();
    for i in 0..36 {
        schemas.push(
            db.tenant(&format!("size-{i:02}"), Tier::Starter)
                .await
                .schema_name,
        );
    }
    // The last schema by name: among equals the ranking takes names in order, so without
    // the page counts it would not be among the 30 candidates.
    let big = schemas.iter().max().unwrap();
    db.exec(&format!(
        "INSERT INTO \"{big}\".companies (name) SELECT 'Company ' || g FROM generate_series(1, 20000) g;
         ANALYZE \"{big}\".companies;"
    ))
    .await;
    let top = monitor::sizes(&db.pool, 1).await.unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(&top[0].schema_name, big);
    assert!(top[0].slug.as_deref().unwrap().starts_with("size-"));
    let exact = db
        .scalar_i64(&format!(
            "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c
              WHERE c.relnamespace = '\"{big}\"'::regnamespace AND c.relkind IN ('r', 'p')"
        ))
        .await;
    assert_eq!(top[0].total_bytes, exact);
    // A limit above the fleet measures every schema.
    let all = monitor::sizes(&db.pool, 100).await.unwrap();
    assert_eq!(all.len(), 36);
    assert!(all.windows(2).all(|w| w[0].total_bytes >= w[1].total_bytes));
}
