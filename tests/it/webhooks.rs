//! Clerk (Svix-signed) and Stripe webhooks against the real server: each event, replays,
//! ordering, shuffled delivery, bad signatures, and the lifecycle job.

use crate::common::api::{CLERK_SECRET, STRIPE_SECRET, TestApp};

use capliquify::access::Role;

use capliquify::webhooks::signature::{StripeSecret, SvixSecret};

use reqwest::StatusCode;

use serde_json::{Value, json};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Delivers a Clerk event signed the way Svix signs it; returns (status, body).
pub(crate) async fn clerk(app: &TestApp, msg_id: &str, event: &Value) -> (StatusCode, Value) {
    clerk_at(app, msg_id, event, now(), CLERK_SECRET).await
}

async fn clerk_at(
    app: &TestApp,
    msg_id: &str,
    event: &Value,
    ts: i64,
    secret: &str,
) -> (StatusCode, Value) {
    let body = event.to_string();
    let sig = SvixSecret::parse(secret)
        .unwrap()
        .sign(msg_id, ts, body.as_bytes());
    let reply = app
        .client
        .post(app.url("/webhooks/clerk"))
        .header("svix-id", msg_id)
        .header("svix-timestamp", ts.to_string())
        .header("svix-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = reply.status();
    (status, reply.json().await.unwrap_or(Value::Null))
}

async fn stripe(app: &TestApp, event: &Value) -> (StatusCode, Value) {
    let body = event.to_string();
    let sig = StripeSecret::new(STRIPE_SECRET).sign(now(), body.as_bytes());
    let reply = app
        .client
        .post(app.url("/webhooks/stripe"))
        .header("stripe-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = reply.status();
    (status, reply.json().await.unwrap_or(Value::Null))
}

pub(crate) fn org_event(
    kind: &str,
    id: &str,
    name: &str,
    slug: Option<&str>,
    updated_ms: i64,
) -> Value {
    json!({ "type": kind, "object": "event", "timestamp": updated_ms,
            "data": { "id": id, "object": "organization", "name": name, "slug": slug,
                      "created_by": "user_creator", "created_at": 1_700_000_000_000_i64, "updated_at": updated_ms } })
}

fn membership_event(kind: &str, org: &str, user: &str, role: &str, updated_ms: i64) -> Value {
    json!({ "type": kind, "object": "event", "timestamp": updated_ms,
            "data": { "id": format!("orgmem_{user}"), "object": "organization_membership", "role": role,
                      "organization": { "id": org, "name": "x", "slug": "x" },
                      "public_user_data": { "user_id": user, "identifier": format!("{user}@example.com"),
                                            "first_name": "Ada", "last_name": "Lovelace" },
                      "created_at": 1_700_000_000_000_i64, "updated_at": updated_ms } })
}

async fn tenant_json(app: &TestApp, org: &str) -> Value {
    let row: Option<(Value,)> =
        sqlx::query_as("SELECT to_jsonb(t) FROM tenants t WHERE clerk_organization_id = $1")
            .bind(org)
            .fetch_optional(&app.db.pool)
            .await
            .unwrap();
    row.map(|r| r.0).unwrap_or(Value::Null)
}

async fn user_role(app: &TestApp, user: &str) -> Option<(String, bool, bool)> {
    sqlx::query_as("SELECT role::text, removed_at IS NOT NULL, over_plan_limit FROM users WHERE clerk_user_id = $1")
        .bind(user)
        .fetch_optional(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn organization_created_provisions_a_starter_tenant_and_its_creator_becomes_owner() {
    let app = TestApp::spawn().await;
    let (status, body) = clerk(
        &app,
        "msg_1",
        &org_event(
            "organization.created",
            "org_acme",
            "ACME Corp",
            Some("acme"),
            1_000,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "applied");
    let t = tenant_json(&app, "org_acme").await;
    assert_eq!(t["slug"], "acme");
    assert_eq!(t["subscription_tier"], "starter");
    assert_eq!(t["subscription_status"], "trial");
    assert_eq!(t["max_users"], 5);
    assert!(
        app.db
            .schema_exists(t["schema_name"].as_str().unwrap())
            .await
    );

    let (status, _) = clerk(
        &app,
        "msg_2",
        &membership_event(
            "organizationMembership.created",
            "org_acme",
            "user_creator",
            "org:admin",
            1_100,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user_role(&app, "user_creator").await.unwrap().0, "owner");
    let (status, _) = clerk(
        &app,
        "msg_3",
        &membership_event(
            "organizationMembership.created",
            "org_acme",
            "user_bob",
            "org:member",
            1_200,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user_role(&app, "user_bob").await.unwrap().0, "member");
    // The member can use the API at once.
    let token = app.token("user_bob", "org_acme");
    assert_eq!(app.get(&token, "/api/v1/tenant").await.body["slug"], "acme");

    // Every change is audited with the event id.
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT metadata->'actor'->>'event_id' FROM audit_logs WHERE metadata->'actor'->>'kind' = 'webhook' ORDER BY created_at",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(ids, ["msg_1", "msg_2", "msg_3"]);
}

#[tokio::test]
async fn slugs_come_from_the_name_when_needed_and_are_made_unique() {
    let app = TestApp::spawn().await;
    clerk(
        &app,
        "m1",
        &org_event("organization.created", "org_1", "Beta Industries", None, 1),
    )
    .await;
    clerk(
        &app,
        "m2",
        &org_event(
            "organization.created",
            "org_2",
            "Beta Industries!",
            Some("beta-industries"),
            1,
        ),
    )
    .await;
    clerk(
        &app,
        "m3",
        &org_event("organization.created", "org_3", "Admin", Some("admin"), 1),
    )
    .await;
    assert_eq!(tenant_json(&app, "org_1").await["slug"], "beta-industries");
    assert_eq!(
        tenant_json(&app, "org_2").await["slug"],
        "beta-industries-2"
    );
    // "admin" is reserved: the name cannot give a slug either, so the org id does.
    let third = tenant_json(&app, "org_3").await;
    assert!(
        third["slug"].as_str().unwrap().starts_with("org-org-3"),
        "{third}"
    );
}

#[tokio::test]
async fn organization_updates_apply_in_time_order_and_deletion_is_final() {
    let app = TestApp::spawn().await;
    clerk(
        &app,
        "m1",
        &org_event(
            "organization.created",
            "org_x",
            "Old Name",
            Some("old-name"),
            1_000,
        ),
    )
    .await;
    let (_, body) = clerk(
        &app,
        "m2",
        &org_event(
            "organization.updated",
            "org_x",
            "New Name",
            Some("new-name"),
            3_000,
        ),
    )
    .await;
    assert_eq!(body["outcome"], "applied");
    let (_, body) = clerk(
        &app,
        "m3",
        &org_event(
            "organization.updated",
            "org_x",
            "Older Name",
            Some("older"),
            2_000,
        ),
    )
    .await;
    assert_eq!(body["outcome"], "stale");
    let t = tenant_json(&app, "org_x").await;
    assert_eq!(
        (t["name"].as_str(), t["slug"].as_str()),
        (Some("New Name"), Some("new-name"))
    );

    let deleted = json!({ "type": "organization.deleted", "timestamp": 4_000, "data": { "id": "org_x", "deleted": true, "object": "organization" } });
    assert_eq!(clerk(&app, "m4", &deleted).await.1["outcome"], "applied");
    assert!(!tenant_json(&app, "org_x").await["deleted_at"].is_null());
    let (_, body) = clerk(
        &app,
        "m5",
        &org_event("organization.updated", "org_x", "Zombie", None, 5_000),
    )
    .await;
    assert_eq!(body["outcome"], "stale");

    // A delete that arrives before its create makes the create stale.
    let early_delete =
        json!({ "type": "organization.deleted", "data": { "id": "org_y", "deleted": true } });
    clerk(&app, "m6", &early_delete).await;
    let (_, body) = clerk(
        &app,
        "m7",
        &org_event("organization.created", "org_y", "Y", Some("y-corp"), 1),
    )
    .await;
    assert_eq!(body["outcome"], "stale");
    assert!(tenant_json(&app, "org_y").await.is_null());
}

#[tokio::test]
async fn memberships_map_roles_and_removals_survive_late_events() {
    let app = TestApp::spawn().await;
    clerk(
        &app,
        "o",
        &org_event("organization.created", "org_m", "M", Some("m-corp"), 1),
    )
    .await;
    clerk(
        &app,
        "a",
        &membership_event(
            "organizationMembership.created",
            "org_m",
            "user_a",
            "org:admin",
            10,
        ),
    )
    .await;
    assert_eq!(user_role(&app, "user_a").await.unwrap().0, "admin");
    clerk(
        &app,
        "b",
        &membership_event(
            "organizationMembership.updated",
            "org_m",
            "user_a",
            "org:member",
            20,
        ),
    )
    .await;
    assert_eq!(user_role(&app, "user_a").await.unwrap().0, "member");
    let (_, body) = clerk(
        &app,
        "c",
        &membership_event(
            "organizationMembership.updated",
            "org_m",
            "user_a",
            "org:admin",
            15,
        ),
    )
    .await;
    assert_eq!(body["outcome"], "stale");
    clerk(
        &app,
        "d",
        &membership_event(
            "organizationMembership.deleted",
            "org_m",
            "user_a",
            "org:member",
            30,
        ),
    )
    .await;
    assert!(user_role(&app, "user_a").await.unwrap().1, "removed");
    app.get(&app.token("user_a", "org_m"), "/api/v1/tenant")
        .await
        .problem(StatusCode::FORBIDDEN, "not_a_member");
    let (_, body) = clerk(
        &app,
        "e",
        &membership_event(
            "organizationMembership.created",
            "org_m",
            "user_a",
            "org:admin",
            12,
        ),
    )
    .await;
    assert_eq!(
        body["outcome"], "stale",
        "a late create does not bring the member back"
    );

    // Profile changes and user deletion.
    clerk(
        &app,
        "f",
        &membership_event(
            "organizationMembership.created",
            "org_m",
            "user_b",
            "org:member",
            40,
        ),
    )
    .await;
    let updated = json!({ "type": "user.updated", "data": { "id": "user_b", "first_name": "Grace", "last_name": "Hopper",
        "primary_email_address_id": "idn_2", "email_addresses": [{ "id": "idn_1", "email_address": "old@x.com" }, { "id": "idn_2", "email_address": "grace@x.com" }] } });
    clerk(&app, "g", &updated).await;
    let (email, name): (String, String) = sqlx::query_as(
        "SELECT email::text, full_name::text FROM users WHERE clerk_user_id = 'user_b'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (email.as_str(), name.as_str()),
        ("grace@x.com", "Grace Hopper")
    );
    clerk(
        &app,
        "h",
        &json!({ "type": "user.deleted", "data": { "id": "user_b", "deleted": true } }),
    )
    .await;
    assert!(user_role(&app, "user_b").await.unwrap().1);
}

#[tokio::test]
async fn members_beyond_the_plan_are_kept_but_refused_until_the_plan_grows() {
    let app = TestApp::spawn().await;
    clerk(
        &app,
        "o",
        &org_event(
            "organization.created",
            "org_full",
            "Full",
            Some("full-corp"),
            1,
        ),
    )
    .await;
    for i in 0..6 {
        let (status, _) = clerk(
            &app,
            &format!("m{i}"),
            &membership_event(
                "organizationMembership.created",
                "org_full",
                &format!("user_{i}"),
                "org:member",
                10 + i,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Starter allows 5: the sixth to join is over the limit.
    assert!(user_role(&app, "user_5").await.unwrap().2);
    assert!(!user_role(&app, "user_0").await.unwrap().2);
    app.get(&app.token("user_5", "org_full"), "/api/v1/tenant")
        .await
        .problem(StatusCode::FORBIDDEN, "plan_limit_reached");
    assert_eq!(
        app.get(&app.token("user_0", "org_full"), "/api/v1/tenant")
            .await
            .status,
        StatusCode::OK
    );

    // A professional subscription lifts the limit.
    subscribe(&app, "full-corp", "cus_full", "price_pro_m", "active", 100).await;
    assert!(!user_role(&app, "user_5").await.unwrap().2);
    assert_eq!(
        app.get(&app.token("user_5", "org_full"), "/api/v1/tenant")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_replayed_event_changes_nothing() {
    let app = TestApp::spawn().await;
    let event = org_event("organization.created", "org_r", "R", Some("replayed"), 1);
    assert_eq!(
        clerk(&app, "msg_same", &event).await.1["outcome"],
        "applied"
    );
    let (status, body) = clerk(&app, "msg_same", &event).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );
    assert_eq!(app.db.scalar_i64("SELECT count(*) FROM tenants").await, 1);
    assert_eq!(
        app.db.scalar_i64("SELECT count(*) FROM audit_logs").await,
        1
    );
    assert_eq!(
        app.db
            .scalar_i64("SELECT count(*) FROM webhook_events")
            .await,
        1
    );
}

#[tokio::test]
async fn bad_deliveries_are_400_and_store_nothing() {
    let app = TestApp::spawn().await;
    let event = org_event(
        "organization.created",
        "org_bad",
        "Bad",
        Some("bad-corp"),
        1,
    );
    let body = event.to_string();
    let secret = SvixSecret::parse(CLERK_SECRET).unwrap();
    let send = |headers: Vec<(&'static str, String)>, body: String| {
        let mut req = app.client.post(app.url("/webhooks/clerk")).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let good = |id: &str, ts: i64, body: &str| {
        vec![
            ("svix-id", id.to_owned()),
            ("svix-timestamp", ts.to_string()),
            ("svix-signature", secret.sign(id, ts, body.as_bytes())),
        ]
    };
    // Wrong secret.
    let (status, _) = clerk_at(
        &app,
        "m1",
        &event,
        now(),
        "whsec_dGhpcyBpcyB5ZXQgYW5vdGhlciBzZWNyZXQ=",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Tampered body.
    let tampered = body.replace("Bad", "Evil");
    assert_eq!(
        send(good("m2", now(), &body), tampered)
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    // Stale and future timestamps.
    assert_eq!(
        clerk_at(&app, "m3", &event, now() - 400, CLERK_SECRET)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        clerk_at(&app, "m4", &event, now() + 400, CLERK_SECRET)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    // Missing headers.
    let mut partial = good("m5", now(), &body);
    partial.remove(2);
    let reply = send(partial, body.clone()).await.unwrap();
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
    assert!(reply.text().await.unwrap().contains("svix-signature"));
    // Signed, but not a Clerk event / malformed data.
    let junk = "{not json";
    assert_eq!(
        send(good("m6", now(), junk), junk.into())
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    let malformed = json!({ "type": "organization.created", "data": { "id": 5 } }).to_string();
    assert_eq!(
        send(good("m7", now(), &malformed), malformed.clone())
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    // Oversized.
    let huge = json!({ "type": "x", "data": { "pad": "x".repeat(2_000_000) } }).to_string();
    assert_eq!(
        send(good("m8", now(), &huge), huge.clone())
            .await
            .unwrap()
            .status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Stripe: wrong secret and missing header.
    let sevent = json!({ "id": "evt_1", "type": "invoice.paid", "created": now(), "data": { "object": { "customer": "cus_1" } } }).to_string();
    let wrong = StripeSecret::new("whsec_wrong").sign(now(), sevent.as_bytes());
    let reply = app
        .client
        .post(app.url("/webhooks/stripe"))
        .header("stripe-signature", wrong)
        .body(sevent.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
    let reply = app
        .client
        .post(app.url("/webhooks/stripe"))
        .body(sevent)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);

    assert_eq!(
        app.db
            .scalar_i64("SELECT count(*) FROM webhook_events")
            .await,
        0
    );
    assert_eq!(app.db.scalar_i64("SELECT count(*) FROM tenants").await, 0);
}

#[tokio::test]
async fn unknown_types_are_acknowledged_and_failures_are_retried() {
    let app = TestApp::spawn().await;
    let (status, body) = clerk(
        &app,
        "m_unknown",
        &json!({ "type": "session.created", "data": { "id": "sess_1" } }),
    )
    .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("ignored"))
    );
    // A membership before its organization fails (500) and is recorded as failed...
    let member = membership_event(
        "organizationMembership.created",
        "org_late",
        "user_z",
        "org:admin",
        10,
    );
    let (status, body) = clerk(&app, "m_member", &member).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let outcome: String =
        sqlx::query_scalar("SELECT outcome::text FROM webhook_events WHERE event_id = 'm_member'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(outcome, "failed");
    assert!(user_role(&app, "user_z").await.is_none());
    // ...and succeeds when the provider retries after the organization arrived.
    clerk(
        &app,
        "m_org",
        &org_event(
            "organization.created",
            "org_late",
            "Late",
            Some("late-corp"),
            1,
        ),
    )
    .await;
    let (status, body) = clerk(&app, "m_member", &member).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("applied"))
    );
    assert_eq!(user_role(&app, "user_z").await.unwrap().0, "admin");
}

// Each argument is a field of the event that tests vary.
#[allow(clippy::too_many_arguments)]
fn subscription(
    kind: &str,
    id: &str,
    sub: &str,
    customer: &str,
    price: &str,
    status: &str,
    created: i64,
    period_end: i64,
) -> Value {
    json!({ "id": id, "object": "event", "type": kind, "created": created,
            "data": { "object": { "id": sub, "object": "subscription", "customer": customer, "status": status,
                "cancel_at_period_end": false, "canceled_at": null, "metadata": {},
                "current_period_start": created - 100, "current_period_end": period_end,
                "items": { "data": [{ "price": { "id": price, "unit_amount": 9900, "currency": "usd", "recurring": { "interval": "month" } } }] } } } })
}

/// Links `customer` to the tenant `slug` and starts a subscription at `created`.
async fn subscribe(
    app: &TestApp,
    slug: &str,
    customer: &str,
    price: &str,
    status: &str,
    created: i64,
) {
    let id = tenant_id(app, slug).await.to_string();
    let checkout = checkout(&format!("evt_co_{customer}"), &id, customer, created - 1);
    assert_eq!(stripe(app, &checkout).await.1["outcome"], "applied");
    let ev = subscription(
        "customer.subscription.created",
        &format!("evt_sub_{customer}_{created}"),
        &format!("sub_{customer}"),
        customer,
        price,
        status,
        created,
        now() + 30 * 86_400,
    );
    let (status, body) = stripe(app, &ev).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn stripe_subscriptions_drive_tier_limits_features_and_status() {
    let app = TestApp::spawn().await;
    let t = app
        .tenant("payer", capliquify::billing::Tier::Starter)
        .await;
    subscribe(&app, "payer", "cus_payer", "price_pro_m", "active", 1_000).await;
    let tj = tenant_json(&app, &t.org).await;
    assert_eq!(tj["subscription_tier"], "professional");
    assert_eq!(tj["subscription_status"], "active");
    assert_eq!(tj["max_users"], 25);
    assert_eq!(tj["features"]["ai_forecasting"], true);
    let (billing_cycle, amount, status): (String, i32, String) =
        sqlx::query_as("SELECT billing_cycle::text, amount_cents, status::text FROM subscriptions WHERE tenant_id = $1")
            .bind(t.tenant.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (billing_cycle.as_str(), amount, status.as_str()),
        ("monthly", 9900, "active")
    );

    // A payment failure makes it past due (writes still allowed, with a warning)...
    let failed = json!({ "id": "evt_if", "type": "invoice.payment_failed", "created": 2_000, "data": { "object": { "customer": "cus_payer" } } });
    assert_eq!(stripe(&app, &failed).await.1["outcome"], "applied");
    assert_eq!(
        tenant_json(&app, &t.org).await["subscription_status"],
        "past_due"
    );
    let reply = app
        .post(
            &app.token_for(&t, Role::Owner),
            "/api/v1/companies",
            json!({ "name": "C" }),
        )
        .await;
    assert!(reply.headers.get("capliquify-billing-warning").is_some());
    // ...an event older than everything applied is stale...
    let older = subscription(
        "customer.subscription.updated",
        "evt_old",
        "sub_cus_payer",
        "cus_payer",
        "price_ent_y",
        "active",
        900,
        now() + 100,
    );
    assert_eq!(stripe(&app, &older).await.1["outcome"], "stale");
    assert_eq!(
        tenant_json(&app, &t.org).await["subscription_tier"],
        "professional"
    );
    // ...one newer than the plan but older than the payment failure changes the plan only.
    let plan_change = subscription(
        "customer.subscription.updated",
        "evt_plan",
        "sub_cus_payer",
        "cus_payer",
        "price_ent_y",
        "active",
        1_500,
        now() + 100,
    );
    assert_eq!(stripe(&app, &plan_change).await.1["outcome"], "applied");
    let tj = tenant_json(&app, &t.org).await;
    assert_eq!(
        (
            tj["subscription_tier"].as_str(),
            tj["subscription_status"].as_str()
        ),
        (Some("enterprise"), Some("past_due"))
    );
    // ...payment restores it.
    let paid = json!({ "id": "evt_ip", "type": "invoice.paid", "created": 3_000, "data": { "object": { "customer": "cus_payer" } } });
    stripe(&app, &paid).await;
    assert_eq!(
        tenant_json(&app, &t.org).await["subscription_status"],
        "active"
    );
    assert!(tenant_json(&app, &t.org).await["past_due_since"].is_null());

    // Deleted with the period already over: cancelled now, writes need payment.
    let deleted = subscription(
        "customer.subscription.deleted",
        "evt_del",
        "sub_cus_payer",
        "cus_payer",
        "price_pro_m",
        "canceled",
        4_000,
        3_900,
    );
    assert_eq!(stripe(&app, &deleted).await.1["outcome"], "applied");
    assert_eq!(
        tenant_json(&app, &t.org).await["subscription_status"],
        "cancelled"
    );
    app.post(
        &app.token_for(&t, Role::Owner),
        "/api/v1/companies",
        json!({ "name": "D" }),
    )
    .await
    .problem(StatusCode::PAYMENT_REQUIRED, "payment_required");
    let actions: Vec<String> = sqlx::query_scalar("SELECT action::text FROM audit_logs WHERE tenant_id = $1 AND metadata->'actor'->>'kind' = 'webhook' ORDER BY created_at")
        .bind(t.tenant.id)
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        actions,
        [
            "billing.customer_linked",
            "subscription.updated",
            "billing.payment_failed",
            "subscription.updated",
            "billing.payment_succeeded",
            "subscription.cancelled"
        ]
    );
}

#[tokio::test]
async fn shuffled_and_duplicated_events_end_in_the_same_state_as_in_order() {
    // 25 tenants × 4 billing events = 100 events, each delivered twice, shuffled; failures
    // are redelivered as Stripe would.
    let app = TestApp::spawn().await;
    let prices = ["price_starter_m", "price_pro_m", "price_ent_y"];
    let mut events = Vec::new();
    let mut expected = Vec::new();
    for i in 0..25 {
        let slug = format!("shuffle-{i:02}");
        let t = app.tenant(&slug, capliquify::billing::Tier::Starter).await;
        let customer = format!("cus_{i}");
        let sub = format!("sub_{i}");
        events.push(json!({ "id": format!("evt_{i}_0"), "type": "checkout.session.completed", "created": 1_000,
            "data": { "object": { "client_reference_id": t.tenant.id.to_string(), "customer": customer } } }));
        events.push(subscription(
            "customer.subscription.created",
            &format!("evt_{i}_1"),
            &sub,
            &customer,
            prices[i % 3],
            "active",
            2_000,
            now() + 1_000,
        ));
        events.push(subscription(
            "customer.subscription.updated",
            &format!("evt_{i}_2"),
            &sub,
            &customer,
            prices[(i + 1) % 3],
            "active",
            3_000,
            now() + 1_000,
        ));
        let last = if i % 2 == 0 {
            json!({ "id": format!("evt_{i}_3"), "type": "invoice.payment_failed", "created": 4_000, "data": { "object": { "customer": customer } } })
        } else {
            subscription(
                "customer.subscription.updated",
                &format!("evt_{i}_3"),
                &sub,
                &customer,
                prices[(i + 2) % 3],
                "active",
                4_000,
                now() + 1_000,
            )
        };
        events.push(last);
        let tier = if i % 2 == 0 { (i + 1) % 3 } else { (i + 2) % 3 };
        let status = if i % 2 == 0 { "past_due" } else { "active" };
        expected.push((
            slug,
            ["starter", "professional", "enterprise"][tier].to_owned(),
            status.to_owned(),
        ));
    }
    assert_eq!(events.len(), 100);
    let mut deliveries: Vec<Value> = events.iter().chain(events.iter()).cloned().collect();
    // A fixed shuffle (xorshift) so a failure reproduces.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for i in (1..deliveries.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        deliveries.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    for _round in 0..10 {
        let mut retry = Vec::new();
        for event in deliveries {
            let (status, _) = stripe(&app, &event).await;
            if status == StatusCode::INTERNAL_SERVER_ERROR {
                retry.push(event);
            } else {
                assert_eq!(status, StatusCode::OK);
            }
        }
        deliveries = retry;
        if deliveries.is_empty() {
            break;
        }
    }
    assert!(deliveries.is_empty(), "every event was eventually accepted");
    let got: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT slug::text, subscription_tier::text, subscription_status::text FROM tenants ORDER BY slug",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(got, expected);
    assert_eq!(
        app.db
            .scalar_i64("SELECT count(*) FROM webhook_events")
            .await,
        100
    );
}

#[tokio::test]
async fn the_lifecycle_job_suspends_ended_trials_and_late_payers_and_purges_expired_deletions() {
    let app = TestApp::spawn().await;
    let trial = app
        .tenant("trial-over", capliquify::billing::Tier::Starter)
        .await;
    let payer = app
        .tenant("late-payer", capliquify::billing::Tier::Starter)
        .await;
    let gone = app
        .tenant("long-gone", capliquify::billing::Tier::Starter)
        .await;
    let fine = app
        .tenant("all-fine", capliquify::billing::Tier::Starter)
        .await;
    app.db
        .exec(&format!(
            "UPDATE tenants SET trial_ends_at = now() - interval '1 hour' WHERE id = '{}'",
            trial.tenant.id
        ))
        .await;
    app.db
        .exec(&format!("UPDATE tenants SET subscription_status = 'past_due', past_due_since = now() - interval '8 days' WHERE id = '{}'", payer.tenant.id))
        .await;
    app.db
        .exec(&format!(
            "UPDATE tenants SET deleted_at = now() - interval '31 days' WHERE id = '{}'",
            gone.tenant.id
        ))
        .await;

    let (first, second) = tokio::join!(
        capliquify::tenancy::lifecycle_job::run(&app.db.pool, 30, 7),
        capliquify::tenancy::lifecycle_job::run(&app.db.pool, 30, 7)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    let report = if first.skipped { second } else { first };
    assert_eq!(report.trials_suspended, ["trial-over"]);
    assert_eq!(report.past_due_suspended, ["late-payer"]);
    assert_eq!(report.purged, ["long-gone"]);
    assert!(!app.db.schema_exists(&gone.tenant.schema_name).await);
    assert_eq!(
        tenant_json(&app, &trial.org).await["subscription_status"],
        "suspended"
    );
    assert_eq!(
        tenant_json(&app, &fine.org).await["subscription_status"],
        "trial"
    );
    let audited: i64 = app
        .db
        .scalar_i64("SELECT count(*) FROM audit_logs WHERE metadata->'actor'->>'job' = 'lifecycle'")
        .await;
    assert_eq!(audited, 3);
    // Nothing left to do.
    let again = capliquify::tenancy::lifecycle_job::run(&app.db.pool, 30, 7)
        .await
        .unwrap();
    assert_eq!(again.changes(), 0);
}

/// Who switches a tenant off in [`suspensions_by_billing_and_the_job_heal_when_paid_an_operators_stand`].
#[derive(Debug, Clone, Copy)]
enum Suspender {
    Operator,
    /// The lifecycle job, after `invoice.payment_failed` and the grace period.
    LifecycleJob,
    /// Stripe pausing the subscription.
    StripePause,
}

/// What tells us the customer pays again.
#[derive(Debug, Clone, Copy)]
enum Lifter {
    InvoicePaid,
    SubscriptionActive,
}

fn invoice(kind: &str, id: &str, customer: &str, created: i64) -> Value {
    json!({ "id": id, "type": kind, "created": created, "data": { "object": { "customer": customer } } })
}

fn sub_status(id: &str, customer: &str, status: &str, created: i64) -> Value {
    subscription(
        "customer.subscription.updated",
        id,
        &format!("sub_{customer}"),
        customer,
        "price_pro_m",
        status,
        created,
        now() + 30 * 86_400,
    )
}

async fn status_and_source(app: &TestApp, org: &str) -> (String, Option<String>) {
    let t = tenant_json(app, org).await;
    (
        t["subscription_status"].as_str().unwrap().to_owned(),
        t["suspended_by"].as_str().map(str::to_owned),
    )
}

#[tokio::test]
async fn suspensions_by_billing_and_the_job_heal_when_paid_an_operators_stand() {
    let app = TestApp::spawn().await;
    let suspenders = [
        Suspender::Operator,
        Suspender::LifecycleJob,
        Suspender::StripePause,
    ];
    let lifters = [Lifter::InvoicePaid, Lifter::SubscriptionActive];
    for (i, suspender) in suspenders.into_iter().enumerate() {
        for (j, lifter) in lifters.into_iter().enumerate() {
            let case = format!("{suspender:?} × {lifter:?}");
            let slug = format!("heal-{i}-{j}");
            let customer = format!("cus_heal_{i}_{j}");
            let t = app.tenant(&slug, capliquify::billing::Tier::Starter).await;
            let owner = app.token_for(&t, Role::Owner);
            subscribe(&app, &slug, &customer, "price_pro_m", "active", 1_000).await;

            // Switch it off.
            let (suspending, source) = match suspender {
                Suspender::Operator => {
                    app.db
                        .tenancy()
                        .suspend(
                            &slug,
                            Some("fraud check"),
                            &capliquify::audit::Actor::operator(),
                        )
                        .await
                        .unwrap();
                    (None, "operator")
                }
                Suspender::LifecycleJob => {
                    let failed = invoice(
                        "invoice.payment_failed",
                        &format!("evt_f_{slug}"),
                        &customer,
                        2_000,
                    );
                    assert_eq!(
                        stripe(&app, &failed).await.1["outcome"],
                        "applied",
                        "{case}"
                    );
                    app.db
                        .exec(&format!(
                            "UPDATE tenants SET past_due_since = now() - interval '8 days' WHERE slug = '{slug}'"
                        ))
                        .await;
                    let report = capliquify::tenancy::lifecycle_job::run(&app.db.pool, 30, 7)
                        .await
                        .unwrap();
                    assert_eq!(report.past_due_suspended, [slug.as_str()], "{case}");
                    (Some(failed), "lifecycle")
                }
                Suspender::StripePause => {
                    let paused = sub_status(&format!("evt_p_{slug}"), &customer, "paused", 2_000);
                    assert_eq!(
                        stripe(&app, &paused).await.1["outcome"],
                        "applied",
                        "{case}"
                    );
                    (Some(paused), "billing")
                }
            };
            assert_eq!(
                status_and_source(&app, &t.org).await,
                ("suspended".to_owned(), Some(source.to_owned())),
                "{case}"
            );
            app.get(&owner, "/api/v1/companies")
                .await
                .problem(StatusCode::FORBIDDEN, "tenant_suspended");

            // The customer pays.
            let lift = match lifter {
                Lifter::InvoicePaid => {
                    invoice("invoice.paid", &format!("evt_l_{slug}"), &customer, 3_000)
                }
                Lifter::SubscriptionActive => {
                    sub_status(&format!("evt_l_{slug}"), &customer, "active", 3_000)
                }
            };
            let (status, body) = stripe(&app, &lift).await;
            assert_eq!(
                (status, body["outcome"].as_str()),
                (StatusCode::OK, Some("applied")),
                "{case}"
            );
            let operator_stands = matches!(suspender, Suspender::Operator);
            let expected = if operator_stands {
                ("suspended".to_owned(), Some("operator".to_owned()))
            } else {
                ("active".to_owned(), None)
            };
            assert_eq!(status_and_source(&app, &t.org).await, expected, "{case}");
            let api = app.get(&owner, "/api/v1/companies").await;
            if operator_stands {
                api.problem(StatusCode::FORBIDDEN, "tenant_suspended");
                // Billing changed the status the tenant returns to.
                assert_eq!(
                    tenant_json(&app, &t.org).await["status_before_suspension"],
                    "active",
                    "{case}"
                );
            } else {
                assert_eq!(api.status, StatusCode::OK, "{case}: {}", api.text);
                let (actor, was): (Value, Value) = sqlx::query_as(
                    "SELECT metadata->'actor', metadata->'was_suspended_by' FROM audit_logs
                      WHERE tenant_id = $1 AND action = 'tenant.reactivated'",
                )
                .bind(t.tenant.id)
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
                assert_eq!(actor["provider"], "stripe", "{case}");
                assert_eq!(actor["event_id"], format!("evt_l_{slug}"), "{case}");
                assert_eq!(was, source, "{case}");
            }
            let after_lift = tenant_json(&app, &t.org).await;

            // A replay of the lift, and the suspending event delivered again late (the same
            // one: a duplicate; a copy under a new id, a moment older: stale),
            // change nothing.
            assert_eq!(
                stripe(&app, &lift).await.1["outcome"],
                "duplicate",
                "{case}"
            );
            if let Some(suspending) = suspending {
                assert_eq!(
                    stripe(&app, &suspending).await.1["outcome"],
                    "duplicate",
                    "{case}"
                );
                let mut late = suspending.clone();
                late["id"] = json!(format!("evt_late_{slug}"));
                late["created"] = json!(1_999);
                assert_eq!(stripe(&app, &late).await.1["outcome"], "stale", "{case}");
            }
            let older_pause = sub_status(&format!("evt_op_{slug}"), &customer, "paused", 2_500);
            // Older than the lift: stale, or (after an invoice, which leaves the plan's
            // watermark at the subscription's start) applied to the plan only.
            let want = match lifter {
                Lifter::InvoicePaid => "applied",
                Lifter::SubscriptionActive => "stale",
            };
            assert_eq!(
                stripe(&app, &older_pause).await.1["outcome"],
                want,
                "{case}"
            );
            let now_state = tenant_json(&app, &t.org).await;
            for field in [
                "subscription_status",
                "suspended_by",
                "status_before_suspension",
                "stripe_event_at",
            ] {
                assert_eq!(now_state[field], after_lift[field], "{case}: {field}");
            }

            // The operator's suspension ends only with the operator.
            if operator_stands {
                app.db
                    .tenancy()
                    .reactivate(&slug, &capliquify::audit::Actor::operator())
                    .await
                    .unwrap();
                assert_eq!(
                    status_and_source(&app, &t.org).await,
                    ("active".to_owned(), None),
                    "{case}"
                );
                let api = app.get(&owner, "/api/v1/companies").await;
                assert_eq!(api.status, StatusCode::OK, "{case}: {}", api.text);
            }
        }
    }
}

#[tokio::test]
async fn a_lift_delivered_before_the_suspension_wins_and_an_operator_can_take_a_suspension_over() {
    let app = TestApp::spawn().await;
    let t = app
        .tenant("early-lift", capliquify::billing::Tier::Starter)
        .await;
    subscribe(
        &app,
        "early-lift",
        "cus_early",
        "price_pro_m",
        "active",
        1_000,
    )
    .await;
    // Out of order: the resumption (3000) arrives before the pause (2000).
    let active = sub_status("evt_resume", "cus_early", "active", 3_000);
    let paused = sub_status("evt_pause", "cus_early", "paused", 2_000);
    assert_eq!(stripe(&app, &active).await.1["outcome"], "applied");
    assert_eq!(stripe(&app, &paused).await.1["outcome"], "stale");
    assert_eq!(
        status_and_source(&app, &t.org).await,
        ("active".to_owned(), None)
    );

    // A pause, then an operator takes the suspension over: the subscription's resumption no
    // longer lifts it, and the operator's reactivation returns it to the pause (billing's
    // suspension) until Stripe says the subscription runs again.
    let pause = sub_status("evt_pause2", "cus_early", "paused", 4_000);
    assert_eq!(stripe(&app, &pause).await.1["outcome"], "applied");
    let tenancy = app.db.tenancy();
    let operator = capliquify::audit::Actor::operator();
    tenancy
        .suspend("early-lift", None, &operator)
        .await
        .unwrap();
    assert_eq!(
        status_and_source(&app, &t.org).await,
        ("suspended".to_owned(), Some("operator".to_owned()))
    );
    let back = tenancy.reactivate("early-lift", &operator).await.unwrap();
    assert_eq!(back.subscription_status.as_str(), "suspended");
    assert_eq!(
        status_and_source(&app, &t.org).await,
        ("suspended".to_owned(), Some("billing".to_owned()))
    );
    let resumed = sub_status("evt_resume2", "cus_early", "active", 5_000);
    assert_eq!(stripe(&app, &resumed).await.1["outcome"], "applied");
    assert_eq!(
        status_and_source(&app, &t.org).await,
        ("active".to_owned(), None)
    );
}

/// The id of the tenant with `slug` (what checkouts carry as `client_reference_id`).
async fn tenant_id(app: &TestApp, slug: &str) -> uuid::Uuid {
    sqlx::query_scalar("SELECT id FROM public.tenants WHERE slug = $1")
        .bind(slug)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

fn checkout(event_id: &str, reference: &str, customer: &str, created: i64) -> Value {
    json!({ "id": event_id, "type": "checkout.session.completed", "created": created,
        "data": { "object": { "client_reference_id": reference, "customer": customer,
                              "subscription": format!("sub_{customer}") } } })
}

/// The outcome and note recorded for a Stripe event.
async fn recorded(app: &TestApp, event_id: &str) -> (String, Option<String>) {
    sqlx::query_as("SELECT outcome::text, error FROM public.webhook_events WHERE provider = 'stripe' AND event_id = $1")
        .bind(event_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

async fn customer_of(app: &TestApp, id: uuid::Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT stripe_customer_id FROM public.tenants WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn billing_follows_the_tenant_id_never_a_renamed_or_reused_slug() {
    let app = TestApp::spawn().await;
    let a = app
        .tenant("billed-a", capliquify::billing::Tier::Starter)
        .await;
    let b = app
        .tenant("billed-b", capliquify::billing::Tier::Starter)
        .await;

    // A slug as client_reference_id is not followed (it could name another tenant by now).
    let (status, body) = stripe(&app, &checkout("evt_slug", "billed-a", "cus_slug", now())).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("ignored")),
        "{body}"
    );
    assert_eq!(customer_of(&app, a.tenant.id).await, None);

    // By id, the link is made.
    let (_, body) = stripe(
        &app,
        &checkout("evt_link_a", &a.tenant.id.to_string(), "cus_a", now()),
    )
    .await;
    assert_eq!(body["outcome"], "applied", "{body}");
    assert_eq!(
        customer_of(&app, a.tenant.id).await.as_deref(),
        Some("cus_a")
    );

    // A second checkout cannot relink A to another customer: refused (200, so Stripe stops
    // retrying), audited, nothing changed.
    let (status, body) = stripe(
        &app,
        &checkout("evt_relink_a", &a.tenant.id.to_string(), "cus_evil", now()),
    )
    .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("refused")),
        "{body}"
    );
    assert_eq!(
        customer_of(&app, a.tenant.id).await.as_deref(),
        Some("cus_a")
    );
    assert_eq!(recorded(&app, "evt_relink_a").await.0, "refused");
    assert!(
        app.db
            .audit_actions(a.tenant.id)
            .await
            .contains(&"billing.event_refused".to_owned())
    );

    // Nor can A's customer be linked to B.
    let (_, body) = stripe(
        &app,
        &checkout("evt_steal", &b.tenant.id.to_string(), "cus_a", now()),
    )
    .await;
    assert_eq!(body["outcome"], "refused", "{body}");
    assert_eq!(customer_of(&app, b.tenant.id).await, None);
    assert!(
        app.db
            .audit_actions(b.tenant.id)
            .await
            .contains(&"billing.event_refused".to_owned())
    );

    // A subscription of A's customer whose metadata names B is refused; the customer link
    // decides, B's plan is untouched.
    let mut ev = subscription(
        "customer.subscription.created",
        "evt_sub_meta_b",
        "sub_a",
        "cus_a",
        "price_ent_y",
        "active",
        now(),
        now() + 86_400,
    );
    ev["data"]["object"]["metadata"] =
        json!({ "tenant_id": b.tenant.id.to_string(), "tenant": "billed-b" });
    let (status, body) = stripe(&app, &ev).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("refused")),
        "{body}"
    );
    assert_eq!(
        tenant_json(&app, &a.org).await["subscription_tier"],
        "starter"
    );
    assert_eq!(
        tenant_json(&app, &b.org).await["subscription_tier"],
        "starter"
    );

    // A's slug renamed and then taken by B: A's customer still bills A, whatever the legacy
    // `metadata.tenant` slug says.
    app.db
        .exec(&format!(
            "UPDATE public.tenants SET slug = 'billed-a-renamed' WHERE id = '{}'",
            a.tenant.id
        ))
        .await;
    app.db
        .exec(&format!(
            "UPDATE public.tenants SET slug = 'billed-a' WHERE id = '{}'",
            b.tenant.id
        ))
        .await;
    let mut ev = subscription(
        "customer.subscription.created",
        "evt_sub_a",
        "sub_a",
        "cus_a",
        "price_ent_y",
        "active",
        now(),
        now() + 86_400,
    );
    ev["data"]["object"]["metadata"] = json!({ "tenant": "billed-a" });
    let (_, body) = stripe(&app, &ev).await;
    assert_eq!(body["outcome"], "applied", "{body}");
    assert_eq!(
        tenant_json(&app, &a.org).await["subscription_tier"],
        "enterprise"
    );
    assert_eq!(
        tenant_json(&app, &b.org).await["subscription_tier"],
        "starter"
    );

    // Before any link, metadata.tenant_id binds a subscription to its tenant by id.
    let mut ev = subscription(
        "customer.subscription.created",
        "evt_sub_b",
        "sub_b",
        "cus_b",
        "price_pro_m",
        "active",
        now(),
        now() + 86_400,
    );
    ev["data"]["object"]["metadata"] = json!({ "tenant_id": b.tenant.id.to_string() });
    let (_, body) = stripe(&app, &ev).await;
    assert_eq!(body["outcome"], "applied", "{body}");
    assert_eq!(
        customer_of(&app, b.tenant.id).await.as_deref(),
        Some("cus_b")
    );
    assert_eq!(
        tenant_json(&app, &b.org).await["subscription_tier"],
        "professional"
    );
}
