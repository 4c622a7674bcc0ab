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
    // The servers' libpq (Citus's connections between nodes) must not look for a client
    // certificate in the test runner's home folder.
    let conf = "shared_preload_libraries = 'citus'\nwal_level = logical\nmax_prepared_transactions = 20\n\
                citus.node_conninfo = 'sslmode=require sslcert=/nonexistent/client.crt sslkey=/nonexistent/client.key'";
    let coordinator = TlsServer::start_with(conf);
    let worker = TlsServer::start_with(conf);
    let worker_pool = capliquify::db::connect(&worker.url("localhost", "sslmode=require"), 1)
        .await
        .expect("connect to the worker");
    sqlx::query("CREATE EXTENSION citus")
        .execute(&worker_pool)
        .await
        .unwrap();
    let pool = capliquify::db::connect(&coordinator.url("localhost", "sslmode=require"), 4)
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
