//! The operators' console (`/console`) over plain HTTP: access, sessions, CSRF, headers,
//! pages and acts. The browser tests (`browser.rs`) drive the same through Chromium.

mod browser;

use std::sync::Arc;

use capliquify::access::Role;
use capliquify::billing::Tier;
use capliquify::http::HttpConfig;
use capliquify::http::console::{ConsoleConfig, IDLE_TIMEOUT};
use capliquify::tenancy::backup::{self, BackupKey, Trust};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};

use crate::common::TestDb;
use crate::common::api::{OTHER_KEY, TEST_KEY, TestApp, claims, sign};

pub const ADMIN_TOKEN: &str = "console-admin-token-0123456789abcdef";
/// The Clerk user on the console's operator list.
pub const OPERATOR: &str = "user_console_operator";

/// A service with the console on, signed in to with [`ADMIN_TOKEN`].
pub async fn app_with_console() -> TestApp {
    app_with_console_on(TestDb::new().await).await
}

/// [`app_with_console`] on `db` (e.g. [`TestDb::adopt`]ed: a Citus coordinator).
pub async fn app_with_console_on(db: TestDb) -> TestApp {
    TestApp::spawn_on(
        db,
        HttpConfig {
            admin_token: Some(Arc::from(ADMIN_TOKEN)),
            console: Some(ConsoleConfig {
                token: Some(Arc::from(ADMIN_TOKEN)),
                operators: Arc::from([OPERATOR.to_owned()]),
                backup_key: Some(Arc::new(backup_key())),
                secure_cookie: false,
                idle: IDLE_TIMEOUT,
            }),
            ..HttpConfig::default()
        },
        6,
        Vec::new(),
    )
    .await
}

/// The key the console signs its backups with.
fn backup_key() -> BackupKey {
    BackupKey::parse("console-backup-key-7f3a9c2e51b8d46f0a1e").unwrap()
}

/// A browser-like client that does not follow redirects and carries a session cookie.
pub(crate) struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookie: Option<String>,
}

pub(crate) struct Page {
    pub(crate) status: StatusCode,
    headers: HeaderMap,
    pub(crate) text: String,
}

impl Page {
    fn location(&self) -> Option<&str> {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok())
    }

    /// The CSRF token of the first form of the page.
    fn csrf(&self) -> String {
        let at = self
            .text
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.text));
        let rest = &self.text[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent("console-tests")
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", c),
            None => req,
        };
        let response = req.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        Page {
            status,
            headers,
            text,
        }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Page {
        let req = self.client.get(self.app.url(path));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.client.post(self.app.url(path));
        let req = with_form(req, form);
        self.send(req).await
    }

    async fn sign_in(&mut self, token: &str) -> Page {
        let page = self.post("/console/sign-in", &[("token", token)]).await;
        if let Some(set) = page.headers.get(SET_COOKIE) {
            let set = set.to_str().unwrap();
            self.cookie = Some(set.split(';').next().unwrap().to_owned());
        }
        page
    }

    pub(crate) async fn signed_in(app: &'a TestApp) -> Self {
        let mut browser = Self::new(app);
        let page = browser.sign_in(ADMIN_TOKEN).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
        assert_eq!(page.location(), Some("/console"));
        browser
    }
}

/// `req` with `form` as its urlencoded body.
fn with_form(req: reqwest::RequestBuilder, form: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    req.header("content-type", "application/x-www-form-urlencoded")
        .body(body)
}

async fn count_audit(app: &TestApp, action: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM public.audit_logs WHERE action = $1")
        .bind(action)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_console_is_off_unless_configured() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    for path in ["/console", "/console/sign-in", "/console/tenants"] {
        assert_eq!(
            browser.get(path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}

#[tokio::test]
async fn pages_need_a_session_and_answer_with_strict_headers() {
    let app = app_with_console().await;
    let mut browser = Browser::new(&app);
    let page = browser.get("/console/tenants").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), Some("/console/sign-in"));
    let page = browser.get("/console/sign-in").await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline") && !csp.contains("script-src"));
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(page.headers["cache-control"], "no-store");

    let page = browser.sign_in(ADMIN_TOKEN).await;
    let cookie = page.headers[SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    // The stored session is the id's hash, never the id itself.
    let id = browser.cookie.clone().unwrap();
    let id = id.split_once('=').unwrap().1.to_owned();
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.console_sessions
          WHERE id_hash = sha256(convert_to($1, 'UTF8')) AND revoked_at IS NULL",
    )
    .bind(&id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(stored, 1);

    for path in [
        "/console",
        "/console/tenants",
        "/console/audit",
        "/console/system",
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.text);
        assert!(page.text.contains("<main"), "{path}");
        assert!(!page.text.contains("<script"), "{path}");
        assert!(!page.text.contains("style="), "{path}");
    }
    // The stylesheet the pages link to is served, cached for good.
    let overview = browser.get("/console").await;
    // The 12 months' chart is drawn on the server, its numbers readable without it.
    assert!(overview.text.contains("<svg") && overview.text.contains("role=\"img\""));
    let month = chrono::Utc::now().format("%b %y").to_string();
    assert!(
        overview.text.contains(&format!("{month}: 0")),
        "{}",
        overview.text
    );
    let css_at = overview.text.find("/console/assets/console-").unwrap();
    let css = &overview.text[css_at..];
    let css = &css[..css.find('"').unwrap()];
    let sheet = browser.get(css).await;
    assert_eq!(sheet.status, StatusCode::OK);
    assert!(
        sheet.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(
        browser
            .get("/console/assets/console-000000.css")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn failed_sign_ins_are_audited_and_limited() {
    let app = app_with_console().await;
    let mut browser = Browser::new(&app);
    for _ in 0..5 {
        let page = browser
            .sign_in("not-the-admin-token-at-all-0123456789")
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(page.headers.get(SET_COOKIE).is_none());
    }
    let page = browser.sign_in(ADMIN_TOKEN).await;
    assert_eq!(
        page.status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right token waits"
    );
    assert!(page.headers.get("retry-after").is_some());
    assert_eq!(count_audit(&app, "console.sign_in_failed").await, 5);
    assert_eq!(count_audit(&app, "console.signed_in").await, 0);
}

/// A Clerk session token of `user`, valid or not as `claims` say.
fn clerk_token(key: &str, claims: &serde_json::Value) -> String {
    sign(key, claims)
}

#[tokio::test]
async fn a_clerk_operator_exchanges_the_session_cookie_or_bearer_token_for_a_session() {
    let app = app_with_console().await;
    let token = clerk_token(TEST_KEY, &claims(OPERATOR, None));

    // Clerk's own cookie on the application's domain, as a browser sends it.
    let mut browser = Browser::new(&app);
    let page = browser.get("/console/sign-in").await;
    assert!(
        page.text.contains("/console/sign-in/clerk"),
        "{}",
        page.text
    );
    let req = browser
        .client
        .post(app.url("/console/sign-in/clerk"))
        .header("cookie", format!("__clerk_db_jwt=x; __session={token}"));
    let page = browser.send(req).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    assert_eq!(page.location(), Some("/console"));
    let set = page.headers[SET_COOKIE].to_str().unwrap();
    browser.cookie = Some(set.split(';').next().unwrap().to_owned());
    let overview = browser.get("/console").await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(
        overview.text.contains(OPERATOR),
        "the operator is named on the page"
    );

    // The same token as a bearer token (a script, or a console on another domain).
    let mut other = Browser::new(&app);
    let req = other
        .client
        .post(app.url("/console/sign-in/clerk"))
        .bearer_auth(&token);
    assert_eq!(other.send(req).await.status, StatusCode::SEE_OTHER);

    let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT metadata->'actor'->>'who', metadata FROM public.audit_logs
          WHERE action = 'console.signed_in'",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    for (actor, metadata) in rows {
        assert_eq!(actor, OPERATOR);
        assert_eq!(metadata["method"], "clerk");
    }
    let operators: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT operator FROM public.console_sessions")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(operators, [OPERATOR]);
}

#[tokio::test]
async fn without_an_operator_list_a_clerk_token_opens_nothing() {
    let app = TestApp::spawn_with(
        HttpConfig {
            console: Some(ConsoleConfig {
                token: Some(Arc::from(ADMIN_TOKEN)),
                operators: Arc::from([]),
                backup_key: None,
                secure_cookie: false,
                idle: IDLE_TIMEOUT,
            }),
            ..HttpConfig::default()
        },
        2,
    )
    .await;
    let mut browser = Browser::new(&app);
    let form = browser.get("/console/sign-in").await;
    assert!(
        !form.text.contains("/console/sign-in/clerk"),
        "{}",
        form.text
    );
    let token = clerk_token(TEST_KEY, &claims(OPERATOR, None));
    let req = browser
        .client
        .post(app.url("/console/sign-in/clerk"))
        .bearer_auth(token);
    let page = browser.send(req).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.text);
    assert!(
        page.text.contains("takes no Clerk sign-in"),
        "{}",
        page.text
    );
    assert!(page.headers.get(SET_COOKIE).is_none());
    assert_eq!(count_audit(&app, "console.signed_in").await, 0);
}

#[tokio::test]
async fn clerk_tokens_not_an_operators_expired_or_forged_are_refused_audited_and_limited() {
    let app = app_with_console().await;
    let now = chrono::Utc::now().timestamp();
    let mut expired = claims(OPERATOR, None);
    expired["iat"] = (now - 3600).into();
    expired["nbf"] = (now - 3600).into();
    expired["exp"] = (now - 600).into();
    let cases = [
        (
            Some(clerk_token(TEST_KEY, &claims("user_someone_else", None))),
            StatusCode::FORBIDDEN,
            "user_someone_else is not a console operator",
        ),
        (
            Some(clerk_token(TEST_KEY, &expired)),
            StatusCode::UNAUTHORIZED,
            "expired",
        ),
        (
            Some(clerk_token(OTHER_KEY, &claims(OPERATOR, None))),
            StatusCode::UNAUTHORIZED,
            "signature is invalid",
        ),
        (None, StatusCode::UNAUTHORIZED, "no Clerk session token"),
    ];
    let mut browser = Browser::new(&app);
    for (token, status, says) in &cases {
        let mut req = browser.client.post(app.url("/console/sign-in/clerk"));
        if let Some(token) = token {
            req = req.header("cookie", format!("__session={token}"));
        }
        let page = browser.send(req).await;
        assert_eq!(page.status, *status, "{says}: {}", page.text);
        assert!(page.text.contains(says), "{says}: {}", page.text);
        assert!(page.headers.get(SET_COOKIE).is_none());
    }
    assert_eq!(count_audit(&app, "console.signed_in").await, 0);
    let failed: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT metadata->'actor'->>'who', metadata FROM public.audit_logs
          WHERE action = 'console.sign_in_failed' ORDER BY created_at",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(failed.len(), 4);
    assert_eq!(failed[0].0, "user_someone_else");
    assert!(failed.iter().all(|(_, m)| m["method"] == "clerk"));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM public.console_sessions")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    // The fifth failure (the admin-token form counts too) blocks even a good Clerk token.
    browser
        .sign_in("not-the-admin-token-at-all-0123456789")
        .await;
    let good = clerk_token(TEST_KEY, &claims(OPERATOR, None));
    let req = browser
        .client
        .post(app.url("/console/sign-in/clerk"))
        .bearer_auth(good);
    let page = browser.send(req).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.text);
    assert!(page.headers.get("retry-after").is_some());
}

#[tokio::test]
async fn an_operator_suspends_and_reactivates_a_tenant_through_the_tenancy_acts() {
    let app = app_with_console().await;
    let acme = app.tenant("acme-console", Tier::Professional).await;
    let owner = app.token_for(&acme, Role::Owner);
    let mut browser = Browser::signed_in(&app).await;

    let found = browser.get("/console/tenants?q=org_acme-console").await;
    assert!(
        found
            .text
            .contains("href=\"/console/tenants/acme-console\""),
        "{}",
        found.text
    );
    let page = browser.get("/console/tenants/acme-console").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("/console/tenants/acme-console/suspend"));

    let confirm = browser.get("/console/tenants/acme-console/suspend").await;
    let csrf = confirm.csrf();
    // A suspension without a reason is refused and changes nothing.
    let refused = browser
        .post(
            "/console/tenants/acme-console/suspend",
            &[("csrf", &csrf), ("reason", " ")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.get(&owner, "/api/v1/tenant").await.status,
        StatusCode::OK
    );

    let done = browser
        .post(
            "/console/tenants/acme-console/suspend",
            &[("csrf", &csrf), ("reason", "unpaid invoices")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    app.get(&owner, "/api/v1/tenant")
        .await
        .problem(StatusCode::FORBIDDEN, "tenant_suspended");
    let (actor, reason): (serde_json::Value, String) = sqlx::query_as(
        "SELECT metadata->'actor', metadata->>'reason' FROM public.audit_logs
          WHERE action = 'tenant.suspended' AND tenant_id = $1",
    )
    .bind(acme.tenant.id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(actor["kind"], "operator");
    assert_eq!(actor["who"], "admin-token");
    assert_eq!(actor["via"], "console");
    assert_eq!(reason, "unpaid invoices");
    // Suspending again is a conflict, said plainly.
    let again = browser
        .post(
            "/console/tenants/acme-console/suspend",
            &[("csrf", &csrf), ("reason", "twice")],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);

    let done = browser
        .post(
            "/console/tenants/acme-console/reactivate",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    assert_eq!(
        app.get(&owner, "/api/v1/tenant").await.status,
        StatusCode::OK
    );

    // The trail shows both acts, and the CSV export carries them.
    let audit = browser.get("/console/audit?tenant=acme-console").await;
    assert!(audit.text.contains("tenant.suspended") && audit.text.contains("tenant.reactivated"));
    let csv = browser
        .get("/console/audit.csv?tenant=acme-console&action=tenant.suspended")
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines.len(), 2, "{}", csv.text);
    assert!(lines[0].starts_with("time,tenant,action"));
    assert!(
        lines[1].contains("acme-console,tenant.suspended")
            && lines[1].contains("operator admin-token")
    );
}

#[tokio::test]
async fn acts_without_the_csrf_token_or_after_sign_out_change_nothing() {
    let app = app_with_console().await;
    let t = app.tenant("csrf-target", Tier::Starter).await;
    let owner = app.token_for(&t, Role::Owner);
    let mut browser = Browser::signed_in(&app).await;
    let csrf = browser
        .get("/console/tenants/csrf-target/suspend")
        .await
        .csrf();
    let path = "/console/tenants/csrf-target/suspend";

    let none = browser.post(path, &[("reason", "no token")]).await;
    assert_eq!(none.status, StatusCode::FORBIDDEN);
    let wrong = browser
        .post(path, &[("csrf", "forged"), ("reason", "wrong token")])
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    // Another site's form is refused even with the right token.
    let req = browser
        .client
        .post(app.url(path))
        .header("origin", "https://evil.example");
    let req = with_form(req, &[("csrf", csrf.as_str()), ("reason", "cross-site")]);
    assert_eq!(browser.send(req).await.status, StatusCode::FORBIDDEN);

    let out = browser.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let after = browser
        .post(path, &[("csrf", &csrf), ("reason", "after sign-out")])
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(browser.get("/console").await.status, StatusCode::SEE_OTHER);

    assert_eq!(
        app.get(&owner, "/api/v1/tenant").await.status,
        StatusCode::OK
    );
    assert_eq!(count_audit(&app, "tenant.suspended").await, 0);
    assert_eq!(count_audit(&app, "console.signed_out").await, 1);
}

#[tokio::test]
async fn bad_filters_get_a_400_naming_them() {
    let app = app_with_console().await;
    let mut browser = Browser::signed_in(&app).await;
    for path in [
        "/console/tenants?status=bogus",
        "/console/tenants?tier=gold",
        "/console/tenants?sort=x",
        "/console/audit?from=yesterday",
        "/console/audit?before=nonsense",
    ] {
        let page = browser.get(path).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            page.text
        );
    }
    assert_eq!(
        browser.get("/console/tenants/no-such-tenant").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        browser
            .get("/console/tenants/no-such-tenant/explode")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let page = browser.get("/console/no/such/page").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.text.contains("<main"), "{}", page.text);
    // Routes outside the console keep the API's problem documents.
    let api = browser.get("/no-such-route").await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert_eq!(api.headers["content-type"], "application/problem+json");
}

#[tokio::test]
async fn the_tenant_list_pages_by_slug_and_filters_by_status() {
    let app = app_with_console().await;
    for i in 0..55 {
        app.db.tenant(&format!("page-{i:03}"), Tier::Starter).await;
    }
    app.db
        .tenancy()
        .suspend(
            "page-007",
            Some("test"),
            &capliquify::audit::Actor::operator(),
        )
        .await
        .unwrap();
    let mut browser = Browser::signed_in(&app).await;
    let first = browser.get("/console/tenants?q=page-").await;
    assert!(first.text.contains("page-049") && !first.text.contains("page-050"));
    let next_at = first.text.find("rel=\"next\"").expect("a next page");
    let href_at = first.text[..next_at].rfind("href=\"").unwrap();
    let href = first.text[href_at + 6..next_at]
        .trim_end_matches("\" ")
        .replace("&amp;", "&");
    let second = browser.get(&href).await;
    assert!(
        second.text.contains("page-054") && !second.text.contains("page-049"),
        "{href}"
    );
    assert!(!second.text.contains("rel=\"next\""));
    // Newest first pages the other way.
    let newest = browser.get("/console/tenants?q=page-&sort=newest").await;
    assert!(newest.text.contains("page-054") && !newest.text.contains("page-004"));
    let next_at = newest.text.find("rel=\"next\"").expect("a next page");
    let href_at = newest.text[..next_at].rfind("href=\"").unwrap();
    let href = newest.text[href_at + 6..next_at]
        .trim_end_matches("\" ")
        .replace("&amp;", "&");
    let older = browser.get(&href).await;
    assert!(
        older.text.contains("page-000") && !older.text.contains("page-005"),
        "{href}"
    );
    assert_eq!(
        browser.get("/console/tenants?sort=oldest").await.status,
        StatusCode::BAD_REQUEST
    );
    let suspended = browser.get("/console/tenants?status=suspended").await;
    assert!(suspended.text.contains("page-007") && !suspended.text.contains("page-008"));
}

#[tokio::test]
async fn an_operator_extends_a_trial_soft_deletes_and_undeletes() {
    let app = app_with_console().await;
    let t = app.tenant("trial-co", Tier::Starter).await;
    let before = t.tenant.trial_ends_at.unwrap();
    let mut browser = Browser::signed_in(&app).await;
    let csrf = browser
        .get("/console/tenants/trial-co/extend-trial")
        .await
        .csrf();
    let path = "/console/tenants/trial-co/extend-trial";
    for days in ["0", "91", "ten", ""] {
        let page = browser.post(path, &[("csrf", &csrf), ("days", days)]).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "days={days:?}");
    }
    let done = browser.post(path, &[("csrf", &csrf), ("days", "10")]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    let after = app.db.tenancy().pool().clone();
    let ends: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT trial_ends_at FROM public.tenants WHERE id = $1")
            .bind(t.tenant.id)
            .fetch_one(&after)
            .await
            .unwrap();
    assert_eq!((ends - before).num_days(), 10);
    assert_eq!(count_audit(&app, "tenant.trial_extended").await, 1);

    let done = browser
        .post("/console/tenants/trial-co/delete", &[("csrf", &csrf)])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    let owner = app.token_for(&t, Role::Owner);
    assert_eq!(
        app.get(&owner, "/api/v1/tenant").await.status,
        StatusCode::FORBIDDEN
    );
    // A deleted tenant's trial is not extended: 409, said plainly.
    let refused = browser.post(path, &[("csrf", &csrf), ("days", "5")]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    let done = browser
        .post("/console/tenants/trial-co/undelete", &[("csrf", &csrf)])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    assert_eq!(
        app.get(&owner, "/api/v1/tenant").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_system_page_shows_migrations_and_the_recorded_checks() {
    let app = app_with_console().await;
    let t = app.tenant("sys-co", Tier::Starter).await;
    let mut browser = Browser::signed_in(&app).await;
    let page = browser.get("/console/system").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    // doctor's report as the service's role sees it: the fleet-wide checks, and the tenant
    // checks recorded so far (none yet: the page checks nothing itself).
    assert!(page.text.contains("no_orphan_schemas"), "{}", page.text);
    assert!(
        page.text.contains("1 of 1 tenant(s) not checked yet"),
        "{}",
        page.text
    );
    // A problem a slice found shows on the page.
    app.db
        .exec(&format!(
            "GRANT SELECT ON \"{}\".products TO PUBLIC",
            t.tenant.schema_name
        ))
        .await;
    app.db
        .exec("SELECT count(*) FROM public.verify_tenant_slice(10)")
        .await;
    let page = browser.get("/console/system").await;
    assert!(
        page.text.contains("sys-co: granted to PUBLIC: products"),
        "{}",
        page.text
    );
    assert!(page.text.contains("Every tenant schema is at version"));
    let (versions, _) = capliquify::tenancy::verify::versions(&app.db.pool)
        .await
        .unwrap();
    assert!(page.text.contains(&versions.postgres));
}

#[tokio::test]
async fn the_system_page_shows_the_pool_the_requests_and_the_lifecycle_jobs_last_run() {
    let app = app_with_console().await;
    app.tenant("sys-trial", Tier::Starter).await;
    app.db
        .exec(
            "UPDATE public.tenants SET subscription_status = 'trial',
                    trial_ends_at = now() - interval '1 day' WHERE slug = 'sys-trial'",
        )
        .await;
    let mut browser = Browser::signed_in(&app).await;
    let page = browser.get("/console/system").await;
    assert!(page.text.contains("No run recorded yet"), "{}", page.text);
    // The pool line is the pool's own numbers (app_with_console's pool has 6), as
    // /metrics reports them.
    assert!(page.text.contains("at most 6"), "{}", page.text);
    assert!(page.text.contains("2xx"), "{}", page.text);
    assert!(page.text.contains("95th percentile"), "{}", page.text);

    let report = capliquify::tenancy::lifecycle_job::run(&app.db.pool, 30, 7)
        .await
        .unwrap();
    assert_eq!(report.trials_suspended, ["sys-trial"]);
    let page = browser.get("/console/system").await;
    assert!(!page.text.contains("No run recorded yet"), "{}", page.text);
    assert!(
        page.text.contains("<dt>Trials suspended</dt><dd>1</dd>"),
        "{}",
        page.text
    );
    assert!(page.text.contains(">done</span>"), "{}", page.text);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM public.lifecycle_runs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 1);
}

#[tokio::test]
async fn the_cluster_page_says_plainly_when_this_is_not_a_citus_coordinator() {
    let app = app_with_console().await;
    app.tenant("plain-co", Tier::Starter).await;
    let mut browser = Browser::signed_in(&app).await;
    let page = browser.get("/console/cluster").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    // The same reason `doctor`'s `citus mode` line gives, on the same database.
    let capliquify::db::citus::CitusMode::Off { reason } =
        capliquify::db::citus::detect(&app.db.pool).await.unwrap()
    else {
        panic!("the test database is plain PostgreSQL");
    };
    assert!(
        page.text.contains(&format!(
            "Not a Citus coordinator: every tenant lives on this server or a \
             <code>CAPLIQUIFY_CLUSTERS</code> placement ({reason})."
        )),
        "{}",
        page.text
    );
    assert!(!page.text.contains("<table"), "{}", page.text);
    // Reached from every page's navigation.
    let overview = browser.get("/console").await;
    assert!(
        overview
            .text
            .contains(r#"<a href="/console/cluster">Cluster</a>"#),
        "{}",
        overview.text
    );
    assert!(
        page.text
            .contains(r#"<a href="/console/cluster" aria-current="page">Cluster</a>"#),
        "{}",
        page.text
    );
}

/// The text of each cell (`<td>`) of the first table row whose first cell reads `first`,
/// tags removed; `None` when no row does.
pub(crate) fn row_cells(html: &str, first: &str) -> Option<Vec<String>> {
    html.split("<tr>").skip(1).find_map(|row| {
        let row = &row[..row.find("</tr>")?];
        let cells: Vec<String> = row
            .split("<td")
            .skip(1)
            .map(|cell| {
                let cell = &cell[cell.find('>').map_or(0, |i| i + 1)..];
                let cell = &cell[..cell.find("</td>").unwrap_or(cell.len())];
                let mut text = String::new();
                let mut in_tag = false;
                for c in cell.chars() {
                    match c {
                        '<' => in_tag = true,
                        '>' => in_tag = false,
                        c if !in_tag => text.push(c),
                        _ => {}
                    }
                }
                text
            })
            .collect();
        (cells.first().map(String::as_str) == Some(first)).then_some(cells)
    })
}

#[tokio::test]
async fn an_operator_changes_a_tier_and_the_plan_follows() {
    let app = app_with_console().await;
    let t = app.tenant("tiered", Tier::Starter).await;
    let mut browser = Browser::signed_in(&app).await;
    let csrf = browser
        .get("/console/tenants/tiered/change-tier")
        .await
        .csrf();
    let path = "/console/tenants/tiered/change-tier";
    let bad = browser
        .post(path, &[("csrf", &csrf), ("tier", "gold")])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let same = browser
        .post(path, &[("csrf", &csrf), ("tier", "starter")])
        .await;
    assert_eq!(same.status, StatusCode::CONFLICT);
    let done = browser
        .post(path, &[("csrf", &csrf), ("tier", "enterprise")])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    let (tier, max_users): (String, i32) = sqlx::query_as(
        "SELECT subscription_tier::text, max_users FROM public.tenants WHERE id = $1",
    )
    .bind(t.tenant.id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!((tier.as_str(), max_users), ("enterprise", 100));
    assert_eq!(count_audit(&app, "tenant.tier_changed").await, 1);
}

#[tokio::test]
async fn purge_needs_the_slug_typed_and_the_box_ticked_within_the_grace_period() {
    let app = app_with_console().await;
    let t = app.tenant("doomed", Tier::Starter).await;
    let mut browser = Browser::signed_in(&app).await;
    let csrf = browser.get("/console/tenants/doomed/delete").await.csrf();
    let path = "/console/tenants/doomed/purge";
    // Live: not purged.
    let live = browser
        .post(
            path,
            &[("csrf", &csrf), ("confirm", "doomed"), ("early", "on")],
        )
        .await;
    assert_eq!(live.status, StatusCode::CONFLICT, "{}", live.text);
    browser
        .post("/console/tenants/doomed/delete", &[("csrf", &csrf)])
        .await;
    let wrong = browser
        .post(
            path,
            &[("csrf", &csrf), ("confirm", "doome"), ("early", "on")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    let not_early = browser
        .post(path, &[("csrf", &csrf), ("confirm", "doomed")])
        .await;
    assert_eq!(not_early.status, StatusCode::CONFLICT, "{}", not_early.text);
    assert!(app.db.schema_exists(&t.tenant.schema_name).await);
    let done = browser
        .post(
            path,
            &[("csrf", &csrf), ("confirm", "doomed"), ("early", "on")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    assert!(!app.db.schema_exists(&t.tenant.schema_name).await);
    assert_eq!(count_audit(&app, "tenant.purged").await, 1);
    assert_eq!(
        browser.get("/console/tenants/doomed").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_operator_repairs_a_tenant_whose_schema_is_missing_as_tenant_repair_does() {
    let app = app_with_console().await;
    let acme = app.tenant("acme-repair", Tier::Starter).await;
    let schema = acme.tenant.schema_name.clone();
    app.db
        .exec(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await;
    let mut browser = Browser::signed_in(&app).await;
    let page = browser.get("/console/tenants/acme-repair").await;
    assert!(page.text.contains("/console/tenants/acme-repair/repair"));
    let confirm = browser.get("/console/tenants/acme-repair/repair").await;
    assert_eq!(confirm.status, StatusCode::OK);

    // Without the session's CSRF token nothing is repaired.
    let refused = browser
        .post("/console/tenants/acme-repair/repair", &[("csrf", "forged")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!app.db.schema_exists(&schema).await);

    let done = browser
        .post(
            "/console/tenants/acme-repair/repair",
            &[("csrf", &confirm.csrf())],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    assert!(
        done.text
            .contains("the missing schema was created, empty, at the newest version"),
        "{}",
        done.text
    );
    assert!(app.db.schema_exists(&schema).await);
    let (actor, repair): (serde_json::Value, serde_json::Value) = sqlx::query_as(
        "SELECT metadata->'actor', metadata->'repair' FROM public.audit_logs
          WHERE action = 'tenant.repaired' AND tenant_id = $1",
    )
    .bind(acme.tenant.id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(actor["who"], "admin-token");
    assert_eq!(actor["via"], "console");
    assert_eq!(repair["action"], "recreated");
    let owner = app.token_for(&acme, Role::Owner);
    assert_eq!(
        app.get(&owner, "/api/v1/tenant").await.status,
        StatusCode::OK
    );

    // Every other repair runs the tenant migrations or rebuilds the schema, which the
    // service's role may not (least privilege): the console says so and what the owner
    // runs, and nothing changes.
    let owner_only = browser
        .post(
            "/console/tenants/acme-repair/repair",
            &[("csrf", &confirm.csrf())],
        )
        .await;
    assert_eq!(
        owner_only.status,
        StatusCode::CONFLICT,
        "{}",
        owner_only.text
    );
    assert!(
        owner_only
            .text
            .contains("run `capliquify tenant repair acme-repair` as the owner"),
        "{}",
        owner_only.text
    );
    assert!(app.db.schema_exists(&schema).await);
    assert_eq!(count_audit(&app, "tenant.repaired").await, 1);
}

#[tokio::test]
async fn an_operator_downloads_a_signed_backup_that_tenant_restore_accepts() {
    let app = app_with_console().await;
    let acme = app.tenant("acme-backup", Tier::Professional).await;
    app.company(&acme, "Backed Up Ltd").await;
    let mut browser = Browser::signed_in(&app).await;
    let confirm = browser.get("/console/tenants/acme-backup/backup").await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.text.contains("signed with"), "{}", confirm.text);

    let refused = browser
        .post(
            "/console/tenants/acme-backup/backup",
            &[("with_audit", "on")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(count_audit(&app, "tenant.backup").await, 0);

    let req = browser
        .client
        .post(app.url("/console/tenants/acme-backup/backup"));
    let req = with_form(req, &[("csrf", &confirm.csrf()), ("with_audit", "on")]);
    let req = req.header("cookie", browser.cookie.clone().unwrap());
    let response = req.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"acme-backup-")
            && disposition.ends_with(&format!(".{}\"", backup::EXTENSION)),
        "{disposition}"
    );
    let length: usize = response.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len(), length);

    // The same archive `tenant backup` writes: it verifies in full, signed with the key.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("download.capliquify-backup");
    std::fs::write(&file, &bytes).unwrap();
    let verified = backup::restore::verify(&file, Trust::key(&backup_key()))
        .await
        .unwrap();
    assert_eq!(verified.manifest.tenant.slug, "acme-backup");
    assert!(verified.manifest.with_audit);
    let products = verified
        .manifest
        .parts
        .iter()
        .any(|p| p.path.starts_with("data/"));
    assert!(products, "{:?}", verified.manifest.parts);

    let actor: serde_json::Value = sqlx::query_scalar(
        "SELECT metadata->'actor' FROM public.audit_logs
          WHERE action = 'tenant.backup' AND tenant_id = $1",
    )
    .bind(acme.tenant.id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(actor["who"], "admin-token");
    assert_eq!(actor["via"], "console");
}
