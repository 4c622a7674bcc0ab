//! The HTTP service (`capliquify serve`): the tenant data API under `/api/v1`, and the
//! operations endpoints `/healthz`, `/readyz` and `/metrics`.
//!
//! Each endpoint family owns its router; [`app`] merges them and adds the tower layers
//! (request id, tracing, timeout, metrics). Every tenant request runs in one transaction
//! scoped to the caller's tenant (see [`crate::db::scope`]).

pub mod admin;
pub mod audit_logs;
pub mod auth;
pub mod caller_changes;
pub mod columns;
pub mod console;
pub mod context;
pub mod credentials;
pub mod cursor;
pub mod error;
pub mod extract;
pub mod fields;
pub mod forecasting;
pub mod imports;
pub mod metrics;
pub mod openapi;
pub mod preferences;
pub mod resource;
pub mod resources;
pub mod tenant;
pub mod webhooks;
pub mod what_if;
pub mod working_capital;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::audit::Actor;
use crate::config::Settings;
use crate::db::{Clusters, Database, TenantScope, roles};
use crate::demo;
use crate::tenancy::migrate;
use crate::webhooks::WebhookConfig;
use crate::webhooks::signature::{StripeSecret, SvixSecret};
use auth::{AuthConfig, Authenticator};
use cursor::CursorCodec;

/// What every handler can reach. Built by [`AppState::new`] (the one way: `serve`, the
/// tests and the benchmarks all use it) and served by [`launch`].
#[derive(Clone)]
pub struct AppState {
    /// The home cluster: `public` (registry, users, audit trail) and the tenants placed there.
    pub pool: PgPool,
    /// Every cluster's pool, home included: tenant work goes to its placement's pool.
    pub clusters: Clusters,
    pub auth: Arc<Authenticator>,
    pub cursors: CursorCodec,
    pub webhooks: Arc<WebhookConfig>,
    pub callers: Arc<context::CallerCache>,
    /// Seals and opens API credentials.
    pub keys: Arc<crate::crypto::Keyring>,
    /// Limits of the HTTP layer.
    pub config: Arc<HttpConfig>,
    /// How many requests of one tenant may run at once.
    pub gates: Arc<context::TenantGates>,
    /// Connection affinity for the home cluster's tenant transactions (`None`: they use
    /// `pool`); see [`crate::db::lanes`].
    pub lanes: Option<Arc<crate::db::lanes::Lanes>>,
}

impl AppState {
    /// A service on `clusters` (home = the public schema's), authenticating with `auth`,
    /// sealing credentials with `keys`, limited by `config`. Webhooks are off, pagination
    /// cursors signed with a random per-process secret, and every request looks its caller
    /// up, until the `with_…` methods say otherwise.
    pub fn new(
        clusters: Clusters,
        auth: impl Into<Arc<Authenticator>>,
        keys: crate::crypto::Keyring,
        config: HttpConfig,
    ) -> Self {
        Self {
            pool: clusters.home().clone(),
            clusters,
            auth: auth.into(),
            cursors: CursorCodec::new(uuid::Uuid::new_v4().as_bytes()),
            webhooks: Arc::new(WebhookConfig::default()),
            callers: Arc::new(context::CallerCache::disabled()),
            keys: Arc::new(keys),
            gates: Arc::new(context::TenantGates::new(config.tenant_concurrency)),
            config: Arc::new(config),
            lanes: None,
        }
    }

    /// Gives the home cluster's tenant transactions these lanes (`None`: the shared pool).
    pub fn with_lanes(mut self, lanes: Option<crate::db::lanes::Lanes>) -> Self {
        self.lanes = lanes.map(Arc::new);
        self
    }

    /// Receives Clerk's and Stripe's webhooks with these secrets and prices.
    pub fn with_webhooks(mut self, webhooks: WebhookConfig) -> Self {
        self.webhooks = Arc::new(webhooks);
        self
    }

    /// Signs pagination cursors with this codec (one secret across instances).
    pub fn with_cursors(mut self, cursors: CursorCodec) -> Self {
        self.cursors = cursors;
        self
    }

    /// Reuses a resolved caller for `ttl` (zero: never).
    pub fn with_caller_cache(mut self, ttl: Duration) -> Self {
        self.callers = Arc::new(context::CallerCache::new(ttl, 100_000));
        self
    }

    /// The pool of the cluster holding `scope`'s schema: the one to begin its transaction on.
    pub fn tenant_pool(&self, scope: &TenantScope) -> Result<&PgPool, error::ApiError> {
        self.clusters
            .pool(&scope.cluster)
            .map_err(error::ApiError::internal)
    }

    /// Opens the caller's tenant transaction: its schema, its role, and a statement
    /// timeout equal to the request timeout.
    pub async fn begin(
        &self,
        caller: &context::Caller,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, error::ApiError> {
        let scope = &caller.tenant.scope;
        if let Some(lanes) = &self.lanes
            && scope.cluster.is_home()
        {
            // The tenant's lane ([`crate::db::lanes`]), or the shared pool when it is busy.
            return Ok(lanes
                .begin(&self.pool, scope, self.config.request_timeout)
                .await?);
        }
        Ok(crate::db::scope::begin_bounded(
            self.tenant_pool(scope)?,
            scope,
            self.config.request_timeout,
        )
        .await?)
    }
}

/// Serves `state`'s application on `listener` until `shutdown` completes, then lets the
/// requests under way finish.
pub async fn launch(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("HTTP server failed")
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "CAPLIQUIFY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where Clerk's signing keys are: https://<your-clerk-domain>/.well-known/jwks.json, or
    /// file:///path/jwks.json offline. Required unless running the embedded demo.
    #[arg(long, env = "CLERK_JWKS_URL")]
    pub clerk_jwks_url: Option<String>,
    /// The `iss` Clerk puts in session tokens (your Clerk frontend API URL).
    #[arg(long, env = "CLERK_ISSUER")]
    pub clerk_issuer: Option<String>,
    /// Origins whose Clerk session tokens are accepted, comma-separated
    /// (`https://app.example.com,https://admin.example.com`): a token's `azp` must be one of
    /// them, as Clerk's backend SDK checks `authorizedParties`. Unset: any origin (a warning
    /// at start).
    #[arg(long, env = "CLERK_AUTHORIZED_PARTIES")]
    pub clerk_authorized_parties: Option<String>,
    /// Seconds a request may take before it is answered 408.
    #[arg(long, env = "CAPLIQUIFY_REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub request_timeout_secs: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "CAPLIQUIFY_MAX_BODY_BYTES", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u64).range(1024..=104_857_600))]
    pub max_body_bytes: u64,
    /// Largest import body (`POST /api/v1/imports`), in bytes: a larger one is answered 413
    /// before it is read.
    #[arg(long, env = "CAPLIQUIFY_MAX_IMPORT_BYTES", default_value_t = crate::import::DEFAULT_MAX_IMPORT_BYTES,
          value_parser = clap::value_parser!(u64).range(1024..=1_073_741_824))]
    pub max_import_bytes: u64,
    /// Secret that signs pagination cursors (any string of 32+ characters). Unset: a random
    /// one per process, so cursors do not survive a restart or cross instances.
    #[arg(long, env = "CAPLIQUIFY_CURSOR_SECRET", hide_env_values = true)]
    pub cursor_secret: Option<String>,
    /// Milliseconds a resolved caller (tenant, membership, role) is reused before it is
    /// looked up again; 0: every request, and no token verification kept either.
    /// Suspensions and role changes take effect within this time. While the service hears
    /// the database announce tenant and membership changes (channel capliquify_callers),
    /// a caller is reused for up to a minute and a change applies at once. A verified
    /// session token is reused for a minute (or this time if longer), never past its expiry
    /// nor past the next read of the JWKS.
    #[arg(long, env = "CAPLIQUIFY_AUTH_CACHE_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub auth_cache_ms: u64,
    /// Hear the database announce tenant and membership changes (LISTEN on
    /// capliquify_callers, two connections of the service's own): `on` or `off`. `off`
    /// behind PgBouncer in transaction mode, where LISTEN cannot work; callers are then
    /// kept CAPLIQUIFY_AUTH_CACHE_MS only.
    #[arg(long, env = "CAPLIQUIFY_HEAR_CHANGES", default_value = "on",
          value_parser = ["on", "off"])]
    pub hear_changes: String,
    /// Log format: text or json.
    #[arg(long, env = "CAPLIQUIFY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Clerk's webhook signing secret (`whsec_…`); unset: /webhooks/clerk answers 503.
    #[arg(long, env = "CLERK_WEBHOOK_SIGNING_SECRET", hide_env_values = true)]
    pub clerk_webhook_signing_secret: Option<String>,
    /// Stripe's endpoint secret (`whsec_…`); unset: /webhooks/stripe answers 503.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,
    /// Which Stripe price is which plan: `price_id=tier:cycle,…` (tier starter, professional
    /// or enterprise; cycle monthly or annual).
    #[arg(long, env = "CAPLIQUIFY_STRIPE_PRICES", default_value = "")]
    pub stripe_prices: String,
    /// Seconds between runs of the lifecycle job (trial ends, past due, purges); 0 = never.
    #[arg(
        long,
        env = "CAPLIQUIFY_LIFECYCLE_INTERVAL_SECS",
        default_value_t = 300
    )]
    pub lifecycle_interval_secs: u64,
    /// Requests of one tenant served at once (more wait up to a quarter second, then get
    /// 429 with Retry-After); 0 = no limit. Keep it below the pool size
    /// (`CAPLIQUIFY_DB_MAX_CONNECTIONS`) so one tenant cannot take every connection.
    #[arg(long, env = "CAPLIQUIFY_TENANT_CONCURRENCY", default_value_t = DEFAULT_TENANT_CONCURRENCY)]
    pub tenant_concurrency: usize,
    /// Memory budget of one pooled PostgreSQL backend, in MiB: a connection whose backend has
    /// grown past it (each tenant schema it touches adds ~40 KiB of cache PostgreSQL never
    /// frees) is closed when it returns to the pool and replaced. 0 = never recycle.
    #[arg(long, env = "CAPLIQUIFY_DB_BACKEND_MEMORY_MB", default_value_t = 48,
          value_parser = clap::value_parser!(u32).range(0..=65_536))]
    pub db_backend_memory_mb: u32,
    /// Tenant lanes: the home cluster's tenant transactions go to one of N small pools
    /// chosen by tenant, so each PostgreSQL backend caches about 1/N of the fleet's catalog
    /// and stays warm (a transaction whose lane stays busy for 50 ms runs on the shared
    /// pool). The lanes share CAPLIQUIFY_DB_MAX_CONNECTIONS; the shared pool keeps its own.
    /// 1 = off (one pool). auto = one lane per 512 tenants on the home cluster at start
    /// (at the default memory budget; more with a larger one), at most
    /// CAPLIQUIFY_DB_MAX_CONNECTIONS.
    #[arg(long, env = "CAPLIQUIFY_DB_TENANT_LANES", value_name = "N|auto",
          default_value_t = DEFAULT_TENANT_LANES)]
    pub db_tenant_lanes: crate::db::lanes::LaneCount,
    /// Tenant schemas kept made ahead of sign-ups (`capliquify schema-pool`): a sign-up
    /// claims one and only registers its tenant, and the service refills the pool in the
    /// background once half of it is claimed, up to 10 per transaction and never more than
    /// it still holds. 0 = none (every sign-up makes its schema while the customer waits).
    #[arg(long, env = "CAPLIQUIFY_SCHEMA_POOL_SIZE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(0..=1_000))]
    pub schema_pool_size: u32,
    /// Not the demo: no demo tenants and no demo authentication, so CLERK_JWKS_URL and
    /// CLERK_ISSUER are required even on the embedded database.
    #[arg(long)]
    pub no_demo: bool,
    /// Bearer token for the operators' `/admin/api/...` endpoints (at least 32
    /// characters, e.g. `openssl rand -hex 32`). Unset: those endpoints answer 403.
    #[arg(long, env = "CAPLIQUIFY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The operators' console under /console: `on` or `off`. Unset: on in the embedded
    /// demo, off otherwise. Operators sign in with CAPLIQUIFY_ADMIN_TOKEN or, when
    /// CAPLIQUIFY_CONSOLE_OPERATORS is set, their Clerk session (one of the two is required
    /// when on, except in the demo, which prints a sign-in link).
    #[arg(long, env = "CAPLIQUIFY_CONSOLE", value_parser = ["on", "off"])]
    pub console: Option<String>,
    /// Clerk user ids (`user_…`, comma-separated) who may sign in to the console with their
    /// Clerk session token, verified with CLERK_JWKS_URL and CLERK_ISSUER like the API's.
    /// Unset: no Clerk sign-in.
    #[arg(long, env = "CAPLIQUIFY_CONSOLE_OPERATORS")]
    pub console_operators: Option<String>,
}

impl ServeArgs {
    fn webhook_config(&self, settings: &Settings) -> anyhow::Result<WebhookConfig> {
        // Set but blank or weak is an error, never "unset": an empty HMAC key would let
        // anyone sign events.
        let clerk = match &self.clerk_webhook_signing_secret {
            Some(secret) => Some(
                SvixSecret::parse(secret)
                    .map_err(|e| anyhow::anyhow!("CLERK_WEBHOOK_SIGNING_SECRET {e}"))?,
            ),
            None => None,
        };
        let stripe = match &self.stripe_webhook_secret {
            Some(secret) => Some(
                StripeSecret::parse(secret)
                    .map_err(|e| anyhow::anyhow!("STRIPE_WEBHOOK_SECRET {e}"))?,
            ),
            None => None,
        };
        let prices = self
            .stripe_prices
            .parse()
            .map_err(|e| anyhow::anyhow!("CAPLIQUIFY_STRIPE_PRICES: {e}"))?;
        Ok(WebhookConfig {
            clerk,
            stripe,
            prices,
            deletion_grace_days: settings.grace_days,
        })
    }

    /// The admin API's token, checked: unset, or at least [`admin::MIN_TOKEN_LEN`] characters
    /// (set but empty is an error, not "disabled").
    fn admin_token(&self) -> anyhow::Result<Option<Arc<str>>> {
        match self.admin_token.as_deref() {
            None => Ok(None),
            Some(t) => {
                crate::config::check_secret("CAPLIQUIFY_ADMIN_TOKEN", t, admin::MIN_TOKEN_LEN)?;
                Ok(Some(Arc::from(t)))
            }
        }
    }

    /// Demo authentication (tokens signed with the public development key) or Clerk's.
    /// Demo only when asked for nothing else: no CLERK_JWKS_URL, the embedded database,
    /// no `--no-demo`, and a loopback listen address, so the committed key can never open
    /// a service others can reach or one holding real data.
    fn auth_mode(&self, database_url_set: bool) -> anyhow::Result<AuthMode> {
        if let Some(jwks_url) = self.clerk_jwks_url.clone() {
            let Some(issuer) = self.clerk_issuer.clone() else {
                anyhow::bail!("CLERK_ISSUER must be set with CLERK_JWKS_URL");
            };
            return Ok(AuthMode::Clerk(AuthConfig { jwks_url, issuer }));
        }
        let why_not_demo = if database_url_set {
            Some("DATABASE_URL is set")
        } else if self.no_demo {
            Some("--no-demo was given")
        } else if !self.listen.ip().is_loopback() {
            Some("the listen address is not a loopback address")
        } else {
            None
        };
        match why_not_demo {
            None => Ok(AuthMode::Demo),
            Some(reason) => anyhow::bail!(
                "CLERK_JWKS_URL and CLERK_ISSUER must be set: {reason}, and the demo's public \
                 development key is trusted only by the embedded demo on a loopback address \
                 (CAPLIQUIFY_LISTEN=127.0.0.1:…, no --no-demo, no DATABASE_URL)"
            ),
        }
    }

    /// The console's setup: off unless asked for (or the demo), signed in to with a Clerk
    /// operator's session or the admin token — in the demo without one, a random token of
    /// this process.
    fn console_config(
        &self,
        demo: bool,
        admin_token: Option<Arc<str>>,
    ) -> anyhow::Result<Option<console::ConsoleConfig>> {
        let operators = match self.console_operators.as_deref() {
            None => Vec::new(),
            Some(value) => console::parse_operators(value).map_err(anyhow::Error::msg)?,
        };
        if demo && !operators.is_empty() {
            anyhow::bail!(
                "CAPLIQUIFY_CONSOLE_OPERATORS needs Clerk (CLERK_JWKS_URL and CLERK_ISSUER): \
                 the demo's signing key is public, so anyone could sign a token for an operator"
            );
        }
        let on = match self.console.as_deref() {
            Some("on") => true,
            Some(_) => false,
            None => demo,
        };
        if !on {
            return Ok(None);
        }
        let token = match admin_token {
            Some(token) => Some(token),
            None if demo => {
                let mut bytes = [0u8; 24];
                aws_lc_rs::rand::fill(&mut bytes)
                    .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
                Some(Arc::from(
                    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                ))
            }
            None if !operators.is_empty() => None,
            None => anyhow::bail!(
                "CAPLIQUIFY_CONSOLE=on needs CAPLIQUIFY_CONSOLE_OPERATORS (Clerk user ids who \
                 sign in with their Clerk session) or CAPLIQUIFY_ADMIN_TOKEN (`openssl rand -hex \
                 32`): operators sign in to the console with one of them"
            ),
        };
        Ok(Some(console::ConsoleConfig {
            token,
            operators: operators.into(),
            backup_key: None,
            secure_cookie: !self.listen.ip().is_loopback(),
            idle: console::IDLE_TIMEOUT,
        }))
    }

    fn cursor_codec(&self) -> anyhow::Result<CursorCodec> {
        match &self.cursor_secret {
            Some(secret) => {
                crate::config::check_secret("CAPLIQUIFY_CURSOR_SECRET", secret, 32)?;
                Ok(CursorCodec::new(secret.as_bytes()))
            }
            None => Ok(CursorCodec::new(uuid::Uuid::new_v4().as_bytes())),
        }
    }
}

/// How `serve` authenticates callers ([`ServeArgs::auth_mode`]).
#[derive(Debug)]
enum AuthMode {
    Demo,
    Clerk(AuthConfig),
}

/// Runs the service until SIGTERM or Ctrl-C, then drains and stops the embedded cluster
/// if this process started it.
pub async fn serve(settings: &Settings, args: ServeArgs) -> anyhow::Result<()> {
    // Settings are checked before anything starts, naming the one that is wrong.
    let cursors = args.cursor_codec()?;
    args.admin_token()?;
    let webhooks = args.webhook_config(settings)?;
    let mode = args.auth_mode(settings.database_url.is_some())?;
    let demo = matches!(mode, AuthMode::Demo);
    let mut console = args.console_config(demo, args.admin_token()?)?;
    if let Some(console) = &mut console {
        // The console's backups are signed as the CLI's are.
        console.backup_key = settings.backup_key()?.map(Arc::new);
    }
    let keys = settings.keyring(demo)?;
    let auth = match mode {
        AuthMode::Demo => {
            demo::banner(args.listen);
            Authenticator::demo()?
        }
        AuthMode::Clerk(config) => {
            let parties = match args.clerk_authorized_parties.as_deref() {
                Some(value) => auth::parse_authorized_parties(value).map_err(anyhow::Error::msg)?,
                None => {
                    tracing::warn!(
                        "CLERK_AUTHORIZED_PARTIES is unset: session tokens made for any origin of \
                         this Clerk instance are accepted"
                    );
                    Vec::new()
                }
            };
            // Not `.context("CLERK_JWKS_URL")`: every error of `new` names its setting already.
            Authenticator::new(config)
                .await?
                .with_authorized_parties(parties)
        }
    };
    let pools = crate::db::PoolConfig::new(settings.db_max_connections)
        .with_recycler(crate::db::recycle::Recycler::new(args.db_backend_memory_mb));
    let db = Database::open_with(settings, &pools).await?;
    let config = HttpConfig {
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
        max_import_bytes: usize::try_from(args.max_import_bytes).unwrap_or(usize::MAX),
        admin_token: args.admin_token()?,
        tenant_concurrency: args.tenant_concurrency,
        console,
    };
    let state = AppState::new(db.clusters.clone(), auth, keys, config)
        .with_webhooks(webhooks)
        .with_cursors(cursors)
        .with_caller_cache(Duration::from_millis(args.auth_cache_ms));
    let result = run(&db, &args, settings, &pools, state).await;
    db.close().await?;
    result
}

async fn run(
    db: &Database,
    args: &ServeArgs,
    settings: &Settings,
    pools: &crate::db::PoolConfig,
    mut state: AppState,
) -> anyhow::Result<()> {
    if db.is_embedded() {
        prepare_embedded(&db.pool).await?;
        // The embedded default serves as production should: through the least-privilege
        // login role, not the superuser that migrated (docs/security.md).
        state.pool = embedded_service_pool(db, pools).await?;
        state.clusters = state.clusters.with_home(state.pool.clone());
    } else {
        migrate::ensure_current(&db.pool).await?;
        warn_if_privileged(&db.pool).await?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (CAPLIQUIFY_LISTEN)", args.listen))?;
    let addr = listener.local_addr()?;
    if state.auth.is_demo() {
        demo::announce(&db.pool, &state.auth, addr).await?;
        if let Some(token) = state.config.console.as_ref().and_then(|c| c.token.as_ref()) {
            demo::announce_console(addr, token, args.admin_token.is_some());
        }
    }
    let job = (args.lifecycle_interval_secs > 0).then(|| {
        tokio::spawn(lifecycle_loop(
            state.clusters.clone(),
            Duration::from_secs(args.lifecycle_interval_secs),
            settings.grace_days,
            settings.past_due_grace_days,
        ))
    });
    let refill = (args.schema_pool_size > 0).then(|| {
        tokio::spawn(crate::tenancy::schema_pool::refill_loop(
            state.clusters.home().clone(),
            args.schema_pool_size,
        ))
    });
    // A slice of tenants' own checks a minute (doctor reports what they found), with the
    // other background maintenance.
    let checks = (args.lifecycle_interval_secs > 0).then(|| {
        tokio::spawn(crate::tenancy::verify::check_loop(
            state.clusters.home().clone(),
        ))
    });
    // And a slice of tenants' sizes a minute (the console's and `monitor sizes`' ranking).
    let sizes = (args.lifecycle_interval_secs > 0)
        .then(|| tokio::spawn(crate::monitor::measure_loop(state.clusters.home().clone())));
    // Tenant and membership changes, heard so that callers may be cached longer.
    let hearing = (args.hear_changes == "on")
        .then(|| caller_changes::spawn(&state.pool, state.callers.clone()))
        .flatten();
    let lanes = crate::db::lanes::resolve(
        args.db_tenant_lanes,
        &state.pool,
        args.db_backend_memory_mb,
        pools.max_connections,
    )
    .await?;
    let lanes = crate::db::lanes::Lanes::new(&state.pool, lanes, pools);
    state = state.with_lanes(lanes);
    let lanes = state.lanes.clone();
    let service_pool = state.pool.clone();
    tracing::info!(%addr, "listening");
    println!("capliquify listening on http://{addr}  (Ctrl-C stops)");
    launch(listener, state, shutdown_signal()).await?;
    for task in [job, refill, checks, sizes, hearing].into_iter().flatten() {
        task.abort();
    }
    if let Some(lanes) = lanes {
        lanes.close().await;
    }
    service_pool.close().await;
    tracing::info!("shut down");
    Ok(())
}

/// A pool on the embedded cluster as [`roles::DEFAULT_LOGIN`], created on first use.
async fn embedded_service_pool(
    db: &Database,
    pools: &crate::db::PoolConfig,
) -> anyhow::Result<PgPool> {
    // The embedded cluster admits only logins with a password; a role made before it
    // asked for one (trust) is given the cluster's.
    let ready: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_authid WHERE rolname = $1 AND rolcanlogin AND NOT rolsuper
                          AND rolpassword IS NOT NULL)",
    )
    .bind(roles::DEFAULT_LOGIN)
    .fetch_one(&db.pool)
    .await?
        && sqlx::query_scalar(roles::IS_MEMBER_SQL)
            .bind(roles::DEFAULT_LOGIN)
            .bind(roles::SERVICE_GROUP)
            .fetch_one(&db.pool)
            .await?;
    if !ready {
        roles::init(
            &db.pool,
            roles::DEFAULT_LOGIN,
            db.embedded_password(),
            &Actor::System { job: "serve" },
        )
        .await?;
    }
    let url = db
        .embedded_url_as(roles::DEFAULT_LOGIN)
        .context("the embedded cluster's URL")?;
    crate::db::connect_with(&url, pools).await
}

/// Says so in the log when the service runs with more rights than it needs.
async fn warn_if_privileged(pool: &PgPool) -> anyhow::Result<()> {
    let (user, privileged): (String, bool) = sqlx::query_as(
        "SELECT current_user::text, rolsuper OR rolbypassrls OR rolcreaterole
           FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    if privileged {
        tracing::warn!(
            role = %user,
            "the service is connected as a superuser or a role that can create roles; \
             run `capliquify db init-roles` and serve as that login role (docs/security.md)"
        );
    }
    Ok(())
}

/// Runs the lifecycle job (and drains the audit outboxes of other clusters) every
/// `interval` until the service stops.
async fn lifecycle_loop(
    clusters: Clusters,
    interval: Duration,
    grace_days: u32,
    past_due_grace_days: u32,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // Audit rows of tenants on other clusters reach the home trail (readers drain too).
        if let Err(err) = crate::audit::drain_all(&clusters, None).await {
            tracing::warn!(error = %err, "draining audit outboxes failed");
        }
        match crate::tenancy::lifecycle_job::run(clusters.home(), grace_days, past_due_grace_days)
            .await
        {
            Ok(report) if report.changes() > 0 || !report.failed.is_empty() => {
                tracing::info!(?report, "lifecycle job changed tenants");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "lifecycle job failed"),
        }
    }
}

/// The embedded cluster is a development database: bring it and every tenant current, and
/// add the demo tenants.
async fn prepare_embedded(pool: &PgPool) -> anyhow::Result<()> {
    let tenant_migrations = migrate::tenant_migrations();
    let latest = migrate::latest_version(tenant_migrations);
    migrate::migrate_public(pool, tenant_migrations).await?;
    let pending = migrate::pending_tenants(pool, latest).await?;
    let report = migrate::migrate_fleet(pool, pending, latest, 2, Arc::new(|_| {})).await;
    for failed in &report.failed {
        tracing::warn!(tenant = %failed.slug, error = ?failed.error, "tenant migration failed");
    }
    let pooled = migrate::pending_pooled(pool, latest).await?;
    for (schema, error) in migrate::migrate_pooled(pool, &pooled, latest).await.failed {
        tracing::warn!(%schema, %error, "pooled schema migration failed");
    }
    Ok(())
}

/// Limits of the HTTP layer, and the admin API's token.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Longest a request may take (408 after it); also each statement's timeout in the
    /// tenant transaction.
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Largest body of `POST /api/v1/imports`.
    pub max_import_bytes: usize,
    /// Bearer token of `/admin/api/...`; `None` disables those endpoints (403).
    pub admin_token: Option<Arc<str>>,
    /// Requests of one tenant that may run at once; more wait a moment, then get 429.
    /// 0: no limit.
    pub tenant_concurrency: usize,
    /// The operators' console; `None`: off (`/console` answers 404).
    pub console: Option<console::ConsoleConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 1_048_576,
            max_import_bytes: crate::import::DEFAULT_MAX_IMPORT_BYTES as usize,
            admin_token: None,
            tenant_concurrency: DEFAULT_TENANT_CONCURRENCY,
            console: None,
        }
    }
}

/// Default of `CAPLIQUIFY_TENANT_CONCURRENCY`: below the default pool size (10), so one
/// tenant cannot hold every connection.
pub const DEFAULT_TENANT_CONCURRENCY: usize = 6;

/// `CAPLIQUIFY_DB_TENANT_LANES`' default: `auto` (see [`crate::db::lanes`]). A small fleet
/// gets one lane (off: every backend can keep every tenant cached), 10,000 tenants 20.
pub const DEFAULT_TENANT_LANES: crate::db::lanes::LaneCount = crate::db::lanes::LaneCount::Auto;

/// The whole application: routes and layers.
pub fn app(state: AppState) -> Router {
    let config = state.config.clone();
    // Install the recorder before the first request is counted.
    metrics::handle();
    let request_id = HeaderName::from_static("x-request-id");
    let api = Router::new()
        .merge(resources::router())
        .merge(preferences::router())
        .merge(credentials::router())
        .merge(working_capital::router())
        .merge(what_if::router())
        .merge(forecasting::router())
        .merge(imports::router())
        .route("/tenant", get(tenant::show))
        .route("/audit-logs", get(audit_logs::list))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::authenticate,
        ))
        // Added after the auth layer: the document is public.
        .route("/openapi.json", get(openapi_json));
    Router::new()
        .nest("/api/v1", api)
        .nest(
            "/admin/api",
            admin::router(state.clone(), config.admin_token.clone()),
        )
        .merge(webhooks::router())
        .merge(console::router(state.clone(), config.console.clone()))
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .fallback(|| async { error::ApiError::not_found("route") })
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(axum::middleware::from_fn(refuse_nul_in_url))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, config.request_timeout))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().on_response(DefaultOnResponse::new().level(tracing::Level::INFO)).make_span_with(|req: &axum::http::Request<_>| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), uri = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// A NUL character (`%00`) in the path or query can reach neither a PostgreSQL string nor
/// an identifier; refusing it here covers every route and parameter at once.
async fn refuse_nul_in_url(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let uri = request.uri();
    let raw = format!("{}?{}", uri.path(), uri.query().unwrap_or(""));
    if raw.to_ascii_lowercase().contains("%00") {
        return error::ApiError::bad_request(
            "invalid_url",
            "the URL contains a NUL character (%00)",
        )
        .into_response();
    }
    next.run(request).await
}

/// `GET /api/v1/openapi.json`
async fn openapi_json() -> impl axum::response::IntoResponse {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOCUMENT.get_or_init(openapi::document_json).as_str(),
    )
}

/// Ready when the database answers and its migrations are as new as this build.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    match migrate::ensure_current(&state.pool).await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(err) => {
            tracing::warn!(error = %err, "not ready");
            let reason = match err {
                migrate::MigrateError::NotMigrated(_) => "migrations pending",
                _ => "database unavailable",
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "not_ready", "reason": reason })),
            )
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; draining in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["serve"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().serve
    }

    #[test]
    fn the_demo_key_is_trusted_only_by_the_loopback_embedded_demo() {
        assert!(matches!(args(&[]).auth_mode(false), Ok(AuthMode::Demo)));
        assert!(matches!(
            args(&["--listen", "[::1]:8080"]).auth_mode(false),
            Ok(AuthMode::Demo)
        ));
        for (argv, database_url_set, named) in [
            (&["--no-demo"][..], false, "--no-demo"),
            (&["--listen", "0.0.0.0:8080"][..], false, "loopback"),
            (&["--listen", "192.0.2.1:8080"][..], false, "loopback"),
            (&[][..], true, "DATABASE_URL"),
        ] {
            let err = args(argv)
                .auth_mode(database_url_set)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("CLERK_JWKS_URL") && err.contains(named),
                "{argv:?}: {err}"
            );
        }
        let clerk = args(&[
            "--no-demo",
            "--clerk-jwks-url",
            "file:///j.json",
            "--clerk-issuer",
            "https://c",
        ]);
        assert!(matches!(clerk.auth_mode(true), Ok(AuthMode::Clerk(_))));
        let no_issuer = args(&["--clerk-jwks-url", "file:///j.json"]);
        assert!(
            no_issuer
                .auth_mode(false)
                .unwrap_err()
                .to_string()
                .contains("CLERK_ISSUER")
        );
    }

    #[test]
    fn the_console_needs_a_way_to_sign_in_and_clerk_operators_need_clerk() {
        let token: Option<Arc<str>> = Some(Arc::from("t".repeat(40)));
        let on = args(&["--console", "on"]);
        let err = on.console_config(false, None).unwrap_err().to_string();
        assert!(
            err.contains("CAPLIQUIFY_CONSOLE_OPERATORS") && err.contains("CAPLIQUIFY_ADMIN_TOKEN")
        );
        let with_token = on.console_config(false, token.clone()).unwrap().unwrap();
        assert!(with_token.token.is_some() && with_token.operators.is_empty());

        let clerk = args(&["--console", "on", "--console-operators", "user_a, user_b"]);
        let config = clerk.console_config(false, None).unwrap().unwrap();
        assert!(config.token.is_none());
        assert_eq!(
            &*config.operators,
            ["user_a".to_owned(), "user_b".to_owned()]
        );
        let err = clerk.console_config(true, None).unwrap_err().to_string();
        assert!(err.contains("CLERK_JWKS_URL"), "{err}");

        for bad in [
            "",
            " , ",
            "alice@example.com",
            "org_abc",
            "user_",
            "user_a b",
        ] {
            let err = args(&["--console", "on", "--console-operators", bad])
                .console_config(false, token.clone())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("CAPLIQUIFY_CONSOLE_OPERATORS"),
                "{bad:?}: {err}"
            );
        }
        assert!(args(&[]).console_config(false, token).unwrap().is_none());
    }

    #[test]
    fn blank_or_weak_secrets_fail_start_up_naming_the_setting() {
        let settings = Cli::try_parse_from(["serve"]).unwrap().settings;
        for (flag, value, name) in [
            ("--stripe-webhook-secret", "", "STRIPE_WEBHOOK_SECRET"),
            ("--stripe-webhook-secret", "whsec_", "STRIPE_WEBHOOK_SECRET"),
            (
                "--clerk-webhook-signing-secret",
                "whsec_",
                "CLERK_WEBHOOK_SIGNING_SECRET",
            ),
            (
                "--clerk-webhook-signing-secret",
                "",
                "CLERK_WEBHOOK_SIGNING_SECRET",
            ),
        ] {
            let err = args(&[flag, value])
                .webhook_config(&settings)
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{flag}={value:?}: {err}");
        }
        assert!(
            args(&[])
                .webhook_config(&settings)
                .is_ok_and(|c| c.stripe.is_none() && c.clerk.is_none())
        );
        let err = args(&["--admin-token", ""])
            .admin_token()
            .unwrap_err()
            .to_string();
        assert!(err.contains("CAPLIQUIFY_ADMIN_TOKEN"), "{err}");
        let err = args(&["--cursor-secret", ""])
            .cursor_codec()
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("CAPLIQUIFY_CURSOR_SECRET")));
    }
}
