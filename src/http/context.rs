//! Who is calling: the middleware that turns a Clerk session token into a [`Caller`] (the
//! tenant's typed scope plus the member's role) and applies the tenant-status and billing
//! gates before any handler runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::AppState;
use super::auth::{AuthError, Authenticator, Identity};
use super::error::ApiError;
use crate::access::{Act, Role};
use crate::billing::{Features, SubscriptionStatus, Tier};
use crate::db::{ClusterName, TenantScope};
use crate::tenancy::{SchemaName, TenantSlug};

/// The tenant a request works in, as the registry describes it.
#[derive(Debug, Clone)]
pub struct TenantAccess {
    pub scope: TenantScope,
    pub name: String,
    pub tier: Tier,
    pub status: SubscriptionStatus,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub max_users: Option<i32>,
    pub max_entities: Option<i32>,
    pub features: Features,
    /// The tenant is being moved to another cluster: its data is read-only meanwhile.
    pub moving: bool,
}

/// The member making the request.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: Uuid,
    pub clerk_user_id: String,
    pub role: Role,
}

/// An authenticated caller, inserted into the request by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: Arc<TenantAccess>,
    pub member: Member,
    /// Where the request came from (for the audit trail).
    pub client: Client,
}

/// The peer address and user agent of a request.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

impl Caller {
    /// The caller as the audit trail records it.
    pub fn actor(&self) -> crate::audit::Actor {
        crate::audit::Actor::Member {
            user_id: self.member.id,
            clerk_user_id: self.member.clerk_user_id.clone(),
            ip: self.client.ip,
            user_agent: self.client.user_agent.clone(),
        }
    }

    /// Refuses with 403 unless the member's role allows `act`.
    pub fn require(&self, act: Act) -> Result<(), ApiError> {
        if self.member.role.allows(act) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "insufficient_role",
                format!("the {} role may not do this", self.member.role.as_str()),
            ))
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    /// The caller [`authenticate`] put into the request; only routes behind that layer
    /// may take it (a route outside it is a bug, answered 500).
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::internal("a route outside the authentication layer asked for the caller")
        })
    }
}

/// What a write refused during a move is told to wait (`Retry-After`, seconds): small
/// tenants move in well under it.
pub const MOVE_RETRY_AFTER_SECS: u32 = 5;

/// Billing standing, derived from the subscription status and the trial's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Good,
    /// Payment failed; still allowed, with a warning header.
    PastDue,
    /// Trial over without a subscription, or subscription cancelled: reads only.
    ReadOnly(&'static str),
}

fn standing(
    status: SubscriptionStatus,
    trial_ends_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Standing {
    match status {
        SubscriptionStatus::Trial if trial_ends_at.is_some_and(|end| end <= now) => {
            Standing::ReadOnly("the free trial has ended; subscribe to make changes")
        }
        SubscriptionStatus::Cancelled => {
            Standing::ReadOnly("the subscription is cancelled; subscribe again to make changes")
        }
        SubscriptionStatus::PastDue => Standing::PastDue,
        _ => Standing::Good,
    }
}

#[derive(sqlx::FromRow)]
struct AccessRow {
    id: Uuid,
    slug: String,
    name: String,
    schema_name: String,
    subscription_tier: Tier,
    subscription_status: SubscriptionStatus,
    trial_ends_at: Option<DateTime<Utc>>,
    max_users: Option<i32>,
    max_entities: Option<i32>,
    features: sqlx::types::Json<Features>,
    deleted_at: Option<DateTime<Utc>>,
    cluster: String,
    moving_to: Option<String>,
    user_id: Option<Uuid>,
    role: Option<Role>,
    over_plan_limit: Option<bool>,
}

/// The tenant of an organization (`$1`) and the user's (`$2`) live membership in it: the
/// one query authentication adds to a request.
pub const RESOLVE_CALLER_SQL: &str =
        "SELECT t.id, t.slug::text, t.name::text, t.schema_name::text, t.subscription_tier,
                t.subscription_status, t.trial_ends_at, t.max_users, t.max_entities, t.features,
                t.deleted_at, t.cluster, t.moving_to, u.id AS user_id, u.role, u.over_plan_limit
           FROM public.tenants t
           LEFT JOIN public.users u ON u.tenant_id = t.id AND u.clerk_user_id = $2 AND u.removed_at IS NULL
          WHERE t.clerk_organization_id = $1";

/// Resolves the caller in one query: the tenant of the token's organization and the
/// user's membership in it.
async fn resolve(pool: &PgPool, clerk_user_id: &str, org_id: &str) -> Result<Caller, ApiError> {
    let row: Option<AccessRow> = sqlx::query_as(RESOLVE_CALLER_SQL)
        .bind(org_id)
        .bind(clerk_user_id)
        .fetch_optional(pool)
        .await?;
    let row = row.ok_or_else(|| {
        ApiError::forbidden(
            "unknown_organization",
            "the token's organization has no CapLiquify tenant",
        )
    })?;
    if row.deleted_at.is_some() {
        return Err(ApiError::forbidden(
            "tenant_deleted",
            "this tenant has been deleted",
        ));
    }
    if row.subscription_status == SubscriptionStatus::Suspended {
        return Err(ApiError::forbidden(
            "tenant_suspended",
            "this tenant is suspended",
        ));
    }
    let (Some(user_id), Some(role)) = (row.user_id, row.role) else {
        return Err(ApiError::forbidden(
            "not_a_member",
            "the user is not a member of this tenant",
        ));
    };
    if row.over_plan_limit == Some(true) {
        return Err(ApiError::forbidden(
            "plan_limit_reached",
            "this tenant has more members than its plan allows; an owner can upgrade the plan",
        ));
    }
    let scope = TenantScope {
        id: row.id,
        slug: TenantSlug::parse(&row.slug).map_err(ApiError::internal)?,
        schema: SchemaName::parse(&row.schema_name).map_err(ApiError::internal)?,
        cluster: ClusterName::parse(&row.cluster).map_err(ApiError::internal)?,
    };
    Ok(Caller {
        tenant: Arc::new(TenantAccess {
            scope,
            name: row.name,
            tier: row.subscription_tier,
            status: row.subscription_status,
            trial_ends_at: row.trial_ends_at,
            max_users: row.max_users,
            max_entities: row.max_entities,
            features: row.features.0,
            moving: row.moving_to.is_some(),
        }),
        member: Member {
            id: user_id,
            clerk_user_id: clerk_user_id.to_owned(),
            role,
        },
        client: Client::default(),
    })
}

/// A short-lived memory of resolved callers, so that a burst of requests from one member
/// costs one lookup query, and of verified session tokens, so that each token costs one
/// signature check (RS256 is ~26 µs of CPU, the largest single step of a cached request).
/// Only successes are kept. A caller is kept for `ttl` (default 2 s,
/// `CAPLIQUIFY_AUTH_CACHE_MS`; 0 turns both off): a suspension, removal or role change takes
/// effect within that time. While this instance hears the database's announcements of
/// tenant and membership changes ([`super::caller_changes`], public migration 0023), a
/// caller is kept up to [`CALLER_TTL_HEARD`] instead: an announcement forgets its tenant's
/// callers at once, and the longer keeping holds only while something (a change or the
/// listener's own heartbeat) was heard within `ttl`, so that a change still applies within
/// `ttl` when the listener is down or its connection silently gone. A lookup during which
/// a change was heard is kept only `ttl` (it may have read the row before the change).
/// A token's verification is kept longer, for [`TOKEN_TTL`] (or
/// `ttl` if longer), because nothing in the database can change it: it is never taken past
/// the token's own expiry, and it is dropped when the JWKS is read again (a key withdrawn
/// from the JWKS stops working as soon as the authenticator would notice it without the
/// cache). Over thousands of tenants a member's requests rarely come within 2 s of each
/// other but often within a minute (docs/benchmarks.md). Tokens are kept by their
/// SHA-256 digest, not their text. Bounded: when full, expired entries go, then everything.
pub struct CallerCache {
    ttl: Duration,
    /// How long a caller may be kept while changes are heard.
    heard_ttl: Duration,
    token_ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<(String, String), KeptCaller>>,
    tokens: Mutex<HashMap<TokenKey, VerifiedToken>>,
    /// Announced changes heard so far, of any tenant.
    changes: AtomicU64,
    /// Bumped whenever announcements may have been missed (the listener lost its
    /// connection, or heard nothing for `ttl`): callers kept before are kept only `ttl`.
    epoch: AtomicU64,
    /// When the listener last heard anything, in ms since `born` (0: not listening).
    heard_at_ms: AtomicU64,
    born: Instant,
}

/// How long a resolved caller may be kept while the instance hears announced changes: the
/// life of a session token, so that a member's requests within it cost one lookup.
pub const CALLER_TTL_HEARD: Duration = Duration::from_secs(60);

/// A kept caller: when it was looked up, whether it may be kept [`CALLER_TTL_HEARD`] (in
/// the listener's `epoch`), and the caller.
struct KeptCaller {
    stored: Instant,
    heard: Option<u64>,
    caller: Caller,
}

/// What the cache knew of announcements when a lookup began ([`CallerCache::ticket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    listening: bool,
    epoch: u64,
    changes: u64,
}

/// A session token as the cache keeps it: its SHA-256 digest, computed once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TokenKey([u8; 32]);

impl TokenKey {
    fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

/// How long a token's verification is kept when caching is on: the life of a Clerk session
/// token (a minute), over which its holder's browser reuses it for every request.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);

/// A token's verification: when it was made, the last time the token is acceptable, the
/// JWKS generation it was checked against ([`Authenticator::key_generation`]), and who it
/// identified.
struct VerifiedToken {
    stored: Instant,
    until: SystemTime,
    keys: u64,
    identity: Identity,
}

impl CallerCache {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        let longer = |long: Duration| if ttl.is_zero() { ttl } else { ttl.max(long) };
        Self {
            ttl,
            heard_ttl: longer(CALLER_TTL_HEARD),
            token_ttl: longer(TOKEN_TTL),
            max_entries,
            entries: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            changes: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            heard_at_ms: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    /// The caller ttl (`CAPLIQUIFY_AUTH_CACHE_MS`); zero: no caching.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether the listener heard something within `ttl`: announcements are arriving, and
    /// callers are kept up to [`CALLER_TTL_HEARD`].
    pub fn hearing(&self) -> bool {
        let at = self.heard_at_ms.load(Ordering::SeqCst);
        at != 0 && self.now_ms().saturating_sub(at) < self.ttl.as_millis() as u64
    }

    /// What the cache knows of announcements now; taken before a lookup, handed to
    /// [`Self::put`] with its result.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            listening: self.hearing(),
            epoch: self.epoch.load(Ordering::SeqCst),
            changes: self.changes.load(Ordering::SeqCst),
        }
    }

    /// The listener heard `payload` on the channel: a tenant's id (forget its callers),
    /// `*` (forget every caller), or its heartbeat. Anything heard shows the listener is
    /// alive; heard after a silence of `ttl` or more, it starts a new epoch (what came in
    /// the silence may have been missed).
    pub fn heard(&self, payload: &str) {
        let now = self.now_ms();
        let before = self.heard_at_ms.swap(now, Ordering::SeqCst);
        if before == 0 || now.saturating_sub(before) >= self.ttl.as_millis() as u64 {
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
        if payload == super::caller_changes::HEARTBEAT {
            return;
        }
        // Counted before the entries are touched: a lookup that puts its result after
        // this sees the change and keeps it only `ttl` (see `put`).
        self.changes.fetch_add(1, Ordering::SeqCst);
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        match Uuid::parse_str(payload) {
            Ok(tenant) => entries.retain(|_, kept| kept.caller.tenant.scope.id != tenant),
            // `*`, or a payload this version does not know: forget everything.
            Err(_) => entries.clear(),
        }
    }

    /// The listener stopped hearing (its connection was lost): callers are kept `ttl` only
    /// until it hears again.
    pub fn deaf(&self) {
        self.heard_at_ms.store(0, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether `kept` may still be used.
    fn fresh(&self, kept: &KeptCaller) -> bool {
        let age = kept.stored.elapsed();
        age < self.ttl
            || (age < self.heard_ttl
                && kept.heard == Some(self.epoch.load(Ordering::SeqCst))
                && self.hearing())
    }

    /// Who `token` identifies, from a verification made within the token ttl, against the
    /// JWKS generation `keys`, while the token is still acceptable.
    fn identity(&self, token: TokenKey, keys: u64) -> Option<Identity> {
        if self.token_ttl.is_zero() {
            return None;
        }
        let tokens = self.tokens.lock().ok()?;
        let verified = tokens.get(&token)?;
        (verified.keys == keys
            && verified.stored.elapsed() < self.token_ttl
            && SystemTime::now() <= verified.until)
            .then(|| verified.identity.clone())
    }

    fn put_identity(&self, token: TokenKey, identity: &Identity, until: SystemTime, keys: u64) {
        if self.token_ttl.is_zero() {
            return;
        }
        let Ok(mut tokens) = self.tokens.lock() else {
            return;
        };
        self.make_room(&mut tokens, |verified| {
            verified.stored.elapsed() < self.token_ttl
        });
        tokens.insert(
            token,
            VerifiedToken {
                stored: Instant::now(),
                until,
                keys,
                identity: identity.clone(),
            },
        );
    }

    /// Keeps `map` under `max_entries` before an insert: when full, the entries no longer
    /// `fresh` go, then, if that was not enough, every entry.
    fn make_room<K, V>(&self, map: &mut HashMap<K, V>, fresh: impl Fn(&V) -> bool) {
        if map.len() >= self.max_entries {
            map.retain(|_, value| fresh(value));
            if map.len() >= self.max_entries {
                map.clear();
            }
        }
    }

    /// No caching: every request looks its caller up.
    pub fn disabled() -> Self {
        Self::new(Duration::ZERO, 0)
    }

    /// Forgets every caller: an operator's act (the console's suspend) applies on the next
    /// request of this instance rather than within the ttl.
    pub fn clear(&self) {
        // As a change heard: a lookup under way is kept only `ttl`.
        self.changes.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.clear();
        }
    }

    fn get(&self, org_id: &str, user: &str) -> Option<Caller> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        let kept = entries.get(&(org_id.to_owned(), user.to_owned()))?;
        self.fresh(kept).then(|| kept.caller.clone())
    }

    /// Keeps `caller`, looked up since `ticket` was taken: up to [`CALLER_TTL_HEARD`] when
    /// announcements were heard all along and none arrived meanwhile, `ttl` otherwise.
    fn put(&self, org_id: &str, user: &str, caller: &Caller, ticket: Ticket) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        // Read under the lock `heard` takes after counting a change: a change counted
        // after this read finds the entry in place and forgets it.
        let heard = (ticket.listening && self.ticket() == ticket).then_some(ticket.epoch);
        self.make_room(&mut entries, |kept| self.fresh(kept));
        entries.insert(
            (org_id.to_owned(), user.to_owned()),
            KeptCaller {
                stored: Instant::now(),
                heard,
                caller: caller.clone(),
            },
        );
    }
}

/// At most `per_tenant` requests of one tenant at a time, so that one tenant's burst
/// cannot take every pooled connection from the others. A request over the limit waits
/// up to [`TenantGates::QUEUE_WAIT`] for a place, then is answered 429 with `Retry-After`.
pub struct TenantGates {
    per_tenant: usize,
    gates: Mutex<HashMap<Uuid, Arc<tokio::sync::Semaphore>>>,
}

impl TenantGates {
    /// How long a request waits for a place before 429.
    pub const QUEUE_WAIT: Duration = Duration::from_millis(250);
    /// Gates kept before idle ones are dropped.
    const MAX_IDLE: usize = 10_000;

    /// `per_tenant` = 0: no limit.
    pub fn new(per_tenant: usize) -> Self {
        Self {
            per_tenant,
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one request of `tenant` (held until dropped), `Ok(None)` when there
    /// is no limit, `Err` when the tenant already has `per_tenant` requests running.
    pub async fn enter(
        &self,
        tenant: Uuid,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ApiError> {
        if self.per_tenant == 0 {
            return Ok(None);
        }
        let gate = {
            let mut gates = self
                .gates
                .lock()
                .map_err(|_| ApiError::internal("tenant gates poisoned"))?;
            if gates.len() > Self::MAX_IDLE {
                let full = self.per_tenant;
                gates.retain(|_, g| Arc::strong_count(g) > 1 || g.available_permits() < full);
            }
            gates
                .entry(tenant)
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.per_tenant)))
                .clone()
        };
        match tokio::time::timeout(Self::QUEUE_WAIT, gate.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!(
                    "this tenant already has {} requests under way; retry in a moment",
                    self.per_tenant
                ),
            )
            .with_retry_after(1)),
        }
    }
}

fn auth_error(err: AuthError) -> ApiError {
    match err {
        AuthError::Jwks(detail) => ApiError::internal(format!("JWKS: {detail}")),
        other => ApiError::unauthorized(other.to_string()),
    }
}

/// Middleware for `/api/v1`: authenticates, resolves the tenant, applies the status and
/// billing gates, and hands the [`Caller`] to the handler.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token =
        Authenticator::bearer(request.headers().get(header::AUTHORIZATION)).map_err(auth_error)?;
    let key = TokenKey::of(token);
    let keys = state.auth.key_generation();
    let identity = match state.callers.identity(key, keys) {
        Some(identity) => identity,
        None => {
            let (identity, until) = state.auth.verify_until(token).await.map_err(auth_error)?;
            state.callers.put_identity(key, &identity, until, keys);
            identity
        }
    };
    let org_id = identity.org_id.as_deref().ok_or_else(|| {
        ApiError::forbidden(
            "no_organization",
            "the token names no organization; select one in the app",
        )
    })?;
    let mut caller = match state.callers.get(org_id, &identity.clerk_user_id) {
        Some(caller) => caller,
        None => {
            let ticket = state.callers.ticket();
            let caller = resolve(&state.pool, &identity.clerk_user_id, org_id).await?;
            state
                .callers
                .put(org_id, &identity.clerk_user_id, &caller, ticket);
            caller
        }
    };
    let is_write = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let standing = standing(
        caller.tenant.status,
        caller.tenant.trial_ends_at,
        Utc::now(),
    );
    if is_write && caller.tenant.moving {
        // A move copies the tenant now; it waits for writes already under way (it locks
        // the tenant's tables), so refusing new ones here is what keeps the copy complete.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "tenant_moving",
            "this tenant's data is being moved to another database and is read-only for a moment; retry shortly",
        )
        .with_retry_after(MOVE_RETRY_AFTER_SECS));
    }
    if let (true, Standing::ReadOnly(why)) = (is_write, standing) {
        return Err(ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "payment_required",
            why,
        ));
    }
    caller.client = Client {
        ip: request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip()),
        user_agent: request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(500).collect()),
    };
    let _place = state.gates.enter(caller.tenant.scope.id).await?;
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    if standing == Standing::PastDue {
        response.headers_mut().insert(
            "capliquify-billing-warning",
            HeaderValue::from_static("payment past due; update the payment method to keep access"),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration as ChronoDuration;

    fn caller(slug: &str) -> Caller {
        Caller {
            tenant: Arc::new(TenantAccess {
                scope: TenantScope {
                    id: Uuid::nil(),
                    slug: TenantSlug::parse(slug).unwrap(),
                    schema: SchemaName::parse("tenant_x").unwrap(),
                    cluster: ClusterName::home(),
                },
                name: "x".into(),
                tier: Tier::Starter,
                status: SubscriptionStatus::Active,
                trial_ends_at: None,
                max_users: None,
                max_entities: None,
                features: Features::default(),
                moving: false,
            }),
            member: Member {
                id: Uuid::nil(),
                clerk_user_id: "u".into(),
                role: Role::Member,
            },
            client: Client::default(),
        }
    }

    #[test]
    fn the_caller_cache_expires_and_stays_bounded() {
        let cache = CallerCache::new(Duration::from_millis(50), 2);
        cache.put("org_a", "u", &caller("aaa"), cache.ticket());
        assert_eq!(
            cache.get("org_a", "u").unwrap().tenant.scope.slug.as_str(),
            "aaa"
        );
        assert!(cache.get("org_a", "other").is_none());
        cache.put("org_b", "u", &caller("bbb"), cache.ticket());
        cache.put("org_c", "u", &caller("ccc"), cache.ticket());
        assert!(cache.entries.lock().unwrap().len() <= 2);
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get("org_c", "u").is_none(), "expired");
        let off = CallerCache::disabled();
        off.put("org_a", "u", &caller("aaa"), off.ticket());
        assert!(off.get("org_a", "u").is_none());
    }

    #[test]
    fn verified_tokens_are_kept_for_the_token_ttl_never_past_their_expiry_nor_a_jwks_reload() {
        let identity = |user: &str| Identity {
            clerk_user_id: user.into(),
            org_id: Some("org_a".into()),
        };
        let later = SystemTime::now() + Duration::from_secs(3600);
        let cache = CallerCache {
            token_ttl: Duration::from_millis(50),
            ..CallerCache::new(Duration::from_millis(50), 2)
        };
        cache.put_identity(TokenKey::of("token-a"), &identity("a"), later, 1);
        assert_eq!(
            cache.identity(TokenKey::of("token-a"), 1),
            Some(identity("a"))
        );
        assert_eq!(
            cache.identity(TokenKey::of("token-a "), 1),
            None,
            "another token"
        );
        assert_eq!(
            cache.identity(TokenKey::of("token-a"), 2),
            None,
            "the JWKS was read again since"
        );
        cache.put_identity(TokenKey::of("token-b"), &identity("b"), later, 1);
        cache.put_identity(TokenKey::of("token-c"), &identity("c"), later, 1);
        assert!(cache.tokens.lock().unwrap().len() <= 2);
        cache.put_identity(
            TokenKey::of("ended"),
            &identity("d"),
            SystemTime::now() - Duration::from_secs(1),
            1,
        );
        assert_eq!(
            cache.identity(TokenKey::of("ended"), 1),
            None,
            "past the token's expiry"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            cache.identity(TokenKey::of("token-c"), 1),
            None,
            "past the token ttl"
        );
        cache.put_identity(TokenKey::of("token-e"), &identity("e"), later, 1);
        cache.clear();
        assert_eq!(cache.identity(TokenKey::of("token-e"), 1), None, "cleared");
        let off = CallerCache::disabled();
        off.put_identity(TokenKey::of("token-a"), &identity("a"), later, 1);
        assert_eq!(off.identity(TokenKey::of("token-a"), 1), None);
    }

    #[test]
    fn a_verified_token_outlives_the_caller_it_resolved_to() {
        let identity = Identity {
            clerk_user_id: "u".into(),
            org_id: Some("org_a".into()),
        };
        let cache = CallerCache::new(Duration::from_millis(50), 10);
        assert_eq!(cache.token_ttl, TOKEN_TTL);
        let later = SystemTime::now() + Duration::from_secs(3600);
        cache.put_identity(TokenKey::of("token"), &identity, later, 7);
        cache.put("org_a", "u", &caller("aaa"), cache.ticket());
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            cache.get("org_a", "u").is_none(),
            "the caller is looked up again"
        );
        assert_eq!(
            cache.identity(TokenKey::of("token"), 7),
            Some(identity),
            "the signature is not checked again"
        );
    }

    fn caller_of(tenant: Uuid, slug: &str) -> Caller {
        let mut c = caller(slug);
        Arc::make_mut(&mut c.tenant).scope.id = tenant;
        c
    }

    const HEARTBEAT: &str = super::super::caller_changes::HEARTBEAT;

    /// Heartbeats every 50 ms for `ms` (longer than the tests' 1 s ttl: only the longer
    /// keeping can then answer).
    fn hear_for(cache: &CallerCache, ms: u64) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(ms) {
            cache.heard(HEARTBEAT);
            std::thread::sleep(Duration::from_millis(50));
        }
        cache.heard(HEARTBEAT);
    }

    #[test]
    fn while_changes_are_heard_a_caller_is_kept_longer_and_forgotten_when_its_tenant_changes() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let cache = CallerCache::new(Duration::from_secs(1), 10);
        assert_eq!(cache.heard_ttl, CALLER_TTL_HEARD);
        // Not listening: the short ttl only.
        cache.put("org_a", "u", &caller_of(a, "aaa"), cache.ticket());
        std::thread::sleep(Duration::from_millis(1100));
        assert!(cache.get("org_a", "u").is_none(), "kept only ttl when deaf");

        cache.heard(HEARTBEAT);
        cache.put("org_a", "u", &caller_of(a, "aaa"), cache.ticket());
        cache.put("org_b", "u", &caller_of(b, "bbb"), cache.ticket());
        hear_for(&cache, 1200);
        assert!(cache.get("org_a", "u").is_some(), "kept while hearing");
        // A change of tenant a forgets a's callers only.
        cache.heard(&a.to_string());
        assert!(cache.get("org_a", "u").is_none(), "a changed");
        assert!(cache.get("org_b", "u").is_some(), "b did not");
        // Silence for the short ttl: b is no longer trusted, even once heard again (the
        // silence may have hidden a change).
        std::thread::sleep(Duration::from_millis(1100));
        assert!(cache.get("org_b", "u").is_none(), "silence");
        cache.heard(HEARTBEAT);
        assert!(
            cache.get("org_b", "u").is_none(),
            "a new epoch after the silence"
        );
        // `*` forgets everyone.
        cache.put("org_b", "u", &caller_of(b, "bbb"), cache.ticket());
        cache.heard("*");
        assert!(cache.get("org_b", "u").is_none(), "everyone");
    }

    #[test]
    fn a_lookup_that_overlapped_a_change_or_a_lost_connection_is_kept_only_the_short_ttl() {
        let a = Uuid::new_v4();
        let cache = CallerCache::new(Duration::from_secs(1), 10);
        cache.heard(HEARTBEAT);
        // A change (of another tenant) arrives while the lookup runs: the row read may
        // predate a change, so the result is not kept long.
        let ticket = cache.ticket();
        cache.heard(&Uuid::new_v4().to_string());
        cache.put("org_a", "u", &caller_of(a, "aaa"), ticket);
        hear_for(&cache, 1200);
        assert!(cache.get("org_a", "u").is_none(), "overlapped a change");
        // The same without a change: kept.
        cache.put("org_a", "u", &caller_of(a, "aaa"), cache.ticket());
        hear_for(&cache, 1200);
        assert!(cache.get("org_a", "u").is_some(), "no change: kept");
        // The connection is lost: back to the short ttl at once.
        cache.deaf();
        assert!(cache.get("org_a", "u").is_none(), "deaf");
        // A lookup that began while deaf is not kept long even if hearing resumes.
        let ticket = cache.ticket();
        cache.heard(HEARTBEAT);
        cache.put("org_a", "u", &caller_of(a, "aaa"), ticket);
        hear_for(&cache, 1200);
        assert!(cache.get("org_a", "u").is_none(), "began deaf");
        // clear() (the console's suspend) counts as a change for a lookup under way.
        let ticket = cache.ticket();
        cache.clear();
        cache.put("org_a", "u", &caller_of(a, "aaa"), ticket);
        hear_for(&cache, 1200);
        assert!(cache.get("org_a", "u").is_none(), "overlapped a clear");
    }

    #[tokio::test]
    async fn a_tenant_over_its_concurrency_waits_then_gets_429() {
        let gates = TenantGates::new(2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = gates.enter(a).await.unwrap();
        let second = gates.enter(a).await.unwrap();
        assert!(first.is_some() && second.is_some());
        let refused = gates.enter(a).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(1));
        assert!(
            gates.enter(b).await.unwrap().is_some(),
            "other tenants go on"
        );
        drop(first);
        assert!(
            gates.enter(a).await.unwrap().is_some(),
            "a freed place is taken"
        );
        assert!(TenantGates::new(0).enter(a).await.unwrap().is_none());
    }

    #[test]
    fn billing_standing_follows_status_and_trial() {
        let now = Utc::now();
        let past = Some(now - ChronoDuration::hours(1));
        let future = Some(now + ChronoDuration::days(3));
        assert_eq!(
            standing(SubscriptionStatus::Trial, future, now),
            Standing::Good
        );
        assert!(matches!(
            standing(SubscriptionStatus::Trial, past, now),
            Standing::ReadOnly(_)
        ));
        assert!(matches!(
            standing(SubscriptionStatus::Cancelled, None, now),
            Standing::ReadOnly(_)
        ));
        assert_eq!(
            standing(SubscriptionStatus::PastDue, None, now),
            Standing::PastDue
        );
        assert_eq!(
            standing(SubscriptionStatus::Active, past, now),
            Standing::Good
        );
    }
}
