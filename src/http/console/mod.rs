//! The operators' console, `/console`: server-rendered HTML pages over the same tenancy,
//! billing, audit, monitor and Citus functions the CLI and the admin API call, and the
//! operators' acts (suspend, reactivate, soft delete, undelete) through the same audited
//! [`crate::tenancy::Tenancy`] methods as `capliquify tenant …`.
//!
//! Off unless `CAPLIQUIFY_CONSOLE=on` (on by default in the embedded demo). Operators sign
//! in with a Clerk session token whose user is on `CAPLIQUIFY_CONSOLE_OPERATORS`, or with
//! the admin token; either is exchanged once for a session ([`session`]). Every response
//! carries a strict Content-Security-Policy (no script at all, styles from one file served
//! here), refuses framing and is not cached; every form carries the session's CSRF token.
//! It is not part of the tenant API's OpenAPI document.

mod acts;
mod cluster;
mod pages;
pub mod session;
mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::AppState;
use crate::tenancy::TenancyError;

/// How the console is set up (`serve`: `CAPLIQUIFY_CONSOLE`, the admin token,
/// `CAPLIQUIFY_CONSOLE_OPERATORS`).
#[derive(Clone)]
pub struct ConsoleConfig {
    /// What the token sign-in form must be given: the admin token, or in the demo without
    /// one, a random token of this process (printed in the sign-in link). `None`: operators
    /// sign in with Clerk only.
    pub token: Option<Arc<str>>,
    /// The Clerk user ids (`sub`) that may sign in with their Clerk session token,
    /// verified by the API's own authenticator. Empty: no Clerk sign-in.
    pub operators: Arc<[String]>,
    /// Signs the archives of the console's backups, as `CAPLIQUIFY_BACKUP_KEY` signs the
    /// CLI's (`None`: unsigned, and the page says so).
    pub backup_key: Option<Arc<crate::tenancy::backup::BackupKey>>,
    /// Whether the session cookie is `Secure` (off only when the service listens on
    /// loopback, where browsers are reached over plain HTTP).
    pub secure_cookie: bool,
    /// How long a session lasts without a request.
    pub idle: Duration,
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("operators", &self.operators)
            .field(
                "backup_key",
                &self.backup_key.as_ref().map(|_| "<redacted>"),
            )
            .field("secure_cookie", &self.secure_cookie)
            .field("idle", &self.idle)
            .finish()
    }
}

impl ConsoleConfig {
    /// Which ways of signing in the sign-in page offers.
    pub fn ways(&self) -> SignInWays {
        SignInWays {
            token: self.token.is_some(),
            clerk: !self.operators.is_empty(),
        }
    }
}

/// The ways of signing in a console offers.
#[derive(Debug, Clone, Copy)]
pub struct SignInWays {
    /// The admin token (or the demo's printed one).
    pub token: bool,
    /// A Clerk session token of an operator on the allow-list.
    pub clerk: bool,
}

/// `CAPLIQUIFY_CONSOLE_OPERATORS`: comma-separated Clerk user ids (`user_…`). Set but
/// empty, or an entry that is not a user id, is an error naming the setting.
pub fn parse_operators(value: &str) -> Result<Vec<String>, String> {
    let operators: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    if operators.is_empty() {
        return Err(
            "CAPLIQUIFY_CONSOLE_OPERATORS is set but empty; list the Clerk user ids \
                    (user_…) of the operators, comma-separated, or unset it"
                .into(),
        );
    }
    for operator in &operators {
        let id_like = operator.len() <= 100
            && operator.starts_with("user_")
            && operator.len() > "user_".len()
            && operator
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !id_like {
            return Err(format!(
                "CAPLIQUIFY_CONSOLE_OPERATORS entry {operator:?} is not a Clerk user id \
                 (user_ followed by letters and digits, as the Clerk dashboard shows it)"
            ));
        }
    }
    Ok(operators)
}

/// A session's idle timeout.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What the console's handlers reach: the application's state and the console's own.
#[derive(Clone)]
pub struct Console {
    pub app: AppState,
    pub config: ConsoleConfig,
    pub limiter: Arc<session::SignInLimiter>,
}

/// The console's routes under `/console` (`None`: disabled, every path answers 404).
pub fn router(state: AppState, config: Option<ConsoleConfig>) -> Router<AppState> {
    let Some(config) = config else {
        return Router::new();
    };
    let console = Console {
        app: state,
        config,
        limiter: Arc::default(),
    };
    Router::new()
        .route("/console", get(pages::overview))
        .route(
            "/console/sign-in",
            get(pages::sign_in_form).post(pages::sign_in),
        )
        .route(
            "/console/sign-in/clerk",
            axum::routing::post(pages::sign_in_with_clerk),
        )
        .route("/console/sign-out", axum::routing::post(pages::sign_out))
        .route("/console/tenants", get(pages::tenants))
        .route("/console/tenants/{slug}", get(pages::tenant))
        .route(
            "/console/tenants/{slug}/{act}",
            get(acts::confirm).post(acts::perform),
        )
        .route("/console/audit", get(pages::audit))
        .route("/console/audit.csv", get(pages::audit_csv))
        .route("/console/system", get(pages::system))
        .route("/console/cluster", get(cluster::page))
        .route("/console/assets/{file}", get(asset))
        // Not `fallback`: the application's own fallback (problem+json) replaces it when the
        // routers merge; any other path under /console is a console page that does not exist.
        .route(
            "/console/{*rest}",
            get(|| async { ConsoleError::NotFound("page".into()) }),
        )
        .layer(axum::middleware::from_fn(guard))
        .with_state(console)
}

/// Headers every console response carries, and the same-origin rule for form posts.
async fn guard(request: Request, next: Next) -> Response {
    // SameSite=Strict already keeps the cookie off cross-site posts; a browser's Origin
    // naming another host is refused as well, before anything runs.
    if request.method() == Method::POST && !same_origin(&request) {
        return ConsoleError::Csrf.into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: with it, browsers send `Origin: null` on form posts, which the
    // same-origin rule above would refuse.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn same_origin(request: &Request) -> bool {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .map(|u| match u.port() {
            Some(port) => format!("{}:{port}", u.host_str().unwrap_or("")),
            None => u.host_str().unwrap_or("").to_owned(),
        });
    matches!((host, origin_host), (Some(h), Some(o)) if h == o)
}

/// The stylesheet, named after its content so that a new build is never served a stale
/// copy, and cached for a year.
const CSS: &str = include_str!("console.css");

pub(crate) fn css_path() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(CSS.as_bytes());
        let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("/console/assets/console-{hex}.css")
    })
}

async fn asset(Path(file): Path<String>) -> Response {
    if format!("/console/assets/{file}") != css_path() {
        return ConsoleError::NotFound("asset".into()).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        CSS,
    )
        .into_response()
}

/// What a console request can end in besides its page. Each is answered with a page that
/// says what happened; nothing changed.
#[derive(Debug)]
pub enum ConsoleError {
    /// No live session, asking for a page: the browser is sent to sign in.
    SignedOut,
    /// No live session, posting a form (an act): refused with 401.
    NotSignedIn,
    /// The form's CSRF token is missing or not this session's, or it came from another site.
    Csrf,
    /// A sign-in was refused (wrong admin token, a Clerk token that is not valid or not an
    /// operator's, too many failures): the sign-in page again, saying why.
    SignInRefused(Refusal),
    BadInput(String),
    NotFound(String),
    /// The act does not fit the tenant's state (e.g. suspending a suspended tenant).
    Conflict(String),
    Internal,
}

/// Why a sign-in was refused, and what the sign-in page it answers with offers.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<Duration>,
    pub ways: SignInWays,
}

impl ConsoleError {
    /// A sign-in refused with `status` and `message`.
    pub fn refused(config: &ConsoleConfig, status: StatusCode, message: impl Into<String>) -> Self {
        Self::SignInRefused(Refusal {
            status,
            message: message.into(),
            retry_after: None,
            ways: config.ways(),
        })
    }

    /// Logs `err` and becomes a bare 500.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "console: internal error");
        Self::Internal
    }
}

impl From<TenancyError> for ConsoleError {
    fn from(err: TenancyError) -> Self {
        match err {
            TenancyError::UnknownTenant(_) | TenancyError::Slug(_) => {
                Self::NotFound("tenant".into())
            }
            TenancyError::Database(e) => Self::internal(e),
            TenancyError::Cluster(e) => Self::internal(e),
            other => Self::Conflict(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ConsoleError {
    fn from(err: sqlx::Error) -> Self {
        Self::internal(err)
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            // A page asked for without a session: the sign-in page. Anything else (an
            // act) is refused and says so.
            Self::SignedOut => {
                let mut response = Redirect::to("/console/sign-in").into_response();
                *response.status_mut() = StatusCode::SEE_OTHER;
                return response;
            }
            Self::NotSignedIn => (
                StatusCode::UNAUTHORIZED,
                "Signed out",
                "You are not signed in (or your session has ended). Nothing was changed; \
                 sign in again."
                    .to_owned(),
            ),
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "Refused",
                "The form's security token is missing or wrong (or it was sent from another \
                 site). Nothing was changed; open the page again and resubmit."
                    .to_owned(),
            ),
            Self::SignInRefused(refusal) => {
                let mut response = (
                    refusal.status,
                    views::sign_in(refusal.ways, None, Some(&refusal.message)),
                )
                    .into_response();
                if let Some(wait) = refusal.retry_after
                    && let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string())
                {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return response;
            }
            Self::BadInput(message) => (StatusCode::BAD_REQUEST, "Bad request", message),
            Self::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "Not found",
                format!("No such {what}."),
            ),
            Self::Conflict(message) => (StatusCode::CONFLICT, "Not done", message),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The error was logged. Nothing was changed.".to_owned(),
            ),
        };
        (status, views::message(title, &message)).into_response()
    }
}
