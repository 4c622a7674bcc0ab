//! Placements and moves between two real PostgreSQL clusters on this machine: the tests'
//! cluster (home) and a second embedded cluster (`eu2`).

use std::time::Duration;

use crate::common::TestDb;
use crate::common::api::{TestApp, TestTenant};
use capliquify::access::Role;
use capliquify::audit::Actor;
use capliquify::billing::Tier;
use capliquify::db::{ClusterName, Clusters, TenantScope, scope};
use capliquify::http::HttpConfig;
use capliquify::tenancy::placement::{self, MoveError, MoveOptions};
use capliquify::tenancy::registry;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{AssertSqlSafe, PgPool};

/// The app on home with `eu2` (a database on the second cluster, migrated) beside it.
struct Placed {
    app: TestApp,
    eu2: TestDb,
}

fn eu2_name() -> ClusterName {
    ClusterName::parse("eu2").unwrap()
}

impl Placed {
    async fn new() -> Self {
        let eu2 = TestDb::new_on(crate::common::second_server_url()).await;
        // The service reaches eu2 as its least-privilege login role, as it does home.
        let eu2_service = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect(&eu2.app_url().await)
            .await
            .unwrap();
        let app =
            TestApp::spawn_placed(HttpConfig::default(), 10, vec![(eu2_name(), eu2_service)]).await;
        Self { app, eu2 }
    }

    fn clusters(&self) -> Clusters {
        Clusters::single(self.app.db.pool.clone()).with(eu2_name(), self.eu2.pool.clone())
    }

    async fn move_to(&self, slug: &str, to: &str) -> Result<placement::MoveReport, MoveError> {
        placement::move_tenant(&self.clusters(), slug, to, &Actor::operator(), &quick()).await
    }

    async fn cluster_of(&self, slug: &str) -> (String, Option<String>) {
        let t = registry::find(&self.app.db.pool, slug).await.unwrap();
        (t.cluster, t.moving_to)
    }
}

fn quick() -> MoveOptions {
    MoveOptions {
        drain: Duration::ZERO,
        lock_timeout: Duration::from_secs(30),
    }
}

async fn schema_exists(pool: &PgPool, schema: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn count(pool: &PgPool, schema: &str, table: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{schema}\".{table}"
    )))
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A tenant with companies, products, sales and an (audited) scenario, made through the API.
async fn tenant_with_data(app: &TestApp, slug: &str) -> TestTenant {
    let t = app.tenant(slug, Tier::Professional).await;
    let company = app.company(&t, "Works").await;
    let token = app.token_for(&t, Role::Member);
    for i in 0..5 {
        let product = app
            .post(
                &token,
                "/api/v1/products",
                json!({
                    "company_id": company, "sku": format!("SKU-{i}"), "name": format!("Widget {i}"),
                    "unit_cost": "1.25", "unit_price": "2.50"
                }),
            )
            .await;
        assert_eq!(product.status, StatusCode::CREATED, "{}", product.text);
    }
    let schema = &t.tenant.schema_name;
    // Many sales rows, with NULLs, decimals and dates, straight in SQL.
    app.db
        .exec(&format!(
            "INSERT INTO \"{schema}\".sales (company_id, product_id, sale_date, quantity, unit_price,
                                           total_amount, channel)
             SELECT c.id, CASE WHEN g % 7 = 0 THEN NULL ELSE p.id END, date '2026-01-01' + g % 300,
                    1 + g % 9, 3.75 + g % 11, (1 + g % 9) * (3.75 + g % 11),
                    CASE WHEN g % 2 = 0 THEN 'web' END
               FROM generate_series(1, 2000) g
               CROSS JOIN LATERAL (SELECT id FROM \"{schema}\".companies LIMIT 1) c
               CROSS JOIN LATERAL (SELECT id FROM \"{schema}\".products ORDER BY sku OFFSET g % 5 LIMIT 1) p"
        ))
        .await;
    let scenario = app
        .post(
            &token,
            "/api/v1/scenarios",
            json!({
                "company_id": company, "name": "Base", "parameters": { "growth": 0.1 }
            }),
        )
        .await;
    assert_eq!(scenario.status, StatusCode::CREATED, "{}", scenario.text);
    t
}

#[tokio::test]
async fn a_tenant_moves_to_another_cluster_and_back_with_its_data_and_the_api_follows() {
    let p = Placed::new().await;
    let t = tenant_with_data(&p.app, "mover").await;
    let other = tenant_with_data(&p.app, "stayer").await;
    let schema = t.tenant.schema_name.clone();
    let home = p.app.db.pool.clone();
    let token = p.app.token_for(&t, Role::Member);
    let before = p.app.get(&token, "/api/v1/products?limit=50").await.body;
    let sales_before = count(&home, &schema, "sales").await;
    assert_eq!(sales_before, 2000);

    let report = p.move_to("mover", "eu2").await.expect("move succeeds");
    assert_eq!((report.from.as_str(), report.to.as_str()), ("home", "eu2"));
    let sales = report.tables.iter().find(|c| c.table == "sales").unwrap();
    assert_eq!(sales.rows, sales_before);
    assert_eq!(p.cluster_of("mover").await, ("eu2".to_owned(), None));
    assert!(
        !schema_exists(&home, &schema).await,
        "the source copy is dropped"
    );
    assert!(schema_exists(&p.eu2.pool, &schema).await);
    assert_eq!(count(&p.eu2.pool, &schema, "sales").await, sales_before);
    assert_eq!(count(&p.eu2.pool, &schema, "products").await, 5);
    // The tenant's database role moved with it: granted on eu2, dropped at home.
    let role = capliquify::db::scope::role_name(t.tenant.id);
    let has_role = |pool: PgPool, role: String| async move {
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert!(has_role(p.eu2.pool.clone(), role.clone()).await);
    assert!(!has_role(home.clone(), role.clone()).await);
    // The generated columns and the version history came along.
    let version: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT max(version) FROM \"{schema}\".schema_migrations"
    )))
    .fetch_one(&p.eu2.pool)
    .await
    .unwrap();
    assert_eq!(Some(version), t.tenant.schema_version);

    // The API now reads and writes the tenant on eu2; the other tenant stays home.
    assert_eq!(
        p.app.get(&token, "/api/v1/products?limit=50").await.body,
        before
    );
    let company = before["data"][0]["company_id"].as_str().unwrap().to_owned();
    let created = p
        .app
        .post(&token, "/api/v1/products", json!({
            "company_id": company, "sku": "NEW-1", "name": "Made on eu2", "unit_cost": "1", "unit_price": "2"
        }))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(count(&p.eu2.pool, &schema, "products").await, 6);
    let scenario = p
        .app
        .post(
            &token,
            "/api/v1/scenarios",
            json!({ "company_id": company, "name": "On eu2", "parameters": {} }),
        )
        .await;
    assert_eq!(scenario.status, StatusCode::CREATED, "{}", scenario.text);
    let overview = p.app.get(&token, "/api/v1/tenant").await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.text);
    assert_eq!(overview.body["usage"]["users"], 4, "members come from home");
    let stayer = p.app.token_for(&other, Role::Member);
    assert_eq!(
        p.app.get(&stayer, "/api/v1/products").await.status,
        StatusCode::OK
    );
    assert!(schema_exists(&home, &other.tenant.schema_name).await);

    // The audited write on eu2 reached the trail, with the move itself.
    let admin = p.app.token_for(&t, Role::Admin);
    let trail = p.app.get(&admin, "/api/v1/audit-logs?limit=200").await;
    assert_eq!(trail.status, StatusCode::OK, "{}", trail.text);
    let actions: Vec<&str> = trail.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "scenario.created").count(),
        2,
        "{actions:?}"
    );
    assert!(actions.contains(&"tenant.moved"), "{actions:?}");
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM public.audit_outbox")
        .fetch_one(&p.eu2.pool)
        .await
        .unwrap();
    assert_eq!(outbox, 0, "drained into the home trail");

    // And back home, with what was written on eu2.
    p.move_to("mover", "home")
        .await
        .expect("move back succeeds");
    assert_eq!(p.cluster_of("mover").await, ("home".to_owned(), None));
    assert!(!schema_exists(&p.eu2.pool, &schema).await);
    assert_eq!(count(&home, &schema, "products").await, 6);
    assert_eq!(count(&home, &schema, "sales").await, sales_before);
    let moved = p.app.db.audit_actions(t.tenant.id).await;
    assert_eq!(
        moved.iter().filter(|a| *a == "tenant.moved").count(),
        2,
        "{moved:?}"
    );
    let (result, details) = p.app.db.check("tenant_schemas_current").await;
    assert_eq!(result, "PASS", "{details}");
}

/// Opens a write on the tenant's source (home) and leaves it uncommitted.
async fn write_under_way(
    p: &Placed,
    t: &TestTenant,
    name: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let scope: TenantScope = t.tenant.scope().unwrap();
    let mut tx = scope::begin(&p.app.db.pool, &scope).await.unwrap();
    sqlx::query("INSERT INTO companies (name) VALUES ($1)")
        .bind(name)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Waits until a backend of `pool`'s database waits for a lock (the move on the write).
async fn wait_for_lock_wait(pool: &PgPool) {
    for _ in 0..200 {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                             WHERE datname = current_database() AND wait_event_type = 'Lock'
                               AND query LIKE 'LOCK TABLE%')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the move never waited for the write under way");
}

#[tokio::test]
async fn writes_are_refused_with_retry_after_while_moving_and_a_write_under_way_is_kept() {
    let p = Placed::new().await;
    let t = p.app.tenant("busy", Tier::Professional).await;
    p.app.company(&t, "First").await;
    let token = p.app.token_for(&t, Role::Owner);
    let schema = t.tenant.schema_name.clone();

    // A request that passed the gate before the flag, still writing.
    let writer = write_under_way(&p, &t, "Written just before").await;
    let clusters = p.clusters();
    let mover = tokio::spawn(async move {
        placement::move_tenant(&clusters, "busy", "eu2", &Actor::operator(), &quick()).await
    });
    wait_for_lock_wait(&p.app.db.pool).await;
    assert_eq!(
        p.cluster_of("busy").await,
        ("home".to_owned(), Some("eu2".to_owned()))
    );

    // Meanwhile: writes are 503 with Retry-After, reads work.
    let refused = p
        .app
        .post(&token, "/api/v1/companies", json!({ "name": "Too late" }))
        .await;
    refused.problem(StatusCode::SERVICE_UNAVAILABLE, "tenant_moving");
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0);
    let read = p.app.get(&token, "/api/v1/companies").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert!(
        !mover.is_finished(),
        "the move waits for the write under way"
    );

    writer.commit().await.unwrap();
    mover.await.unwrap().expect("move succeeds");
    let names: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT name::text FROM \"{schema}\".companies ORDER BY name"
    )))
    .fetch_all(&p.eu2.pool)
    .await
    .unwrap();
    assert_eq!(names, ["First", "Written just before"]);
    assert!(!schema_exists(&p.app.db.pool, &schema).await);
    // Writable again, on eu2.
    p.app.company(&t, "After").await;
    assert_eq!(count(&p.eu2.pool, &schema, "companies").await, 3);
}

#[tokio::test]
async fn a_connection_dropped_mid_move_leaves_the_source_intact_and_nothing_on_the_target() {
    let p = Placed::new().await;
    let t = tenant_with_data(&p.app, "fragile").await;
    let schema = t.tenant.schema_name.clone();
    let home = p.app.db.pool.clone();

    // Hold the move at the source lock, then kill its target connection.
    let writer = write_under_way(&p, &t, "Kept").await;
    let clusters = p.clusters();
    let mover = tokio::spawn(async move {
        placement::move_tenant(&clusters, "fragile", "eu2", &Actor::operator(), &quick()).await
    });
    wait_for_lock_wait(&home).await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()
            AND state = 'idle in transaction'",
    )
    .fetch_all(&p.eu2.pool)
    .await
    .unwrap();
    assert_eq!(killed, [true], "the move's target transaction was open");
    writer.commit().await.unwrap();

    let err = mover.await.unwrap().expect_err("the move fails");
    let message = err.to_string();
    assert!(matches!(err, MoveError::Failed { .. }), "{message}");
    assert!(message.contains("stays on \"home\""), "{message}");
    assert_eq!(p.cluster_of("fragile").await, ("home".to_owned(), None));
    assert!(
        !schema_exists(&p.eu2.pool, &schema).await,
        "no partial copy"
    );
    assert_eq!(count(&home, &schema, "sales").await, 2000);
    assert_eq!(count(&home, &schema, "companies").await, 2);
    let actions = p.app.db.audit_actions(t.tenant.id).await;
    assert!(
        actions.contains(&"tenant.move_failed".to_owned()),
        "{actions:?}"
    );
    // Writable again, at home.
    p.app.company(&t, "After").await;
    assert_eq!(count(&home, &schema, "companies").await, 3);

    // The same move, undisturbed, then works.
    p.move_to("fragile", "eu2").await.expect("retry succeeds");
    assert_eq!(count(&p.eu2.pool, &schema, "companies").await, 3);
}

#[tokio::test]
async fn unknown_tenants_and_clusters_and_a_refusing_target_are_clear_errors_that_change_nothing() {
    let p = Placed::new().await;
    let t = p.app.tenant("steady", Tier::Professional).await;
    p.app.company(&t, "Only").await;
    let schema = t.tenant.schema_name.clone();

    let err = p.move_to("nobody-here", "eu2").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("no tenant with slug \"nobody-here\""),
        "{err}"
    );
    let err = p.move_to("steady", "mars").await.unwrap_err();
    assert!(
        err.to_string().contains("no cluster named \"mars\""),
        "{err}"
    );
    assert!(
        err.to_string().contains("home, eu2"),
        "names the known ones: {err}"
    );
    let err = p.move_to("steady", "home").await.unwrap_err();
    assert!(matches!(err, MoveError::AlreadyThere { .. }), "{err}");

    // A target cluster without the tenant catalog.
    let bare = TestDb::empty_on(crate::common::second_server_url()).await;
    let clusters = Clusters::single(p.app.db.pool.clone()).with(eu2_name(), bare.pool.clone());
    let err = placement::move_tenant(&clusters, "steady", "eu2", &Actor::operator(), &quick())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("capliquify migrate"), "{err}");

    // A target that already has a schema of that name (left by someone): refused, untouched.
    p.eu2
        .exec(&format!(
            "CREATE SCHEMA \"{schema}\"; CREATE TABLE \"{schema}\".keep (x int)"
        ))
        .await;
    let err = p.move_to("steady", "eu2").await.unwrap_err();
    assert!(err.to_string().contains("already has a schema"), "{err}");
    assert!(
        p.eu2
            .scalar_bool(&format!(
                "SELECT to_regclass('\"{schema}\".keep') IS NOT NULL"
            ))
            .await
    );

    assert_eq!(p.cluster_of("steady").await, ("home".to_owned(), None));
    assert_eq!(count(&p.app.db.pool, &schema, "companies").await, 1);
    p.app.company(&t, "Still writable").await;
}

#[tokio::test]
async fn a_placed_tenant_is_migrated_on_its_cluster_and_purge_asks_to_move_it_home() {
    let p = Placed::new().await;
    let t = p.app.tenant("far-away", Tier::Starter).await;
    p.move_to("far-away", "eu2").await.unwrap();
    // The registry's mirror says pending; the fleet migration runs it on eu2.
    p.app
        .db
        .exec("UPDATE public.tenants SET schema_version = NULL WHERE slug = 'far-away'")
        .await;
    let latest = crate::common::version(0);
    let pending = capliquify::tenancy::migrate::pending_tenants(&p.app.db.pool, latest)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    let report = capliquify::tenancy::migrate::migrate_fleet(
        &p.clusters(),
        pending,
        latest,
        1,
        std::sync::Arc::new(|_| {}),
    )
    .await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let t2 = registry::find(&p.app.db.pool, "far-away").await.unwrap();
    assert_eq!(t2.schema_version, Some(latest));

    let tenancy = p.app.db.tenancy();
    tenancy
        .soft_delete(&t.tenant.slug, &Actor::operator())
        .await
        .unwrap();
    let err = tenancy
        .purge("far-away", true, Some("far-away"), &Actor::operator())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--to home"), "{err}");
    assert!(schema_exists(&p.eu2.pool, &t.tenant.schema_name).await);
}

#[tokio::test]
async fn a_move_whose_process_died_is_cleaned_up_by_the_next_move_and_a_live_one_is_left_alone() {
    let p = Placed::new().await;
    let t = tenant_with_data(&p.app, "orphaned").await;
    let schema = t.tenant.schema_name.clone();
    // As a mover that died after committing its copy: flag set, a copy on eu2, placement home.
    p.app
        .db
        .exec("UPDATE tenants SET moving_to = 'eu2' WHERE slug = 'orphaned'")
        .await;
    p.eu2
        .exec(&format!(
            "CREATE SCHEMA \"{schema}\"; CREATE TABLE \"{schema}\".partial (x int)"
        ))
        .await;

    // While a mover is alive it holds the tenant's move lock: a second move is refused and
    // touches nothing.
    let key = format!("capliquify:tenant-move:{}", t.tenant.id);
    let mut holder = p.app.db.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(&key)
        .execute(&mut *holder)
        .await
        .unwrap();
    let err = p.move_to("orphaned", "eu2").await.unwrap_err();
    assert!(matches!(err, MoveError::AlreadyMoving { .. }), "{err}");
    assert!(schema_exists(&p.eu2.pool, &schema).await);
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(&key)
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);

    // The mover is gone: the next move drops its leftover copy, takes over and completes.
    p.move_to("orphaned", "eu2")
        .await
        .expect("the next move recovers");
    assert_eq!(p.cluster_of("orphaned").await, ("eu2".to_owned(), None));
    assert_eq!(count(&p.eu2.pool, &schema, "sales").await, 2000);
    assert!(
        !p.eu2
            .scalar_bool(&format!(
                "SELECT to_regclass('\"{schema}\".partial') IS NOT NULL"
            ))
            .await,
        "the leftover copy was replaced"
    );
    let actions = p.app.db.audit_actions(t.tenant.id).await;
    assert!(
        actions.iter().any(|a| a == "tenant.move_abandoned")
            && actions.iter().any(|a| a == "tenant.moved"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_table_a_migration_adds_is_granted_to_a_placed_tenants_role() {
    let p = Placed::new().await;
    let t = p.app.tenant("grows-far", Tier::Starter).await;
    p.move_to("grows-far", "eu2").await.unwrap();
    let migrations = crate::common::tenant_migrations_with(&[(
        crate::common::version(1),
        "cash notes",
        "CREATE TABLE cash_notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)",
    )]);
    for pool in [&p.app.db.pool, &p.eu2.pool] {
        capliquify::tenancy::migrate::migrate_public(pool, &migrations)
            .await
            .unwrap();
    }
    let latest = crate::common::version(1);
    let pending = capliquify::tenancy::migrate::pending_tenants(&p.app.db.pool, latest)
        .await
        .unwrap();
    let report = capliquify::tenancy::migrate::migrate_fleet(
        &p.clusters(),
        pending,
        latest,
        1,
        std::sync::Arc::new(|_| {}),
    )
    .await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    // As the service does on eu2: its login role, switched to the tenant's role.
    let service = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&p.eu2.app_url().await)
        .await
        .unwrap();
    let scope = registry::find(&p.app.db.pool, "grows-far")
        .await
        .unwrap()
        .scope()
        .unwrap();
    assert_eq!(scope.cluster.as_str(), "eu2");
    let mut tx = scope::begin(&service, &scope).await.unwrap();
    sqlx::query("INSERT INTO cash_notes (note) VALUES ('far')")
        .execute(&mut *tx)
        .await
        .expect("the new table is the placed tenant's");
    tx.commit().await.unwrap();
    let _ = t;
}

#[tokio::test]
async fn when_the_old_copy_cannot_be_dropped_writes_to_it_are_refused_not_lost() {
    let p = Placed::new().await;
    let t = tenant_with_data(&p.app, "sticky").await;
    let schema = t.tenant.schema_name.clone();
    // A long reader on the source keeps the move from dropping it (lock timeout 1 s).
    let mut reader = p.app.db.pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{schema}\".companies"
    )))
    .execute(&mut *reader)
    .await
    .unwrap();
    let options = MoveOptions {
        drain: Duration::ZERO,
        lock_timeout: Duration::from_secs(1),
    };
    let report =
        placement::move_tenant(&p.clusters(), "sticky", "eu2", &Actor::operator(), &options)
            .await
            .expect("the move itself succeeds");
    let warning = report.warning.expect("the old copy could not be dropped");
    assert!(warning.contains("writes to it are refused"), "{warning}");
    reader.rollback().await.unwrap();
    assert_eq!(p.cluster_of("sticky").await, ("eu2".to_owned(), None));
    assert!(schema_exists(&p.app.db.pool, &schema).await);

    // A write that reaches the old copy (a request routed by a stale cache) fails.
    let service = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&p.app.db.app_url().await)
        .await
        .unwrap();
    let mut stale: TenantScope = registry::find(&p.app.db.pool, "sticky")
        .await
        .unwrap()
        .scope()
        .unwrap();
    stale.cluster = ClusterName::home();
    let mut tx = scope::begin(&service, &stale).await.unwrap();
    let err = sqlx::query("INSERT INTO companies (name) VALUES ('lost?')")
        .execute(&mut *tx)
        .await
        .expect_err("the old copy takes no writes");
    assert_eq!(
        err.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("42501"),
        "{err}"
    );
}

#[tokio::test]
async fn the_outbox_drains_past_rows_of_a_tenant_purged_since() {
    let p = Placed::new().await;
    let t = p.app.tenant("drained", Tier::Starter).await;
    p.eu2
        .exec(&format!(
            "INSERT INTO audit_outbox (tenant_id, action) VALUES (gen_random_uuid(), 'ghost.act');
             INSERT INTO audit_outbox (tenant_id, action) VALUES ('{}', 'real.act')",
            t.tenant.id
        ))
        .await;
    let drained = capliquify::audit::drain(&p.app.db.pool, &p.eu2.pool, None)
        .await
        .expect("a row of a tenant gone does not block the others");
    assert_eq!(drained, 2);
    assert!(
        p.app
            .db
            .audit_actions(t.tenant.id)
            .await
            .contains(&"real.act".to_owned())
    );
    assert_eq!(
        p.eu2.scalar_i64("SELECT count(*) FROM audit_outbox").await,
        0
    );
    assert_eq!(
        p.app
            .db
            .scalar_i64("SELECT count(*) FROM audit_logs WHERE action = 'ghost.act'")
            .await,
        0
    );
}

#[tokio::test]
async fn the_lifecycle_job_lists_an_expired_tenant_on_another_cluster_instead_of_failing() {
    let p = Placed::new().await;
    let t = p.app.tenant("expired-far", Tier::Starter).await;
    p.move_to("expired-far", "eu2").await.unwrap();
    p.app
        .db
        .tenancy()
        .soft_delete("expired-far", &Actor::operator())
        .await
        .unwrap();
    p.app
        .db
        .exec(
            "UPDATE tenants SET deleted_at = now() - interval '40 days' WHERE slug = 'expired-far'",
        )
        .await;
    let report = capliquify::tenancy::lifecycle_job::run(&p.app.db.pool, 30, 7)
        .await
        .unwrap();
    assert_eq!(report.purge_waits_for_move_home, ["expired-far"]);
    assert!(
        report.purged.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    assert!(schema_exists(&p.eu2.pool, &t.tenant.schema_name).await);
}
