//! Authentication of API requests: who is calling, and for which organization.
//!
//! Requests carry a Clerk session token, `Authorization: Bearer <JWT>`. The
//! [`Authenticator`] verifies it (RS256 only, signed by a key from the configured JWKS,
//! `exp`/`nbf` with 5 s leeway, exact `iss` match) and turns it into an [`Identity`]: the
//! Clerk user id (`sub`) and the organization id (v2 `o.id`, else v1 `org_id`). Deciding
//! what an identity may do (tenant lookup, 403 without an organization) is the caller's job.
//!
//! The JWKS comes from `CLERK_JWKS_URL` (`https://`, `http://` for loopback hosts only, or
//! `file://` for offline use). It is loaded at startup and cached; a token whose `kid` is not
//! cached triggers a reload, at most once per 30 s so that tokens with made-up key ids cannot
//! make the service hammer Clerk.
//!
//! Demo mode ([`Authenticator::demo`]) trusts only the development key committed at
//! `dev/demo-signing-key.pem` (public on purpose) and can mint tokens for the demo tenants
//! ([`Authenticator::sign_demo_token`]). The production constructor never trusts that key.
//!
//! Every [`AuthError`] message is safe to return to clients except [`AuthError::Jwks`],
//! which describes configuration problems for operators.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::HeaderValue;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, RwLock};
use url::{Host, Url};

/// The development signing key; trusted only by [`Authenticator::demo`].
const DEMO_SIGNING_KEY_PEM: &str = include_str!("../../dev/demo-signing-key.pem");
/// `iss` of demo tokens.
pub const DEMO_ISSUER: &str = "capliquify-demo";
/// `kid` of the demo key.
pub const DEMO_KEY_ID: &str = "capliquify-demo";

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 5;
/// Timeout of one JWKS fetch (connect + response).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Minimum time between two JWKS reloads triggered by unknown key ids.
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// A JWKS document larger than this is refused.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// A token larger than this is refused before any parsing.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Where the production authenticator gets its keys and which issuer it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `CLERK_JWKS_URL`: `https://…`, `http://` on a loopback host, or `file://…`.
    pub jwks_url: String,
    /// `CLERK_ISSUER`: the exact `iss` of accepted tokens.
    pub issuer: String,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Clerk user id (`sub`), never empty.
    pub clerk_user_id: String,
    /// Clerk organization id (`o.id` or `org_id`); `None` when the session has no active
    /// organization.
    pub org_id: Option<String>,
}

/// Why a request is not authenticated, or why the authenticator cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    MissingToken,
    #[error("malformed Authorization header: expected `Bearer <token>`")]
    MalformedHeader,
    /// The token is not acceptable; the reason is safe to show to the client.
    #[error("{0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
    #[error("token was signed by an unknown key")]
    UnknownKey,
    /// Configuration or JWKS loading problem (for operators, not for clients).
    #[error("{0}")]
    Jwks(String),
}

fn invalid(reason: &str) -> AuthError {
    AuthError::Invalid(reason.to_owned())
}

/// `azp` must be one of `parties` when both are there (Clerk's `authorizedParties` rule).
fn check_authorized_party(
    claims: &Map<String, Value>,
    parties: &[String],
) -> Result<(), AuthError> {
    match claims.get("azp") {
        _ if parties.is_empty() => Ok(()),
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(azp)) if parties.iter().any(|p| p == azp) => Ok(()),
        Some(_) => Err(invalid("the token was issued for another origin (azp)")),
    }
}

/// `CLERK_AUTHORIZED_PARTIES`: comma-separated origins (`https://app.example.com`). Set but
/// empty, or an entry that is not an origin, is an error naming the setting.
pub fn parse_authorized_parties(value: &str) -> Result<Vec<String>, String> {
    let parties: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if parties.is_empty() {
        return Err("CLERK_AUTHORIZED_PARTIES is set but empty; list the origins of your frontends (https://app.example.com,…) or unset it".into());
    }
    for party in &parties {
        let origin = Url::parse(party)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
            .filter(|u| u.path() == "/" && u.query().is_none() && !party.ends_with('/'));
        if origin.is_none() {
            return Err(format!(
                "CLERK_AUTHORIZED_PARTIES entry {party:?} is not an origin (scheme://host[:port], no path or trailing slash)"
            ));
        }
    }
    Ok(parties)
}

/// Where the JWKS document comes from.
enum JwksSource {
    Http {
        url: Url,
        client: reqwest::Client,
    },
    File {
        url: Url,
        path: PathBuf,
    },
    /// Fixed keys (demo mode): never reloaded.
    Static,
}

impl JwksSource {
    fn parse(jwks_url: &str) -> Result<Self, AuthError> {
        let url = Url::parse(jwks_url.trim())
            .map_err(|e| AuthError::Jwks(format!("CLERK_JWKS_URL is not a valid URL ({e})")))?;
        match url.scheme() {
            "https" => Ok(Self::Http {
                client: http_client(false)?,
                url,
            }),
            "http" if is_loopback(&url) => Ok(Self::Http {
                client: http_client(true)?,
                url,
            }),
            "http" => Err(AuthError::Jwks(format!(
                "CLERK_JWKS_URL ({}): http:// is only allowed for loopback hosts; use https://",
                display_url(&url)
            ))),
            "file" => match url.to_file_path() {
                Ok(path) => Ok(Self::File { url, path }),
                Err(()) => Err(AuthError::Jwks(format!(
                    "CLERK_JWKS_URL ({}) is not a usable local file path",
                    display_url(&url)
                ))),
            },
            other => Err(AuthError::Jwks(format!(
                "CLERK_JWKS_URL has unsupported scheme `{other}`; expected https://, \
                 http:// (loopback only) or file://"
            ))),
        }
    }

    /// Reads the JWKS document. Errors name `CLERK_JWKS_URL`.
    async fn fetch(&self) -> Result<String, AuthError> {
        match self {
            Self::Http { url, client } => fetch_http(client, url).await,
            Self::File { url, path } => {
                let fail = |problem: String| {
                    AuthError::Jwks(format!("CLERK_JWKS_URL ({}): {problem}", display_url(url)))
                };
                // Blocking read off the runtime (tokio's `fs` feature is not enabled).
                let path = path.clone();
                let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
                    .await
                    .map_err(|_| fail("reading the JWKS file was interrupted".to_owned()))?
                    .map_err(|e| fail(format!("cannot read the JWKS file: {e}")))?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err(fail(format!("JWKS is larger than {MAX_JWKS_BYTES} bytes")));
                }
                String::from_utf8(bytes).map_err(|_| fail("JWKS is not UTF-8".to_owned()))
            }
            Self::Static => Err(AuthError::Jwks(
                "the demo keys are never reloaded".to_owned(),
            )),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Http { url, .. } | Self::File { url, .. } => display_url(url),
            Self::Static => "demo key".to_owned(),
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The URL without credentials or query, for messages and logs.
fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    // Both fail only for URLs that cannot have credentials, which is fine.
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

fn http_client(loopback: bool) -> Result<reqwest::Client, AuthError> {
    let mut builder = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        // A redirect could lead to a plain-http or unexpected host.
        .redirect(reqwest::redirect::Policy::none());
    if loopback {
        // Never send a loopback request through a proxy from the environment.
        builder = builder.no_proxy();
    } else {
        builder = builder.https_only(true);
    }
    builder
        .build()
        .map_err(|e| AuthError::Jwks(format!("CLERK_JWKS_URL: cannot build the HTTP client: {e}")))
}

async fn fetch_http(client: &reqwest::Client, url: &Url) -> Result<String, AuthError> {
    let fail = |problem: String| {
        AuthError::Jwks(format!("CLERK_JWKS_URL ({}): {problem}", display_url(url)))
    };
    let mut response = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| fail(format!("cannot fetch the JWKS: {}", e.without_url())))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(format!("JWKS request answered HTTP {status}")));
    }
    let too_large = || fail(format!("JWKS is larger than {MAX_JWKS_BYTES} bytes"));
    if response
        .content_length()
        .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| fail(format!("cannot read the JWKS: {}", e.without_url())))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| fail("JWKS is not UTF-8".to_owned()))
}

type KeyMap = HashMap<String, DecodingKey>;

/// Extracts the usable RS256 verification keys of a JWKS document. Keys of other types or
/// algorithms, keys without `kid`, encryption keys and keys whose modulus is `excluded_n`
/// are skipped.
fn parse_jwks(document: &str, excluded_n: Option<&str>) -> Result<KeyMap, String> {
    let parsed: Value =
        serde_json::from_str(document).map_err(|_| "JWKS is not valid JSON".to_owned())?;
    let entries = parsed
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "JWKS has no `keys` array".to_owned())?;
    let mut keys = KeyMap::new();
    for entry in entries {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            tracing::debug!("skipping a JWKS entry that is not a recognised JWK");
            continue;
        };
        let Some(kid) = jwk.common.key_id.as_deref().filter(|kid| !kid.is_empty()) else {
            continue;
        };
        let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
            continue;
        };
        if jwk
            .common
            .key_algorithm
            .is_some_and(|alg| alg != KeyAlgorithm::RS256)
            || jwk
                .common
                .public_key_use
                .as_ref()
                .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            continue;
        }
        if excluded_n.is_some_and(|n| n == rsa.n) {
            tracing::warn!(
                kid,
                "the JWKS contains the public demo key; it is not trusted"
            );
            continue;
        }
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => {
                keys.insert(kid.to_owned(), key);
            }
            Err(_) => tracing::debug!(kid, "skipping a JWKS key that cannot be used"),
        }
    }
    if keys.is_empty() {
        return Err("JWKS contains no usable RS256 signing key (with `kid`)".to_owned());
    }
    Ok(keys)
}

/// Verifies Clerk session tokens against a cached JWKS (or the demo key).
pub struct Authenticator {
    issuer: String,
    validation: Validation,
    source: JwksSource,
    /// The trusted keys by `kid`; replaced as a whole on reload.
    keys: RwLock<Arc<KeyMap>>,
    /// Time of the last JWKS load; the lock also serialises reloads.
    last_refresh: Mutex<Instant>,
    refresh_interval: Duration,
    /// Number of JWKS reads, including the initial one (observability, tests).
    loads: AtomicU64,
    /// Modulus of the demo key, never trusted outside demo mode.
    excluded_n: Option<String>,
    /// Signing key, present only in demo mode.
    demo_key: Option<EncodingKey>,
    /// `CLERK_AUTHORIZED_PARTIES`: the origins whose tokens are accepted (`azp`); empty:
    /// any.
    authorized_parties: Vec<String>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("source", &self.source.describe())
            .field("demo", &self.is_demo())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// The production authenticator: loads the JWKS from `config.jwks_url` now, and fails
    /// (naming `CLERK_JWKS_URL`) if it cannot.
    pub async fn new(config: AuthConfig) -> Result<Self, AuthError> {
        Self::with_refresh_interval(config, REFRESH_INTERVAL).await
    }

    async fn with_refresh_interval(
        config: AuthConfig,
        refresh_interval: Duration,
    ) -> Result<Self, AuthError> {
        let issuer = config.issuer.trim();
        if issuer.is_empty() {
            return Err(AuthError::Jwks("CLERK_ISSUER must not be empty".to_owned()));
        }
        let source = JwksSource::parse(&config.jwks_url)?;
        let excluded_n = rsa_public_components(DEMO_SIGNING_KEY_PEM)?.0;
        let document = source.fetch().await?;
        let keys = parse_jwks(&document, Some(&excluded_n)).map_err(|problem| {
            AuthError::Jwks(format!("CLERK_JWKS_URL ({}): {problem}", source.describe()))
        })?;
        tracing::info!(source = %source.describe(), keys = keys.len(), "loaded the JWKS");
        let auth = Self::assemble(
            issuer,
            source,
            keys,
            refresh_interval,
            Some(excluded_n),
            None,
        );
        auth.loads.store(1, Ordering::Relaxed);
        Ok(auth)
    }

    /// The demo authenticator: trusts only the committed development key
    /// (`kid` [`DEMO_KEY_ID`], issuer [`DEMO_ISSUER`]) and can sign demo tokens.
    pub fn demo() -> Result<Self, AuthError> {
        let signing = EncodingKey::from_rsa_pem(DEMO_SIGNING_KEY_PEM.as_bytes())
            .map_err(|_| AuthError::Jwks("the demo signing key is not a valid RSA key".into()))?;
        let document = jwks_for(DEMO_SIGNING_KEY_PEM, DEMO_KEY_ID)?.to_string();
        let keys = parse_jwks(&document, None).map_err(AuthError::Jwks)?;
        Ok(Self::assemble(
            DEMO_ISSUER,
            JwksSource::Static,
            keys,
            REFRESH_INTERVAL,
            None,
            Some(signing),
        ))
    }

    fn assemble(
        issuer: &str,
        source: JwksSource,
        keys: KeyMap,
        refresh_interval: Duration,
        excluded_n: Option<String>,
        demo_key: Option<EncodingKey>,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Clerk session tokens carry `azp`, not `aud`; the audience is not checked.
        validation.validate_aud = false;
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        Self {
            issuer: issuer.to_owned(),
            validation,
            source,
            keys: RwLock::new(Arc::new(keys)),
            last_refresh: Mutex::new(Instant::now()),
            refresh_interval,
            loads: AtomicU64::new(0),
            excluded_n,
            demo_key,
            authorized_parties: Vec::new(),
        }
    }

    /// Accepts only tokens whose `azp` (the origin the session token was made for) is one of
    /// `parties`, as Clerk's backend SDK does with `authorizedParties`: a token minted for
    /// another site using the same Clerk instance is refused. A token without `azp` (not a
    /// browser session's) is checked as the SDK does: not refused for that alone.
    #[must_use]
    pub fn with_authorized_parties(mut self, parties: Vec<String>) -> Self {
        self.authorized_parties = parties;
        self
    }

    /// Whether this is the demo authenticator.
    pub fn is_demo(&self) -> bool {
        self.demo_key.is_some()
    }

    /// Verifies a session token and returns who it identifies.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_until(token).await.map(|(identity, _)| identity)
    }

    /// [`Authenticator::verify`], with the last time the token is acceptable (its `exp`
    /// plus the leeway), for a caller that keeps the result (the API's token cache,
    /// [`super::context::CallerCache`]).
    pub async fn verify_until(&self, token: &str) -> Result<(Identity, SystemTime), AuthError> {
        let kid = checked_key_id(token)?;
        let key = match self.cached_key(&kid).await {
            Some(key) => key,
            None => self.refresh_for(&kid).await.ok_or(AuthError::UnknownKey)?,
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &self.validation)
            .map_err(map_jwt_error)?;
        check_authorized_party(&data.claims, &self.authorized_parties)?;
        // `exp` is a required claim the library has just checked to be a number.
        let exp = data
            .claims
            .get("exp")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let until = UNIX_EPOCH + Duration::from_secs(exp.max(0.0) as u64 + LEEWAY_SECS);
        Ok((identity_from_claims(&data.claims, &self.issuer)?, until))
    }

    async fn cached_key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().await.get(kid).cloned()
    }

    /// Reloads the JWKS for an unknown `kid`, unless the last load is more recent than the
    /// refresh interval. Concurrent callers wait for one reload instead of each starting one.
    async fn refresh_for(&self, kid: &str) -> Option<DecodingKey> {
        if matches!(self.source, JwksSource::Static) {
            return None;
        }
        let mut last_refresh = self.last_refresh.lock().await;
        // Another request may have reloaded while this one waited.
        if let Some(key) = self.cached_key(kid).await {
            return Some(key);
        }
        if last_refresh.elapsed() < self.refresh_interval {
            tracing::debug!("unknown token key id; JWKS reloaded recently, not reloading");
            return None;
        }
        *last_refresh = Instant::now();
        self.loads.fetch_add(1, Ordering::Relaxed);
        let loaded = match self.source.fetch().await {
            Ok(document) => parse_jwks(&document, self.excluded_n.as_deref()),
            Err(e) => Err(e.to_string()),
        };
        match loaded {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "reloaded the JWKS for an unknown key id");
                let key = keys.get(kid).cloned();
                *self.keys.write().await = Arc::new(keys);
                key
            }
            Err(problem) => {
                tracing::warn!(%problem, "JWKS reload failed; keeping the cached keys");
                None
            }
        }
    }

    /// Extracts the token of an `Authorization: Bearer <token>` header (scheme
    /// case-insensitive).
    pub fn bearer(header_value: Option<&HeaderValue>) -> Result<&str, AuthError> {
        let value = header_value.ok_or(AuthError::MissingToken)?;
        let value = value
            .to_str()
            .map_err(|_| AuthError::MalformedHeader)?
            .trim();
        let (scheme, token) = value
            .split_once([' ', '\t'])
            .ok_or(AuthError::MalformedHeader)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer")
            || token.is_empty()
            || token.contains(|c: char| c.is_ascii_whitespace())
        {
            return Err(AuthError::MalformedHeader);
        }
        Ok(token)
    }

    /// Signs a demo token (v2 claims, organization in `o.id`) valid for `ttl`. Fails unless
    /// this is the demo authenticator.
    pub fn sign_demo_token(
        &self,
        clerk_user_id: &str,
        org_id: &str,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let Some(key) = &self.demo_key else {
            return Err(invalid("demo tokens can only be signed in demo mode"));
        };
        if clerk_user_id.is_empty() || org_id.is_empty() {
            return Err(invalid("demo tokens need a user id and an organization id"));
        }
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({
            "iss": DEMO_ISSUER,
            "sub": clerk_user_id,
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(ttl.as_secs()),
            "v": 2,
            "o": { "id": org_id },
        });
        sign_with(key, DEMO_KEY_ID, &claims)
    }

    #[cfg(test)]
    fn load_count(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Changes whenever the JWKS is read again: a verification kept from an earlier
    /// generation may rest on a key the new document withdrew (the API's token cache drops
    /// it, [`super::context::CallerCache`]).
    pub fn key_generation(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }
}

/// Checks the token's size and header before any key lookup: `alg` must be exactly
/// `RS256`, `kid` must be present, and no `crit` extensions. Returns the `kid`.
fn checked_key_id(token: &str) -> Result<String, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid("token is too large"));
    }
    let malformed = || invalid("token is malformed");
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let header = URL_SAFE_NO_PAD.decode(header).map_err(|_| malformed())?;
    let header: Map<String, Value> = serde_json::from_slice(&header).map_err(|_| malformed())?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(invalid("token algorithm is not accepted"));
    }
    if header.contains_key("crit") {
        return Err(invalid("token uses unsupported header extensions"));
    }
    match header.get("kid").and_then(Value::as_str) {
        Some(kid) if !kid.is_empty() => Ok(kid.to_owned()),
        _ => Err(invalid("token has no key id")),
    }
}

fn map_jwt_error(error: jsonwebtoken::errors::Error) -> AuthError {
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => invalid("token signature is invalid"),
        ErrorKind::ImmatureSignature => invalid("token is not valid yet"),
        ErrorKind::InvalidIssuer => invalid("token issuer is not accepted"),
        ErrorKind::InvalidAudience => invalid("token audience is not accepted"),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => invalid("token algorithm is not accepted"),
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "sub" => invalid("token has no subject"),
            "exp" => invalid("token has no expiry"),
            "iss" => invalid("token has no issuer"),
            _ => invalid("token lacks a required claim"),
        },
        ErrorKind::InvalidClaimFormat(_) => invalid("token has a malformed time claim"),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => invalid("token is malformed"),
        other => {
            tracing::warn!(error = ?other, "token verification failed unexpectedly");
            invalid("token could not be verified")
        }
    }
}

fn identity_from_claims(claims: &Map<String, Value>, issuer: &str) -> Result<Identity, AuthError> {
    // The library accepts an `iss` array containing the issuer; require the exact string.
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(invalid("token issuer is not accepted"));
    }
    let clerk_user_id = match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() => sub.to_owned(),
        _ => return Err(invalid("token has no subject")),
    };
    let non_empty = |value: Option<&Value>| {
        value
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    // v2 compact claim `o.id` wins over v1 `org_id`.
    let org_id = non_empty(claims.get("o").and_then(|o| o.get("id")))
        .or_else(|| non_empty(claims.get("org_id")));
    Ok(Identity {
        clerk_user_id,
        org_id,
    })
}

fn sign_with(key: &EncodingKey, kid: &str, claims: &Value) -> Result<String, AuthError> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key)
        .map_err(|_| AuthError::Jwks("the token could not be signed".to_owned()))
}

fn rsa_signing_key(private_key_pem: &str) -> Result<EncodingKey, AuthError> {
    EncodingKey::from_rsa_pem(private_key_pem.as_bytes())
        .map_err(|_| AuthError::Jwks("the signing key is not a PEM RSA private key".to_owned()))
}

/// Base64url `n` and `e` of an RSA private key's public part.
fn rsa_public_components(private_key_pem: &str) -> Result<(String, String), AuthError> {
    let key = rsa_signing_key(private_key_pem)?;
    let jwk = Jwk::from_encoding_key(&key, Algorithm::RS256)
        .map_err(|_| AuthError::Jwks("the signing key is not a usable RSA key".to_owned()))?;
    match jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => Ok((rsa.n, rsa.e)),
        _ => Err(AuthError::Jwks(
            "the signing key is not an RSA key".to_owned(),
        )),
    }
}

/// Signs `claims` as an RS256 JWT with `kid` in the header (tests, demo tooling).
pub fn sign_rs256(private_key_pem: &str, kid: &str, claims: &Value) -> Result<String, AuthError> {
    sign_with(&rsa_signing_key(private_key_pem)?, kid, claims)
}

/// The public JWKS document (`{"keys":[{"kty":"RSA","use":"sig","alg":"RS256",…}]}`) of an
/// RSA private key (PKCS#1 or PKCS#8 PEM).
pub fn jwks_for(private_key_pem: &str, kid: &str) -> Result<Value, AuthError> {
    let (n, e) = rsa_public_components(private_key_pem)?;
    Ok(json!({
        "keys": [{ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e }]
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_KEY: &str = include_str!("../../tests/fixtures/test-signing-key.pem");
    const OTHER_KEY: &str = include_str!("../../tests/fixtures/other-signing-key.pem");
    const ISSUER: &str = "https://clerk.capliquify.test";
    const KID: &str = "ins_test";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "sub": "user_123",
            "azp": "https://app.capliquify.test",
            "iat": now(),
            "nbf": now() - 10,
            "exp": now() + 300,
        })
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        claims.as_object_mut().unwrap().remove(key);
        claims
    }

    /// Static authenticator trusting the test key under `KID`.
    fn authenticator() -> Authenticator {
        let keys = parse_jwks(&jwks_for(TEST_KEY, KID).unwrap().to_string(), None).unwrap();
        Authenticator::assemble(
            ISSUER,
            JwksSource::Static,
            keys,
            REFRESH_INTERVAL,
            None,
            None,
        )
    }

    async fn verify(claims: &Value) -> Result<Identity, AuthError> {
        authenticator()
            .verify(&sign_rs256(TEST_KEY, KID, claims).unwrap())
            .await
    }

    fn assert_invalid(result: Result<Identity, AuthError>, reason: &str) {
        match result {
            Err(AuthError::Invalid(got)) => assert_eq!(got, reason),
            other => panic!("expected Invalid({reason}), got {other:?}"),
        }
    }

    /// A unique scratch file path.
    fn temp_path(name: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("capliquify-auth-{}-{n}-{name}", std::process::id()))
    }

    fn write_jwks(path: &PathBuf, keys: &[(&str, &str)]) {
        let keys: Vec<Value> = keys
            .iter()
            .map(|(pem, kid)| jwks_for(pem, kid).unwrap()["keys"][0].clone())
            .collect();
        std::fs::write(path, json!({ "keys": keys }).to_string()).unwrap();
    }

    fn file_config(path: &PathBuf) -> AuthConfig {
        AuthConfig {
            jwks_url: Url::from_file_path(path).unwrap().to_string(),
            issuer: ISSUER.to_owned(),
        }
    }

    #[tokio::test]
    async fn tokens_for_another_origin_are_refused_when_parties_are_configured() {
        let auth = authenticator().with_authorized_parties(vec![
            "https://app.capliquify.test".into(),
            "http://localhost:3000".into(),
        ]);
        let verify_with = |claims: Value| {
            let token = sign_rs256(TEST_KEY, KID, &claims).unwrap();
            let auth = &auth;
            async move { auth.verify(&token).await }
        };
        assert!(verify_with(claims()).await.is_ok());
        assert!(
            verify_with(with(claims(), "azp", json!("http://localhost:3000")))
                .await
                .is_ok()
        );
        for azp in [
            json!("https://evil.example"),
            json!("https://app.capliquify.test/"),
            json!("https://app.capliquify.test.evil.example"),
            json!(42),
        ] {
            assert_invalid(
                verify_with(with(claims(), "azp", azp)).await,
                "the token was issued for another origin (azp)",
            );
        }
        // Without `azp`, as Clerk's SDK: accepted.
        assert!(verify_with(without(claims(), "azp")).await.is_ok());
        // Unconfigured: any origin.
        assert!(
            verify(&with(claims(), "azp", json!("https://evil.example")))
                .await
                .is_ok()
        );
    }

    #[test]
    fn authorized_parties_must_be_origins() {
        assert_eq!(
            parse_authorized_parties(" https://a.example, http://localhost:3000 ").unwrap(),
            ["https://a.example", "http://localhost:3000"]
        );
        for bad in [
            "",
            " , ",
            "a.example",
            "https://a.example/",
            "https://a.example/app",
            "ftp://a.example",
        ] {
            let err = parse_authorized_parties(bad).unwrap_err();
            assert!(err.contains("CLERK_AUTHORIZED_PARTIES"), "{bad:?}: {err}");
        }
    }

    #[tokio::test]
    async fn valid_token_with_v1_org_id() {
        let identity = verify(&with(claims(), "org_id", json!("org_v1")))
            .await
            .unwrap();
        assert_eq!(
            identity,
            Identity {
                clerk_user_id: "user_123".into(),
                org_id: Some("org_v1".into())
            }
        );
    }

    #[tokio::test]
    async fn valid_token_with_v2_compact_org_claim() {
        let v2 = with(
            claims(),
            "o",
            json!({ "id": "org_v2", "rol": "admin", "slg": "acme" }),
        );
        let identity = verify(&with(v2.clone(), "v", json!(2))).await.unwrap();
        assert_eq!(identity.org_id.as_deref(), Some("org_v2"));
        // `o.id` wins over `org_id`.
        let both = with(v2, "org_id", json!("org_v1"));
        assert_eq!(
            verify(&both).await.unwrap().org_id.as_deref(),
            Some("org_v2")
        );
    }

    #[tokio::test]
    async fn token_without_organization_has_none() {
        let identity = verify(&claims()).await.unwrap();
        assert_eq!(identity.clerk_user_id, "user_123");
        assert_eq!(identity.org_id, None);
        let empty = with(claims(), "o", json!({ "rol": "admin" }));
        assert_eq!(verify(&empty).await.unwrap().org_id, None);
    }

    #[tokio::test]
    async fn expired_token_is_rejected_after_leeway() {
        let expired = with(claims(), "exp", json!(now() - 60));
        assert!(matches!(verify(&expired).await, Err(AuthError::Expired)));
        // Within the 5 s leeway it still passes.
        let just_expired = with(claims(), "exp", json!(now() - 2));
        assert!(verify(&just_expired).await.is_ok());
        assert_eq!(AuthError::Expired.to_string(), "token expired");
    }

    #[tokio::test]
    async fn not_yet_valid_token_is_rejected() {
        let early = with(claims(), "nbf", json!(now() + 120));
        assert_invalid(verify(&early).await, "token is not valid yet");
    }

    #[tokio::test]
    async fn wrong_issuer_is_rejected() {
        let other = with(claims(), "iss", json!("https://evil.example"));
        assert_invalid(verify(&other).await, "token issuer is not accepted");
        let array = with(claims(), "iss", json!([ISSUER, "https://evil.example"]));
        assert_invalid(verify(&array).await, "token issuer is not accepted");
        assert_invalid(
            verify(&without(claims(), "iss")).await,
            "token has no issuer",
        );
    }

    #[tokio::test]
    async fn token_signed_by_another_key_with_the_same_kid_is_rejected() {
        let forged = sign_rs256(OTHER_KEY, KID, &claims()).unwrap();
        assert_invalid(
            authenticator().verify(&forged).await,
            "token signature is invalid",
        );
    }

    #[tokio::test]
    async fn unknown_kid_is_rejected() {
        let token = sign_rs256(TEST_KEY, "ins_other", &claims()).unwrap();
        assert!(matches!(
            authenticator().verify(&token).await,
            Err(AuthError::UnknownKey)
        ));
    }

    #[tokio::test]
    async fn missing_kid_is_rejected() {
        let key = EncodingKey::from_rsa_pem(TEST_KEY.as_bytes()).unwrap();
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims(), &key).unwrap();
        assert_invalid(authenticator().verify(&token).await, "token has no key id");
    }

    #[tokio::test]
    async fn alg_none_and_hs256_are_rejected() {
        let auth = authenticator();
        let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let header = encode(&json!({ "alg": "none", "kid": KID, "typ": "JWT" }));
        let none = format!("{header}.{}.", encode(&claims()));
        assert_invalid(auth.verify(&none).await, "token algorithm is not accepted");

        // Algorithm confusion: HMAC keyed with the public key material.
        let mut hs_header = Header::new(Algorithm::HS256);
        hs_header.kid = Some(KID.to_owned());
        let secret = jwks_for(TEST_KEY, KID).unwrap().to_string();
        let hs = jsonwebtoken::encode(
            &hs_header,
            &claims(),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        assert_invalid(auth.verify(&hs).await, "token algorithm is not accepted");

        // RS512 with the right key is still not RS256.
        let mut rs512 = Header::new(Algorithm::RS512);
        rs512.kid = Some(KID.to_owned());
        let key = EncodingKey::from_rsa_pem(TEST_KEY.as_bytes()).unwrap();
        let token = jsonwebtoken::encode(&rs512, &claims(), &key).unwrap();
        assert_invalid(auth.verify(&token).await, "token algorithm is not accepted");
    }

    #[tokio::test]
    async fn missing_or_empty_subject_is_rejected() {
        assert_invalid(
            verify(&without(claims(), "sub")).await,
            "token has no subject",
        );
        assert_invalid(
            verify(&with(claims(), "sub", json!(""))).await,
            "token has no subject",
        );
    }

    #[tokio::test]
    async fn missing_expiry_is_rejected() {
        assert_invalid(
            verify(&without(claims(), "exp")).await,
            "token has no expiry",
        );
    }

    #[tokio::test]
    async fn garbage_is_malformed() {
        let auth = authenticator();
        for token in ["", "abc", "a.b", "a.b.c.d", "!!.e30.sig"] {
            assert_invalid(auth.verify(token).await, "token is malformed");
        }
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_invalid(auth.verify(&huge).await, "token is too large");
    }

    #[tokio::test]
    async fn file_jwks_is_loaded() {
        let path = temp_path("jwks.json");
        write_jwks(&path, &[(TEST_KEY, KID)]);
        let auth = Authenticator::new(file_config(&path)).await.unwrap();
        assert!(!auth.is_demo());
        let token = sign_rs256(TEST_KEY, KID, &with(claims(), "org_id", json!("org_1"))).unwrap();
        assert_eq!(
            auth.verify(&token).await.unwrap().org_id.as_deref(),
            Some("org_1")
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn unusable_jwks_at_startup_names_the_setting() {
        let missing = temp_path("missing.json");
        let err = Authenticator::new(file_config(&missing)).await.unwrap_err();
        assert!(
            matches!(&err, AuthError::Jwks(m) if m.contains("CLERK_JWKS_URL")),
            "{err}"
        );

        let empty = temp_path("empty.json");
        std::fs::write(&empty, r#"{"keys":[]}"#).unwrap();
        let err = Authenticator::new(file_config(&empty)).await.unwrap_err();
        assert!(
            matches!(&err, AuthError::Jwks(m) if m.contains("CLERK_JWKS_URL")),
            "{err}"
        );
        std::fs::remove_file(&empty).unwrap();
    }

    #[tokio::test]
    async fn unknown_kid_refresh_is_rate_limited() {
        let path = temp_path("rotating.json");
        write_jwks(&path, &[(TEST_KEY, KID)]);
        let auth = Authenticator::new(file_config(&path)).await.unwrap();
        assert_eq!(auth.load_count(), 1);

        // A key added right after startup is not picked up: the startup load is too recent.
        write_jwks(&path, &[(TEST_KEY, KID), (OTHER_KEY, "ins_new")]);
        let new_token = sign_rs256(OTHER_KEY, "ins_new", &claims()).unwrap();
        assert!(matches!(
            auth.verify(&new_token).await,
            Err(AuthError::UnknownKey)
        ));
        assert_eq!(auth.load_count(), 1);

        // Once the interval has passed, the unknown kid triggers one reload and is accepted.
        let generation = auth.key_generation();
        *auth.last_refresh.lock().await -= REFRESH_INTERVAL + Duration::from_secs(1);
        assert_eq!(
            auth.verify(&new_token).await.unwrap().clerk_user_id,
            "user_123"
        );
        assert_eq!(auth.load_count(), 2);
        assert_ne!(
            auth.key_generation(),
            generation,
            "a reload is a new generation: the API's token cache drops what it verified before"
        );
        // The already-known key keeps working without reloads.
        auth.verify(&sign_rs256(TEST_KEY, KID, &claims()).unwrap())
            .await
            .unwrap();
        assert_eq!(auth.load_count(), 2);

        // A second reload within the interval does not re-read, whatever the kid.
        write_jwks(&path, &[(TEST_KEY, KID), (OTHER_KEY, "ins_newer")]);
        let newer = sign_rs256(OTHER_KEY, "ins_newer", &claims()).unwrap();
        for _ in 0..3 {
            assert!(matches!(
                auth.verify(&newer).await,
                Err(AuthError::UnknownKey)
            ));
        }
        let random = sign_rs256(OTHER_KEY, "ins_random", &claims()).unwrap();
        assert!(matches!(
            auth.verify(&random).await,
            Err(AuthError::UnknownKey)
        ));
        assert_eq!(auth.load_count(), 2);

        // With a zero interval every unknown kid reloads (the interval is what limits it).
        let eager = Authenticator::with_refresh_interval(file_config(&path), Duration::ZERO)
            .await
            .unwrap();
        write_jwks(&path, &[(TEST_KEY, KID), (OTHER_KEY, "ins_eager")]);
        let eager_token = sign_rs256(OTHER_KEY, "ins_eager", &claims()).unwrap();
        assert!(eager.verify(&eager_token).await.is_ok());
        assert_eq!(eager.load_count(), 2);
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn failed_reload_keeps_the_cached_keys() {
        let path = temp_path("vanishing.json");
        write_jwks(&path, &[(TEST_KEY, KID)]);
        let auth = Authenticator::with_refresh_interval(file_config(&path), Duration::ZERO)
            .await
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let unknown = sign_rs256(TEST_KEY, "ins_gone", &claims()).unwrap();
        assert!(matches!(
            auth.verify(&unknown).await,
            Err(AuthError::UnknownKey)
        ));
        auth.verify(&sign_rs256(TEST_KEY, KID, &claims()).unwrap())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn jwks_url_schemes() {
        for url in [
            "http://example.com/jwks.json",
            "http://10.0.0.1/jwks",
            "ftp://localhost/x",
        ] {
            let config = AuthConfig {
                jwks_url: url.to_owned(),
                issuer: ISSUER.to_owned(),
            };
            let err = Authenticator::new(config).await.unwrap_err();
            assert!(
                matches!(&err, AuthError::Jwks(m) if m.contains("CLERK_JWKS_URL")),
                "{err}"
            );
        }
        for url in [
            "http://127.0.0.1:1/jwks",
            "http://[::1]/jwks",
            "http://localhost/jwks",
        ] {
            assert!(
                matches!(JwksSource::parse(url), Ok(JwksSource::Http { .. })),
                "{url}"
            );
        }
        assert!(matches!(
            JwksSource::parse("https://clerk.example.com/.well-known/jwks.json"),
            Ok(JwksSource::Http { .. })
        ));
        let empty_issuer = AuthConfig {
            jwks_url: "https://clerk.example.com/jwks".into(),
            issuer: " ".into(),
        };
        assert!(matches!(
            Authenticator::new(empty_issuer).await,
            Err(AuthError::Jwks(_))
        ));
    }

    #[tokio::test]
    async fn http_jwks_on_loopback_is_fetched() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = jwks_for(TEST_KEY, KID).unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 4096];
            let _ = stream.read(&mut request).await.unwrap();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
        });
        let config = AuthConfig {
            jwks_url: format!("http://{addr}/jwks.json"),
            issuer: ISSUER.to_owned(),
        };
        let auth = Authenticator::new(config).await.unwrap();
        server.await.unwrap();
        auth.verify(&sign_rs256(TEST_KEY, KID, &claims()).unwrap())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn demo_mode_signs_and_verifies_its_own_tokens() {
        let demo = Authenticator::demo().unwrap();
        assert!(demo.is_demo());
        let token = demo
            .sign_demo_token("user_demo", "org_demo", Duration::from_secs(60))
            .unwrap();
        let identity = demo.verify(&token).await.unwrap();
        assert_eq!(
            identity,
            Identity {
                clerk_user_id: "user_demo".into(),
                org_id: Some("org_demo".into())
            }
        );
        // Demo trusts only the demo key.
        let foreign = sign_rs256(
            TEST_KEY,
            DEMO_KEY_ID,
            &with(claims(), "iss", json!(DEMO_ISSUER)),
        );
        assert_invalid(
            demo.verify(&foreign.unwrap()).await,
            "token signature is invalid",
        );
        assert!(
            demo.sign_demo_token("", "org_demo", Duration::from_secs(60))
                .is_err()
        );
    }

    #[tokio::test]
    async fn production_never_trusts_the_demo_key() {
        assert!(
            authenticator()
                .sign_demo_token("u", "o", Duration::from_secs(60))
                .is_err()
        );

        // Even when the configured JWKS publishes the demo key, it is dropped.
        let path = temp_path("with-demo.json");
        write_jwks(
            &path,
            &[(DEMO_SIGNING_KEY_PEM, DEMO_KEY_ID), (TEST_KEY, KID)],
        );
        let auth = Authenticator::new(file_config(&path)).await.unwrap();
        let demo_token = sign_rs256(
            DEMO_SIGNING_KEY_PEM,
            DEMO_KEY_ID,
            &with(claims(), "iss", json!(ISSUER)),
        )
        .unwrap();
        assert!(matches!(
            auth.verify(&demo_token).await,
            Err(AuthError::UnknownKey)
        ));

        write_jwks(&path, &[(DEMO_SIGNING_KEY_PEM, DEMO_KEY_ID)]);
        assert!(matches!(
            Authenticator::new(file_config(&path)).await,
            Err(AuthError::Jwks(_))
        ));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn bearer_header_parsing() {
        let parse = |v: &str| {
            Authenticator::bearer(Some(&HeaderValue::from_str(v).unwrap())).map(str::to_owned)
        };
        assert_eq!(parse("Bearer abc.def.ghi").unwrap(), "abc.def.ghi");
        assert_eq!(parse("bearer   abc ").unwrap(), "abc");
        assert_eq!(parse("BEARER abc").unwrap(), "abc");
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Basic abc",
            "Bearerabc",
            "Bearer a b",
            "Token abc",
        ] {
            assert!(
                matches!(parse(bad), Err(AuthError::MalformedHeader)),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Authenticator::bearer(None),
            Err(AuthError::MissingToken)
        ));
    }

    #[test]
    fn jwks_for_builds_the_public_document() {
        let jwks = jwks_for(TEST_KEY, KID).unwrap();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], "RS256");
        assert_eq!(key["kid"], KID);
        assert_eq!(key["e"], "AQAB");
        // 2048-bit modulus: 256 bytes, 342 base64url characters.
        assert_eq!(key["n"].as_str().unwrap().len(), 342);
        assert!(!jwks.to_string().contains("\"d\""));
        assert!(jwks_for("not a key", KID).is_err());
    }
}
