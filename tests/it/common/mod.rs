//! Test support: every test gets its own freshly migrated database on a real PostgreSQL.
//!
//! The server is `DATABASE_URL` when it is set (its database is used only to create and
//! drop the per-test databases), otherwise the embedded cluster under the system temp
//! folder (or `CAPLIQUIFY_TEST_DATA_DIR`), started once and left running for the next
//! test binary (`capliquify --data-dir <folder> db stop` stops it).

pub mod api;
pub mod stress;
pub mod tls_server;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use capliquify::audit::Actor;
use capliquify::billing::Tier;
use capliquify::db::embedded::{EmbeddedCluster, EmbeddedOptions};
use capliquify::tenancy::migrate;
use capliquify::tenancy::{NewTenant, Tenancy, Tenant};
use sqlx::migrate::{Migration, MigrationType};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, SqlSafeStr};

/// The login role the API tests' service connects as (see [`TestDb::app_url`]).
pub const APP_ROLE: &str = "capliquify_app";

/// URL of the server the tests run against, with the database part to be replaced.
fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let cluster = EmbeddedCluster::start(&EmbeddedOptions {
                root: test_cluster_root(),
                durable: false,
                database: "capliquify_test".into(),
            })
            .unwrap_or_else(|e| panic!("cannot start the embedded test cluster: {e}"));
            cluster.admin_url()
        }
    })
}

/// The test cluster's folder: `CAPLIQUIFY_TEST_DATA_DIR`, else one per checkout under the
/// temp folder (reachable when PostgreSQL must run as another user).
pub fn test_cluster_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAPLIQUIFY_TEST_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let checkout = env!("CARGO_MANIFEST_DIR");
    let hash = checkout.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    std::env::temp_dir().join(format!("capliquify-test-{hash:016x}"))
}

/// A second PostgreSQL cluster on this machine, for placement tests: always an embedded
/// cluster of its own (beside the first one's folder), started once and left running.
pub fn second_server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let mut root = test_cluster_root().into_os_string();
        root.push("-second");
        let cluster = EmbeddedCluster::start(&EmbeddedOptions {
            root: PathBuf::from(root),
            durable: false,
            database: "capliquify_test".into(),
        })
        .unwrap_or_else(|e| panic!("cannot start the second embedded test cluster: {e}"));
        cluster.admin_url()
    })
}

fn url_for(server: &str, database: &str) -> String {
    let mut url = url::Url::parse(server).expect("test server URL parses");
    url.set_path(database);
    url.to_string()
}

/// A database of its own for one test, dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    /// The server's maintenance URL (to drop the database); `None` for a database the
    /// test did not make ([`TestDb::adopt`]), which is left alone.
    admin_url: Option<String>,
}

impl TestDb {
    /// A new database with the public schema and the tenant catalog migrated.
    pub async fn new() -> Self {
        Self::new_on(server_url()).await
    }

    /// [`TestDb::new`] on the server of `admin_url` (e.g. [`second_server_url`]).
    pub async fn new_on(admin_url: &str) -> Self {
        let db = Self::empty_on(admin_url).await;
        migrate::migrate_public(&db.pool, migrate::tenant_migrations())
            .await
            .expect("migrations apply");
        db
    }

    /// The URL of this database for the service's least-privilege login role
    /// ([`APP_ROLE`], a member of capliquify_service), created once per cluster. The API
    /// tests serve through it, so every grant the service needs is exercised.
    pub async fn app_url(&self) -> String {
        // The embedded cluster admits only logins with a password: the role gets the test
        // URL's (the cluster's generated one). Roles belong to the cluster; parallel tests
        // may race to create it, or to give a password-less one of an older run its password.
        let mut url = url::Url::parse(&self.url).expect("test URL parses");
        let password = match url.password() {
            Some(p) => format!(" PASSWORD '{}'", p.replace('\'', "''")),
            None => String::new(),
        };
        let has_password = !password.is_empty();
        self.exec(&format!(
            "DO $$ BEGIN
                 CREATE ROLE {APP_ROLE} LOGIN IN ROLE capliquify_service{password};
             EXCEPTION WHEN duplicate_object OR unique_violation THEN
                 BEGIN
                     IF {has_password} AND (SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = '{APP_ROLE}') THEN
                         ALTER ROLE {APP_ROLE}{password};
                     END IF;
                 EXCEPTION WHEN OTHERS THEN NULL;
                 END;
             END $$"
        ))
        .await;
        url.set_username(APP_ROLE).expect("URL takes a user name");
        url.to_string()
    }

    /// A new database with nothing in it.
    pub async fn empty() -> Self {
        Self::empty_on(server_url()).await
    }

    pub async fn empty_on(admin_url: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "cq_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..8)
                .unwrap_or("x")
        );
        let mut admin = PgConnection::connect(admin_url)
            .await
            .expect("connect to the test server");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = url_for(admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await
            .expect("connect to the test database");
        Self {
            name,
            url,
            pool,
            admin_url: Some(admin_url.to_owned()),
        }
    }

    /// A database made and migrated elsewhere (the Citus tests' coordinator, whose workers
    /// are registered in it), reached at `url` through `pool`: the helpers work on it, and
    /// it is not dropped with the value (its server goes with the test).
    pub fn adopt(url: &str, pool: PgPool) -> Self {
        let name = url::Url::parse(url)
            .expect("URL parses")
            .path()
            .trim_start_matches('/')
            .to_owned();
        Self {
            name,
            url: url.to_owned(),
            pool,
            admin_url: None,
        }
    }

    pub fn tenancy(&self) -> Tenancy {
        Tenancy::new(self.pool.clone(), 30)
    }

    /// Provisions a tenant with defaults derived from the slug.
    pub async fn tenant(&self, slug: &str, tier: Tier) -> Tenant {
        let new = NewTenant::parse(slug, &format!("{slug} Inc."), tier, &format!("org_{slug}"))
            .expect("valid tenant");
        self.tenancy()
            .provision(&new, &Actor::operator())
            .await
            .expect("provisioning succeeds")
    }

    /// Runs one SQL statement (tests' own fixtures and probes).
    pub async fn exec(&self, sql: &str) {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn scalar_bool(&self, sql: &str) -> bool {
        sqlx::query_scalar::<_, bool>(AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn schema_exists(&self, schema: &str) -> bool {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&self.pool)
            .await
            .expect("query pg_namespace")
    }

    pub async fn count_tenant_schemas(&self) -> i64 {
        self.scalar_i64("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'")
            .await
    }

    /// Audit actions recorded for a tenant, oldest first.
    pub async fn audit_actions(&self, tenant_id: uuid::Uuid) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT action::text FROM public.audit_logs WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .expect("read audit log")
    }

    /// `verify_tenant_isolation()` as (test_name, result, details).
    pub async fn verify(&self) -> Vec<(String, String, String)> {
        sqlx::query_as("SELECT test_name, result, details FROM verify_tenant_isolation()")
            .fetch_all(&self.pool)
            .await
            .expect("verify_tenant_isolation runs")
    }

    /// The result of one named isolation check.
    pub async fn check(&self, name: &str) -> (String, String) {
        self.verify()
            .await
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, r, d)| (r, d))
            .unwrap_or_else(|| panic!("no check named {name}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside any async context we could borrow; a short-lived thread with
        // its own runtime removes the database even when the test panicked.
        let Some(admin_url) = self.admin_url.clone() else {
            return;
        };
        let name = self.name.clone();
        let pool = self.pool.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                drop(pool);
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}

/// The newest embedded tenant migration's version plus `offset`: tests add migrations after
/// the real ones without knowing how many there are.
pub fn version(offset: i64) -> i64 {
    migrate::latest_version(migrate::tenant_migrations()) + offset
}

/// The embedded tenant migrations plus `extra` ones (tests of later migrations).
pub fn tenant_migrations_with(extra: &[(i64, &str, &str)]) -> Vec<Migration> {
    let mut all: Vec<Migration> = migrate::tenant_migrations().to_vec();
    for (version, description, sql) in extra {
        all.push(Migration::new(
            *version,
            description.to_string().into(),
            MigrationType::Simple,
            AssertSqlSafe(sql.to_string()).into_sql_str(),
            false,
        ));
    }
    all
}

/// Waits (up to 10 s) for a backend whose query matches `pattern`, then terminates it.
pub async fn kill_backend_running(db: &TestDb, pattern: &str) -> bool {
    for _ in 0..200 {
        let killed: Option<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND query LIKE $1 AND state = 'active' LIMIT 1",
        )
        .bind(pattern)
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        if killed == Some(true) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The account a server that refuses to run as root (PostgreSQL, PgBouncer) runs as when the
/// tests are root: `postgres`, else `nobody`; `None` when we are not root.
pub fn unprivileged_user() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt as _;
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
        "running as root, but PostgreSQL and PgBouncer refuse to run as root and /etc/passwd \
         has neither a `postgres` nor a `nobody` user",
    ))
}
