//! Tenant isolation behind PgBouncer in transaction mode, where one server connection serves
//! many clients one transaction at a time.
//!
//! - [`stress_through_pgbouncer_in_transaction_mode_leaks_nothing`]: the isolation stress test
//!   (as in `tests/isolation_stress.rs`, smaller: 10 tenants, at least 2,000 requests from 16
//!   concurrent clients) against an API whose 8-connection sqlx pool connects, as the
//!   service's least-privilege login role (`capliquify_app`), through a private PgBouncer with
//!   only 2 server connections. Every response is checked to hold only the caller's rows (zero
//!   leaks, zero failures), the tables are checked with schema-qualified SQL afterwards, and
//!   PgBouncer's own `SHOW POOLS` confirms that more clients than server connections of that
//!   role were multiplexed.
//! - [`session_search_path_leaks_across_pgbouncer_clients_set_local_does_not`]: the hazard our
//!   design avoids. Clients A, B and C share PgBouncer's single server connection. When A runs
//!   the guide's middleware (a session-level `search_path` of `tenant_a, public`, set outside
//!   a transaction), the setting stays on the server connection, and the next unqualified
//!   `SELECT … FROM products` of B (which set tenant_b's path the same way earlier) and of C
//!   (which never set one) return tenant A's rows. The same sequence done our way
//!   (`BEGIN; SET LOCAL search_path …; …; COMMIT`, as `db::scope::begin` does) leaves nothing
//!   behind: B and C's unscoped queries find no tenant table, and the path is the default.
//!
//! sqlx prepares its statements with the extended protocol; through transaction pooling that
//! needs PgBouncer ≥ 1.21 with `max_prepared_statements` (protocol-level prepared statements),
//! which the stress test requires: with an older PgBouncer it fails (it is not skipped).
//! Debian 12 ships 1.18, so `scripts/install-pgbouncer.sh` (run by `.ci/run`, and by these
//! tests themselves when no PgBouncer ≥ 1.21 is found) builds Debian 13's verified source
//! package into `target/pgbouncer`. The binary used is `CAPLIQUIFY_PGBOUNCER` when set, else
//! the newest of `target/pgbouncer/bin`, `PATH` and the usual sbin/bin folders. The hazard test works with any version. When we are
//! root, PgBouncer (which refuses to run as root) runs as the `postgres` user, like the embedded
//! cluster.
//!
//! Run: `cargo test --test it pgbouncer:: -- --nocapture` (prints the counts).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::api::{ENCRYPTION_KEY, KID, TEST_KEY, TestApp, serve, test_webhooks};
use crate::common::stress::{self, Params};
use crate::common::{APP_ROLE, TestDb, unprivileged_user};
use capliquify::http::auth::{AuthConfig, Authenticator, jwks_for};
use capliquify::http::cursor::CursorCodec;
use capliquify::http::{AppState, HttpConfig};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// A private PgBouncer
// ---------------------------------------------------------------------------------------------

/// The first version with protocol-level prepared statements (`max_prepared_statements`).
const PREPARED_STATEMENTS_SINCE: (u32, u32) = (1, 21);

/// Where `scripts/install-pgbouncer.sh` installs PgBouncer by default.
const SCRIPT_PREFIX_BIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/pgbouncer/bin/pgbouncer"
);

/// The `pgbouncer` executable and its version: `CAPLIQUIFY_PGBOUNCER` when set, else the
/// newest of `scripts/install-pgbouncer.sh`'s (target/pgbouncer/bin), those on `PATH` and
/// those where Debian and others put it (the script's wins a tie).
fn pgbouncer_bin() -> &'static (PathBuf, (u32, u32, u32)) {
    static FOUND: OnceLock<(PathBuf, (u32, u32, u32))> = OnceLock::new();
    FOUND.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CAPLIQUIFY_PGBOUNCER").filter(|b| !b.is_empty()) {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "CAPLIQUIFY_PGBOUNCER={} is not a file (run scripts/install-pgbouncer.sh, \
                 which prints the path of a suitable PgBouncer)",
                bin.display()
            );
            let version = pgbouncer_version(&bin);
            return (bin, version);
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut seen = Vec::new();
        let mut best: Option<(PathBuf, (u32, u32, u32))> = None;
        let candidates = std::iter::once(PathBuf::from(SCRIPT_PREFIX_BIN)).chain(
            std::env::split_paths(&path)
                .chain(
                    ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"]
                        .map(PathBuf::from),
                )
                .map(|dir| dir.join("pgbouncer")),
        );
        for bin in candidates.filter(|p| p.is_file()) {
            let real = bin.canonicalize().unwrap_or_else(|_| bin.clone());
            if seen.contains(&real) {
                continue;
            }
            seen.push(real);
            let version = pgbouncer_version(&bin);
            if best.as_ref().is_none_or(|(_, v)| version > *v) {
                best = Some((bin, version));
            }
        }
        let recent = |v: &(u32, u32, u32)| (v.0, v.1) >= PREPARED_STATEMENTS_SINCE;
        if let Some(found) = best.as_ref().filter(|(_, v)| recent(v)) {
            return found.clone();
        }
        // None recent enough: build one, as `.ci/run` does (verified sources, cached under
        // target/pgbouncer, so only the first run pays), so `cargo test` needs nothing more.
        match install_pgbouncer() {
            Ok(bin) => {
                let version = pgbouncer_version(&bin);
                (bin, version)
            }
            Err(why) => best.unwrap_or_else(|| {
                panic!(
                    "pgbouncer is not installed and scripts/install-pgbouncer.sh could not \
                     build one ({why}); these tests need PgBouncer >= 1.21"
                )
            }),
        }
    })
}

/// Runs `scripts/install-pgbouncer.sh` and returns the binary it reports.
fn install_pgbouncer() -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-pgbouncer.sh");
    eprintln!("no PgBouncer >= 1.21 found: running {}", script.display());
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bin = PathBuf::from(stdout.lines().last().unwrap_or("").trim());
    if out.status.success() && bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("it exited with {}", out.status))
    }
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
        let (bin, version) = pgbouncer_bin().clone();
        let server = url::Url::parse(&db.url).expect("test database URL parses");
        // The embedded cluster's socket folder comes as `?host=/…`.
        let host = server
            .query_pairs()
            .find(|(k, _)| k == "host")
            .map(|(_, v)| v.into_owned())
            .or_else(|| server.host_str().map(str::to_owned))
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let server_port = server.port().unwrap_or(5432);
        let user = match server.username() {
            "" => "postgres".to_owned(),
            u => u.to_owned(),
        };
        // No `user=`: each client's server connections log in as the client's user (the
        // superuser of the test URL, or the API's least-privilege login role), with the
        // password of the auth file.
        let target = format!("host={host} port={server_port}");
        let password = server.password().unwrap_or_default();

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
        std::fs::write(
            dir.join("userlist.txt"),
            // The API's login role has the test URL's password too (TestDb::app_url).
            format!("\"{user}\" \"{password}\"\n\"{APP_ROLE}\" \"{password}\"\n"),
        )
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

    /// `db`'s URL (the superuser's) with PgBouncer's address instead of the server's.
    fn url_for(&self, db: &TestDb) -> String {
        self.through(&db.url)
    }

    /// A URL of the test server with PgBouncer's address instead of the server's.
    fn through(&self, server_url: &str) -> String {
        let mut url = url::Url::parse(server_url).expect("test database URL parses");
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.port)).unwrap();
        url.set_password(None).unwrap();
        // The server's socket folder would take precedence over PgBouncer's address.
        url.set_query(None);
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

    /// `SHOW POOLS` for `database` and `user`: (client connections, server connections).
    async fn pool_counts(admin: &mut PgConnection, database: &str, user: &str) -> (i64, i64) {
        let rows = sqlx::raw_sql("SHOW POOLS")
            .fetch_all(&mut *admin)
            .await
            .expect("SHOW POOLS");
        let mut counts = (0, 0);
        for row in rows {
            let column = |name: &str| row.try_get::<String, _>(name).ok();
            if column("database").as_deref() != Some(database)
                || column("user").as_deref() != Some(user)
            {
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

/// A second server on the test app's database whose pool connects through PgBouncer as the
/// service's least-privilege login role (built as `TestApp::spawn_with` builds its own); shut
/// down on drop.
struct BouncedServer {
    addr: SocketAddr,
    jwks: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl BouncedServer {
    async fn spawn(bouncer: &PgBouncer, db: &TestDb, pool_size: u32) -> Self {
        let url = bouncer.through(&db.app_url().await);
        let jwks = std::env::temp_dir().join(format!("capliquify-jwks-{}.json", Uuid::new_v4()));
        std::fs::write(&jwks, jwks_for(TEST_KEY, KID).unwrap().to_string()).unwrap();
        let auth = Authenticator::new(AuthConfig {
            jwks_url: format!("file://{}", jwks.display()),
            issuer: crate::common::api::ISSUER.into(),
        })
        .await
        .expect("test JWKS loads");
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .connect(&url)
            .await
            .expect("connect through PgBouncer");
        let keys =
            capliquify::crypto::Keyring::from_settings(Some(ENCRYPTION_KEY), "k1", None).unwrap();
        let state = AppState::new(
            capliquify::db::Clusters::single(pool),
            auth,
            keys,
            HttpConfig::default(),
        )
        .with_cursors(CursorCodec::new(b"test cursor secret"))
        .with_webhooks(test_webhooks());
        let (addr, tx) = serve(state).await;
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
/// Concurrent HTTP clients.
const TASKS: usize = 16;
/// The API's sqlx pool: connections to PgBouncer.
const POOL_SIZE: u32 = 8;
/// PgBouncer's server connections per database: fewer than the clients.
const SERVER_POOL_SIZE: u32 = 2;

// Needs PgBouncer >= 1.21 (see the module docs): with an older one this test fails, it is
// not skipped; `scripts/install-pgbouncer.sh` provides one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_through_pgbouncer_in_transaction_mode_leaks_nothing() {
    let (bin, version) = pgbouncer_bin();
    assert!(
        (version.0, version.1) >= PREPARED_STATEMENTS_SINCE,
        "{} is PgBouncer {}.{}.{}, older than 1.21: it has no protocol-level prepared \
         statements (`max_prepared_statements`), and in transaction mode sqlx's prepared \
         statements would run on server connections that never prepared them (or prepared \
         another client's statement under the same name: \"bind message supplies 2 \
         parameters, but prepared statement sqlx_s_N requires 1\", \"prepared statement \
         already exists\"). Run `scripts/install-pgbouncer.sh` (it builds Debian 13's \
         PgBouncer into target/pgbouncer, where this test finds it, and prints its path for \
         CAPLIQUIFY_PGBOUNCER, which takes precedence when set).",
        bin.display(),
        version.0,
        version.1,
        version.2,
    );
    let app = TestApp::spawn_with(HttpConfig::default(), 4).await;
    let bouncer = PgBouncer::start(&app.db, SERVER_POOL_SIZE);
    let bounced = BouncedServer::spawn(&bouncer, &app.db, POOL_SIZE).await;

    // PgBouncer's view while the clients run: client and server connections of the database.
    let mut admin = bouncer.admin(&app.db).await;
    let database = app.db.name.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let mut max = (0, 0);
        loop {
            let (clients, servers) = PgBouncer::pool_counts(&mut admin, &database, APP_ROLE).await;
            max = (max.0.max(clients), max.1.max(servers));
            tokio::select! {
                _ = &mut stop_rx => return max,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });

    let params = Params {
        tenants: TENANTS,
        tasks: TASKS,
        min_requests: 2_000,
        target_requests: 2_050,
    };
    let outcome = stress::run(&app, bounced.url(""), "pgb", params).await;
    eprintln!(
        "{} requests, {} rows created in {:.1?}",
        outcome.requests, outcome.created, outcome.elapsed
    );
    let _ = stop_tx.send(());
    let (max_clients, max_servers) = sampler.await.expect("the sampler ran");
    println!(
        "PgBouncer {}: sqlx pool {POOL_SIZE}, server pool {SERVER_POOL_SIZE}; seen up to \
         {max_clients} PgBouncer clients of {APP_ROLE} on {max_servers} server connections",
        bouncer.version_string()
    );
    assert!(
        max_servers >= 1 && max_servers <= i64::from(SERVER_POOL_SIZE),
        "PgBouncer used {max_servers} server connections for {APP_ROLE} (pool \
         {SERVER_POOL_SIZE}; none means the API did not connect as {APP_ROLE})"
    );
    assert!(
        max_clients > max_servers,
        "PgBouncer saw {max_clients} clients on {max_servers} server connections: nothing \
         was multiplexed"
    );
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
