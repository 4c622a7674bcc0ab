//! Citus mode (issue 17): detected from the connected database and shown by `doctor`.
//!
//! The tests with Citus loaded need its library: `scripts/install-citus.sh` builds it from
//! `../shared/vendor/citus-13.2.2.tar.gz` (and does nothing when it is installed). Where
//! neither the library nor the tarball is found, those tests print why and return; the
//! plain-server test always runs.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::common::TestDb;
use crate::common::tls_server::TlsServer;
use capliquify::db::citus::{self, CitusMode};

/// The installed `citus.so`, building it with the script when the tarball is there.
fn citus_library() -> Option<&'static PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let tarball = std::env::var_os("CAPLIQUIFY_CITUS_TARBALL")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("../shared/vendor/citus-13.2.2.tar.gz"));
            if tarball.is_file() {
                let out = Command::new(root.join("scripts/install-citus.sh"))
                    .arg(&tarball)
                    .output()
                    .expect("run scripts/install-citus.sh");
                assert!(
                    out.status.success(),
                    "scripts/install-citus.sh failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return Some(PathBuf::from(
                    String::from_utf8_lossy(&out.stdout).trim().to_owned(),
                ));
            }
            let bin = capliquify::db::embedded::find_bin_dir().ok()?;
            let lib = bin.parent()?.join("lib/citus.so");
            lib.is_file().then_some(lib)
        })
        .as_ref()
}

#[tokio::test]
async fn doctor_says_citus_is_off_on_a_plain_server() {
    let db = TestDb::new().await;
    let mode = citus::detect(&db.pool).await.unwrap();
    assert_eq!(
        mode,
        CitusMode::Off {
            reason: "the citus extension is not installed in this database".into()
        }
    );
    let check = citus::doctor_check(&db.pool).await.unwrap();
    assert_eq!(check.result, "PASS");
    assert!(check.details.starts_with("off: "), "{}", check.details);
}

#[tokio::test]
async fn citus_mode_is_detected_once_the_library_is_loaded_and_the_extension_made() {
    let Some(lib) = citus_library() else {
        eprintln!(
            "skipped: Citus is not installed and ../shared/vendor/citus-13.2.2.tar.gz is not here (scripts/install-citus.sh)"
        );
        return;
    };
    assert!(lib.is_file(), "{} is missing", lib.display());
    let server = TlsServer::start_with("shared_preload_libraries = 'citus'");
    let pool = capliquify::db::connect(&server.url("localhost", "sslmode=require"), 1)
        .await
        .expect("connect to the Citus server");

    // The library alone: the extension is not made in this database yet.
    let mode = citus::detect(&pool).await.unwrap();
    let CitusMode::Off { reason } = &mode else {
        panic!("expected off before CREATE EXTENSION, got {mode:?}");
    };
    assert!(reason.contains("CREATE EXTENSION citus"), "{reason}");

    sqlx::query("CREATE EXTENSION citus")
        .execute(&pool)
        .await
        .expect("CREATE EXTENSION citus");
    let mode = citus::detect(&pool).await.unwrap();
    let CitusMode::On {
        version,
        workers,
        schema_based_sharding,
    } = &mode
    else {
        panic!("expected on, got {mode:?}");
    };
    assert!(version.starts_with("13.2"), "{version}");
    assert_eq!(*workers, 0, "no worker registered");
    assert!(!schema_based_sharding, "off by default");

    // doctor's line warns (not a failure) that without a worker tenants stay on the
    // coordinator.
    let check = citus::doctor_check(&pool).await.unwrap();
    assert_eq!(check.result, "WARN", "{}", check.details);
    assert!(
        check
            .details
            .contains("0 of 0 tenant schema(s) distributed"),
        "{}",
        check.details
    );
    assert!(
        check.details.contains("no worker registered"),
        "{}",
        check.details
    );
}

#[tokio::test]
async fn without_citus_placing_a_tenant_does_nothing() {
    let db = TestDb::new().await;
    let schema = capliquify::tenancy::ident::SchemaName::parse("tenant_not_there").unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let placed = citus::place_tenant(&mut conn, uuid::Uuid::new_v4(), &schema)
        .await
        .unwrap();
    assert!(!placed, "nothing to place on a plain server");
    assert!(citus::place_fleet(&db.pool).await.unwrap().is_none());
    let err = citus::status(&db.pool).await.unwrap_err();
    assert!(err.to_string().contains("Citus mode is off"), "{err}");
}

#[tokio::test]
async fn a_tenant_provisioned_on_a_coordinator_lands_whole_on_its_worker_and_its_role_works_there()
{
    if citus_library().is_none() {
        eprintln!("skipped: Citus is not installed (scripts/install-citus.sh)");
        return;
    }
    let cluster = CitusCluster::start().await;
    let (pool, worker) = (cluster.pool.clone(), &cluster.worker);
    let actor = capliquify::audit::Actor::operator();

    let tenancy = capliquify::tenancy::Tenancy::new(pool.clone(), 30);
    let new = capliquify::tenancy::NewTenant::parse(
        "acme",
        "Acme",
        capliquify::billing::Tier::Professional,
        "org_acme",
    )
    .unwrap();
    let tenant = tenancy.provision(&new, &actor).await.unwrap();

    assert_on_worker(&pool, &tenant.schema_name, worker.port).await;

    // The tenant's role (NOLOGIN here) reaches its worker, and writes there.
    let role: String = sqlx::query_scalar("SELECT public.tenant_role_name($1)::text")
        .bind(tenant.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL search_path TO \"{}\"; SET LOCAL ROLE \"{role}\"",
        tenant.schema_name
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO companies (name) VALUES ('Works')")
        .execute(&mut *tx)
        .await
        .expect("the tenant's role writes on its worker");
    tx.commit().await.unwrap();
    let login: (bool, bool) = sqlx::query_as(
        "SELECT (SELECT rolcanlogin FROM pg_roles WHERE rolname = $1),
                (SELECT result::boolean FROM run_command_on_workers(
                    format('SELECT rolcanlogin FROM pg_roles WHERE rolname = %L', $1::text)))",
    )
    .bind(&role)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        login,
        (false, true),
        "NOLOGIN on the coordinator, LOGIN on the worker"
    );
    let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\".companies",
        tenant.schema_name
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, 1);
    let status = citus::status(&pool).await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].tenants, 1);
    assert!(status[0].bytes > 0);

    // A schema of the schema pool is placed on the worker when it is made, and a sign-up
    // that claims it gets it there, its role logging in to the worker.
    capliquify::tenancy::schema_pool::fill(&pool, 1, |_| {})
        .await
        .unwrap();
    let pooled: uuid::Uuid = sqlx::query_scalar("SELECT tenant_id FROM public.tenant_schema_pool")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_on_worker(&pool, &format!("tenant_{}", pooled.simple()), worker.port).await;
    let new = capliquify::tenancy::NewTenant::parse(
        "pooled",
        "Pooled",
        capliquify::billing::Tier::Professional,
        "org_pooled",
    )
    .unwrap();
    let claimed = tenancy.provision(&new, &actor).await.unwrap();
    assert_eq!(claimed.id, pooled);
    assert_on_worker(&pool, &claimed.schema_name, worker.port).await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL search_path TO \"{}\"; SET LOCAL ROLE \"capliquify_t_{}\"",
        claimed.schema_name,
        claimed.id.simple()
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO companies (name) VALUES ('Pooled')")
        .execute(&mut *tx)
        .await
        .expect("the claimed schema's role writes on its worker");
    tx.commit().await.unwrap();
}

/// A coordinator and one worker with Citus, `capliquify migrate`d, the worker registered
/// (`cluster add-worker`) and `public` prepared, as `capliquify migrate` leaves them. The
/// servers stop when it is dropped.
struct CitusCluster {
    pool: sqlx::PgPool,
    /// The coordinator's URL (its `postgres` database, as the superuser).
    url: String,
    worker: TlsServer,
    _coordinator: TlsServer,
}

/// The configuration of every node. The servers' libpq (Citus's connections between nodes)
/// must not look for a client certificate in the test runner's home folder.
const NODE_CONF: &str = "shared_preload_libraries = 'citus'\nwal_level = logical\nmax_prepared_transactions = 20\n\
    citus.node_conninfo = 'sslmode=require sslcert=/nonexistent/client.crt sslkey=/nonexistent/client.key'";

impl CitusCluster {
    /// A server with Citus made in its database, ready to be registered as a worker.
    async fn new_node() -> TlsServer {
        let node = TlsServer::start_with(NODE_CONF);
        let pool = capliquify::db::connect(&node.url("localhost", "sslmode=require"), 1)
            .await
            .expect("connect to the worker");
        sqlx::query("CREATE EXTENSION citus")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        node
    }

    async fn start() -> Self {
        let coordinator = TlsServer::start_with(NODE_CONF);
        let worker = Self::new_node().await;
        let url = coordinator.url("localhost", "sslmode=require");
        let pool = capliquify::db::connect(&url, 4)
            .await
            .expect("connect to the coordinator");
        sqlx::query("CREATE EXTENSION citus")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("SELECT citus_set_coordinator_host('127.0.0.1', $1)")
            .bind(i32::from(coordinator.port))
            .execute(&pool)
            .await
            .unwrap();
        let w = citus::Worker::parse(&format!("127.0.0.1:{}", worker.port)).unwrap();
        capliquify::tenancy::migrate::migrate_public(
            &pool,
            capliquify::tenancy::migrate::tenant_migrations(),
        )
        .await
        .unwrap();
        let actor = capliquify::audit::Actor::operator();
        citus::add_worker(&pool, &w, &actor).await.unwrap();
        assert!(citus::place_fleet(&pool).await.unwrap().is_some());
        Self {
            pool,
            url,
            worker,
            _coordinator: coordinator,
        }
    }
}

/// Every table of `schema` is distributed, with every shard on the worker at `port`.
async fn assert_on_worker(pool: &sqlx::PgPool, schema: &str, port: u16) {
    let (tables, distributed, elsewhere): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(p.logicalrelid),
                count(*) FILTER (WHERE p.logicalrelid IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM citus_shards s WHERE s.table_name = c.oid AND s.nodeport = $2))
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
          WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
    )
    .bind(schema)
    .bind(i32::from(port))
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(tables >= 9, "{schema}: {tables} tables");
    assert_eq!(distributed, tables, "{schema}: every table distributed");
    assert_eq!(elsewhere, 0, "{schema}: every shard on the worker");
}

/// Runs `sql` in a transaction as the tenant's own role, with its schema on the search
/// path (as the API does), and commits.
async fn as_tenant(pool: &sqlx::PgPool, id: uuid::Uuid, schema: &str, sql: &str) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL search_path TO \"{schema}\"; SET LOCAL ROLE \"capliquify_t_{}\"; {sql}",
        id.simple()
    )))
    .execute(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("as {schema}'s role: {sql}: {e}"));
    tx.commit().await.unwrap();
}

/// The business tables a test fills, as (table, rows, md5 of the rows in order).
async fn fingerprint(pool: &sqlx::PgPool, schema: &str) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for table in ["companies", "products", "sales"] {
        let (rows, digest): (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))
               FROM \"{schema}\".{table} t"
        )))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{schema}.{table}: {e}"));
        out.push((table.to_owned(), rows, digest));
    }
    out
}

/// Rows of `schema.table` in its shard on the worker (read on the worker itself, as its
/// superuser), or `None` when the worker has no shard of it.
async fn rows_on_worker(
    coordinator: &sqlx::PgPool,
    worker: &sqlx::PgPool,
    schema: &str,
    table: &str,
) -> Option<i64> {
    let shard: Option<i64> = sqlx::query_scalar(
        "SELECT shardid FROM citus_shards WHERE table_name = to_regclass(quote_ident($1) || '.' || $2)",
    )
    .bind(schema)
    .bind(table)
    .fetch_optional(coordinator)
    .await
    .unwrap();
    let mut conn = worker.acquire().await.unwrap();
    sqlx::query("SET citus.override_table_visibility = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let there: bool =
        sqlx::query_scalar("SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL")
            .bind(schema)
            .bind(format!("{table}_{}", shard?))
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    if !there {
        return None;
    }
    Some(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{schema}\".{table}_{}",
            shard?
        )))
        .fetch_one(&mut *conn)
        .await
        .unwrap(),
    )
}

/// What a node holds of a tenant: (schemas, roles, relations of the schema's name, worker
/// passwords in pg_dist_authinfo, Citus's distributed-schema entries).
async fn traces(node: &sqlx::PgPool, schema: &str, role: &str) -> (i64, i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = $1),
                (SELECT count(*) FROM pg_roles WHERE rolname = $2),
                (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1),
                (SELECT count(*) FROM pg_dist_authinfo WHERE rolename = $2),
                (SELECT count(*) FROM pg_dist_schema d JOIN pg_namespace n ON n.oid = d.schemaid
                  WHERE n.nspname = $1)",
    )
    .bind(schema)
    .bind(role)
    .fetch_one(node)
    .await
    .unwrap()
}

#[tokio::test]
async fn backup_restore_clone_suspend_and_purge_keep_tenants_on_workers_in_citus_mode() {
    use capliquify::tenancy::backup::{self, BackupKey, RestoreMode, Trust};
    if citus_library().is_none() {
        eprintln!("skipped: Citus is not installed (scripts/install-citus.sh)");
        return;
    }
    let cluster = CitusCluster::start().await;
    let pool = &cluster.pool;
    let port = cluster.worker.port;
    let worker = capliquify::db::connect(&cluster.worker.url("localhost", "sslmode=require"), 1)
        .await
        .expect("connect to the worker");
    let actor = capliquify::audit::Actor::operator();
    let tenancy = capliquify::tenancy::Tenancy::new(pool.clone(), 30);
    let new = capliquify::tenancy::NewTenant::parse(
        "alpha",
        "Alpha",
        capliquify::billing::Tier::Professional,
        "org_alpha",
    )
    .unwrap();
    let alpha = tenancy.provision(&new, &actor).await.unwrap();
    let schema = alpha.schema_name.clone();
    let role = format!("capliquify_t_{}", alpha.id.simple());
    as_tenant(
        pool,
        alpha.id,
        &schema,
        "INSERT INTO companies (id, name) VALUES ('11111111-1111-1111-1111-111111111111', 'Alpha');
         INSERT INTO products (company_id, sku, name, unit_cost, unit_price)
           SELECT '11111111-1111-1111-1111-111111111111', 'SKU-' || g, 'P ' || g, g, 2 * g
             FROM generate_series(1, 25) g;
         INSERT INTO sales (company_id, product_id, sale_date, quantity, unit_price, total_amount)
           SELECT company_id, id, date '2026-01-01', 2, unit_price, 2 * unit_price FROM products",
    )
    .await;
    let before = fingerprint(pool, &schema).await;
    assert_eq!(before[1].1, 25);
    assert_eq!(
        rows_on_worker(pool, &worker, &schema, "products").await,
        Some(25)
    );

    // Suspend and reactivate change the registry only: the data stays on the worker.
    tenancy
        .suspend("alpha", Some("check"), &actor)
        .await
        .unwrap();
    tenancy.reactivate("alpha", &actor).await.unwrap();
    assert_on_worker(pool, &schema, port).await;
    assert_eq!(fingerprint(pool, &schema).await, before);

    // Backup reads the shards through the coordinator; restore --replace puts the archive's
    // rows back on a worker, every table distributed again.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alpha.capliquify-backup");
    let key = BackupKey::parse("citus-test-backup-key-0123456789abcdef").unwrap();
    let report = backup::backup(
        pool,
        "alpha",
        Some(&file),
        true,
        Some(&key),
        &actor,
        &|_| {},
    )
    .await
    .expect("backup in Citus mode");
    let products = report
        .parts
        .iter()
        .find(|p| p.path == "data/products.copy")
        .unwrap();
    assert_eq!(products.rows, 25, "the backup read the worker's rows");
    as_tenant(
        pool,
        alpha.id,
        &schema,
        "DELETE FROM sales; DELETE FROM products WHERE sku <> 'SKU-1'",
    )
    .await;
    assert_ne!(fingerprint(pool, &schema).await, before);
    backup::restore(
        pool,
        &file,
        RestoreMode::Replace,
        Trust::key(&key),
        &actor,
        &|_| {},
    )
    .await
    .expect("restore --replace in Citus mode");
    assert_on_worker(pool, &schema, port).await;
    assert_eq!(
        fingerprint(pool, &schema).await,
        before,
        "the backup's rows are back"
    );
    assert_eq!(
        rows_on_worker(pool, &worker, &schema, "products").await,
        Some(25)
    );
    let shell_bytes: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT pg_relation_size('\"{schema}\".products')"
    )))
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(shell_bytes, 0, "no row left in the coordinator's shell");
    as_tenant(
        pool,
        alpha.id,
        &schema,
        "INSERT INTO companies (name) VALUES ('after restore')",
    )
    .await;
    let temp: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\\_r%'")
            .fetch_one(&worker)
            .await
            .unwrap();
    assert_eq!(temp, 0, "no restore's build schema left on the worker");

    // A clone is a new tenant: its own schema on a worker, its own role logging in there.
    let copy = backup::clone_tenant(pool, "alpha", "alpha-copy", None, None, &actor, &|_| {})
        .await
        .expect("clone in Citus mode");
    assert_on_worker(pool, &copy.schema_name, port).await;
    let mut copied = fingerprint(pool, &copy.schema_name).await;
    copied[0] = before[0].clone(); // the clone has one company more ("after restore")
    assert_eq!(copied[1..], before[1..]);
    as_tenant(
        pool,
        copy.tenant_id,
        &copy.schema_name,
        "INSERT INTO companies (name) VALUES ('clone')",
    )
    .await;

    // Purge: schema, shards, role and worker password gone from every node.
    tenancy.soft_delete("alpha", &actor).await.unwrap();
    tenancy
        .purge("alpha", true, Some("alpha"), &actor)
        .await
        .expect("purge in Citus mode");
    assert_eq!(
        traces(pool, &schema, &role).await,
        (0, 0, 0, 0, 0),
        "coordinator"
    );
    assert_eq!(
        traces(&worker, &schema, &role).await,
        (0, 0, 0, 0, 0),
        "worker"
    );
    let shards: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM citus_shards WHERE table_name::text LIKE $1 || '.%'",
    )
    .bind(&schema)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(shards, 0);

    // The purged tenant restored from its archive: registered again, on a worker, its role
    // made again with a worker login.
    backup::restore(
        pool,
        &file,
        RestoreMode::Recreate,
        Trust::key(&key),
        &actor,
        &|_| {},
    )
    .await
    .expect("restore of a purged tenant in Citus mode");
    assert_on_worker(pool, &schema, port).await;
    assert_eq!(fingerprint(pool, &schema).await, before);
    assert_eq!(traces(pool, &schema, &role).await.3, 1, "a worker password");
    as_tenant(
        pool,
        alpha.id,
        &schema,
        "INSERT INTO companies (name) VALUES ('recreated')",
    )
    .await;
}

/// The hostile-SQL suite of tests/it/roles.rs, unchanged, on a Citus coordinator whose
/// tenants' rows live on the worker: every statement refused with 42501 as on plain
/// PostgreSQL, the service's login as powerless, and the documented `SET ROLE` gap the
/// same (docs/security.md).
#[tokio::test]
async fn the_hostile_sql_suite_holds_in_citus_mode_with_the_rows_on_a_worker() {
    if citus_library().is_none() {
        eprintln!("skipped: Citus is not installed (scripts/install-citus.sh)");
        return;
    }
    let cluster = CitusCluster::start().await;
    let worker = capliquify::db::connect(&cluster.worker.url("localhost", "sslmode=require"), 1)
        .await
        .expect("connect to the worker");
    let db = crate::common::TestDb::adopt(&cluster.url, cluster.pool.clone());
    let f = crate::roles::fleet_on(db).await;
    for scope in [&f.a, &f.b] {
        assert_on_worker(&cluster.pool, scope.schema.as_str(), cluster.worker.port).await;
    }
    assert_eq!(
        rows_on_worker(&cluster.pool, &worker, f.b.schema.as_str(), "companies").await,
        Some(1),
        "B's secret is on the worker"
    );
    crate::roles::hostile_sql_is_refused(&f).await;
    crate::roles::service_login_is_least_privileged(&f).await;
    crate::roles::separate_set_role_switches_tenants(&f).await;
}

/// tests/it/isolation_stress.rs on a Citus coordinator (smaller: every server shares the
/// test machine): concurrent requests of 8 tenants through an API pool of 4 connections,
/// each answered only with its own rows, which live on the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_see_each_others_rows_in_citus_mode() {
    if citus_library().is_none() {
        eprintln!("skipped: Citus is not installed (scripts/install-citus.sh)");
        return;
    }
    let cluster = CitusCluster::start().await;
    let db = crate::common::TestDb::adopt(&cluster.url, cluster.pool.clone());
    let app = crate::common::api::TestApp::spawn_on(
        db,
        capliquify::http::HttpConfig::default(),
        4,
        Vec::new(),
    )
    .await;
    let params = crate::common::stress::Params {
        tenants: 8,
        tasks: 16,
        min_requests: 2_000,
        target_requests: 2_050,
    };
    let outcome = crate::common::stress::run(&app, app.url(""), "iso", params).await;
    eprintln!(
        "{} requests, {} rows created in {:.1?}",
        outcome.requests, outcome.created, outcome.elapsed
    );
    let (schemas, on_worker): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE EXISTS (
                    SELECT 1 FROM citus_shards s WHERE s.table_name::text = t.schema_name || '.products'
                       AND s.nodeport = $1))
           FROM public.tenants t",
    )
    .bind(i32::from(cluster.worker.port))
    .fetch_one(&cluster.pool)
    .await
    .unwrap();
    assert_eq!(
        (schemas, on_worker),
        (8, 8),
        "every tenant's products on the worker"
    );
}

/// Turns on Citus's per-tenant statement counting on `node` (a reload; `cluster tenants`
/// needs it on every node), with periods of a day (aligned to UTC midnight), so none ends
/// during the test.
async fn count_tenant_statements(node: &sqlx::PgPool) {
    for setting in [
        "ALTER SYSTEM SET citus.stat_tenants_track = 'all'",
        "ALTER SYSTEM SET citus.stat_tenants_period = 86400",
        "SELECT pg_reload_conf()",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(setting))
            .execute(node)
            .await
            .unwrap_or_else(|e| panic!("{setting}: {e}"));
    }
}

/// The console's Citus page, signed in and served as the service's login role: each worker
/// with the tenants on it, as their shards are found on the workers themselves, and the
/// busiest tenants as Citus counted them, each with the worker holding it.
#[tokio::test]
async fn the_console_shows_each_worker_with_its_tenants_and_the_busiest_tenants() {
    if citus_library().is_none() {
        eprintln!("skipped: Citus is not installed (scripts/install-citus.sh)");
        return;
    }
    let cluster = CitusCluster::start().await;
    let pool = cluster.pool.clone();
    let db = crate::common::TestDb::adopt(&cluster.url, pool.clone());
    let app = crate::console::app_with_console_on(db).await;
    let actor = capliquify::audit::Actor::operator();
    let mut tenants = Vec::new();
    for slug in ["alpha", "beta", "gamma"] {
        tenants.push(
            app.db
                .tenant(slug, capliquify::billing::Tier::Starter)
                .await,
        );
    }
    // A second worker, and gamma moved there: two on the first worker, one on the second.
    let second = CitusCluster::new_node().await;
    let w2 = citus::Worker::parse(&format!("127.0.0.1:{}", second.port)).unwrap();
    citus::add_worker(&pool, &w2, &actor).await.unwrap();
    citus::move_tenant(&pool, "gamma", &w2, &actor)
        .await
        .expect("gamma moves to the second worker");
    // Citus drops the shards a move left on the old worker later; now, so that what each
    // worker holds is what it serves.
    sqlx::query("CALL citus_cleanup_orphaned_resources()")
        .execute(&pool)
        .await
        .unwrap();
    let nodes = [
        (cluster.worker.port, connect(&cluster.worker).await),
        (second.port, connect(&second).await),
    ];
    count_tenant_statements(&pool).await;
    for (_, node) in &nodes {
        count_tenant_statements(node).await;
    }
    for t in &tenants[..2] {
        as_tenant(
            &pool,
            t.id,
            &t.schema_name,
            "INSERT INTO companies (name) VALUES ('Busy'); SELECT count(*) FROM companies",
        )
        .await;
    }

    let mut browser = crate::console::Browser::signed_in(&app).await;
    let page = browser.get("/console/cluster").await;
    assert_eq!(page.status, reqwest::StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("2 active worker(s)"), "{}", page.text);

    // Each worker's tenants, counted independently: every tenant schema Citus knows
    // (citus_schemas) whose shard the worker itself holds.
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT s.schema_name::text FROM citus_schemas s
           JOIN public.tenants t ON t.schema_name = s.schema_name::text",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(schemas.len(), 3, "{schemas:?}");
    for ((port, node), expected) in nodes.iter().zip([2, 1]) {
        let mut on_it = 0;
        for schema in &schemas {
            if rows_on_worker(&pool, node, schema, "companies")
                .await
                .is_some()
            {
                on_it += 1;
            }
        }
        assert_eq!(on_it, expected, "tenants on the worker at port {port}");
        let worker = format!("127.0.0.1:{port}");
        let cells = crate::console::row_cells(&page.text, &worker)
            .unwrap_or_else(|| panic!("no row of {worker}: {}", page.text));
        assert_eq!(cells[1], "active", "{cells:?}");
        assert_eq!(cells[2], "yes", "{cells:?}");
        assert_eq!(cells[3], on_it.to_string(), "{worker}: {cells:?}");
        let bytes: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(shard_size), 0)::bigint FROM citus_shards
              WHERE nodeport = $1 AND citus_table_type = 'schema'",
        )
        .bind(i32::from(*port))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(bytes > 0);
        assert!(
            page.text.contains(&format!("<data value=\"{bytes}\">")),
            "{worker}: {bytes} bytes: {}",
            page.text
        );
    }

    // The busiest: the tenants that ran statements, on their workers, with the counts
    // citus_stat_tenants has for them (summed over the nodes, as `cluster tenants`).
    for (t, port) in tenants[..2].iter().zip([cluster.worker.port; 2]) {
        let (queries, reads): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(query_count_in_this_period), 0)::bigint,
                    coalesce(sum(read_count_in_this_period), 0)::bigint
               FROM citus_stat_tenants(true) WHERE tenant_attribute = $1",
        )
        .bind(&t.schema_name)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(queries >= 2 && reads >= 1, "{}: {queries}, {reads}", t.slug);
        let cells = crate::console::row_cells(&page.text, &t.slug)
            .unwrap_or_else(|| panic!("{} is not among the busiest: {}", t.slug, page.text));
        assert_eq!(cells[1], format!("127.0.0.1:{port}"), "{cells:?}");
        assert_eq!(cells[2], queries.to_string(), "{}: {cells:?}", t.slug);
        assert_eq!(cells[3], reads.to_string(), "{}: {cells:?}", t.slug);
    }
    assert!(
        crate::console::row_cells(&page.text, "gamma").is_none(),
        "gamma ran nothing: {}",
        page.text
    );

    // The largest tenants (the overview, the admin API) as the service's login: the sizes
    // Citus has for the shards on the workers, not the coordinator's empty shells.
    let service = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&app.db.app_url().await)
        .await
        .unwrap();
    let sizes = capliquify::monitor::sizes(&service, 10).await.unwrap();
    for t in &tenants {
        let expected: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(shard_size), 0)::bigint FROM citus_shards
              WHERE citus_table_type = 'schema' AND table_name::text LIKE $1 || '.%'",
        )
        .bind(&t.schema_name)
        .fetch_one(&pool)
        .await
        .unwrap();
        let shown = sizes
            .iter()
            .find(|s| s.slug.as_deref() == Some(t.slug.as_str()))
            .unwrap_or_else(|| panic!("{} not among {sizes:?}", t.slug));
        assert!(expected > 0, "{}", t.slug);
        assert_eq!(shown.total_bytes, expected, "{}", t.slug);
    }
}

async fn connect(node: &TlsServer) -> sqlx::PgPool {
    capliquify::db::connect(&node.url("localhost", "sslmode=require"), 1)
        .await
        .expect("connect to the worker")
}
