//! What one request may cost: JSON documents capped in size and depth, pages capped in
//! bytes whatever their rows hold, a tenant's concurrent requests capped, and a request's
//! statements cancelled in the database when the request times out.

use std::time::{Duration, Instant};

use capliquify::access::Role;
use capliquify::billing::Tier;
use capliquify::http::HttpConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::common::api::{TestApp, TestTenant};

/// A JSON object of about `bytes` bytes.
fn document(bytes: usize) -> Value {
    json!({ "notes": "x".repeat(bytes.saturating_sub(20)) })
}

/// An admin connection to the test database that holds `ACCESS EXCLUSIVE` on the tenant's
/// `table` until dropped: the API's next statement on it waits.
async fn lock_table(app: &TestApp, t: &TestTenant, table: &str) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {}.{table} IN ACCESS EXCLUSIVE MODE",
        t.tenant.schema_name
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    conn
}

/// Backends of the service's role waiting on a lock.
async fn waiting_app_backends(app: &TestApp) -> i64 {
    app.db
        .scalar_i64(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND usename = '{}' AND wait_event_type = 'Lock'",
            app.db.name,
            crate::common::APP_ROLE
        ))
        .await
}

#[tokio::test]
async fn a_json_document_over_its_cap_is_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let t = app.tenant("jsoncap", Tier::Professional).await;
    let company = app.company(&t, "Caps").await;
    let token = app.token_for(&t, Role::Member);
    let too_big = app
        .post(
            &token,
            "/api/v1/scenarios",
            json!({ "company_id": company, "name": "big", "parameters": document(70_000) }),
        )
        .await;
    let problem = too_big.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(problem["field"], "parameters", "{}", too_big.text);
    assert!(problem["detail"].as_str().unwrap().contains("65536 bytes"));

    let mut deep = json!(1);
    for _ in 0..17 {
        deep = json!({ "a": deep });
    }
    let too_deep = app
        .patch(
            &app.token_for(&t, Role::Owner),
            "/api/v1/me/preferences",
            json!({ "preferences": deep }),
        )
        .await;
    assert_eq!(
        too_deep.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")["field"],
        "preferences"
    );
    let fits = app
        .post(
            &token,
            "/api/v1/scenarios",
            json!({ "company_id": company, "name": "fits", "parameters": document(60_000) }),
        )
        .await;
    assert_eq!(fits.status, StatusCode::CREATED, "{}", fits.text);
    assert_eq!(
        app.rows(&t, "scenarios").await,
        1,
        "nothing of the refused ones was written"
    );
}

#[tokio::test]
async fn a_page_of_large_rows_ends_at_its_byte_cap_and_the_cursor_goes_on() {
    let app = TestApp::spawn().await;
    let t = app.tenant("pagecap", Tier::Professional).await;
    let company = app.company(&t, "Pages").await;
    let token = app.token_for(&t, Role::Member);
    for i in 0..30 {
        let reply = app
            .post(
                &token,
                "/api/v1/scenarios",
                json!({ "company_id": company, "name": format!("s{i:02}"),
                        "parameters": document(60_000), "results": document(60_000) }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/scenarios?limit=200&sort=name".to_owned();
    let mut pages = 0;
    loop {
        let page = app.get(&token, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        pages += 1;
        assert!(
            page.text.len() < (1 << 20) + 130_000,
            "a page holds about 1 MiB at most (got {} bytes)",
            page.text.len()
        );
        for row in page.body["data"].as_array().unwrap() {
            seen.push(row["name"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/scenarios?limit=200&sort=name&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..30).map(|i| format!("s{i:02}")).collect();
    assert_eq!(seen, expected, "every row once, in order");
    assert!(pages >= 2, "30 rows of 120 kB take more than one page");
}

#[tokio::test]
async fn a_tenant_over_its_concurrency_gets_429_while_others_go_on() {
    let config = HttpConfig {
        tenant_concurrency: 1,
        ..HttpConfig::default()
    };
    let app = TestApp::spawn_with(config, 10).await;
    let busy = app.tenant("busy", Tier::Professional).await;
    let calm = app.tenant("calm", Tier::Professional).await;
    let busy_token = app.token_for(&busy, Role::Viewer);
    let lock = lock_table(&app, &busy, "products").await;
    // The first request takes the tenant's one place and waits on the lock.
    let first = {
        let client = reqwest::Client::new();
        let url = app.url("/api/v1/products");
        let token = busy_token.clone();
        tokio::spawn(async move { client.get(url).bearer_auth(token).send().await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting_app_backends(&app).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the first request never reached the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = app.get(&busy_token, "/api/v1/companies").await;
    refused.problem(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    assert_eq!(
        refused
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let other = app
        .get(&app.token_for(&calm, Role::Viewer), "/api/v1/companies")
        .await;
    assert_eq!(
        other.status,
        StatusCode::OK,
        "another tenant is not held up"
    );
    drop(lock);
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        app.get(&busy_token, "/api/v1/companies").await.status,
        StatusCode::OK,
        "the place is free again"
    );
}

#[tokio::test]
async fn a_timed_out_request_leaves_no_query_running() {
    let config = HttpConfig {
        request_timeout: Duration::from_secs(1),
        ..HttpConfig::default()
    };
    let app = TestApp::spawn_with(config, 4).await;
    let t = app.tenant("slow", Tier::Professional).await;
    let lock = lock_table(&app, &t, "products").await;
    let started = Instant::now();
    let reply = app
        .get(&app.token_for(&t, Role::Viewer), "/api/v1/products")
        .await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT, "{}", reply.text);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The statement timeout is the request's: the database cancels the blocked query by
    // itself, while the lock is still held.
    let deadline = Instant::now() + Duration::from_secs(5);
    while waiting_app_backends(&app).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the timed-out request's query still waits in the database"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(lock);
}
