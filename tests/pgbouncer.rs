//! Tenant isolation behind PgBouncer in transaction mode, where one server connection serves
//! many clients one transaction at a time.
//!
//! - [`stress_through_pgbouncer_in_transaction_mode_leaks_nothing`]: the isolation stress test
//!   (as in `tests/isolation_stress.rs`, smaller: 10 tenants, at least 2,000 requests from 16
//!   concurrent clients) against an API whose 8-connection sqlx pool connects through a private
//!   PgBouncer with only 2 server connections. Every response is checked to hold only the
//!   caller's rows (zero leaks, zero failures), the tables are checked with schema-qualified
//!   SQL afterwards, and PgBouncer's own `SHOW POOLS` confirms that more clients than server
//!   connections were multiplexed.
//! - [`session_search_path_leaks_across_pgbouncer_clients_set_local_does_not`]: the hazard our
//!   design avoids. Clients A, B and C share PgBouncer's single server connection. When A runs
//!   the guide's middleware (a session-level `search_path` of `tenant_a, public`, set outside
//!   a transaction), the setting stays on the server connection, and the next unqualified
//!   `SELECT … FROM products` of B (which set tenant_b's path the same way earlier) and of C
//!   (which never set one) return tenant A's rows. The same sequence done our way
//!   (`BEGIN; SET LOCAL search_path …; …; COMMIT`, as `db::scope::begin` does) leaves nothing
//!   behind: B and C's unscoped queries find no tenant table, and the path is the default.
//!
//! PgBouncer must be installed (`.ci/run` installs Debian's package): without it the tests fail.
//! sqlx prepares its statements with the extended protocol; through transaction pooling that
//! needs PgBouncer ≥ 1.21 with `max_prepared_statements` (protocol-level prepared statements),
//! which the stress test requires. When we are root, PgBouncer (which refuses to run as root)
//! runs as the `postgres` user, like the embedded cluster.
//!
//! Run: `cargo test --test pgbouncer -- --nocapture` (prints the counts).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capliquify::access::Role;
use capliquify::billing::Tier;
use capliquify::http::auth::{AuthConfig, Authenticator, jwks_for};
use capliquify::http::cursor::CursorCodec;
use capliquify::http::{AppState, HttpConfig, app};
use capliquify::webhooks::WebhookConfig;
use capliquify::webhooks::signature::{StripeSecret, SvixSecret};
use common::TestDb;
use common::api::{
    CLERK_SECRET, ENCRYPTION_KEY, KID, STRIPE_PRICES, STRIPE_SECRET, TEST_KEY, TestApp,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// A private PgBouncer
// ---------------------------------------------------------------------------------------------

/// The first version with protocol-level prepared statements (`max_prepared_statements`).
const PREPARED_STATEMENTS_SINCE: (u32, u32) = (1, 21);

/// The `pgbouncer` executable: on `PATH`, else where Debian and others put it.
fn pgbouncer_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join("pgbouncer"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "pgbouncer is not installed: these tests need it (Debian/Ubuntu: \
                 `apt-get install pgbouncer`; `.ci/run` installs it)"
            )
        })
}

/// `pgbouncer --version` as (major, minor, patch).
fn pgbouncer_version(bin: &Path) -> (u32, u32, u32) {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} --version: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = text.lines().next().and_then(|line| {
        let version = line.strip_prefix("PgBouncer ")?.trim();
        let mut parts = version.split(|c: char| !c.is_ascii_digit());
        let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
        Some((next()?, next()?, next().unwrap_or(0)))
    });
    parsed.unwrap_or_else(|| panic!("unexpected `pgbouncer --version` output: {text}"))
}

/// The account PgBouncer runs as when we are root (it refuses to run as root).
fn unprivileged_user() -> Option<(u32, u32)> {
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if euid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let entry = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[0] == name)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
    };
    Some(entry("postgres").or_else(|| entry("nobody")).expect(
        "running as root, but PgBouncer refuses to run as root and /etc/passwd has neither \
         a `postgres` nor a `nobody` user",
    ))
}

/// A PgBouncer of this test on a free port, in transaction mode, in front of the test
/// server; stopped (and its folder removed) on drop.
struct PgBouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
    version: (u32, u32, u32),
    server_pool_size: u32,
}

impl PgBouncer {
    /// Starts one whose every database gets at most `server_pool_size` server connections.
    fn start(db: &TestDb, server_pool_size: u32) -> Self {
        let bin = pgbouncer_bin();
        let version = pgbouncer_version(&bin);
        let server = url::Url::parse(&db.url).expect("test database URL parses");
        let host = server.host_str().unwrap_or("127.0.0.1").to_owned();
        let server_port = server.port().unwrap_or(5432);
        let user = match server.username() {
            "" => "postgres".to_owned(),
            u => u.to_owned(),
        };
        let mut target = format!("host={host} port={server_port} user={user}");
        if let Some(password) = server.password() {
            target.push_str(&format!(" password={password}"));
        }

        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("capliquify-pgbouncer-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create the PgBouncer folder");
        let prepared = if (version.0, version.1) >= PREPARED_STATEMENTS_SINCE {
            "# sqlx's named prepared statements, tracked per server connection.\n\
             max_prepared_statements = 100\n"
        } else {
            ""
        };
        let conf = format!(
            "[databases]\n\
             * = {target}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             admin_users = {user}\n\
             pool_mode = transaction\n\
             default_pool_size = {server_pool_size}\n\
             max_db_connections = {server_pool_size}\n\
             min_pool_size = 0\n\
             reserve_pool_size = 0\n\
             max_client_conn = 500\n\
             ignore_startup_parameters = extra_float_digits,application_name\n\
             {prepared}\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            dir = dir.display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), conf).expect("write pgbouncer.ini");
        std::fs::write(dir.join("userlist.txt"), format!("\"{user}\" \"\"\n"))
            .expect("write userlist.txt");

        let mut cmd = Command::new(&bin);
        cmd.arg(dir.join("pgbouncer.ini"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = unprivileged_user() {
            for entry in ["", "pgbouncer.ini", "userlist.txt"] {
                std::os::unix::fs::chown(dir.join(entry), Some(uid), Some(gid))
                    .expect("give the PgBouncer folder to its user");
            }
            cmd.uid(uid).gid(gid);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut bouncer = PgBouncer {
            child,
            dir,
            port,
            version,
            server_pool_size,
        };
        bouncer.wait_until_listening();
        bouncer
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "PgBouncer did not start listening on {addr} ({}); its log:\n{}",
                    exited.map_or("timed out".into(), |s| s.to_string()),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    fn version_string(&self) -> String {
        format!("{}.{}.{}", self.version.0, self.version.1, self.version.2)
    }

    /// `db`'s URL with PgBouncer's address instead of the server's.
    fn url_for(&self, db: &TestDb) -> String {
        let mut url = url::Url::parse(&db.url).expect("test database URL parses");
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.port)).unwrap();
        url.set_password(None).unwrap();
        url.to_string()
    }

    /// A connection to PgBouncer's admin console (simple queries only).
    async fn admin(&self, db: &TestDb) -> PgConnection {
        let mut url = url::Url::parse(&self.url_for(db)).unwrap();
        url.set_path("pgbouncer");
        PgConnection::connect(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connect to the PgBouncer admin console: {e}"))
    }

    /// `SHOW POOLS` for `database`: (client connections, server connections).
    async fn pool_counts(admin: &mut PgConnection, database: &str) -> (i64, i64) {
        let rows = sqlx::raw_sql("SHOW POOLS")
            .fetch_all(&mut *admin)
            .await
            .expect("SHOW POOLS");
        let mut counts = (0, 0);
        for row in rows {
            if row.try_get::<String, _>("database").ok().as_deref() != Some(database) {
                continue;
            }
            // Admin console columns are int4 or int8 depending on the version.
            let n = |col: &str| {
                row.try_get::<i64, _>(col)
                    .or_else(|_| row.try_get::<i32, _>(col).map(i64::from))
                    .unwrap_or_else(|e| panic!("SHOW POOLS {col}: {e}"))
            };
            counts.0 += n("cl_active") + n("cl_waiting");
            counts.1 +=
                n("sv_active") + n("sv_idle") + n("sv_used") + n("sv_tested") + n("sv_login");
        }
        counts
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// The API server with its pool through PgBouncer
// ---------------------------------------------------------------------------------------------

/// A second server on the test app's database whose pool connects through PgBouncer (built as
/// `TestApp::spawn_with` builds its own); shut down on drop.
struct BouncedServer {
    addr: SocketAddr,
    jwks: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl BouncedServer {
    async fn spawn(bouncer: &PgBouncer, db: &TestDb, pool_size: u32) -> Self {
        let jwks = std::env::temp_dir().join(format!("capliquify-jwks-{}.json", Uuid::new_v4()));
        std::fs::write(&jwks, jwks_for(TEST_KEY, KID).unwrap().to_string()).unwrap();
        let auth = Authenticator::new(AuthConfig {
            jwks_url: format!("file://{}", jwks.display()),
            issuer: common::api::ISSUER.into(),
        })
        .await
        .expect("test JWKS loads");
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .connect(&bouncer.url_for(db))
            .await
            .expect("connect through PgBouncer");
        let state = AppState {
            pool,
            auth: Arc::new(auth),
            cursors: CursorCodec::new(b"test cursor secret"),
            webhooks: Arc::new(WebhookConfig {
                clerk: Some(SvixSecret::parse(CLERK_SECRET).unwrap()),
                stripe: Some(StripeSecret::new(STRIPE_SECRET)),
                prices: STRIPE_PRICES.parse().unwrap(),
                deletion_grace_days: 30,
            }),
            callers: Arc::new(capliquify::http::context::CallerCache::disabled()),
            keys: Arc::new(
                capliquify::crypto::Keyring::from_settings(Some(ENCRYPTION_KEY), "k1", None)
                    .unwrap(),
            ),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = app(state, &HttpConfig::default());
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            jwks,
            shutdown: Some(tx),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for BouncedServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = std::fs::remove_file(&self.jwks);
    }
}

// ---------------------------------------------------------------------------------------------
// Test 1: the isolation stress test through PgBouncer
// ---------------------------------------------------------------------------------------------

const TENANTS: usize = 10;
const SEED_PRODUCTS: usize = 10;
/// Concurrent HTTP clients: 2× the sqlx pool, 8× PgBouncer's server connections.
const TASKS: usize = 16;
/// The API's sqlx pool: client connections of PgBouncer.
const POOL_SIZE: u32 = 8;
/// PgBouncer's server connections to the database.
const SERVER_POOL_SIZE: u32 = 2;
const MIN_REQUESTS: usize = 2_000;
const TARGET_REQUESTS: usize = 2_050;
const MAX_OPS_PER_TASK: usize = 2 * TARGET_REQUESTS / TASKS;
const MAX_PAGES: usize = 4;
const MAX_REPORTED: usize = 20;

const LIMITS: [Option<usize>; 6] = [None, Some(1), Some(3), Some(10), Some(50), Some(200)];
const SORTS: [Option<&str>; 7] = [
    None,
    Some("name"),
    Some("-name"),
    Some("sku"),
    Some("-sku"),
    Some("created_at"),
    Some("-created_at"),
];

/// One tenant as the clients see it.
struct Fixture {
    slug: String,
    schema: String,
    /// `<slug>-`: two-digit slugs make no prefix a prefix of another tenant's.
    prefix: String,
    company: Uuid,
    seed_ids: Vec<Uuid>,
    read_tokens: Vec<String>,
    write_tokens: Vec<String>,
    created: AtomicUsize,
}

struct Shared {
    /// Fixtures and schema-qualified checks go to the test app (a direct pool).
    app: TestApp,
    /// The requests under test go to the server whose pool goes through PgBouncer.
    bounced: BouncedServer,
    client: reqwest::Client,
    tenants: Vec<Fixture>,
    owner_of: Mutex<HashMap<Uuid, usize>>,
    requests: AtomicUsize,
    leaks: AtomicUsize,
    failures: AtomicUsize,
    problems: Mutex<Vec<String>>,
}

/// xorshift64*: deterministic per task.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn other_than(&mut self, t: usize) -> usize {
        (t + 1 + self.below(TENANTS - 1)) % TENANTS
    }
}

impl Shared {
    fn leak(&self, what: String) {
        self.leaks.fetch_add(1, Ordering::Relaxed);
        self.note(format!("LEAK: {what}"));
    }

    fn failure(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.note(format!("FAILURE: {what}"));
    }

    fn note(&self, what: String) {
        let mut problems = self.problems.lock().unwrap();
        if problems.len() < MAX_REPORTED {
            problems.push(what);
        }
    }

    /// Sends one request to the bounced server; `None` (a failure) without a readable answer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Option<(StatusCode, Value)> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .client
            .request(method.clone(), self.bounced.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let result = async {
            let response = req.send().await?;
            let status = response.status();
            let text = response.text().await?;
            Ok::<_, reqwest::Error>((status, text))
        }
        .await;
        match result {
            Ok((status, text)) => match serde_json::from_str(&text) {
                Ok(body) => Some((status, body)),
                Err(_) => {
                    self.failure(format!("{method} {path}: {status}, body not JSON: {text}"));
                    None
                }
            },
            Err(e) => {
                self.failure(format!("{method} {path}: {e}"));
                None
            }
        }
    }

    /// Checks that `row` is a product of tenant `t`; anything else is a leak.
    fn check_product(&self, t: usize, row: &Value, context: &str) {
        let fx = &self.tenants[t];
        let own_text = |field: &str| {
            row[field]
                .as_str()
                .is_some_and(|s| s.starts_with(&fx.prefix))
        };
        let id = row["id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
        let company = row["company_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok());
        let foreign_owner = id
            .and_then(|id| self.owner_of.lock().unwrap().get(&id).copied())
            .filter(|&owner| owner != t);
        if !own_text("sku")
            || !own_text("name")
            || company != Some(fx.company)
            || foreign_owner.is_some()
        {
            self.leak(format!(
                "{context}: caller {} got row {row} (id owned by tenant {foreign_owner:?})",
                fx.slug
            ));
        }
    }

    /// `GET /products` with a random limit and sort, sometimes following the cursor (now and
    /// then replayed by another tenant).
    async fn list(&self, rng: &mut Rng, t: usize) {
        let limit = *rng.pick(&LIMITS);
        let sort = *rng.pick(&SORTS);
        let follow = rng.below(3) == 0;
        let mut caller = t;
        let mut cursor: Option<String> = None;
        for page in 0..MAX_PAGES {
            let mut params = Vec::new();
            if let Some(limit) = limit {
                params.push(format!("limit={limit}"));
            }
            if let Some(sort) = sort {
                params.push(format!("sort={sort}"));
            }
            if let Some(cursor) = &cursor {
                params.push(format!("cursor={cursor}"));
            }
            let path = format!("/api/v1/products?{}", params.join("&"));
            let fx = &self.tenants[caller];
            let token = rng.pick(&fx.read_tokens);
            let Some((status, body)) = self.send(Method::GET, &path, token, None).await else {
                return;
            };
            let context = format!("GET {path} page {page}");
            if status != StatusCode::OK {
                self.failure(format!("{context} as {}: {status} {body}", fx.slug));
                return;
            }
            let Some(rows) = body["data"].as_array() else {
                self.failure(format!("{context}: no data array: {body}"));
                return;
            };
            let max = limit.unwrap_or(50);
            if rows.len() > max {
                self.failure(format!("{context}: {} rows over limit {max}", rows.len()));
            }
            for row in rows {
                self.check_product(caller, row, &context);
            }
            cursor = body["next_cursor"].as_str().map(str::to_owned);
            if !follow || cursor.is_none() {
                return;
            }
            if rng.below(10) == 0 {
                caller = rng.other_than(caller);
            }
        }
    }

    /// `GET /products/{id}` of an own seed id (200, that row) or a foreign one (404).
    async fn get_one(&self, rng: &mut Rng, t: usize, foreign: bool) {
        let owner = if foreign { rng.other_than(t) } else { t };
        let id = *rng.pick(&self.tenants[owner].seed_ids);
        let fx = &self.tenants[t];
        let path = format!("/api/v1/products/{id}");
        let token = rng.pick(&fx.read_tokens);
        let Some((status, body)) = self.send(Method::GET, &path, token, None).await else {
            return;
        };
        let context = format!("GET {path} (owner {}) as {}", owner, fx.slug);
        match (foreign, status) {
            (false, StatusCode::OK) => {
                if body["id"] != json!(id) {
                    self.leak(format!("{context}: answered another row {body}"));
                }
                self.check_product(t, &body, &context);
            }
            (true, StatusCode::NOT_FOUND) if body["code"] == "not_found" => {}
            (true, StatusCode::OK) => self.leak(format!("{context}: foreign id resolved: {body}")),
            _ => self.failure(format!("{context}: {status} {body}")),
        }
    }

    /// `POST /products` with the caller's prefix; one in five names another tenant's company.
    async fn create(&self, rng: &mut Rng, t: usize, task: usize, n: usize) {
        let fx = &self.tenants[t];
        let foreign_company = rng.below(5) == 0;
        let company = if foreign_company {
            self.tenants[rng.other_than(t)].company
        } else {
            fx.company
        };
        let sku = format!("{}NEW-{task:02}-{n:04}", fx.prefix);
        let body = json!({
            "company_id": company, "sku": sku, "name": format!("{}New {task}/{n}", fx.prefix),
            "category": "stress", "unit_price": "9.99",
        });
        let token = rng.pick(&fx.write_tokens);
        let Some((status, reply)) = self
            .send(Method::POST, "/api/v1/products", token, Some(body))
            .await
        else {
            return;
        };
        let context = format!("POST {sku} (foreign company: {foreign_company})");
        match (foreign_company, status) {
            (false, StatusCode::CREATED) => {
                self.check_product(t, &reply, &context);
                if let Some(id) = reply["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()) {
                    self.owner_of.lock().unwrap().insert(id, t);
                    fx.created.fetch_add(1, Ordering::Relaxed);
                }
            }
            (true, StatusCode::UNPROCESSABLE_ENTITY) if reply["code"] == "reference_not_found" => {}
            (true, StatusCode::CREATED) => {
                self.leak(format!(
                    "{context}: another tenant's company was referenced"
                ));
            }
            _ => self.failure(format!("{context}: {status} {reply}")),
        }
    }

    /// `GET /tenant`: the caller's own slug and usage.
    async fn tenant(&self, rng: &mut Rng, t: usize) {
        let fx = &self.tenants[t];
        let token = rng.pick(&fx.read_tokens);
        let Some((status, body)) = self.send(Method::GET, "/api/v1/tenant", token, None).await
        else {
            return;
        };
        if status != StatusCode::OK {
            self.failure(format!("GET /tenant as {}: {status} {body}", fx.slug));
        } else if body["slug"] != fx.slug.as_str() {
            self.leak(format!("GET /tenant as {}: answered {body}", fx.slug));
        } else if body["usage"]["entities"] != 1 || body["usage"]["users"] != 4 {
            self.leak(format!("GET /tenant as {}: usage {body}", fx.slug));
        }
    }

    /// One client: operations on randomly chosen tenants until the request target is met.
    async fn client(self: Arc<Self>, task: usize) {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((task as u64 + 1) * 0x1000_0000_01b3));
        for n in 0..MAX_OPS_PER_TASK {
            if self.requests.load(Ordering::Relaxed) >= TARGET_REQUESTS {
                break;
            }
            let t = rng.below(TENANTS);
            match rng.below(100) {
                0..55 => self.list(&mut rng, t).await,
                55..70 => self.get_one(&mut rng, t, false).await,
                70..80 => self.get_one(&mut rng, t, true).await,
                80..90 => self.create(&mut rng, t, task, n).await,
                _ => self.tenant(&mut rng, t).await,
            }
        }
    }
}

/// Provisions tenant `i` with its members, one company and `SEED_PRODUCTS` products.
async fn fixture(app: &TestApp, i: usize) -> Fixture {
    let slug = format!("pgb-{i:02}");
    let t = app.tenant(&slug, Tier::Professional).await;
    let company = Uuid::parse_str(&app.company(&t, &format!("{slug} Co")).await).unwrap();
    let prefix = format!("{slug}-");
    let schema = t.tenant.schema_name.clone();
    let seed_ids: Vec<Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
        "INSERT INTO \"{schema}\".products (company_id, sku, name, unit_price)
         SELECT $1, $2 || 'SKU-' || n, $2 || 'Widget ' || lpad(n::text, 2, '0'), 10 + n
           FROM generate_series(1, {SEED_PRODUCTS}) AS n
         RETURNING id"
    )))
    .bind(company)
    .bind(&prefix)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let token = |role| app.token_for(&t, role);
    Fixture {
        read_tokens: [Role::Viewer, Role::Member, Role::Admin, Role::Owner]
            .map(token)
            .to_vec(),
        write_tokens: [Role::Member, Role::Admin, Role::Owner].map(token).to_vec(),
        slug,
        schema,
        prefix,
        company,
        seed_ids,
        created: AtomicUsize::new(0),
    }
}

// Debian 12 ships PgBouncer 1.18, which cannot carry sqlx's prepared statements in
// transaction mode (see the module docs and docs/security.md); run with
// `cargo test --test pgbouncer -- --ignored` where PgBouncer >= 1.21 is installed.
#[ignore = "needs PgBouncer >= 1.21 (protocol-level prepared statements); Debian 12 ships 1.18"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_through_pgbouncer_in_transaction_mode_leaks_nothing() {
    let app = TestApp::spawn_with(HttpConfig::default(), 4).await;
    let bouncer = PgBouncer::start(&app.db, SERVER_POOL_SIZE);
    assert!(
        (bouncer.version.0, bouncer.version.1) >= PREPARED_STATEMENTS_SINCE,
        "PgBouncer {} is older than 1.21: it has no protocol-level prepared statements \
         (`max_prepared_statements`), and in transaction mode sqlx's prepared statements \
         would run on server connections that never prepared them (or prepared another \
         client's statement under the same name: \"bind message supplies 2 parameters, but \
         prepared statement sqlx_s_N requires 1\", \"prepared statement already exists\"). \
         Install PgBouncer >= 1.21 (Debian 12 ships 1.18).",
        bouncer.version_string()
    );
    let bounced = BouncedServer::spawn(&bouncer, &app.db, POOL_SIZE).await;
    let mut tenants = Vec::with_capacity(TENANTS);
    for i in 0..TENANTS {
        tenants.push(fixture(&app, i).await);
    }
    let owner_of = tenants
        .iter()
        .enumerate()
        .flat_map(|(t, fx)| fx.seed_ids.iter().map(move |id| (*id, t)))
        .collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(TASKS)
        .build()
        .unwrap();
    let shared = Arc::new(Shared {
        app,
        bounced,
        client,
        tenants,
        owner_of: Mutex::new(owner_of),
        requests: AtomicUsize::new(0),
        leaks: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
        problems: Mutex::new(Vec::new()),
    });

    // PgBouncer's view while the clients run: client and server connections of the database.
    let mut admin = bouncer.admin(&shared.app.db).await;
    let database = shared.app.db.name.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let mut max = (0, 0);
        loop {
            let (clients, servers) = PgBouncer::pool_counts(&mut admin, &database).await;
            max = (max.0.max(clients), max.1.max(servers));
            tokio::select! {
                _ = &mut stop_rx => return max,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });

    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        clients.spawn(shared.clone().client(task));
    }
    while let Some(joined) = clients.join_next().await {
        joined.expect("a client task panicked");
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    let (max_clients, max_servers) = sampler.await.expect("the sampler ran");
    let requests = shared.requests.load(Ordering::Relaxed);
    let leaks = shared.leaks.load(Ordering::Relaxed);
    let failures = shared.failures.load(Ordering::Relaxed);
    let created: usize = shared
        .tenants
        .iter()
        .map(|fx| fx.created.load(Ordering::Relaxed))
        .sum();
    println!(
        "PgBouncer {}: {requests} requests from {TASKS} clients over {TENANTS} tenants, sqlx \
         pool {POOL_SIZE}, server pool {SERVER_POOL_SIZE} (seen: up to {max_clients} PgBouncer \
         clients on {max_servers} server connections) in {:.1} s ({:.0}/s); {created} products \
         created; {leaks} leaks, {failures} failures",
        bouncer.version_string(),
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    let problems = shared.problems.lock().unwrap().join("\n");
    assert_eq!(leaks, 0, "rows crossed tenants:\n{problems}");
    assert_eq!(failures, 0, "requests failed:\n{problems}");
    assert!(
        requests >= MIN_REQUESTS,
        "only {requests} requests were sent"
    );
    assert!(created > 0, "no product was created");
    assert!(
        max_servers >= 1 && max_servers <= i64::from(SERVER_POOL_SIZE),
        "PgBouncer used {max_servers} server connections (pool {SERVER_POOL_SIZE})"
    );
    assert!(
        max_clients > max_servers,
        "PgBouncer saw {max_clients} clients on {max_servers} server connections: nothing \
         was multiplexed"
    );

    // The database agrees: every tenant's table holds exactly its own rows.
    let owner_of = shared.owner_of.lock().unwrap().clone();
    for (t, fx) in shared.tenants.iter().enumerate() {
        let ids: Vec<Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT id FROM \"{}\".products
              WHERE starts_with(sku::text, $1) AND starts_with(name::text, $1) AND company_id = $2",
            fx.schema
        )))
        .bind(&fx.prefix)
        .bind(fx.company)
        .fetch_all(&shared.app.db.pool)
        .await
        .unwrap();
        let total = shared
            .app
            .db
            .scalar_i64(&format!("SELECT count(*) FROM \"{}\".products", fx.schema))
            .await;
        let expected = SEED_PRODUCTS + fx.created.load(Ordering::Relaxed);
        assert_eq!(
            total as usize,
            ids.len(),
            "{}: rows without its prefix or company",
            fx.slug
        );
        assert_eq!(ids.len(), expected, "{}: row count", fx.slug);
        let mine: HashSet<Uuid> = owner_of
            .iter()
            .filter(|(_, owner)| **owner == t)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(
            ids.into_iter().collect::<HashSet<_>>(),
            mine,
            "{}: ids differ from the ones it was answered",
            fx.slug
        );
    }
    for (name, result, details) in shared.app.db.verify().await {
        assert_ne!(result, "FAIL", "verify_tenant_isolation {name}: {details}");
    }
}

// ---------------------------------------------------------------------------------------------
// Test 2: the hazard of a session-level search_path behind PgBouncer
// ---------------------------------------------------------------------------------------------

/// A database with `tenant_a.products` and `tenant_b.products` (no `public.products`).
async fn two_tenant_db() -> TestDb {
    let db = TestDb::empty().await;
    db.exec(
        "CREATE SCHEMA tenant_a;
         CREATE SCHEMA tenant_b;
         CREATE TABLE tenant_a.products (name text NOT NULL);
         CREATE TABLE tenant_b.products (name text NOT NULL);
         INSERT INTO tenant_a.products VALUES ('a-secret-1'), ('a-secret-2');
         INSERT INTO tenant_b.products VALUES ('b-widget');",
    )
    .await;
    db
}

/// Runs `sql` (simple protocol, as PgBouncer's clients may) and returns the rows' `name`s.
async fn names(conn: &mut PgConnection, sql: &str) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut *conn)
        .await?;
    let mut names: Vec<String> = rows.iter().map(|r| r.get("name")).collect();
    names.sort();
    Ok(names)
}

async fn backend_pid(conn: &mut PgConnection) -> i32 {
    sqlx::raw_sql("SELECT pg_backend_pid() AS pid")
        .fetch_one(&mut *conn)
        .await
        .expect("pg_backend_pid")
        .get("pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_search_path_leaks_across_pgbouncer_clients_set_local_does_not() {
    let a_rows = vec!["a-secret-1".to_owned(), "a-secret-2".to_owned()];
    let b_rows = vec!["b-widget".to_owned()];

    // The guide's way, through PgBouncer (transaction mode, one server connection).
    let db = two_tenant_db().await;
    let bouncer = PgBouncer::start(&db, 1);
    assert_eq!(bouncer.server_pool_size, 1);
    let url = bouncer.url_for(&db);
    let mut a = PgConnection::connect(&url)
        .await
        .expect("client A connects");
    let mut b = PgConnection::connect(&url)
        .await
        .expect("client B connects");
    let mut c = PgConnection::connect(&url)
        .await
        .expect("client C connects");
    // B's request ran first: the guide's middleware set tenant B's path on "its" connection.
    names(&mut b, "SET search_path TO tenant_b, public") // allow-session-search-path
        .await
        .expect("B sets its path");
    assert_eq!(
        names(&mut b, "SELECT name FROM products").await.unwrap(),
        b_rows
    );
    // Then A's request: the same middleware, for tenant A.
    names(&mut a, "SET search_path TO tenant_a, public") // allow-session-search-path
        .await
        .expect("A sets its path");
    assert_eq!(
        names(&mut a, "SELECT name FROM products").await.unwrap(),
        a_rows
    );
    // B's next query, believing it is still scoped to tenant B, reads tenant A's rows...
    let b_sees = names(&mut b, "SELECT name FROM products").await.unwrap();
    // ...and so does C, which never set a path at all.
    let c_sees = names(&mut c, "SELECT name FROM products").await.unwrap();
    let (pid_a, pid_b, pid_c) = (
        backend_pid(&mut a).await,
        backend_pid(&mut b).await,
        backend_pid(&mut c).await,
    );
    assert!(
        pid_a == pid_b && pid_b == pid_c,
        "the three clients should share PgBouncer's one server connection: {pid_a} {pid_b} {pid_c}"
    );
    assert_eq!(
        b_sees, a_rows,
        "the hazard: B (scoped to tenant_b at session level earlier) reads tenant A's rows"
    );
    assert_eq!(
        c_sees, a_rows,
        "the hazard: C (no search_path of its own) reads tenant A's rows"
    );
    println!(
        "PgBouncer {} (pool size 1), session-level SET: B read {b_sees:?}, C read {c_sees:?} \
         — tenant A's rows",
        bouncer.version_string()
    );
    for conn in [a, b, c] {
        conn.close().await.ok();
    }
    drop(bouncer);

    // Our way: the same sequence, each query in a transaction with SET LOCAL.
    let db = two_tenant_db().await;
    let bouncer = PgBouncer::start(&db, 1);
    let url = bouncer.url_for(&db);
    let mut a = PgConnection::connect(&url)
        .await
        .expect("client A connects");
    let mut b = PgConnection::connect(&url)
        .await
        .expect("client B connects");
    let mut c = PgConnection::connect(&url)
        .await
        .expect("client C connects");
    let scoped = |schema: &str| {
        format!("BEGIN; SET LOCAL search_path TO \"{schema}\"; SELECT name FROM products; COMMIT")
    };
    assert_eq!(names(&mut b, &scoped("tenant_b")).await.unwrap(), b_rows);
    assert_eq!(names(&mut a, &scoped("tenant_a")).await.unwrap(), a_rows);
    // B's next request, scoped again, reads only its own rows.
    assert_eq!(names(&mut b, &scoped("tenant_b")).await.unwrap(), b_rows);
    // Unscoped queries (B's or C's) find no tenant table: nothing of A's scope survived.
    let b_unscoped = names(&mut b, "SELECT name FROM products").await;
    let c_unscoped = names(&mut c, "SELECT name FROM products").await;
    let path: String = sqlx::raw_sql("SHOW search_path")
        .fetch_one(&mut c)
        .await
        .expect("SHOW search_path")
        .get("search_path");
    let (pid_a, pid_b, pid_c) = (
        backend_pid(&mut a).await,
        backend_pid(&mut b).await,
        backend_pid(&mut c).await,
    );
    assert!(
        pid_a == pid_b && pid_b == pid_c,
        "the three clients should share PgBouncer's one server connection: {pid_a} {pid_b} {pid_c}"
    );
    assert_eq!(
        path, "\"$user\", public",
        "the server connection's search_path"
    );
    for (who, result) in [("B", &b_unscoped), ("C", &c_unscoped)] {
        match result {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {}
            other => panic!("{who}'s unscoped query should find no products table: {other:?}"),
        }
    }
    println!(
        "PgBouncer {} (pool size 1), SET LOCAL: unscoped queries fail closed \
         (relation \"products\" does not exist); search_path back to {path}",
        bouncer.version_string()
    );
    for conn in [a, b, c] {
        conn.close().await.ok();
    }
}
