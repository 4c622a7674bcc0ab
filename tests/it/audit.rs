//! The audit trail: append-only in the database, written with every sensitive act, readable
//! by tenant admins through the API and by operators through `capliquify audit`.

use crate::common::TestDb;

use crate::common::api::TestApp;

use capliquify::access::Role;

use capliquify::audit::Actor;

use capliquify::billing::Tier;

use reqwest::StatusCode;

use serde_json::json;

#[tokio::test]
async fn audit_rows_cannot_be_changed_or_removed_except_by_purging_their_tenant() {
    let db = TestDb::new().await;
    let kept = db.tenant("keeps-history", Tier::Starter).await;
    let gone = db.tenant("goes-away", Tier::Starter).await;
    for sql in [
        "UPDATE audit_logs SET action = 'forged'",
        "DELETE FROM audit_logs",
        "TRUNCATE audit_logs",
    ] {
        let err = sqlx::query(sql).execute(&db.pool).await.unwrap_err();
        assert_eq!(
            err.as_database_error().unwrap().code().as_deref(),
            Some("42501"),
            "{sql}"
        );
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    // A setting naming another tenant does not open the door.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('capliquify.purging_tenant', $1, true)")
        .bind(gone.id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query("DELETE FROM audit_logs WHERE tenant_id = $1")
        .bind(kept.id)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"));
    drop(tx);

    let tenancy = db.tenancy();
    let actor = Actor::operator();
    tenancy.soft_delete("goes-away", &actor).await.unwrap();
    tenancy
        .purge("goes-away", true, Some("goes-away"), &actor)
        .await
        .unwrap();
    assert_eq!(
        db.audit_actions(gone.id).await.len(),
        0,
        "the purged tenant's rows went with it"
    );
    assert_eq!(db.audit_actions(kept.id).await, ["tenant.provisioned"]);
}

/// action, resource id, member, ip, user agent
type AuditedWrite = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

#[tokio::test]
async fn scenario_and_forecast_writes_are_audited_with_the_member_and_where_they_came_from() {
    let app = TestApp::spawn().await;
    let t = app.tenant("audited", Tier::Professional).await;
    let company = app.company(&t, "ACME").await;
    let member = app.token_for(&t, Role::Member);
    let created = app
        .post(
            &member,
            "/api/v1/scenarios",
            json!({ "company_id": company, "name": "Base", "parameters": { "growth": 0.1 } }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    app.patch(
        &member,
        &format!("/api/v1/scenarios/{id}"),
        json!({ "name": "Base v2" }),
    )
    .await;
    app.delete(&member, &format!("/api/v1/scenarios/{id}"))
        .await;
    let forecast = app
        .post(
            &member,
            "/api/v1/forecasts",
            json!({ "company_id": company, "forecast_date": "2026-12-01",
               "forecast_type": "demand", "predicted_value": "100.00" }),
        )
        .await;
    assert_eq!(forecast.status, StatusCode::CREATED, "{}", forecast.text);
    // A failed write leaves no audit row.
    app.post(
        &member,
        "/api/v1/scenarios",
        json!({ "company_id": company, "name": "", "parameters": {} }),
    )
    .await;

    let rows: Vec<AuditedWrite> = sqlx::query_as(
        "SELECT a.action::text, a.resource_id::text, u.clerk_user_id::text, host(a.ip_address), a.user_agent
           FROM audit_logs a LEFT JOIN users u ON u.id = a.user_id
          WHERE a.tenant_id = $1 AND a.resource_type IN ('scenario', 'forecast') ORDER BY a.created_at, a.id",
    )
    .bind(t.tenant.id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        actions,
        [
            "scenario.created",
            "scenario.updated",
            "scenario.deleted",
            "forecast.created"
        ]
    );
    assert!(
        rows[..3]
            .iter()
            .all(|r| r.1.as_deref() == Some(id.as_str()))
    );
    let who = t.user(Role::Member);
    assert!(rows.iter().all(|r| r.2.as_deref() == Some(who.as_str())));
    assert!(
        rows.iter().all(|r| r.3.as_deref() == Some("127.0.0.1")),
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| r.4.is_some()));
}

#[tokio::test]
async fn admins_read_their_tenants_audit_trail_and_nobody_else_does() {
    let app = TestApp::spawn().await;
    let t = app.tenant("trail", Tier::Professional).await;
    let other = app.tenant("other-trail", Tier::Professional).await;
    let company = app.company(&t, "ACME").await;
    let member = app.token_for(&t, Role::Member);
    for i in 0..5 {
        app.post(
            &member,
            "/api/v1/scenarios",
            json!({ "company_id": company, "name": format!("S{i}"), "parameters": {} }),
        )
        .await;
    }
    app.get(&member, "/api/v1/audit-logs")
        .await
        .problem(StatusCode::FORBIDDEN, "insufficient_role");

    let admin = app.token_for(&t, Role::Admin);
    let all = app.get(&admin, "/api/v1/audit-logs").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    let actions: Vec<&str> = all.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "scenario.created").count(),
        5
    );
    assert_eq!(actions.last(), Some(&"tenant.provisioned"), "newest first");
    assert!(
        !all.text.contains(&t.tenant.id.to_string()),
        "no tenant UUID in the response"
    );
    assert!(!all.text.contains(&other.tenant.slug));

    // Filters and pages.
    let mut seen = Vec::new();
    let mut path = format!(
        "/api/v1/audit-logs?action=scenario.created&user={}&limit=2",
        t.user(Role::Member)
    );
    loop {
        let page = app.get(&admin, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        seen.extend(
            page.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(c) => {
                path = format!(
                    "/api/v1/audit-logs?action=scenario.created&user={}&limit=2&cursor={c}",
                    t.user(Role::Member)
                )
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let none = app.get(&admin, "/api/v1/audit-logs?from=2100-01-01").await;
    assert_eq!(none.body["data"].as_array().unwrap().len(), 0);
    app.get(&admin, "/api/v1/audit-logs?from=yesterday")
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_parameter");
    app.get(&admin, "/api/v1/audit-logs?colour=red")
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_parameter");

    // Operators read it with the CLI.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .args([
            "audit",
            "--tenant",
            "trail",
            "--action",
            "scenario.created",
            "--json",
        ])
        .env("DATABASE_URL", &app.db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 5);
    assert_eq!(rows[0]["tenant"], "trail");
}

#[tokio::test]
async fn tenant_acts_name_tenants_by_slug_never_by_uuid() {
    let db = TestDb::new().await;
    db.tenant("by-slug", Tier::Starter).await;
    let tenancy = db.tenancy();
    let actor = Actor::operator();
    tenancy
        .suspend("by-slug", Some("check"), &actor)
        .await
        .unwrap();
    tenancy.reactivate("by-slug", &actor).await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let file = folder.path().join("by-slug.capliquify-backup");
    capliquify::tenancy::backup::backup(
        &db.pool,
        "by-slug",
        Some(&file),
        false,
        None,
        &actor,
        &|_| {},
    )
    .await
    .unwrap();
    capliquify::tenancy::backup::clone_tenant(
        &db.pool,
        "by-slug",
        "by-slug-copy",
        None,
        None,
        &actor,
        &|_| {},
    )
    .await
    .unwrap();
    tenancy.soft_delete("by-slug-copy", &actor).await.unwrap();
    tenancy
        .restore("by-slug-copy", false, &actor)
        .await
        .unwrap();
    // Every tenant's audit rows (what its admins read through the API), against every
    // tenant's UUID: none appears, as resource id or anywhere in the metadata.
    let leaks: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.action::text, t.slug::text FROM audit_logs a JOIN tenants t ON true
          WHERE a.tenant_id IS NOT NULL
            AND (a.resource_id = t.id::text OR a.metadata::text LIKE '%' || t.id::text || '%'
                 OR a.metadata::text LIKE '%' || replace(t.id::text, '-', '') || '%')",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        leaks.is_empty(),
        "audit rows naming a tenant's UUID: {leaks:?}"
    );
    let acts = db
        .scalar_i64("SELECT count(*) FROM audit_logs WHERE resource_type = 'tenant'")
        .await;
    assert_eq!(acts, 7, "each act was audited");
}

/// A clone's trail records its source for operators; the clone's own admins must not learn
/// the source tenant's id, slug or row counts through the API.
#[tokio::test]
async fn a_clones_audit_trail_shows_nothing_of_its_source_tenant() {
    let app = TestApp::spawn().await;
    let src = app.tenant("clone-source", Tier::Professional).await;
    capliquify::tenancy::backup::clone_tenant(
        &app.db.pool,
        "clone-source",
        "clone-copy",
        None,
        Some("org_clone_copy".into()),
        &Actor::operator(),
        &|_| {},
    )
    .await
    .expect("the tenant is cloned");
    let copy = capliquify::tenancy::registry::find(&app.db.pool, "clone-copy")
        .await
        .unwrap();
    let copy = crate::common::api::TestTenant {
        org: copy.clerk_organization_id.clone(),
        tenant: copy,
    };
    sqlx::query(
        "INSERT INTO public.users (clerk_user_id, email, tenant_id, role) VALUES ($1, 'a@copy.test', $2, 'admin')",
    )
    .bind(copy.user(Role::Admin))
    .bind(copy.tenant.id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    // The operators' trail has the source (by slug: no tenant's UUID in any audit row).
    let metadata: serde_json::Value = sqlx::query_scalar(
        "SELECT metadata FROM public.audit_logs WHERE tenant_id = $1 AND action = 'tenant.cloned'",
    )
    .bind(copy.tenant.id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(metadata["source_slug"], src.tenant.slug);
    assert!(metadata.get("source_tenant_id").is_none());

    let page = app
        .get(&app.token_for(&copy, Role::Admin), "/api/v1/audit-logs")
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("tenant.cloned"), "{}", page.text);
    for leak in [
        src.tenant.id.to_string(),
        src.tenant.id.simple().to_string(),
        "clone-source".to_owned(),
        "\"rows\"".to_owned(),
        copy.tenant.id.to_string(),
    ] {
        assert!(!page.text.contains(&leak), "{leak} in {}", page.text);
    }
}
