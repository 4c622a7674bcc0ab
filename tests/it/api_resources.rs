//! The five business resources beyond companies and products: sales, inventory, forecasts,
//! working-capital metrics and scenarios. Each gets create/get/list (every filter, sort,
//! pages)/update/delete, validation naming the field, missing references, and the plan and
//! role gates.

use crate::common::api::{Reply, TestApp};
use capliquify::access::Role;
use capliquify::billing::Tier;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PRO: Tier = Tier::Professional;

/// Posts `body` and returns the created row.
async fn created(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let reply = app.post(token, path, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body
}

async fn product(app: &TestApp, token: &str, company: &str, sku: &str) -> String {
    let row = created(
        app,
        token,
        "/api/v1/products",
        json!({ "company_id": company, "sku": sku, "name": sku }),
    )
    .await;
    row["id"].as_str().unwrap().to_owned()
}

fn id(row: &Value) -> String {
    row["id"].as_str().unwrap().to_owned()
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter().map(id).collect()
}

/// Ids of `rows` by index, for comparing with a list's order.
fn pick(rows: &[Value], order: &[usize]) -> Vec<String> {
    order.iter().map(|&i| id(&rows[i])).collect()
}

/// Each filter query on `path` lists exactly the rows it names (indexes into `rows`),
/// in the default order, on one page.
async fn assert_filters<const N: usize>(
    app: &TestApp,
    token: &str,
    path: &str,
    rows: &[Value],
    filters: [(String, Vec<usize>); N],
) {
    for (query, expected) in filters {
        assert_eq!(
            list_ids(app, token, &format!("{path}?{query}")).await,
            pick(rows, &expected),
            "{query}"
        );
    }
}

/// Each sort of `path`, two rows a page, lists the rows in the order it names (indexes
/// into `rows`) over as many pages as that takes.
async fn assert_sorts<const N: usize>(
    app: &TestApp,
    token: &str,
    path: &str,
    rows: &[Value],
    sorts: [(&str, Vec<usize>); N],
) {
    for (sort, expected) in sorts {
        let (listed, pages) = all_pages(app, token, &format!("{path}?limit=2&sort={sort}")).await;
        assert_eq!(pages, expected.len().div_ceil(2), "{sort}");
        assert_eq!(ids(&listed), pick(rows, &expected), "{sort}");
    }
}

/// Follows `next_cursor` from `path` to the end; returns every row and the page count.
async fn all_pages(app: &TestApp, token: &str, path: &str) -> (Vec<Value>, usize) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut rows = Vec::new();
    let mut pages = 0;
    let mut next = path.to_owned();
    loop {
        let page = app.get(token, &next).await;
        assert_eq!(page.status, StatusCode::OK, "{next}: {}", page.text);
        pages += 1;
        rows.extend(page.body["data"].as_array().unwrap().iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(cursor) => next = format!("{path}{sep}cursor={cursor}"),
            None => break,
        }
    }
    (rows, pages)
}

/// The ids of a one-page list.
async fn list_ids(app: &TestApp, token: &str, path: &str) -> Vec<String> {
    let page = app.get(token, path).await;
    assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.text);
    assert!(page.body["next_cursor"].is_null(), "{path}: one page");
    ids(page.body["data"].as_array().unwrap())
}

/// A 422 naming `field`: `validation_failed` when the field breaks its own rule,
/// `rule_violated` when it breaks one with another field or the stored row (which of the
/// two is pinned by `a_field_rule_and_a_rule_between_fields_have_their_own_codes`).
#[track_caller]
fn invalid(reply: &Reply, field: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(
        matches!(
            reply.body["code"].as_str(),
            Some("validation_failed" | "rule_violated")
        ),
        "{}",
        reply.text
    );
    assert_eq!(reply.body["field"], field, "{}", reply.text);
}

#[tokio::test]
async fn a_field_rule_and_a_rule_between_fields_have_their_own_codes() {
    let app = TestApp::spawn().await;
    let t = app.tenant("codes", Tier::Professional).await;
    let token = app.token_for(&t, Role::Member);
    let company = app
        .post(&token, "/api/v1/companies", json!({ "name": "Codes Ltd" }))
        .await
        .body["id"]
        .clone();
    let product = app
        .post(
            &token,
            "/api/v1/products",
            json!({ "company_id": company, "sku": "C-1", "name": "C" }),
        )
        .await
        .body["id"]
        .clone();
    let record = |extra: Value| {
        let mut body =
            json!({ "company_id": company, "product_id": product, "quantity_on_hand": 5 });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let own = app
        .post(
            &token,
            "/api/v1/inventory",
            record(json!({ "quantity_reserved": -1 })),
        )
        .await;
    assert_eq!(
        own.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")["field"],
        "quantity_reserved"
    );
    let between = app
        .post(
            &token,
            "/api/v1/inventory",
            record(json!({ "quantity_reserved": 6 })),
        )
        .await;
    assert_eq!(
        between.problem(StatusCode::UNPROCESSABLE_ENTITY, "rule_violated")["field"],
        "quantity_reserved"
    );
    let created = app
        .post(&token, "/api/v1/inventory", record(json!({})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let item = format!("/api/v1/inventory/{}", created.body["id"].as_str().unwrap());
    // Against the stored row: the database's named CHECK, the same code.
    let stored = app
        .patch(&token, &item, json!({ "quantity_reserved": 6 }))
        .await;
    assert_eq!(
        stored.problem(StatusCode::UNPROCESSABLE_ENTITY, "rule_violated")["field"],
        "quantity_reserved"
    );
}

/// A 422 `validation_failed` whose detail names `field` (serde's missing and unknown
/// fields: the engine reports those at the body's root, without `field`).
#[track_caller]
fn invalid_in_detail(reply: &Reply, field: &str) {
    let problem = reply.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(
        problem["field"] == field || problem["detail"].as_str().unwrap().contains(field),
        "{}",
        reply.text
    );
}

#[track_caller]
fn missing_reference(reply: &Reply, field: &str) {
    let problem = reply.problem(StatusCode::UNPROCESSABLE_ENTITY, "reference_not_found");
    assert_eq!(problem["field"], field, "{}", reply.text);
}

/// Deletes `item`; afterwards it is gone for get, update and delete.
async fn delete_then_gone(app: &TestApp, token: &str, item: &str, change: Value) {
    assert_eq!(app.delete(token, item).await.status, StatusCode::NO_CONTENT);
    app.get(token, item)
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    app.patch(token, item, change)
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    app.delete(token, item)
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
}

fn random_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn sales_crud_with_filters_sorts_and_pages() {
    let app = TestApp::spawn().await;
    let t = app.tenant("sales-co", PRO).await;
    let ca = app.company(&t, "A").await;
    let cb = app.company(&t, "B").await;
    let token = app.token_for(&t, Role::Member);
    let p1 = product(&app, &token, &ca, "P1").await;
    let p2 = product(&app, &token, &ca, "P2").await;
    let p3 = product(&app, &token, &cb, "P3").await;

    let bodies = [
        json!({ "company_id": ca, "product_id": p1, "sale_date": "2026-01-05", "quantity": 3,
                "unit_price": "19.99", "channel": "web" }),
        json!({ "company_id": ca, "product_id": p2, "sale_date": "2026-01-01", "quantity": 1,
                "unit_price": "100", "total_amount": "90.00", "channel": "retail",
                "customer_name": "Bob", "customer_id": "C-1", "external_id": "shop-42" }),
        json!({ "company_id": ca, "product_id": p1, "sale_date": "2026-01-03", "quantity": 10,
                "unit_price": "5.00", "channel": "web", "currency": "EUR" }),
        json!({ "company_id": cb, "product_id": p3, "sale_date": "2026-02-10", "quantity": 2,
                "unit_price": "7.25", "channel": "retail" }),
        json!({ "company_id": ca, "sale_date": "2026-01-04", "quantity": 4, "unit_price": "30" }),
    ];
    let mut rows = Vec::new();
    for body in bodies {
        rows.push(created(&app, &token, "/api/v1/sales", body).await);
    }
    // Totals absent on create are quantity × unit_price; a given one is kept.
    let totals: Vec<_> = rows.iter().map(|r| r["total_amount"].clone()).collect();
    assert_eq!(
        totals,
        [
            json!("59.97"),
            json!("90.00"),
            json!("50.00"),
            json!("14.50"),
            json!("120.00")
        ]
    );
    assert_eq!(rows[1]["unit_price"], "100.00");
    assert_eq!(rows[0]["currency"], "USD");
    assert_eq!(rows[2]["currency"], "EUR");
    assert!(rows[4]["product_id"].is_null());

    let item = format!("/api/v1/sales/{}", id(&rows[1]));
    let got = app.get(&token, &item).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, rows[1]);
    assert_eq!(got.body["customer_name"], "Bob");
    assert_eq!(got.body["sale_date"], "2026-01-01");
    assert_eq!(got.body["quantity"], 1);

    // Default sort is sale_date ascending.
    assert_eq!(
        list_ids(&app, &token, "/api/v1/sales").await,
        pick(&rows, &[1, 2, 4, 0, 3])
    );
    let filters = [
        (format!("company_id={cb}"), vec![3]),
        (format!("company_id={ca}"), vec![1, 2, 4, 0]),
        (format!("product_id={p1}"), vec![2, 0]),
        ("channel=web".to_owned(), vec![2, 0]),
        ("channel=retail".to_owned(), vec![1, 3]),
        ("from=2026-01-03&to=2026-01-05".to_owned(), vec![2, 4, 0]),
        ("from=2026-02-01".to_owned(), vec![3]),
        ("to=2026-01-01".to_owned(), vec![1]),
        (format!("channel=web&product_id={p2}"), vec![]),
    ];
    assert_filters(&app, &token, "/api/v1/sales", &rows, filters).await;
    let sorts = [
        ("sale_date", vec![1, 2, 4, 0, 3]),
        ("-sale_date", vec![3, 0, 4, 2, 1]),
        ("created_at", vec![0, 1, 2, 3, 4]),
        ("-created_at", vec![4, 3, 2, 1, 0]),
        ("total_amount", vec![3, 2, 0, 1, 4]),
        ("-total_amount", vec![4, 1, 0, 2, 3]),
    ];
    assert_sorts(&app, &token, "/api/v1/sales", &rows, sorts).await;
    let (listed, pages) = all_pages(
        &app,
        &token,
        &format!("/api/v1/sales?limit=1&company_id={ca}&sort=-total_amount"),
    )
    .await;
    assert_eq!(pages, 4);
    assert_eq!(ids(&listed), pick(&rows, &[4, 1, 0, 2]));

    // Partial updates: quantity and price together recompute the total; null clears.
    let item = format!("/api/v1/sales/{}", id(&rows[0]));
    let changed = app
        .patch(
            &token,
            &item,
            json!({ "quantity": 5, "unit_price": "20.00", "channel": null, "customer_name": "Alice" }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["quantity"], 5);
    assert_eq!(changed.body["total_amount"], "100.00");
    assert!(changed.body["channel"].is_null());
    assert_eq!(changed.body["customer_name"], "Alice");
    assert_eq!(changed.body["sale_date"], "2026-01-05", "untouched");
    let changed = app
        .patch(
            &token,
            &item,
            json!({ "total_amount": "95.50", "customer_name": null, "product_id": null }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["total_amount"], "95.50");
    assert_eq!(changed.body["quantity"], 5);
    assert!(changed.body["customer_name"].is_null());
    assert!(changed.body["product_id"].is_null());
    assert_eq!(app.get(&token, &item).await.body, changed.body);
    invalid(
        &app.patch(&token, &item, json!({ "quantity": 0 })).await,
        "quantity",
    );
    invalid(
        &app.patch(&token, &item, json!({ "unit_price": "-3" }))
            .await,
        "unit_price",
    );
    missing_reference(
        &app.patch(&token, &item, json!({ "product_id": random_id() }))
            .await,
        "product_id",
    );
    // Filters see the change: the sale left channel "web".
    assert_eq!(
        list_ids(&app, &token, "/api/v1/sales?channel=web").await,
        pick(&rows, &[2])
    );

    delete_then_gone(&app, &token, &item, json!({ "quantity": 2 })).await;
    assert_eq!(app.rows(&t, "sales").await, 4);
}

#[tokio::test]
async fn sales_refuse_bad_input_and_missing_references() {
    let app = TestApp::spawn().await;
    let t = app.tenant("sales-bad", PRO).await;
    let company = app.company(&t, "A").await;
    let token = app.token_for(&t, Role::Member);
    let sale = |extra: Value| {
        let mut body = json!({ "company_id": company, "sale_date": "2026-01-01", "quantity": 1, "unit_price": "1.00" });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (json!({ "quantity": 0 }), "quantity"),
        (json!({ "quantity": -2 }), "quantity"),
        (json!({ "quantity": "3" }), "quantity"),
        (json!({ "unit_price": "-1.00" }), "unit_price"),
        (json!({ "unit_price": "1.001" }), "unit_price"),
        (json!({ "total_amount": "-1" }), "total_amount"),
        (
            json!({ "quantity": 2_000_000_000, "unit_price": "99999.99" }),
            "total_amount",
        ),
        (json!({ "sale_date": "1800-01-01" }), "sale_date"),
        (json!({ "sale_date": "2026-13-01" }), "sale_date"),
        (json!({ "currency": "usd" }), "currency"),
        (json!({ "channel": "x".repeat(51) }), "channel"),
        (json!({ "external_id": "x".repeat(256) }), "external_id"),
        (json!({ "customer_name": "x".repeat(256) }), "customer_name"),
        (json!({ "customer_id": "x".repeat(256) }), "customer_id"),
        (json!({ "product_id": "not-a-uuid" }), "product_id"),
    ];
    for (extra, field) in cases {
        invalid(&app.post(&token, "/api/v1/sales", sale(extra)).await, field);
    }
    invalid_in_detail(
        &app.post(
            &token,
            "/api/v1/sales",
            json!({ "company_id": company, "sale_date": "2026-01-01", "unit_price": "1" }),
        )
        .await,
        "quantity",
    );
    invalid_in_detail(
        &app.post(&token, "/api/v1/sales", sale(json!({ "discount": "5" })))
            .await,
        "discount",
    );
    missing_reference(
        &app.post(
            &token,
            "/api/v1/sales",
            sale(json!({ "product_id": random_id() })),
        )
        .await,
        "product_id",
    );
    missing_reference(
        &app.post(
            &token,
            "/api/v1/sales",
            sale(json!({ "company_id": random_id() })),
        )
        .await,
        "company_id",
    );
    assert_eq!(app.rows(&t, "sales").await, 0);
    // The base body itself is fine: the failures above were the fields'.
    created(&app, &token, "/api/v1/sales", sale(json!({}))).await;
}

#[tokio::test]
async fn inventory_crud_with_generated_columns_filters_sorts_and_pages() {
    let app = TestApp::spawn().await;
    let t = app.tenant("stock-co", PRO).await;
    let ca = app.company(&t, "A").await;
    let cb = app.company(&t, "B").await;
    let token = app.token_for(&t, Role::Member);
    let p1 = product(&app, &token, &ca, "P1").await;
    let p2 = product(&app, &token, &ca, "P2").await;
    let p3 = product(&app, &token, &cb, "P3").await;

    let bodies = [
        json!({ "company_id": ca, "product_id": p1, "warehouse_location": "A-1",
                "quantity_on_hand": 30, "quantity_reserved": 5, "unit_cost": "2.50" }),
        json!({ "company_id": ca, "product_id": p2, "warehouse_location": "A-1", "quantity_on_hand": 10 }),
        json!({ "company_id": ca, "product_id": p1, "warehouse_location": "B-2",
                "quantity_on_hand": 50, "quantity_reserved": 50, "unit_cost": "1.10" }),
        json!({ "company_id": cb, "product_id": p3, "quantity_on_hand": 0 }),
        json!({ "company_id": ca, "product_id": p2, "warehouse_location": "B-2",
                "quantity_on_hand": 20, "quantity_reserved": 1, "unit_cost": "0.01",
                "last_counted_at": "2026-03-01T10:00:00Z" }),
    ];
    let mut rows = Vec::new();
    for body in bodies {
        rows.push(created(&app, &token, "/api/v1/inventory", body).await);
    }
    let computed: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r["quantity_reserved"].clone(),
                r["quantity_available"].clone(),
                r["total_value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        computed,
        [
            (json!(5), json!(25), json!("75.00")),
            (json!(0), json!(10), Value::Null),
            (json!(50), json!(0), json!("55.00")),
            (json!(0), json!(0), Value::Null),
            (json!(1), json!(19), json!("0.20")),
        ]
    );
    assert_eq!(rows[4]["last_counted_at"], "2026-03-01T10:00:00Z");

    let item = format!("/api/v1/inventory/{}", id(&rows[0]));
    let got = app.get(&token, &item).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, rows[0]);

    assert_eq!(
        list_ids(&app, &token, "/api/v1/inventory").await,
        pick(&rows, &[0, 1, 2, 3, 4])
    );
    let filters = [
        (format!("company_id={cb}"), vec![3]),
        (format!("product_id={p1}"), vec![0, 2]),
        ("warehouse_location=A-1".to_owned(), vec![0, 1]),
        (format!("warehouse_location=B-2&product_id={p2}"), vec![4]),
        (format!("company_id={ca}&warehouse_location=C-3"), vec![]),
    ];
    assert_filters(&app, &token, "/api/v1/inventory", &rows, filters).await;
    let sorts = [
        ("created_at", vec![0, 1, 2, 3, 4]),
        ("-created_at", vec![4, 3, 2, 1, 0]),
        ("quantity_on_hand", vec![3, 1, 4, 0, 2]),
        ("-quantity_on_hand", vec![2, 0, 4, 1, 3]),
    ];
    assert_sorts(&app, &token, "/api/v1/inventory", &rows, sorts).await;

    // The generated columns follow the changes.
    let changed = app
        .patch(
            &token,
            &item,
            json!({ "quantity_on_hand": 40, "quantity_reserved": 12 }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["quantity_available"], 28);
    assert_eq!(changed.body["total_value"], "100.00");
    let changed = app
        .patch(
            &token,
            &item,
            json!({ "unit_cost": null, "warehouse_location": null, "last_counted_at": "2026-04-02T08:30:00Z" }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert!(changed.body["unit_cost"].is_null());
    assert!(changed.body["total_value"].is_null());
    assert!(changed.body["warehouse_location"].is_null());
    assert_eq!(changed.body["last_counted_at"], "2026-04-02T08:30:00Z");
    assert_eq!(changed.body["quantity_on_hand"], 40, "untouched");
    let changed = app
        .patch(&token, &item, json!({ "last_counted_at": null }))
        .await;
    assert!(
        changed.body["last_counted_at"].is_null(),
        "{}",
        changed.text
    );
    assert_eq!(app.get(&token, &item).await.body, changed.body);

    // Each field within its own range, but their product (the generated total_value) is not:
    // a rule between fields (schemathesis found it answered as a plain validation error).
    let overflow = app
        .patch(&token, &item, json!({ "unit_cost": "9999999999999.00" }))
        .await;
    assert_eq!(
        overflow.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        overflow.text
    );
    assert_eq!(overflow.body["code"], "rule_violated", "{}", overflow.text);
    assert_eq!(overflow.body["field"], "unit_cost", "{}", overflow.text);
    assert_eq!(app.get(&token, &item).await.body, changed.body, "unchanged");

    invalid(
        &app.patch(
            &token,
            &item,
            json!({ "quantity_on_hand": 5, "quantity_reserved": 6 }),
        )
        .await,
        "quantity_reserved",
    );
    // Only the reserved quantity in the body: the database compares it with the stored
    // quantity on hand (40).
    invalid(
        &app.patch(&token, &item, json!({ "quantity_reserved": 41 }))
            .await,
        "quantity_reserved",
    );
    invalid(
        &app.patch(&token, &item, json!({ "quantity_on_hand": -1 }))
            .await,
        "quantity_on_hand",
    );
    invalid_in_detail(
        &app.patch(&token, &item, json!({ "quantity_available": 3 }))
            .await,
        "quantity_available",
    );
    missing_reference(
        &app.patch(&token, &item, json!({ "product_id": random_id() }))
            .await,
        "product_id",
    );
    assert_eq!(app.get(&token, &item).await.body, changed.body);

    delete_then_gone(&app, &token, &item, json!({ "quantity_on_hand": 1 })).await;
    assert_eq!(app.rows(&t, "inventory").await, 4);
}

#[tokio::test]
async fn inventory_refuses_bad_input_and_missing_references() {
    let app = TestApp::spawn().await;
    let t = app.tenant("stock-bad", PRO).await;
    let company = app.company(&t, "A").await;
    let token = app.token_for(&t, Role::Member);
    let p = product(&app, &token, &company, "P").await;
    let record = |extra: Value| {
        let mut body = json!({ "company_id": company, "product_id": p, "quantity_on_hand": 10 });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (json!({ "quantity_on_hand": -1 }), "quantity_on_hand"),
        (json!({ "quantity_reserved": -1 }), "quantity_reserved"),
        (json!({ "quantity_reserved": 11 }), "quantity_reserved"),
        (json!({ "unit_cost": "-0.01" }), "unit_cost"),
        (json!({ "unit_cost": "0.001" }), "unit_cost"),
        (
            json!({ "quantity_on_hand": 2_000_000_000, "unit_cost": "10000" }),
            "unit_cost",
        ),
        (
            json!({ "warehouse_location": "x".repeat(101) }),
            "warehouse_location",
        ),
        (
            json!({ "last_counted_at": "1850-01-01T00:00:00Z" }),
            "last_counted_at",
        ),
        (json!({ "last_counted_at": "yesterday" }), "last_counted_at"),
    ];
    for (extra, field) in cases {
        invalid(
            &app.post(&token, "/api/v1/inventory", record(extra)).await,
            field,
        );
    }
    // Generated columns are never input.
    for field in ["quantity_available", "total_value"] {
        invalid_in_detail(
            &app.post(&token, "/api/v1/inventory", record(json!({ field: 1 })))
                .await,
            field,
        );
    }
    invalid_in_detail(
        &app.post(
            &token,
            "/api/v1/inventory",
            json!({ "company_id": company, "quantity_on_hand": 1 }),
        )
        .await,
        "product_id",
    );
    missing_reference(
        &app.post(
            &token,
            "/api/v1/inventory",
            record(json!({ "product_id": random_id() })),
        )
        .await,
        "product_id",
    );
    missing_reference(
        &app.post(
            &token,
            "/api/v1/inventory",
            record(json!({ "company_id": random_id() })),
        )
        .await,
        "company_id",
    );
    assert_eq!(app.rows(&t, "inventory").await, 0);
    let row = created(
        &app,
        &token,
        "/api/v1/inventory",
        record(json!({ "quantity_reserved": 10 })),
    )
    .await;
    assert_eq!(row["quantity_available"], 0, "reserving all is allowed");
}

#[tokio::test]
async fn forecasts_crud_with_filters_sorts_and_pages() {
    let app = TestApp::spawn().await;
    let t = app.tenant("forecast-co", PRO).await;
    let ca = app.company(&t, "A").await;
    let cb = app.company(&t, "B").await;
    let token = app.token_for(&t, Role::Member);
    let p1 = product(&app, &token, &ca, "P1").await;
    let p2 = product(&app, &token, &ca, "P2").await;

    let bodies = [
        json!({ "company_id": ca, "product_id": p1, "forecast_date": "2026-03-01", "forecast_type": "demand",
                "model_type": "prophet", "predicted_value": "120", "lower_bound": "100", "upper_bound": "140",
                "confidence_level": "95", "model_parameters": { "seasonality": "weekly" } }),
        json!({ "company_id": ca, "forecast_date": "2026-01-01", "forecast_type": "revenue",
                "predicted_value": "50000.00" }),
        json!({ "company_id": ca, "product_id": p2, "forecast_date": "2026-02-01", "forecast_type": "demand",
                "predicted_value": "80" }),
        json!({ "company_id": cb, "forecast_date": "2026-04-01", "forecast_type": "cash_flow",
                "predicted_value": "-2500.50", "lower_bound": "-4000", "upper_bound": "-1000" }),
        json!({ "company_id": ca, "product_id": p1, "forecast_date": "2026-01-15", "forecast_type": "demand",
                "predicted_value": "60", "confidence_level": "80.25" }),
    ];
    let mut rows = Vec::new();
    for body in bodies {
        rows.push(created(&app, &token, "/api/v1/forecasts", body).await);
    }
    assert_eq!(rows[0]["predicted_value"], "120.00");
    assert_eq!(rows[0]["confidence_level"], "95.00");
    assert_eq!(
        rows[0]["model_parameters"],
        json!({ "seasonality": "weekly" })
    );
    assert_eq!(rows[3]["predicted_value"], "-2500.50");
    assert!(rows[1]["model_parameters"].is_null());
    assert!(rows[0].get("updated_at").is_none(), "the table has none");

    let item = format!("/api/v1/forecasts/{}", id(&rows[0]));
    let got = app.get(&token, &item).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, rows[0]);

    assert_eq!(
        list_ids(&app, &token, "/api/v1/forecasts").await,
        pick(&rows, &[1, 4, 2, 0, 3])
    );
    let filters = [
        (format!("company_id={cb}"), vec![3]),
        (format!("product_id={p1}"), vec![4, 0]),
        ("forecast_type=demand".to_owned(), vec![4, 2, 0]),
        ("forecast_type=cash_flow".to_owned(), vec![3]),
        ("from=2026-02-01".to_owned(), vec![2, 0, 3]),
        ("to=2026-01-15".to_owned(), vec![1, 4]),
        (
            "forecast_type=demand&from=2026-01-16&to=2026-02-28".to_owned(),
            vec![2],
        ),
        ("forecast_type=weather".to_owned(), vec![]),
    ];
    assert_filters(&app, &token, "/api/v1/forecasts", &rows, filters).await;
    let sorts = [
        ("forecast_date", vec![1, 4, 2, 0, 3]),
        ("-forecast_date", vec![3, 0, 2, 4, 1]),
        ("created_at", vec![0, 1, 2, 3, 4]),
        ("-created_at", vec![4, 3, 2, 1, 0]),
    ];
    assert_sorts(&app, &token, "/api/v1/forecasts", &rows, sorts).await;

    let changed = app
        .patch(
            &token,
            &item,
            json!({ "actual_value": "118", "accuracy_percentage": "98.33", "model_parameters": null,
                    "lower_bound": null, "model_type": "arima" }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["actual_value"], "118.00");
    assert_eq!(changed.body["accuracy_percentage"], "98.33");
    assert!(changed.body["model_parameters"].is_null());
    assert!(changed.body["lower_bound"].is_null());
    assert_eq!(changed.body["model_type"], "arima");
    assert_eq!(changed.body["upper_bound"], "140.00", "untouched");
    let changed = app
        .patch(
            &token,
            &item,
            json!({ "forecast_type": "revenue", "forecast_date": "2026-05-01", "product_id": null,
                    "model_parameters": { "p": 1 } }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["forecast_type"], "revenue");
    assert_eq!(changed.body["forecast_date"], "2026-05-01");
    assert!(changed.body["product_id"].is_null());
    assert_eq!(changed.body["model_parameters"], json!({ "p": 1 }));
    assert_eq!(app.get(&token, &item).await.body, changed.body);

    let bad_changes = [
        (
            json!({ "lower_bound": "10", "upper_bound": "5" }),
            "lower_bound",
        ),
        (
            json!({ "predicted_value": "10", "upper_bound": "5" }),
            "upper_bound",
        ),
        (json!({ "forecast_type": "weather" }), "forecast_type"),
        (json!({ "confidence_level": "100.01" }), "confidence_level"),
        (json!({ "model_parameters": "fast" }), "model_parameters"),
    ];
    for (body, field) in bad_changes {
        invalid(&app.patch(&token, &item, body).await, field);
    }
    missing_reference(
        &app.patch(&token, &item, json!({ "product_id": random_id() }))
            .await,
        "product_id",
    );
    assert_eq!(app.get(&token, &item).await.body, changed.body);

    delete_then_gone(&app, &token, &item, json!({ "model_type": "x" })).await;
    assert_eq!(app.rows(&t, "forecasts").await, 4);
}

#[tokio::test]
async fn forecasts_refuse_bad_input_and_missing_references() {
    let app = TestApp::spawn().await;
    let t = app.tenant("forecast-bad", PRO).await;
    let company = app.company(&t, "A").await;
    let token = app.token_for(&t, Role::Member);
    let forecast = |extra: Value| {
        let mut body = json!({ "company_id": company, "forecast_date": "2026-01-01",
                               "forecast_type": "demand", "predicted_value": "120" });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (json!({ "forecast_type": "weather" }), "forecast_type"),
        (json!({ "lower_bound": "130" }), "lower_bound"),
        (json!({ "upper_bound": "110" }), "upper_bound"),
        (
            json!({ "predicted_value": null, "lower_bound": "1" }),
            "predicted_value",
        ),
        (json!({ "predicted_value": "1.005" }), "predicted_value"),
        (json!({ "confidence_level": "100.5" }), "confidence_level"),
        (json!({ "confidence_level": "-1" }), "confidence_level"),
        (json!({ "confidence_level": "50.125" }), "confidence_level"),
        (
            json!({ "accuracy_percentage": "1000" }),
            "accuracy_percentage",
        ),
        (json!({ "model_parameters": [1, 2] }), "model_parameters"),
        (json!({ "model_type": "x".repeat(51) }), "model_type"),
        (json!({ "forecast_date": "2300-01-01" }), "forecast_date"),
        (json!({ "actual_value": "-1.001" }), "actual_value"),
    ];
    for (extra, field) in cases {
        invalid(
            &app.post(&token, "/api/v1/forecasts", forecast(extra)).await,
            field,
        );
    }
    invalid_in_detail(
        &app.post(
            &token,
            "/api/v1/forecasts",
            forecast(json!({ "updated_at": "2026-01-01T00:00:00Z" })),
        )
        .await,
        "updated_at",
    );
    missing_reference(
        &app.post(
            &token,
            "/api/v1/forecasts",
            forecast(json!({ "product_id": random_id() })),
        )
        .await,
        "product_id",
    );
    missing_reference(
        &app.post(
            &token,
            "/api/v1/forecasts",
            forecast(json!({ "company_id": random_id() })),
        )
        .await,
        "company_id",
    );
    assert_eq!(app.rows(&t, "forecasts").await, 0);
    // Bounds equal to the prediction are inside the interval.
    let row = created(
        &app,
        &token,
        "/api/v1/forecasts",
        forecast(json!({ "lower_bound": "120", "upper_bound": "120", "confidence_level": "100" })),
    )
    .await;
    assert_eq!(row["lower_bound"], "120.00");
}

#[tokio::test]
async fn working_capital_metrics_crud_with_derived_figures_filters_sorts_and_pages() {
    let app = TestApp::spawn().await;
    let t = app.tenant("wc-co", PRO).await;
    let ca = app.company(&t, "A").await;
    let cb = app.company(&t, "B").await;
    let token = app.token_for(&t, Role::Member);
    let path = "/api/v1/working-capital-metrics";

    let bodies = [
        json!({ "company_id": ca, "period_date": "2026-01-31", "period_type": "monthly",
                "cash": "100", "accounts_receivable": "50.50", "inventory": "30", "accounts_payable": "80",
                "short_term_debt": "20.25", "days_sales_outstanding": "45", "days_inventory_outstanding": "30.5",
                "days_payables_outstanding": "60", "current_ratio": "1.796" }),
        json!({ "company_id": ca, "period_date": "2026-03-31", "period_type": "quarterly",
                "cash": "10", "working_capital": "-1000.00", "operating_cash_flow": "-250.75",
                "cash_conversion_cycle": "-12.25" }),
        json!({ "company_id": ca, "period_date": "2026-02-28", "period_type": "monthly", "cash_runway_days": 90 }),
        json!({ "company_id": cb, "period_date": "2025-12-31", "period_type": "annual" }),
        json!({ "company_id": ca, "period_date": "2026-04-30", "period_type": "monthly",
                "cash": "1", "days_sales_outstanding": "10", "days_inventory_outstanding": "10" }),
    ];
    let mut rows = Vec::new();
    for body in bodies {
        rows.push(created(&app, &token, path, body).await);
    }
    // Derived when absent and all inputs are there; kept when given; null otherwise.
    assert_eq!(rows[0]["working_capital"], "80.25");
    assert_eq!(rows[0]["cash_conversion_cycle"], "15.50");
    assert_eq!(rows[0]["current_ratio"], "1.7960");
    assert_eq!(rows[0]["cash"], "100.00");
    assert_eq!(rows[1]["working_capital"], "-1000.00");
    assert_eq!(rows[1]["cash_conversion_cycle"], "-12.25");
    assert_eq!(rows[1]["operating_cash_flow"], "-250.75");
    assert_eq!(rows[2]["cash_runway_days"], 90);
    assert!(rows[4]["working_capital"].is_null());
    assert!(rows[4]["cash_conversion_cycle"].is_null());
    assert!(rows[0].get("updated_at").is_none(), "the table has none");

    let item = format!("{path}/{}", id(&rows[0]));
    let got = app.get(&token, &item).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, rows[0]);

    assert_eq!(
        list_ids(&app, &token, path).await,
        pick(&rows, &[3, 0, 2, 1, 4])
    );
    let filters = [
        (format!("company_id={cb}"), vec![3]),
        ("period_type=monthly".to_owned(), vec![0, 2, 4]),
        ("period_type=annual".to_owned(), vec![3]),
        ("from=2026-02-01&to=2026-03-31".to_owned(), vec![2, 1]),
        ("from=2026-04-01".to_owned(), vec![4]),
        ("to=2026-01-31".to_owned(), vec![3, 0]),
        (format!("company_id={ca}&period_type=annual"), vec![]),
    ];
    for (query, expected) in filters {
        assert_eq!(
            list_ids(&app, &token, &format!("{path}?{query}")).await,
            pick(&rows, &expected),
            "{query}"
        );
    }
    let sorts = [
        ("period_date", vec![3, 0, 2, 1, 4]),
        ("-period_date", vec![4, 1, 2, 0, 3]),
        ("created_at", vec![0, 1, 2, 3, 4]),
        ("-created_at", vec![4, 3, 2, 1, 0]),
    ];
    for (sort, expected) in sorts {
        let (listed, pages) = all_pages(&app, &token, &format!("{path}?limit=2&sort={sort}")).await;
        assert_eq!(pages, 3, "{sort}");
        assert_eq!(ids(&listed), pick(&rows, &expected), "{sort}");
    }

    let changed = app
        .patch(
            &token,
            &item,
            json!({ "cash": null, "quick_ratio": "0.95" }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert!(changed.body["cash"].is_null());
    assert_eq!(changed.body["quick_ratio"], "0.9500");
    assert_eq!(changed.body["working_capital"], "80.25", "kept");
    let changed = app
        .patch(
            &token,
            &item,
            json!({ "cash": "200", "accounts_receivable": "0", "inventory": "0", "accounts_payable": "50",
                    "short_term_debt": "0", "days_sales_outstanding": "10", "days_inventory_outstanding": "10",
                    "days_payables_outstanding": "5", "period_type": "quarterly" }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["working_capital"], "150.00");
    assert_eq!(changed.body["cash_conversion_cycle"], "15.00");
    assert_eq!(changed.body["period_type"], "quarterly");
    let changed = app
        .patch(
            &token,
            &item,
            json!({ "working_capital": null, "cash_runway_days": 30, "operating_cash_flow": "-5" }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert!(changed.body["working_capital"].is_null());
    assert_eq!(changed.body["cash_runway_days"], 30);
    assert_eq!(changed.body["operating_cash_flow"], "-5.00");
    assert_eq!(app.get(&token, &item).await.body, changed.body);

    let bad_changes = [
        (json!({ "period_type": "weekly" }), "period_type"),
        (json!({ "cash": "-1" }), "cash"),
        (json!({ "quick_ratio": "0.12345" }), "quick_ratio"),
        (json!({ "cash_runway_days": -1 }), "cash_runway_days"),
    ];
    for (body, field) in bad_changes {
        invalid(&app.patch(&token, &item, body).await, field);
    }
    assert_eq!(app.get(&token, &item).await.body, changed.body);

    delete_then_gone(&app, &token, &item, json!({ "cash": "1" })).await;
    assert_eq!(app.rows(&t, "working_capital_metrics").await, 4);
}

#[tokio::test]
async fn working_capital_metrics_refuse_bad_input_and_missing_references() {
    let app = TestApp::spawn().await;
    let t = app.tenant("wc-bad", PRO).await;
    let company = app.company(&t, "A").await;
    let token = app.token_for(&t, Role::Member);
    let path = "/api/v1/working-capital-metrics";
    let metric = |extra: Value| {
        let mut body =
            json!({ "company_id": company, "period_date": "2026-01-31", "period_type": "monthly" });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let huge = "9999999999999.99";
    let cases = [
        (json!({ "period_type": "weekly" }), "period_type"),
        (json!({ "period_date": "1800-01-01" }), "period_date"),
        (json!({ "cash": "-1" }), "cash"),
        (
            json!({ "accounts_receivable": "-1" }),
            "accounts_receivable",
        ),
        (json!({ "inventory": "-0.01" }), "inventory"),
        (json!({ "accounts_payable": "-5" }), "accounts_payable"),
        (json!({ "short_term_debt": "-5" }), "short_term_debt"),
        (json!({ "working_capital": "1.001" }), "working_capital"),
        (
            json!({ "cash": huge, "accounts_receivable": huge, "inventory": huge,
                    "accounts_payable": "0", "short_term_debt": "0" }),
            "working_capital",
        ),
        (json!({ "current_ratio": "1.23456" }), "current_ratio"),
        (json!({ "current_ratio": "1000000" }), "current_ratio"),
        (
            json!({ "days_sales_outstanding": "1.234" }),
            "days_sales_outstanding",
        ),
        (
            json!({ "days_payables_outstanding": "100000000" }),
            "days_payables_outstanding",
        ),
        (
            json!({ "cash_conversion_cycle": "0.001" }),
            "cash_conversion_cycle",
        ),
        (json!({ "cash_runway_days": -1 }), "cash_runway_days"),
        (
            json!({ "operating_cash_flow": 12.5 }),
            "operating_cash_flow",
        ),
    ];
    for (extra, field) in cases {
        invalid(&app.post(&token, path, metric(extra)).await, field);
    }
    invalid_in_detail(
        &app.post(
            &token,
            path,
            json!({ "company_id": company, "period_date": "2026-01-31" }),
        )
        .await,
        "period_type",
    );
    missing_reference(
        &app.post(&token, path, metric(json!({ "company_id": random_id() })))
            .await,
        "company_id",
    );
    assert_eq!(app.rows(&t, "working_capital_metrics").await, 0);
    let row = created(
        &app,
        &token,
        path,
        metric(json!({ "operating_cash_flow": "-10", "working_capital": "-1" })),
    )
    .await;
    assert_eq!(row["working_capital"], "-1.00", "negative is meaningful");
}

#[tokio::test]
async fn scenarios_crud_with_filters_sorts_and_pages() {
    let app = TestApp::spawn().await;
    let t = app.tenant("scenario-co", PRO).await;
    let ca = app.company(&t, "A").await;
    let cb = app.company(&t, "B").await;
    let token = app.token_for(&t, Role::Member);

    let bodies = [
        json!({ "company_id": ca, "name": "Base case", "scenario_type": "baseline", "is_baseline": true,
                "parameters": { "growth": 0.05 } }),
        json!({ "company_id": ca, "name": "Aggressive growth", "scenario_type": "growth",
                "parameters": { "growth": 0.2 }, "results": { "cash_min": 1000 }, "description": "Hire fast" }),
        json!({ "company_id": cb, "name": "Cost cut", "scenario_type": "cost", "parameters": {} }),
        json!({ "company_id": ca, "name": "Delay payables", "scenario_type": "growth",
                "parameters": { "dpo_days": 15 } }),
        json!({ "company_id": ca, "name": "Zero case", "parameters": { "zero": true } }),
    ];
    let mut rows = Vec::new();
    for body in bodies {
        rows.push(created(&app, &token, "/api/v1/scenarios", body).await);
    }
    assert_eq!(rows[0]["is_baseline"], true);
    assert_eq!(rows[1]["is_baseline"], false, "default");
    assert_eq!(rows[1]["results"], json!({ "cash_min": 1000 }));
    assert_eq!(rows[0]["parameters"], json!({ "growth": 0.05 }));
    assert!(rows[0]["results"].is_null());
    // The server records who created it, from the token.
    let creator = t.user(Role::Member);
    assert!(
        rows.iter()
            .all(|r| r["created_by_user_id"] == creator.as_str()),
        "{rows:?}"
    );

    let item = format!("/api/v1/scenarios/{}", id(&rows[1]));
    let got = app.get(&token, &item).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, rows[1]);

    assert_eq!(
        list_ids(&app, &token, "/api/v1/scenarios").await,
        pick(&rows, &[0, 1, 2, 3, 4])
    );
    let filters = [
        (format!("company_id={cb}"), vec![2]),
        ("scenario_type=growth".to_owned(), vec![1, 3]),
        ("baseline=true".to_owned(), vec![0]),
        ("baseline=false".to_owned(), vec![1, 2, 3, 4]),
        (format!("company_id={cb}&baseline=true"), vec![]),
    ];
    assert_filters(&app, &token, "/api/v1/scenarios", &rows, filters).await;
    let sorts = [
        ("created_at", vec![0, 1, 2, 3, 4]),
        ("-created_at", vec![4, 3, 2, 1, 0]),
        ("name", vec![1, 0, 2, 3, 4]),
        ("-name", vec![4, 3, 2, 0, 1]),
    ];
    assert_sorts(&app, &token, "/api/v1/scenarios", &rows, sorts).await;

    let changed = app
        .patch(
            &token,
            &item,
            json!({ "name": "Aggressive", "results": null, "description": null, "is_baseline": true }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["name"], "Aggressive");
    assert!(changed.body["results"].is_null());
    assert!(changed.body["description"].is_null());
    assert_eq!(changed.body["is_baseline"], true);
    assert_eq!(
        changed.body["parameters"],
        json!({ "growth": 0.2 }),
        "untouched"
    );
    let changed = app
        .patch(
            &token,
            &item,
            json!({ "parameters": { "growth": 0.3 }, "results": { "runway_days": 200 }, "scenario_type": null }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["parameters"], json!({ "growth": 0.3 }));
    assert_eq!(changed.body["results"], json!({ "runway_days": 200 }));
    assert!(changed.body["scenario_type"].is_null());
    assert_eq!(app.get(&token, &item).await.body, changed.body);
    assert_eq!(
        list_ids(&app, &token, "/api/v1/scenarios?baseline=true").await,
        pick(&rows, &[0, 1])
    );

    let bad_changes = [
        (json!({ "name": " " }), "name"),
        (json!({ "parameters": [1] }), "parameters"),
        (json!({ "results": "done" }), "results"),
    ];
    for (body, field) in bad_changes {
        invalid(&app.patch(&token, &item, body).await, field);
    }
    invalid_in_detail(
        &app.patch(&token, &item, json!({ "created_by_user_id": "user_x" }))
            .await,
        "created_by_user_id",
    );
    assert_eq!(app.get(&token, &item).await.body, changed.body);

    delete_then_gone(&app, &token, &item, json!({ "name": "x" })).await;
    assert_eq!(app.rows(&t, "scenarios").await, 4);
}

#[tokio::test]
async fn scenarios_refuse_bad_input_and_missing_references() {
    let app = TestApp::spawn().await;
    let t = app.tenant("scenario-bad", PRO).await;
    let company = app.company(&t, "A").await;
    let token = app.token_for(&t, Role::Member);
    let scenario = |extra: Value| {
        let mut body = json!({ "company_id": company, "name": "S", "parameters": { "a": 1 } });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (json!({ "name": "" }), "name"),
        (json!({ "name": "x".repeat(256) }), "name"),
        (json!({ "parameters": [1] }), "parameters"),
        (json!({ "parameters": null }), "parameters"),
        (json!({ "parameters": "growth" }), "parameters"),
        (json!({ "results": 5 }), "results"),
        (json!({ "scenario_type": "x".repeat(51) }), "scenario_type"),
        (json!({ "is_baseline": "yes" }), "is_baseline"),
    ];
    for (extra, field) in cases {
        invalid(
            &app.post(&token, "/api/v1/scenarios", scenario(extra)).await,
            field,
        );
    }
    invalid_in_detail(
        &app.post(
            &token,
            "/api/v1/scenarios",
            json!({ "company_id": company, "name": "S" }),
        )
        .await,
        "parameters",
    );
    // The creator is the server's to record, never the client's to claim.
    invalid_in_detail(
        &app.post(
            &token,
            "/api/v1/scenarios",
            scenario(json!({ "created_by_user_id": "user_someone_else" })),
        )
        .await,
        "created_by_user_id",
    );
    missing_reference(
        &app.post(
            &token,
            "/api/v1/scenarios",
            scenario(json!({ "company_id": random_id() })),
        )
        .await,
        "company_id",
    );
    assert_eq!(app.rows(&t, "scenarios").await, 0);
    created(&app, &token, "/api/v1/scenarios", scenario(json!({}))).await;
}

#[tokio::test]
async fn forecasts_and_scenarios_are_read_only_without_the_plan_feature() {
    let app = TestApp::spawn().await;
    let t = app.tenant("starter-co", Tier::Starter).await;
    let company = app.company(&t, "Only").await;
    let token = app.token_for(&t, Role::Owner);
    // Rows made before a downgrade (or by the platform) stay readable.
    let schema = &t.tenant.schema_name;
    app.db
        .exec(&format!(
            "INSERT INTO {schema}.forecasts (company_id, forecast_date, forecast_type, predicted_value) \
             VALUES ('{company}', '2026-01-01', 'demand', 10)"
        ))
        .await;
    app.db
        .exec(&format!(
            "INSERT INTO {schema}.scenarios (company_id, name, parameters) VALUES ('{company}', 'Old', '{{}}')"
        ))
        .await;
    let cases = [
        (
            "forecasts",
            json!({ "company_id": company, "forecast_date": "2026-02-01", "forecast_type": "demand",
                    "predicted_value": "1" }),
            json!({ "predicted_value": "2" }),
        ),
        (
            "scenarios",
            json!({ "company_id": company, "name": "New", "parameters": {} }),
            json!({ "name": "Renamed" }),
        ),
    ];
    for (resource, new, change) in cases {
        let path = format!("/api/v1/{resource}");
        let listed = list_ids(&app, &token, &path).await;
        assert_eq!(listed.len(), 1, "{resource} readable");
        let item = format!("{path}/{}", listed[0]);
        assert_eq!(app.get(&token, &item).await.status, StatusCode::OK);

        let refused = app.post(&token, &path, new).await;
        let problem = refused.problem(StatusCode::FORBIDDEN, "feature_not_in_plan");
        assert!(problem["detail"].as_str().unwrap().contains("starter"));
        app.patch(&token, &item, change)
            .await
            .problem(StatusCode::FORBIDDEN, "feature_not_in_plan");
        app.delete(&token, &item)
            .await
            .problem(StatusCode::FORBIDDEN, "feature_not_in_plan");
        assert_eq!(app.rows(&t, resource).await, 1, "{resource} unchanged");
    }
    // The other three carry no feature gate on starter.
    let member = app.token_for(&t, Role::Member);
    let p = product(&app, &member, &company, "P").await;
    created(
        &app,
        &member,
        "/api/v1/inventory",
        json!({ "company_id": company, "product_id": p, "quantity_on_hand": 1 }),
    )
    .await;
}

#[tokio::test]
async fn viewers_cannot_write_any_of_the_five() {
    let app = TestApp::spawn().await;
    let t = app.tenant("viewers", PRO).await;
    let company = app.company(&t, "A").await;
    let member = app.token_for(&t, Role::Member);
    let viewer = app.token_for(&t, Role::Viewer);
    let p = product(&app, &member, &company, "P").await;
    let cases = [
        (
            "sales",
            json!({ "company_id": company, "sale_date": "2026-01-01", "quantity": 1, "unit_price": "1" }),
            json!({ "quantity": 2 }),
        ),
        (
            "inventory",
            json!({ "company_id": company, "product_id": p, "quantity_on_hand": 1 }),
            json!({ "quantity_on_hand": 2 }),
        ),
        (
            "forecasts",
            json!({ "company_id": company, "forecast_date": "2026-01-01", "forecast_type": "demand",
                    "predicted_value": "1" }),
            json!({ "predicted_value": "2" }),
        ),
        (
            "working-capital-metrics",
            json!({ "company_id": company, "period_date": "2026-01-31", "period_type": "monthly" }),
            json!({ "period_type": "annual" }),
        ),
        (
            "scenarios",
            json!({ "company_id": company, "name": "S", "parameters": {} }),
            json!({ "name": "T" }),
        ),
    ];
    for (resource, new, change) in cases {
        let path = format!("/api/v1/{resource}");
        let row = created(&app, &member, &path, new.clone()).await;
        let item = format!("{path}/{}", id(&row));
        app.post(&viewer, &path, new)
            .await
            .problem(StatusCode::FORBIDDEN, "insufficient_role");
        app.patch(&viewer, &item, change)
            .await
            .problem(StatusCode::FORBIDDEN, "insufficient_role");
        app.delete(&viewer, &item)
            .await
            .problem(StatusCode::FORBIDDEN, "insufficient_role");
        // Reads are theirs, and nothing changed.
        assert_eq!(
            list_ids(&app, &viewer, &path).await,
            [id(&row)],
            "{resource}"
        );
        let got = app.get(&viewer, &item).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, row, "{resource}");
    }
}
