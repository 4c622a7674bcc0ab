//! The data API's shared behaviour: authentication, tenant gates, roles, plans, bad input,
//! problem documents, and products/companies CRUD.

use crate::common::api::{OTHER_KEY, TestApp, claims, sign};
use capliquify::access::Role;
use capliquify::billing::Tier;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// With `serve`'s auth cache on (hits are the unit test's, `context::tests`), a token is
/// never taken past its own expiry however long the cache keeps it, and a token that
/// differs from a cached one (a forged or cut signature on the same claims) is verified,
/// not taken for it.
#[tokio::test]
async fn the_token_cache_keeps_a_verification_no_longer_than_the_token_lives() {
    let app = TestApp::spawn_cached(
        crate::common::TestDb::new().await,
        capliquify::http::HttpConfig::default(),
        4,
        Vec::new(),
        Some(std::time::Duration::from_secs(600)),
    )
    .await;
    let t = app.tenant("cache-co", Tier::Professional).await;
    // Expired 4 s ago: still accepted within the 5 s leeway, for about a second more.
    let mut ending = claims(&t.user(Role::Owner), Some(&t.org));
    ending["exp"] = json!(chrono::Utc::now().timestamp() - 4);
    let token = sign(crate::common::api::TEST_KEY, &ending);
    assert_eq!(
        app.get(&token, "/api/v1/products").await.status,
        StatusCode::OK
    );
    let forged = sign(OTHER_KEY, &ending);
    app.get(&forged, "/api/v1/products")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    // A signature cut short is another token too.
    let cut = &token[..token.len() - 2];
    app.get(cut, "/api/v1/products")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    // The cache's 600 s have not passed; the token's life has.
    app.get(&token, "/api/v1/products")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
}

/// With the cache on and the service hearing the database's announcements (public
/// migration 0023), a member removed and a tenant suspended by plain SQL, no service told,
/// are refused on the next requests, long before the cache's ttl (60 s here) would have
/// let them go; an update of a column the caller does not depend on announces nothing.
#[tokio::test]
async fn a_change_made_anywhere_reaches_the_caller_cache_at_once() {
    let ttl = std::time::Duration::from_secs(60);
    let app = TestApp::spawn_cached(
        crate::common::TestDb::new().await,
        capliquify::http::HttpConfig::default(),
        4,
        Vec::new(),
        Some(ttl),
    )
    .await;
    let t = app.tenant("heard-co", Tier::Professional).await;
    let other = app.tenant("heard-other", Tier::Professional).await;
    let started = std::time::Instant::now();
    while !app.callers.hearing() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "the service never heard the channel"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (owner, viewer) = (
        app.token_for(&t, Role::Owner),
        app.token_for(&t, Role::Viewer),
    );
    let bystander = app.token_for(&other, Role::Owner);
    for token in [&owner, &viewer, &bystander] {
        assert_eq!(
            app.get(token, "/api/v1/products").await.status,
            StatusCode::OK
        );
    }
    // What the triggers announce, seen by a listener of our own.
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.db.pool)
        .await
        .unwrap();
    listener
        .listen(capliquify::http::caller_changes::CHANNEL)
        .await
        .unwrap();
    let next_change = async |listener: &mut sqlx::postgres::PgListener| loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
            .await
            .expect("an announcement within 5 s")
            .unwrap();
        if n.payload() != capliquify::http::caller_changes::HEARTBEAT {
            return n.payload().to_owned();
        }
    };
    sqlx::query(
        "UPDATE public.tenants SET schema_version = schema_version, updated_at = now() WHERE id = $1",
    )
    .bind(t.tenant.id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE public.users SET removed_at = now() WHERE clerk_user_id = $1")
        .bind(t.user(Role::Viewer))
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut listener).await,
        t.tenant.id.to_string(),
        "the removal is the first change announced: the bookkeeping update was not"
    );
    let refused = async |token: &str, code: &str| {
        let since = std::time::Instant::now();
        loop {
            let reply = app.get(token, "/api/v1/products").await;
            if reply.status == StatusCode::FORBIDDEN {
                reply.problem(StatusCode::FORBIDDEN, code);
                return since.elapsed();
            }
            assert_eq!(reply.status, StatusCode::OK);
            assert!(
                since.elapsed() < std::time::Duration::from_secs(5),
                "still served 5 s after the change (the cache keeps callers {ttl:?})"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    refused(&viewer, "not_a_member").await;
    assert_eq!(
        app.get(&owner, "/api/v1/products").await.status,
        StatusCode::OK
    );
    sqlx::query("UPDATE public.tenants SET subscription_status = 'suspended' WHERE id = $1")
        .bind(t.tenant.id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(next_change(&mut listener).await, t.tenant.id.to_string());
    refused(&owner, "tenant_suspended").await;
    assert_eq!(
        app.get(&bystander, "/api/v1/products").await.status,
        StatusCode::OK,
        "another tenant is not touched"
    );
}

#[tokio::test]
async fn requests_without_a_valid_token_are_401() {
    let app = TestApp::spawn().await;
    let t = app.tenant("auth-co", Tier::Professional).await;
    let reply = app.call(Method::GET, "/api/v1/products", None, None).await;
    reply.problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(reply.headers.get("www-authenticate").unwrap(), "Bearer");

    let forged = sign(OTHER_KEY, &claims(&t.user(Role::Owner), Some(&t.org)));
    app.get(&forged, "/api/v1/products")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");

    let mut expired = claims(&t.user(Role::Owner), Some(&t.org));
    expired["exp"] = json!(chrono::Utc::now().timestamp() - 120);
    app.get(
        &sign(crate::common::api::TEST_KEY, &expired),
        "/api/v1/products",
    )
    .await
    .problem(StatusCode::UNAUTHORIZED, "unauthenticated");

    let mut wrong_issuer = claims(&t.user(Role::Owner), Some(&t.org));
    wrong_issuer["iss"] = json!("https://evil.example");
    app.get(
        &sign(crate::common::api::TEST_KEY, &wrong_issuer),
        "/api/v1/products",
    )
    .await
    .problem(StatusCode::UNAUTHORIZED, "unauthenticated");

    app.get("not-a-jwt", "/api/v1/products")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn unknown_organizations_and_strangers_are_403() {
    let app = TestApp::spawn().await;
    let t = app.tenant("members-only", Tier::Professional).await;
    app.get(&app.token("user_x", "org_nobody"), "/api/v1/products")
        .await
        .problem(StatusCode::FORBIDDEN, "unknown_organization");
    app.get(&app.token("user_stranger", &t.org), "/api/v1/products")
        .await
        .problem(StatusCode::FORBIDDEN, "not_a_member");
    let no_org = sign(
        crate::common::api::TEST_KEY,
        &claims(&t.user(Role::Owner), None),
    );
    app.get(&no_org, "/api/v1/products")
        .await
        .problem(StatusCode::FORBIDDEN, "no_organization");
    // The v1 claim form works too.
    let mut v1 = claims(&t.user(Role::Viewer), None);
    v1["org_id"] = json!(t.org);
    assert_eq!(
        app.get(&sign(crate::common::api::TEST_KEY, &v1), "/api/v1/products")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn suspended_and_deleted_tenants_are_refused_with_a_code_saying_so() {
    let app = TestApp::spawn().await;
    let t = app.tenant("gated", Tier::Professional).await;
    let token = app.token_for(&t, Role::Owner);
    let actor = capliquify::audit::Actor::operator();
    app.db
        .tenancy()
        .suspend("gated", None, &actor)
        .await
        .unwrap();
    app.get(&token, "/api/v1/tenant")
        .await
        .problem(StatusCode::FORBIDDEN, "tenant_suspended");
    app.db.tenancy().reactivate("gated", &actor).await.unwrap();
    assert_eq!(
        app.get(&token, "/api/v1/tenant").await.status,
        StatusCode::OK
    );
    app.db.tenancy().soft_delete("gated", &actor).await.unwrap();
    app.get(&token, "/api/v1/tenant")
        .await
        .problem(StatusCode::FORBIDDEN, "tenant_deleted");
}

#[tokio::test]
async fn an_ended_trial_or_cancelled_subscription_allows_reads_only_and_past_due_warns() {
    let app = TestApp::spawn().await;
    let t = app.tenant("billing-gates", Tier::Professional).await;
    let token = app.token_for(&t, Role::Owner);
    app.db
        .exec(&format!(
            "UPDATE tenants SET trial_ends_at = now() - interval '1 day' WHERE id = '{}'",
            t.tenant.id
        ))
        .await;
    assert_eq!(
        app.get(&token, "/api/v1/companies").await.status,
        StatusCode::OK
    );
    app.post(&token, "/api/v1/companies", json!({ "name": "X" }))
        .await
        .problem(StatusCode::PAYMENT_REQUIRED, "payment_required");
    app.db
        .exec(&format!(
            "UPDATE tenants SET subscription_status = 'cancelled' WHERE id = '{}'",
            t.tenant.id
        ))
        .await;
    app.post(&token, "/api/v1/companies", json!({ "name": "X" }))
        .await
        .problem(StatusCode::PAYMENT_REQUIRED, "payment_required");
    app.db
        .exec(&format!(
            "UPDATE tenants SET subscription_status = 'past_due' WHERE id = '{}'",
            t.tenant.id
        ))
        .await;
    let reply = app
        .post(&token, "/api/v1/companies", json!({ "name": "X" }))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert!(reply.headers.get("capliquify-billing-warning").is_some());
    assert_eq!(app.rows(&t, "companies").await, 1);
}

#[tokio::test]
async fn roles_decide_who_reads_and_who_writes() {
    let app = TestApp::spawn().await;
    let t = app.tenant("roles", Tier::Professional).await;
    for role in [Role::Viewer, Role::Member, Role::Admin, Role::Owner] {
        let token = app.token_for(&t, role);
        assert_eq!(
            app.get(&token, "/api/v1/companies").await.status,
            StatusCode::OK,
            "{role:?} reads"
        );
        let reply = app
            .post(
                &token,
                "/api/v1/companies",
                json!({ "name": format!("by {}", role.as_str()) }),
            )
            .await;
        if role == Role::Viewer {
            reply.problem(StatusCode::FORBIDDEN, "insufficient_role");
        } else {
            assert_eq!(
                reply.status,
                StatusCode::CREATED,
                "{role:?} writes: {}",
                reply.text
            );
        }
    }
    assert_eq!(app.rows(&t, "companies").await, 3);
}

#[tokio::test]
async fn companies_beyond_the_plan_are_refused() {
    let app = TestApp::spawn().await;
    let t = app.tenant("small-plan", Tier::Starter).await;
    app.company(&t, "The one").await;
    let token = app.token_for(&t, Role::Owner);
    app.post(
        &token,
        "/api/v1/companies",
        json!({ "name": "One too many" }),
    )
    .await
    .problem(StatusCode::FORBIDDEN, "plan_limit_reached");
    let overview = app.get(&token, "/api/v1/tenant").await;
    assert_eq!(overview.status, StatusCode::OK);
    assert_eq!(overview.body["slug"], "small-plan");
    assert_eq!(overview.body["tier"], "starter");
    assert_eq!(overview.body["limits"]["max_entities"], 1);
    assert_eq!(overview.body["usage"]["entities"], 1);
    assert_eq!(overview.body["usage"]["users"], 4);
    assert_eq!(overview.body["features"]["ai_forecasting"], false);
    // No tenant UUID or schema name anywhere in the response.
    assert!(!overview.text.contains(&t.tenant.id.to_string()));
    assert!(!overview.text.contains(&t.tenant.schema_name));
}

#[tokio::test]
async fn products_crud_with_filters_sort_and_pagination() {
    let app = TestApp::spawn().await;
    let t = app.tenant("catalog", Tier::Professional).await;
    let company = app.company(&t, "ACME").await;
    let token = app.token_for(&t, Role::Member);
    for i in 0..7 {
        let reply = app
            .post(&token, "/api/v1/products", json!({
                "company_id": company, "sku": format!("SKU-{i}"), "name": format!("Widget {i}"),
                "category": if i % 2 == 0 { "even" } else { "odd" }, "unit_cost": "12.50", "unit_price": "29.99",
                "is_active": i != 3
            }))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        assert_eq!(
            reply.body["unit_cost"], "12.50",
            "money is a decimal string"
        );
    }
    // Pages of 3, sorted by sku descending, cover everything once.
    let mut seen = Vec::new();
    let mut path = "/api/v1/products?limit=3&sort=-sku".to_owned();
    loop {
        let page = app.get(&token, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        seen.extend(
            page.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["sku"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/products?limit=3&sort=-sku&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..7).rev().map(|i| format!("SKU-{i}")).collect::<Vec<_>>()
    );

    let odd = app
        .get(&token, "/api/v1/products?category=odd&active=true")
        .await;
    let skus: Vec<_> = odd.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["SKU-1", "SKU-5"]);
    let one = app.get(&token, "/api/v1/products?sku=SKU-4").await;
    let id = one.body["data"][0]["id"].as_str().unwrap().to_owned();

    let got = app.get(&token, &format!("/api/v1/products/{id}")).await;
    assert_eq!(got.body["name"], "Widget 4");
    let changed = app
        .patch(
            &token,
            &format!("/api/v1/products/{id}"),
            json!({ "unit_price": "31.00", "description": null, "category": "special" }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["unit_price"], "31.00");
    assert_eq!(changed.body["category"], "special");
    assert_eq!(
        app.delete(&token, &format!("/api/v1/products/{id}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    app.get(&token, &format!("/api/v1/products/{id}"))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    app.delete(&token, &format!("/api/v1/products/{id}"))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn duplicate_skus_conflict_and_missing_references_name_the_field() {
    let app = TestApp::spawn().await;
    let t = app.tenant("dupes", Tier::Professional).await;
    let company = app.company(&t, "ACME").await;
    let token = app.token_for(&t, Role::Member);
    let body = json!({ "company_id": company, "sku": "DUP", "name": "A" });
    assert_eq!(
        app.post(&token, "/api/v1/products", body.clone())
            .await
            .status,
        StatusCode::CREATED
    );
    let reply = app.post(&token, "/api/v1/products", body).await;
    assert_eq!(
        reply.problem(StatusCode::CONFLICT, "already_exists")["field"],
        "sku"
    );
    let reply = app
        .post(
            &token,
            "/api/v1/products",
            json!({ "company_id": uuid::Uuid::new_v4(), "sku": "X", "name": "A" }),
        )
        .await;
    assert_eq!(
        reply.problem(StatusCode::UNPROCESSABLE_ENTITY, "reference_not_found")["field"],
        "company_id"
    );
    // Same SKU in another tenant is fine: SKUs are unique per tenant.
    let other = app.tenant("other-dupes", Tier::Professional).await;
    let other_company = app.company(&other, "Other").await;
    let reply = app
        .post(
            &app.token_for(&other, Role::Member),
            "/api/v1/products",
            json!({ "company_id": other_company, "sku": "DUP", "name": "B" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    // A company id from another tenant does not exist here.
    let reply = app
        .post(
            &token,
            "/api/v1/products",
            json!({ "company_id": other_company, "sku": "Y", "name": "A" }),
        )
        .await;
    reply.problem(StatusCode::UNPROCESSABLE_ENTITY, "reference_not_found");
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_problem_and_changes_nothing() {
    let app = TestApp::spawn_with(
        capliquify::http::HttpConfig {
            max_body_bytes: 4096,
            ..Default::default()
        },
        5,
    )
    .await;
    let t = app.tenant("hostile", Tier::Professional).await;
    let company = app.company(&t, "ACME").await;
    let token = app.token_for(&t, Role::Owner);
    let products = || async { app.rows(&t, "products").await };

    app.raw(Method::POST, "/api/v1/products", &token, "{not json")
        .await
        .problem(StatusCode::BAD_REQUEST, "malformed_json");
    let cases = [
        (
            json!({ "company_id": company, "sku": "A", "name": "A", "colour": "red" }),
            "colour",
        ),
        (
            json!({ "company_id": company, "sku": 5, "name": "A" }),
            "sku",
        ),
        (
            json!({ "company_id": company, "sku": "A", "name": "A", "unit_cost": "-1.00" }),
            "unit_cost",
        ),
        (
            json!({ "company_id": company, "sku": "A", "name": "A", "unit_cost": 12.5 }),
            "unit_cost",
        ),
        (
            json!({ "company_id": company, "sku": "A", "name": "A", "unit_cost": "1.005" }),
            "unit_cost",
        ),
        (
            json!({ "company_id": company, "sku": "A", "name": "A", "reorder_point": -5 }),
            "reorder_point",
        ),
        (
            json!({ "company_id": company, "sku": "A", "name": "x".repeat(300) }),
            "name",
        ),
        (
            json!({ "company_id": company, "sku": "A", "name": "A", "currency": "XYZ" }),
            "currency",
        ),
        (
            json!({ "company_id": "not-a-uuid", "sku": "A", "name": "A" }),
            "company_id",
        ),
    ];
    for (body, field) in cases {
        let reply = app.post(&token, "/api/v1/products", body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.text
        );
        let problem = reply.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let named = problem["field"].as_str().unwrap_or("");
        assert!(
            named == field || problem["detail"].as_str().unwrap().contains(field),
            "{body}: {}",
            reply.text
        );
    }
    let huge = json!({ "company_id": company, "sku": "A", "name": "A", "description": "x".repeat(10_000) });
    app.post(&token, "/api/v1/products", huge)
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    app.get(&token, "/api/v1/products/not-a-uuid")
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_id");
    app.get(&token, "/api/v1/products?limit=500")
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_parameter");
    app.get(&token, "/api/v1/products?sort=cost")
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_parameter");
    app.get(&token, "/api/v1/products?colour=red")
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_parameter");
    app.get(&token, "/api/v1/products?active=maybe")
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_parameter");
    app.get(&token, "/api/v1/products?cursor=abc.def")
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_cursor");
    app.patch(
        &token,
        "/api/v1/companies/00000000-0000-0000-0000-000000000000",
        json!({}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(products().await, 0);
}

#[tokio::test]
async fn a_tampered_cursor_is_refused() {
    let app = TestApp::spawn().await;
    let t = app.tenant("cursors", Tier::Professional).await;
    let token = app.token_for(&t, Role::Owner);
    for i in 0..3 {
        app.post(
            &token,
            "/api/v1/companies",
            json!({ "name": format!("C{i}") }),
        )
        .await;
    }
    let page = app.get(&token, "/api/v1/companies?limit=1&sort=name").await;
    let cursor = page.body["next_cursor"].as_str().unwrap().to_owned();
    let (payload, tag) = cursor.split_once('.').unwrap();
    let mut bytes = payload.as_bytes().to_vec();
    bytes[3] ^= 1;
    let tampered = format!("{}.{tag}", String::from_utf8_lossy(&bytes));
    app.get(
        &token,
        &format!("/api/v1/companies?limit=1&sort=name&cursor={tampered}"),
    )
    .await
    .problem(StatusCode::BAD_REQUEST, "invalid_cursor");
    app.get(
        &token,
        &format!("/api/v1/companies?limit=1&sort=-name&cursor={cursor}"),
    )
    .await
    .problem(StatusCode::BAD_REQUEST, "invalid_cursor");
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let app = TestApp::spawn().await;
    let t = app.tenant("ops", Tier::Professional).await;
    app.get(&app.token_for(&t, Role::Owner), "/api/v1/companies")
        .await;
    let health = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.body["status"], "ready");
    let metrics = app.call(Method::GET, "/metrics", None, None).await;
    assert!(
        metrics.text.contains("http_requests_total"),
        "{}",
        metrics.text
    );
    assert!(
        metrics.text.contains("route=\"/api/v1/companies\""),
        "{}",
        metrics.text
    );
    assert!(metrics.text.contains("db_pool_connections"));
    let reply = app.call(Method::GET, "/healthz", None, None).await;
    assert!(reply.headers.get("x-request-id").is_some());
    app.call(Method::GET, "/nowhere", None, None)
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let app = TestApp::spawn().await;
    let served = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.body["openapi"], "3.1.0");
    let committed = include_str!("../../docs/openapi.json");
    assert!(
        served.text == committed,
        "docs/openapi.json is out of date: run `cargo run -q -- openapi > docs/openapi.json` and commit it"
    );
    for path in [
        "/api/v1/products",
        "/api/v1/products/{id}",
        "/api/v1/tenant",
    ] {
        assert!(served.body["paths"][path].is_object(), "{path} documented");
    }
}

#[tokio::test]
async fn nul_characters_are_refused_not_passed_to_the_database() {
    let app = TestApp::spawn().await;
    let t = app.tenant("nul-chars", Tier::Professional).await;
    let owner = app.token_for(&t, Role::Owner);
    // JSON fields stored as jsonb (found by schemathesis).
    app.call(
        Method::PUT,
        "/api/v1/me/preferences",
        Some(&owner),
        Some(json!({ "preferences": { "a": "\u{0}" } })),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    app.patch(
        &owner,
        "/api/v1/me/preferences",
        json!({ "preferences": { "\u{0}": 1 } }),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let reply = app
        .post(
            &owner,
            "/api/v1/companies",
            json!({ "name": "ok", "settings": { "k": ["\u{0}"] } }),
        )
        .await;
    assert_eq!(
        reply.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")["field"],
        "settings"
    );
    // Paths and query strings.
    for path in [
        "/api/v1/products?category=%00",
        "/api/v1/products?sku=a%00",
        "/api/v1/audit-logs?action=%00",
        "/api/v1/user-preferences/a%00b",
    ] {
        app.get(&owner, path)
            .await
            .problem(StatusCode::BAD_REQUEST, "invalid_url");
    }
    assert_eq!(app.rows(&t, "companies").await, 0);
}
