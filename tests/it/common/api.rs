//! The real server on `127.0.0.1:0`, tokens signed by a test key whose JWKS it loads from a
//! `file://` URL, and helpers to make tenants with one member per role.

use std::net::SocketAddr;
use std::path::PathBuf;

use capliquify::access::Role;
use capliquify::billing::Tier;
use capliquify::http::auth::{AuthConfig, Authenticator, jwks_for, sign_rs256};
use capliquify::http::cursor::CursorCodec;
use capliquify::http::{AppState, HttpConfig, launch};
use capliquify::tenancy::Tenant;
use capliquify::webhooks::WebhookConfig;
use capliquify::webhooks::signature::{StripeSecret, SvixSecret};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::TestDb;

pub const ISSUER: &str = "https://clerk.test.capliquify";
pub const KID: &str = "test-key";
pub const TEST_KEY: &str = include_str!("../../fixtures/test-signing-key.pem");
pub const OTHER_KEY: &str = include_str!("../../fixtures/other-signing-key.pem");
/// The key the test server seals credentials with.
pub const ENCRYPTION_KEY: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
/// Webhook secrets and prices the test server is configured with.
pub const CLERK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const STRIPE_SECRET: &str = "whsec_test_stripe_endpoint_secret";
pub const STRIPE_PRICES: &str = "price_starter_m=starter:monthly,price_pro_m=professional:monthly,price_ent_y=enterprise:annual";

pub struct TestApp {
    pub db: TestDb,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    _jwks: TempFile,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The service's caller cache.
    pub callers: std::sync::Arc<capliquify::http::context::CallerCache>,
    /// Hearing tenant and membership changes, as serve does when the cache is on.
    hearing: Option<tokio::task::JoinHandle<()>>,
}

/// A file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(hearing) = self.hearing.take() {
            hearing.abort();
        }
    }
}

/// A tenant with one member per role.
pub struct TestTenant {
    pub tenant: Tenant,
    pub org: String,
}

impl TestTenant {
    pub fn user(&self, role: Role) -> String {
        format!(
            "user_{}_{}",
            self.tenant.slug.replace('-', "_"),
            role.as_str()
        )
    }
}

/// Serves `state` on a free loopback port until the sender is dropped or fired.
pub async fn serve(state: AppState) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        launch(listener, state, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (addr, tx)
}

/// The webhook secrets and prices of every test service.
pub fn test_webhooks() -> WebhookConfig {
    WebhookConfig {
        clerk: Some(SvixSecret::parse(CLERK_SECRET).unwrap()),
        stripe: Some(StripeSecret::new(STRIPE_SECRET)),
        prices: STRIPE_PRICES.parse().unwrap(),
        deletion_grace_days: 30,
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(HttpConfig::default(), 10).await
    }

    /// `pool_size` connections serve the API.
    pub async fn spawn_with(config: HttpConfig, pool_size: u32) -> Self {
        Self::spawn_placed(config, pool_size, Vec::new()).await
    }

    /// With `others` as further clusters tenants can be placed on (placement tests).
    pub async fn spawn_placed(
        config: HttpConfig,
        pool_size: u32,
        others: Vec<(capliquify::db::ClusterName, sqlx::PgPool)>,
    ) -> Self {
        Self::spawn_on(TestDb::new().await, config, pool_size, others).await
    }

    /// The service on `db` (e.g. [`TestDb::adopt`]ed: a Citus coordinator).
    pub async fn spawn_on(
        db: TestDb,
        config: HttpConfig,
        pool_size: u32,
        others: Vec<(capliquify::db::ClusterName, sqlx::PgPool)>,
    ) -> Self {
        Self::spawn_cached(db, config, pool_size, others, None).await
    }

    /// With `serve`'s caller and token cache kept for `auth_cache` (none: off, as every
    /// other test service, since tests change tenants between requests and expect the next
    /// request to see it), and hearing tenant and membership changes as `serve` does.
    pub async fn spawn_cached(
        db: TestDb,
        config: HttpConfig,
        pool_size: u32,
        others: Vec<(capliquify::db::ClusterName, sqlx::PgPool)>,
        auth_cache: Option<std::time::Duration>,
    ) -> Self {
        let jwks_path =
            std::env::temp_dir().join(format!("capliquify-jwks-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&jwks_path, jwks_for(TEST_KEY, KID).unwrap().to_string()).unwrap();
        let jwks = TempFile(jwks_path);
        let auth = Authenticator::new(AuthConfig {
            jwks_url: format!("file://{}", jwks.0.display()),
            issuer: ISSUER.into(),
        })
        .await
        .expect("test JWKS loads");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(pool_size)
            .connect(&db.app_url().await)
            .await
            .unwrap();
        let clusters = others.into_iter().fold(
            capliquify::db::Clusters::single(pool.clone()),
            |clusters, (name, pool)| clusters.with(name, pool),
        );
        let keys =
            capliquify::crypto::Keyring::from_settings(Some(ENCRYPTION_KEY), "k1", None).unwrap();
        let mut state = AppState::new(clusters, auth, keys, config)
            .with_cursors(CursorCodec::new(b"test cursor secret"))
            .with_webhooks(test_webhooks());
        if let Some(ttl) = auth_cache {
            state = state.with_caller_cache(ttl);
        }
        let callers = state.callers.clone();
        let hearing = capliquify::http::caller_changes::spawn(&pool, callers.clone());
        let (addr, tx) = serve(state).await;
        Self {
            db,
            addr,
            client: reqwest::Client::builder()
                .user_agent("capliquify-tests")
                .build()
                .unwrap(),
            _jwks: jwks,
            shutdown: Some(tx),
            callers,
            hearing,
        }
    }

    /// Provisions `slug` and adds a member for each role.
    pub async fn tenant(&self, slug: &str, tier: Tier) -> TestTenant {
        let tenant = self.db.tenant(slug, tier).await;
        let t = TestTenant {
            org: tenant.clerk_organization_id.clone(),
            tenant,
        };
        for role in [Role::Owner, Role::Admin, Role::Member, Role::Viewer] {
            sqlx::query(
                "INSERT INTO users (clerk_user_id, email, tenant_id, role) VALUES ($1, $2, $3, $4)",
            )
            .bind(t.user(role))
            .bind(format!("{}@{slug}.test", role.as_str()))
            .bind(t.tenant.id)
            .bind(role)
            .execute(&self.db.pool)
            .await
            .unwrap();
        }
        t
    }

    /// A valid token for `user` in `org`, signed with the test key.
    pub fn token(&self, user: &str, org: &str) -> String {
        sign(TEST_KEY, &claims(user, Some(org)))
    }

    /// The token of `tenant`'s member with `role`.
    pub fn token_for(&self, tenant: &TestTenant, role: Role) -> String {
        self.token(&tenant.user(role), &tenant.org)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request; returns status, headers and the body parsed as JSON (`Null` if empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        Reply::from(req.send().await.expect("request sent")).await
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body);
        Reply::from(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, token: &str, path: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, token: &str, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, token: &str, path: &str) -> Reply {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Creates a company as the tenant's owner and returns its id.
    /// Rows of `table` in `tenant`'s schema, counted in the database.
    pub async fn rows(&self, tenant: &TestTenant, table: &str) -> i64 {
        self.db
            .scalar_i64(&format!(
                "SELECT count(*) FROM {}.{table}",
                tenant.tenant.schema_name
            ))
            .await
    }

    pub async fn company(&self, tenant: &TestTenant, name: &str) -> String {
        let reply = self
            .post(
                &self.token_for(tenant, Role::Owner),
                "/api/v1/companies",
                json!({ "name": name }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    async fn from(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
            text,
        }
    }

    /// Asserts a problem document with `status` and `code`; returns it.
    #[track_caller]
    pub fn problem(&self, status: StatusCode, code: &str) -> &Value {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.body["code"], code, "{}", self.text);
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        &self.body
    }
}

/// Standard Clerk-like claims, valid for 10 minutes.
pub fn claims(user: &str, org: Option<&str>) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({ "sub": user, "iss": ISSUER, "iat": now, "nbf": now - 5, "exp": now + 600, "azp": "https://app.test" });
    if let Some(org) = org {
        c["o"] = json!({ "id": org, "rol": "admin" });
    }
    c
}

pub fn sign(key: &str, claims: &Value) -> String {
    sign_rs256(key, KID, claims).unwrap()
}
