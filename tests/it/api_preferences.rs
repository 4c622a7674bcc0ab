//! `/api/v1/me/preferences` and the admins' `/api/v1/user-preferences/{user_id}`.

use crate::common::api::TestApp;
use capliquify::access::Role;
use capliquify::billing::Tier;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn members_keep_their_own_preferences() {
    let app = TestApp::spawn().await;
    let t = app.tenant("prefs", Tier::Starter).await;
    let viewer = app.token_for(&t, Role::Viewer);
    let empty = app.get(&viewer, "/api/v1/me/preferences").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.body["preferences"], json!({}));
    assert_eq!(empty.body["user_id"], t.user(Role::Viewer));

    let put = app
        .call(
            reqwest::Method::PUT,
            "/api/v1/me/preferences",
            Some(&viewer),
            Some(json!({ "preferences": { "theme": "dark", "currency": "EUR" } })),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    let merged = app
        .patch(
            &viewer,
            "/api/v1/me/preferences",
            json!({ "preferences": { "theme": "light", "density": "compact" } }),
        )
        .await;
    assert_eq!(
        merged.body["preferences"],
        json!({ "theme": "light", "currency": "EUR", "density": "compact" })
    );
    // Another member sees only their own.
    let member = app.token_for(&t, Role::Member);
    assert_eq!(
        app.get(&member, "/api/v1/me/preferences").await.body["preferences"],
        json!({})
    );

    assert_eq!(
        app.delete(&viewer, "/api/v1/me/preferences").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&viewer, "/api/v1/me/preferences").await.body["preferences"],
        json!({})
    );

    app.patch(
        &viewer,
        "/api/v1/me/preferences",
        json!({ "preferences": [1, 2] }),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    app.patch(&viewer, "/api/v1/me/preferences", json!({ "prefs": {} }))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

#[tokio::test]
async fn admins_manage_other_members_preferences_within_their_tenant_only() {
    let app = TestApp::spawn().await;
    let t = app.tenant("prefs-admin", Tier::Starter).await;
    let other = app.tenant("prefs-other", Tier::Starter).await;
    let admin = app.token_for(&t, Role::Admin);
    let member = app.token_for(&t, Role::Member);
    let path = format!("/api/v1/user-preferences/{}", t.user(Role::Viewer));

    app.get(&member, &path)
        .await
        .problem(StatusCode::FORBIDDEN, "insufficient_role");
    let put = app
        .call(
            reqwest::Method::PUT,
            &path,
            Some(&admin),
            Some(json!({ "preferences": { "locale": "de" } })),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    let viewer = app.token_for(&t, Role::Viewer);
    assert_eq!(
        app.get(&viewer, "/api/v1/me/preferences").await.body["preferences"],
        json!({ "locale": "de" })
    );

    // A member of another tenant is not found, whatever exists there.
    let foreign = format!("/api/v1/user-preferences/{}", other.user(Role::Viewer));
    app.get(&admin, &foreign)
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        app.delete(&admin, &path).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&viewer, "/api/v1/me/preferences").await.body["preferences"],
        json!({})
    );
}
