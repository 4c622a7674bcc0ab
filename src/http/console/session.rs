//! Who is signed in to the console: an operator's Clerk session token or the admin token,
//! exchanged once for a session; the session's cookie, its CSRF token, and the limit on
//! failed sign-ins.
//!
//! The browser holds a random 256-bit session id in an HttpOnly, SameSite=Strict cookie
//! (Secure unless the service listens on loopback); `public.console_sessions` keeps only
//! its SHA-256, so the table opens no session. A session ends at sign-out (revoked) or
//! after [`super::ConsoleConfig::idle`] without a request. The CSRF token of a session is
//! derived from its id (a different hash), so it needs no storage and no one without the
//! cookie can compute it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

use super::{Console, ConsoleError};
use crate::audit::{self, Actor, Entry};
use crate::http::auth::{AuthError, Authenticator};

/// The cookie's name. Not `__Host-…`: that prefix needs `Secure`, which a loopback
/// service (the demo) cannot have over plain HTTP.
pub const COOKIE: &str = "capliquify_console";

/// Where Clerk's frontend keeps the session token on the application's domain.
pub const CLERK_COOKIE: &str = "__session";

/// A Clerk session token longer than this is not read (the authenticator refuses larger).
const MAX_CLERK_TOKEN: usize = 8 * 1024;

/// The operator's name in the trail for an admin-token sign-in (there is one shared token,
/// so no person can be named).
pub const ADMIN_TOKEN_OPERATOR: &str = "admin-token";

/// A signed-in operator, extracted from the request's session cookie. A request without a
/// live session is refused ([`ConsoleError::SignedOut`]).
#[derive(Debug, Clone)]
pub struct Operator {
    pub name: String,
    /// The session's CSRF token: every form carries it, every act checks it.
    pub csrf: String,
    id_hash: Vec<u8>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Operator {
    /// The operator as the audit trail's actor.
    pub fn actor(&self) -> Actor {
        Actor::Console {
            operator: self.name.clone(),
            ip: self.ip,
            user_agent: self.user_agent.clone(),
        }
    }

    /// Whether `presented` is this session's CSRF token (compared in constant time).
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<(), ConsoleError> {
        let presented = presented.unwrap_or("");
        let digest = |t: &str| Sha256::digest(t.as_bytes());
        aws_lc_rs::constant_time::verify_slices_are_equal(&digest(presented), &digest(&self.csrf))
            .map_err(|_| ConsoleError::Csrf)
    }
}

/// The request's client address and browser, as the trail records them.
pub fn client(parts: &Parts) -> (Option<IpAddr>, Option<String>) {
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(500).collect());
    (ip, user_agent)
}

/// The request's client (address and browser), for sign-in's audit row and limiter.
pub struct Client {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let (ip, user_agent) = client(parts);
        Ok(Self { ip, user_agent })
    }
}

impl FromRequestParts<Console> for Operator {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Console,
    ) -> Result<Self, Self::Rejection> {
        let signed_out = if parts.method == axum::http::Method::GET {
            ConsoleError::SignedOut
        } else {
            ConsoleError::NotSignedIn
        };
        let Some(id) = cookie(&parts.headers, COOKIE, 100) else {
            return Err(signed_out);
        };
        let id_hash = Sha256::digest(id.as_bytes()).to_vec();
        let idle_secs = console.config.idle.as_secs_f64();
        // Touching the row is what makes the timeout an idle one.
        let name: Option<String> = sqlx::query_scalar(
            "UPDATE public.console_sessions SET last_seen_at = now()
              WHERE id_hash = $1 AND revoked_at IS NULL
                AND last_seen_at > now() - make_interval(secs => $2)
             RETURNING operator",
        )
        .bind(&id_hash)
        .bind(idle_secs)
        .fetch_optional(&console.app.pool)
        .await
        .map_err(ConsoleError::internal)?;
        let Some(name) = name else {
            return Err(signed_out);
        };
        let (ip, user_agent) = client(parts);
        Ok(Self {
            name,
            csrf: csrf_token(&id),
            id_hash,
            ip,
            user_agent,
        })
    }
}

/// The cookie `name` of the request's `Cookie` header, if any and at most `max` bytes.
fn cookie(headers: &HeaderMap, name: &str, max: usize) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= max)
}

fn csrf_token(session_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"capliquify-console-csrf:");
    hash.update(session_id.as_bytes());
    URL_SAFE_NO_PAD.encode(hash.finalize())
}

/// The `Set-Cookie` value that gives the browser `id` (or, with `None`, removes it).
pub fn set_cookie(id: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// Exchanges the admin token for a new session: checks the limiter and the token (in
/// constant time), audits the outcome, and returns the new session's id for the cookie.
pub async fn sign_in(
    console: &Console,
    presented: &str,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
) -> Result<String, ConsoleError> {
    let config = &console.config;
    not_blocked(console, ip)?;
    let Some(token) = &config.token else {
        return Err(ConsoleError::refused(
            config,
            StatusCode::FORBIDDEN,
            "This console takes no admin token: operators sign in with their Clerk session.",
        ));
    };
    let digest = |t: &str| Sha256::digest(t.as_bytes());
    let good = aws_lc_rs::constant_time::verify_slices_are_equal(
        &digest(presented.trim()),
        &digest(token),
    )
    .is_ok();
    if !good {
        let refusal = ConsoleError::refused(
            config,
            StatusCode::UNAUTHORIZED,
            "That is not the admin token.",
        );
        return failed(
            console,
            "unknown",
            ip,
            user_agent,
            "admin_token",
            "wrong token",
            refusal,
        )
        .await;
    }
    open_session(console, ADMIN_TOKEN_OPERATOR, ip, user_agent, "admin_token").await
}

/// Exchanges a Clerk session token (`Authorization: Bearer`, else Clerk's `__session`
/// cookie) for a new session when it is valid — verified by the API's own authenticator,
/// the same JWKS, issuer and authorized parties — and its user is on the operators' list.
/// Refusals are limited and audited as failed admin-token sign-ins are.
pub async fn sign_in_with_clerk(
    console: &Console,
    headers: &HeaderMap,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
) -> Result<String, ConsoleError> {
    let config = &console.config;
    not_blocked(console, ip)?;
    if config.operators.is_empty() {
        return Err(ConsoleError::refused(
            config,
            StatusCode::FORBIDDEN,
            "This console takes no Clerk sign-in (CAPLIQUIFY_CONSOLE_OPERATORS is not set): \
             operators sign in with the admin token.",
        ));
    }
    let presented = match headers.get(header::AUTHORIZATION) {
        Some(value) => Authenticator::bearer(Some(value)).map(str::to_owned),
        None => cookie(headers, CLERK_COOKIE, MAX_CLERK_TOKEN).ok_or(AuthError::MissingToken),
    };
    let verified = match presented {
        Ok(token) => console.app.auth.verify(&token).await,
        Err(e) => Err(e),
    };
    let identity = match verified {
        Ok(identity) => identity,
        Err(e) => {
            let reason = match &e {
                AuthError::MissingToken => "no Clerk session token came with the request (sign in \
                    to the application first, on this site, or send the token as \
                    Authorization: Bearer)"
                    .to_owned(),
                AuthError::Expired => {
                    "the session token has expired (sign in to the application again)".to_owned()
                }
                // Configuration trouble (the JWKS could not be loaded) is the operators' to
                // read in the log, not the browser's.
                AuthError::Jwks(problem) => {
                    tracing::error!(%problem, "console: Clerk sign-in could not verify");
                    "the token could not be verified".to_owned()
                }
                other => other.to_string(),
            };
            let refusal = ConsoleError::refused(
                config,
                StatusCode::UNAUTHORIZED,
                format!("Your Clerk session was not accepted: {reason}. Nothing was opened."),
            );
            return failed(
                console, "unknown", ip, user_agent, "clerk", &reason, refusal,
            )
            .await;
        }
    };
    let user = identity.clerk_user_id;
    if !config.operators.contains(&user) {
        let refusal = ConsoleError::refused(
            config,
            StatusCode::FORBIDDEN,
            format!(
                "Clerk user {user} is not a console operator (CAPLIQUIFY_CONSOLE_OPERATORS). \
                 Nothing was opened."
            ),
        );
        return failed(
            console,
            &user,
            ip,
            user_agent,
            "clerk",
            "not an operator",
            refusal,
        )
        .await;
    }
    open_session(console, &user, ip, user_agent, "clerk").await
}

/// Refuses an address that has failed too often of late (429 with Retry-After).
fn not_blocked(console: &Console, ip: Option<IpAddr>) -> Result<(), ConsoleError> {
    match console.limiter.blocked(ip) {
        None => Ok(()),
        Some(wait) => Err(ConsoleError::SignInRefused(super::Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "Too many failed sign-ins from this address; try again in {} minute(s).",
                wait.as_secs().max(1).div_ceil(60)
            ),
            retry_after: Some(wait),
            ways: console.config.ways(),
        })),
    }
}

/// Counts a failed sign-in against `ip`, audits it (`console.sign_in_failed`, with how and
/// why) and answers `refusal`.
async fn failed(
    console: &Console,
    operator: &str,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
    method: &str,
    reason: &str,
    refusal: ConsoleError,
) -> Result<String, ConsoleError> {
    console.limiter.failed(ip);
    tracing::warn!(?ip, method, reason, "console: failed sign-in");
    let actor = Actor::Console {
        operator: operator.into(),
        ip,
        user_agent,
    };
    let mut tx = console
        .app
        .pool
        .begin()
        .await
        .map_err(ConsoleError::internal)?;
    let metadata = serde_json::json!({ "method": method, "reason": reason });
    record(&mut tx, &actor, "console.sign_in_failed", metadata).await?;
    tx.commit().await.map_err(ConsoleError::internal)?;
    Err(refusal)
}

/// Opens a session for `operator` (audited `console.signed_in`) and returns its id.
async fn open_session(
    console: &Console,
    operator: &str,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
    method: &str,
) -> Result<String, ConsoleError> {
    let actor = Actor::Console {
        operator: operator.into(),
        ip,
        user_agent: user_agent.clone(),
    };
    let mut tx = console
        .app
        .pool
        .begin()
        .await
        .map_err(ConsoleError::internal)?;
    let id = new_session_id()?;
    // Ended sessions are of no further use: each sign-in clears them away.
    sqlx::query(
        "DELETE FROM public.console_sessions
          WHERE revoked_at IS NOT NULL OR last_seen_at < now() - make_interval(secs => $1)",
    )
    .bind(console.config.idle.as_secs_f64())
    .execute(&mut *tx)
    .await
    .map_err(ConsoleError::internal)?;
    sqlx::query(
        "INSERT INTO public.console_sessions (id_hash, operator, ip_address, user_agent)
         VALUES ($1, $2, $3::inet, $4)",
    )
    .bind(Sha256::digest(id.as_bytes()).to_vec())
    .bind(operator)
    .bind(ip.map(|ip| ip.to_string()))
    .bind(user_agent)
    .execute(&mut *tx)
    .await
    .map_err(ConsoleError::internal)?;
    let metadata = serde_json::json!({ "method": method });
    record(&mut tx, &actor, "console.signed_in", metadata).await?;
    tx.commit().await.map_err(ConsoleError::internal)?;
    Ok(id)
}

/// Revokes the operator's session (the cookie no longer opens anything) and audits it.
pub async fn sign_out(pool: &PgPool, operator: &Operator) -> Result<(), ConsoleError> {
    let mut tx = pool.begin().await.map_err(ConsoleError::internal)?;
    sqlx::query("UPDATE public.console_sessions SET revoked_at = now() WHERE id_hash = $1")
        .bind(&operator.id_hash)
        .execute(&mut *tx)
        .await
        .map_err(ConsoleError::internal)?;
    let metadata = serde_json::json!({});
    record(&mut tx, &operator.actor(), "console.signed_out", metadata).await?;
    tx.commit().await.map_err(ConsoleError::internal)
}

async fn record(
    conn: &mut sqlx::PgConnection,
    actor: &Actor,
    action: &'static str,
    metadata: serde_json::Value,
) -> Result<(), ConsoleError> {
    audit::record(
        conn,
        actor,
        Entry {
            tenant_id: None,
            action,
            resource_type: "console",
            resource_id: "session".into(),
            metadata,
        },
    )
    .await
    .map_err(ConsoleError::internal)
}

fn new_session_id() -> Result<String, ConsoleError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| ConsoleError::internal("the system's random source failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Failed sign-ins per client address: after [`SignInLimiter::MAX_FAILURES`] within
/// [`SignInLimiter::WINDOW`], that address is refused (429) until the window ends.
/// In memory, per process: enough to make guessing a 32-character token hopeless.
#[derive(Debug, Default)]
pub struct SignInLimiter {
    failures: Mutex<HashMap<Option<IpAddr>, (u32, Instant)>>,
}

impl SignInLimiter {
    pub const MAX_FAILURES: u32 = 5;
    pub const WINDOW: Duration = Duration::from_secs(15 * 60);

    /// How long `ip` must still wait, when it is blocked.
    fn blocked(&self, ip: Option<IpAddr>) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (count, since) = map.get(&ip)?;
        let elapsed = since.elapsed();
        (*count >= Self::MAX_FAILURES && elapsed < Self::WINDOW).then(|| Self::WINDOW - elapsed)
    }

    fn failed(&self, ip: Option<IpAddr>) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Forget ended windows so the map stays as small as the attack is recent.
        map.retain(|_, (_, since)| since.elapsed() < Self::WINDOW);
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        entry.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sixth_failure_within_the_window_is_refused_and_other_addresses_are_not() {
        let limiter = SignInLimiter::default();
        let ip: Option<IpAddr> = Some([192, 0, 2, 1].into());
        for _ in 0..SignInLimiter::MAX_FAILURES {
            assert!(limiter.blocked(ip).is_none());
            limiter.failed(ip);
        }
        assert!(limiter.blocked(ip).is_some());
        assert!(limiter.blocked(Some([192, 0, 2, 2].into())).is_none());
    }

    #[test]
    fn the_csrf_token_depends_on_the_session_and_is_not_its_stored_hash() {
        let a = csrf_token("session-a");
        assert_ne!(a, csrf_token("session-b"));
        assert_ne!(a, URL_SAFE_NO_PAD.encode(Sha256::digest(b"session-a")));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_off_loopback() {
        let c = set_cookie(Some("abc"), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie(Some("abc"), false).contains("Secure"));
        assert!(set_cookie(None, false).contains("Max-Age=0"));
    }
}
