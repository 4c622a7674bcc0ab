//! API credentials: sealed at rest, never returned, bound to tenant and row, rotated under
//! new keys, every act audited.

use crate::common::api::{ENCRYPTION_KEY, TestApp};
use capliquify::access::Role;
use capliquify::audit::Actor;
use capliquify::billing::Tier;
use capliquify::credentials::{RevealError, reveal, rotate_keys};
use capliquify::crypto::{CryptoError, Keyring};
use reqwest::{Method, StatusCode};
use serde_json::json;

const SECRET: &str = "sk_live_TOP_SECRET_4242";
const NEW_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

async fn create(
    app: &TestApp,
    t: &crate::common::api::TestTenant,
    company: &str,
    service: &str,
) -> serde_json::Value {
    let reply = app
        .post(
            &app.token_for(t, Role::Admin),
            "/api/v1/api-credentials",
            json!({ "company_id": company, "service": service, "service_display_name": "Xero",
                    "credentials": { "api_key": SECRET, "tenant": "xero-1" },
                    "oauth_access_token": "access-TOKEN-9999", "oauth_refresh_token": "refresh-TOKEN-8888",
                    "sync_frequency": "daily" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body
}

#[tokio::test]
async fn credentials_are_sealed_never_returned_and_every_act_is_audited() {
    let app = TestApp::spawn().await;
    let t = app.tenant("creds", Tier::Professional).await;
    let company = app.company(&t, "ACME").await;
    let created = create(&app, &t, &company, "xero").await;
    assert!(
        !created.to_string().contains("TOP_SECRET") && !created.to_string().contains("TOKEN"),
        "{created}"
    );
    // Keyed: not the unsalted SHA-256 of the plaintext, which a guess could be checked
    // against offline.
    let fp = created["fingerprint"].as_str().unwrap();
    assert!(fp.starts_with("hmac:"), "{fp}");
    let plaintext = serde_json::to_vec(&json!({ "api_key": SECRET, "tenant": "xero-1" })).unwrap();
    let unsalted: String = <sha2::Sha256 as sha2::Digest>::digest(&plaintext)
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!fp.contains(&unsalted), "{fp} is the unsalted SHA-256");
    assert_eq!(created["has_oauth_tokens"], true);
    assert_eq!(created["key_id"], "k1");
    let id = created["id"].as_str().unwrap().to_owned();
    let admin = app.token_for(&t, Role::Admin);

    // Members cannot see credentials at all.
    app.get(&app.token_for(&t, Role::Member), "/api/v1/api-credentials")
        .await
        .problem(StatusCode::FORBIDDEN, "insufficient_role");
    let listed = app.get(&admin, "/api/v1/api-credentials").await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    assert!(!listed.text.contains("TOP_SECRET"));
    // A second credential for the same company and service conflicts.
    let dup = app
        .post(
            &admin,
            "/api/v1/api-credentials",
            json!({ "company_id": company, "service": "xero", "credentials": {} }),
        )
        .await;
    let problem = dup.problem(StatusCode::CONFLICT, "already_exists");
    assert_eq!(problem["field"], "service");
    assert_eq!(
        problem["detail"],
        "this company already has a credential for this service"
    );
    app.post(
        &admin,
        "/api/v1/api-credentials",
        json!({ "company_id": company, "service": "Bad Name!", "credentials": {} }),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    app.post(
        &admin,
        "/api/v1/api-credentials",
        json!({ "company_id": company, "service": "qb", "credentials": "plain" }),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

    // The database holds envelopes only.
    let raw: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT credentials::text || coalesce(oauth_access_token, '') || coalesce(oauth_refresh_token, '') FROM {}.api_credentials",
        t.tenant.schema_name
    )))
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(
        !raw.contains("TOP_SECRET") && !raw.contains("TOKEN-"),
        "{raw}"
    );

    let rotated = app
        .call(
            Method::POST,
            &format!("/api/v1/api-credentials/{id}/rotate"),
            Some(&admin),
            Some(json!({ "credentials": { "api_key": "sk_live_NEW_SECRET" } })),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    assert_ne!(rotated.body["fingerprint"], created["fingerprint"]);
    assert_eq!(rotated.body["has_oauth_tokens"], false);
    let off = app
        .call(
            Method::POST,
            &format!("/api/v1/api-credentials/{id}/deactivate"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(off.body["is_active"], false);

    // Sync jobs read secrets through the library, and that is audited too.
    let keys = Keyring::from_settings(Some(ENCRYPTION_KEY), "k1", None).unwrap();
    let scope = t.tenant.scope().unwrap();
    let secrets = reveal(
        &app.db.pool,
        &keys,
        &scope,
        id.parse().unwrap(),
        &Actor::System { job: "sync" },
        "nightly sync",
    )
    .await
    .unwrap();
    assert_eq!(secrets.credentials["api_key"], "sk_live_NEW_SECRET");

    assert_eq!(
        app.delete(&admin, &format!("/api/v1/api-credentials/{id}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    app.get(&admin, &format!("/api/v1/api-credentials/{id}"))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action::text FROM audit_logs WHERE resource_type = 'api_credential' ORDER BY created_at, id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "api_credential.created",
            "api_credential.rotated",
            "api_credential.deactivated",
            "api_credential.read",
            "api_credential.deleted"
        ]
    );
}

#[tokio::test]
async fn an_envelope_copied_to_another_row_or_tenant_or_altered_does_not_open() {
    let app = TestApp::spawn().await;
    let a = app.tenant("copy-a", Tier::Professional).await;
    let b = app.tenant("copy-b", Tier::Professional).await;
    let (ca, cb) = (app.company(&a, "A").await, app.company(&b, "B").await);
    let a1 = create(&app, &a, &ca, "xero").await["id"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();
    let a2 = create(&app, &a, &ca, "netsuite").await["id"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();
    let b1 = create(&app, &b, &cb, "xero").await["id"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();
    let (sa, sb) = (a.tenant.schema_name.clone(), b.tenant.schema_name.clone());
    let keys = Keyring::from_settings(Some(ENCRYPTION_KEY), "k1", None).unwrap();
    let actor = Actor::System { job: "test" };
    // Another row of the same tenant.
    app.db.exec(&format!("UPDATE {sa}.api_credentials SET credentials = (SELECT credentials FROM {sa}.api_credentials WHERE id = '{a1}') WHERE id = '{a2}'")).await;
    let err = reveal(
        &app.db.pool,
        &keys,
        &a.tenant.scope().unwrap(),
        a2,
        &actor,
        "t",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, RevealError::Crypto(CryptoError::Tampered)),
        "{err}"
    );
    // Another tenant.
    app.db.exec(&format!("UPDATE {sb}.api_credentials SET credentials = (SELECT credentials FROM {sa}.api_credentials WHERE id = '{a1}') WHERE id = '{b1}'")).await;
    let err = reveal(
        &app.db.pool,
        &keys,
        &b.tenant.scope().unwrap(),
        b1,
        &actor,
        "t",
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("another tenant, row or field"),
        "{err}"
    );
    // A token swapped into the other token's column.
    app.db.exec(&format!("UPDATE {sa}.api_credentials SET oauth_access_token = oauth_refresh_token WHERE id = '{a1}'")).await;
    assert!(
        reveal(
            &app.db.pool,
            &keys,
            &a.tenant.scope().unwrap(),
            a1,
            &actor,
            "t"
        )
        .await
        .is_err()
    );
    // Nothing was read, so nothing was audited as read.
    assert_eq!(
        app.db
            .scalar_i64("SELECT count(*) FROM audit_logs WHERE action = 'api_credential.read'")
            .await,
        0
    );
}

#[tokio::test]
async fn keys_rotate_reseals_every_tenant_and_resumes() {
    let app = TestApp::spawn().await;
    let t = app.tenant("rotating", Tier::Professional).await;
    let company = app.company(&t, "A").await;
    let id = create(&app, &t, &company, "xero").await["id"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();
    let scope = t.tenant.scope().unwrap();
    let actor = Actor::operator();

    // A missing or malformed key is refused with the setting named.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .args(["keys", "rotate"])
        .env("DATABASE_URL", &app.db.url)
        .env("ENCRYPTION_KEY", "abc")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ENCRYPTION_KEY must be 64 hexadecimal"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .args(["keys", "rotate"])
        .env("DATABASE_URL", &app.db.url)
        .env("ENCRYPTION_KEY", NEW_KEY)
        .env("ENCRYPTION_KEY_ID", "k2")
        .env("ENCRYPTION_KEYS", format!("k1={ENCRYPTION_KEY}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 credential(s) re-sealed under key k2")
    );

    // Only the new key is needed now, and a second run has nothing to do.
    let new_only = Keyring::from_settings(Some(NEW_KEY), "k2", None).unwrap();
    let secrets = reveal(&app.db.pool, &new_only, &scope, id, &actor, "check")
        .await
        .unwrap();
    assert_eq!(secrets.credentials["api_key"], SECRET);
    assert_eq!(
        secrets.oauth_refresh_token.as_deref(),
        Some("refresh-TOKEN-8888")
    );
    assert_eq!(
        rotate_keys(&app.db.pool, &new_only, &scope, &actor)
            .await
            .unwrap()
            .resealed,
        0
    );
    let old_only = Keyring::from_settings(Some(ENCRYPTION_KEY), "k1", None).unwrap();
    let err = reveal(&app.db.pool, &old_only, &scope, id, &actor, "check")
        .await
        .unwrap_err();
    assert!(
        matches!(err, RevealError::Crypto(CryptoError::UnknownKey(ref k)) if k == "k2"),
        "{err}"
    );
    assert_eq!(
        app.db
            .scalar_i64(
                "SELECT count(*) FROM audit_logs WHERE action = 'api_credential.keys_rotated'"
            )
            .await,
        1
    );
}

#[tokio::test]
async fn a_full_pg_dump_contains_no_plaintext_secret() {
    let app = TestApp::spawn().await;
    let t = app.tenant("dumped", Tier::Professional).await;
    let company = app.company(&t, "A").await;
    create(&app, &t, &company, "xero").await;
    let bin = capliquify::db::embedded::find_bin_dir().expect("PostgreSQL binaries");
    let out = std::process::Command::new(bin.join("pg_dump"))
        .arg("--no-owner")
        .arg(&app.db.url)
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(dump.contains("api_credentials"), "the dump has the table");
    for plaintext in [SECRET, "access-TOKEN-9999", "refresh-TOKEN-8888"] {
        assert!(
            !dump.contains(plaintext),
            "{plaintext} found in pg_dump output"
        );
    }
}

#[tokio::test]
async fn keys_rotate_finishes_after_a_clone_skipping_and_counting_its_switched_off_copies() {
    let app = TestApp::spawn().await;
    let t = app.tenant("original", Tier::Professional).await;
    let company = app.company(&t, "A").await;
    create(&app, &t, &company, "xero").await;
    let actor = Actor::operator();
    capliquify::tenancy::backup::clone_tenant(
        &app.db.pool,
        "original",
        "staging",
        None,
        None,
        &actor,
        &|_| {},
    )
    .await
    .unwrap();
    let staging = capliquify::tenancy::registry::find(&app.db.pool, "staging")
        .await
        .unwrap();
    let copy_sql = format!(
        "SELECT credentials::text FROM {}.api_credentials",
        staging.schema_name
    );
    let copy_before: String = sqlx::query_scalar(sqlx::AssertSqlSafe(copy_sql.clone()))
        .fetch_one(&app.db.pool)
        .await
        .unwrap();

    let rotate = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_capliquify"))
            .args(["keys", "rotate"])
            .env("DATABASE_URL", &app.db.url)
            .env("ENCRYPTION_KEY", NEW_KEY)
            .env("ENCRYPTION_KEY_ID", "k2")
            .env("ENCRYPTION_KEYS", format!("k1={ENCRYPTION_KEY}"))
            .output()
            .unwrap()
    };
    for run in 0..2 {
        let out = rotate();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "run {run}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let resealed = if run == 0 { 1 } else { 0 };
        assert!(
            stdout.contains(&format!(
                "{resealed} credential(s) re-sealed under key k2 across 2 tenant(s); 1 switched-off credential(s) skipped; 0 failed"
            )),
            "run {run}: {stdout}"
        );
        assert!(stdout.contains("staging: 1 switched-off"), "{stdout}");
    }
    // The copy is left exactly as the clone made it; the original is under the new key.
    let copy_after: String = sqlx::query_scalar(sqlx::AssertSqlSafe(copy_sql))
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(copy_after, copy_before);
    let new_only = Keyring::from_settings(Some(NEW_KEY), "k2", None).unwrap();
    let listed = app
        .get(&app.token_for(&t, Role::Admin), "/api/v1/api-credentials")
        .await;
    assert_eq!(listed.body["data"][0]["key_id"], "k2", "{}", listed.text);
    let scope = staging.scope().unwrap();
    let done = rotate_keys(&app.db.pool, &new_only, &scope, &actor)
        .await
        .unwrap();
    assert_eq!((done.resealed, done.skipped_switched_off), (0, 1));

    // An active credential that does not open is still a failure (exit 1, named).
    app.db
        .exec(&format!(
            "UPDATE {}.api_credentials SET is_active = true",
            staging.schema_name
        ))
        .await;
    let out = rotate();
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FAILED staging"), "{stderr}");
}
