//! The schema pool (issue 16, migration 0017): schemas made ahead of sign-ups, each claimed
//! exactly once — by concurrent sign-ups and replayed webhooks too — returned when a sign-up
//! fails, migrated with the fleet, drained with their roles, refilled by the service, and
//! usable from psql.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use capliquify::audit::Actor;
use capliquify::billing::Tier;
use capliquify::tenancy::{NewTenant, TenancyError, migrate, schema_pool};
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::TestDb;
use crate::common::api::TestApp;

/// The pool's tenant ids, oldest first.
async fn pooled_ids(pool: &PgPool) -> Vec<Uuid> {
    sqlx::query_scalar(
        "SELECT tenant_id FROM public.tenant_schema_pool ORDER BY created_at, tenant_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The service's least-privilege pool on `db` (the service fills the pool and claims from it).
async fn service_pool(db: &TestDb) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&db.app_url().await)
        .await
        .unwrap()
}

fn new_tenant(slug: &str) -> NewTenant {
    NewTenant::parse(slug, slug, Tier::Starter, &format!("org_{slug}")).unwrap()
}

/// The SQLSTATE of a failed query.
fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

/// Switches `tx` to tenant `id`'s role.
async fn as_tenant(tx: &mut sqlx::PgConnection, id: Uuid) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL ROLE capliquify_t_{}",
        id.simple()
    )))
    .execute(tx)
    .await
    .unwrap();
}

async fn failing_checks(db: &TestDb) -> Vec<(String, String, String)> {
    let report = capliquify::tenancy::verify::report(&db.pool).await.unwrap();
    report
        .checks
        .into_iter()
        .filter(|c| !c.passed())
        .map(|c| (c.test_name, c.result, c.details))
        .collect()
}

/// Every role made makes each backend rebuild its role memberships (docs/scaling.md, "Role
/// changes"): a pool with schemas to spare is filled BATCH schemas per transaction, and
/// refilled only once half of it is claimed, so several sign-ups' roles come in one
/// transaction. A pool nearly empty is filled in batches no larger than what is left, so
/// its first new schema is claimable after one schema's time.
#[tokio::test]
async fn the_pool_is_filled_in_batches_sized_by_what_is_left_and_refilled_at_half() {
    let db = TestDb::new().await;
    let service = service_pool(&db).await;
    let batches = || async {
        let mut sizes: Vec<i64> = sqlx::query_scalar(
            "SELECT count(*) FROM public.tenant_schema_pool GROUP BY xmin::text",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        sizes.sort_unstable();
        sizes
    };
    let n = schema_pool::BATCH + 2;
    assert_eq!(schema_pool::fill(&service, n, |_| {}).await.unwrap(), n);
    assert_eq!(
        batches().await,
        vec![1, 1, 2, 4, 4],
        "from empty: 1, 1, 2, 4, then the rest"
    );
    assert_eq!(schema_pool::fill(&service, 2 * n, |_| {}).await.unwrap(), n);
    assert_eq!(
        batches().await,
        vec![1, 1, 2, 2, 4, 4, 10],
        "with {n} left: {} in one transaction, then the rest",
        schema_pool::BATCH
    );
    assert_eq!(schema_pool::batch_size(0), 1);
    assert_eq!(schema_pool::batch_size(3), 3);
    assert_eq!(schema_pool::batch_size(500), schema_pool::BATCH);
    assert!(!schema_pool::needs_refill(6, 10));
    assert!(schema_pool::needs_refill(5, 10));
    assert!(schema_pool::needs_refill(0, 1));
    assert!(!schema_pool::needs_refill(1, 1));
    assert!(!schema_pool::needs_refill(0, 0), "no pool");
    // The loop looks again soon while the pool shrinks, and at its idle pace otherwise.
    assert_eq!(
        schema_pool::next_look(Some(8), 7),
        schema_pool::REFILL_EVERY_BUSY
    );
    assert_eq!(
        schema_pool::next_look(Some(7), 7),
        schema_pool::REFILL_EVERY
    );
    assert_eq!(
        schema_pool::next_look(Some(5), 10),
        schema_pool::REFILL_EVERY
    );
    assert_eq!(schema_pool::next_look(None, 0), schema_pool::REFILL_EVERY);
}

#[tokio::test]
async fn a_sign_up_takes_a_pooled_schema_whose_role_works() {
    let db = TestDb::new().await;
    let service = service_pool(&db).await;
    assert_eq!(schema_pool::fill(&service, 3, |_| {}).await.unwrap(), 3);
    // Full: a second fill adds nothing.
    assert_eq!(schema_pool::fill(&service, 3, |_| {}).await.unwrap(), 0);
    let pooled = pooled_ids(&db.pool).await;
    assert_eq!(pooled.len(), 3);
    // Pooled schemas are nobody's yet, and no check calls them orphans.
    assert_eq!(failing_checks(&db).await, vec![]);
    assert_eq!(db.count_tenant_schemas().await, 3);

    let tenant = db
        .tenancy()
        .provision(&new_tenant("first"), &Actor::operator())
        .await
        .unwrap();
    assert_eq!(tenant.id, pooled[0], "the oldest pooled schema is taken");
    assert_eq!(tenant.schema_name, format!("tenant_{}", tenant.id.simple()));
    assert_eq!(tenant.schema_version, Some(crate::common::version(0)));
    assert_eq!(pooled_ids(&db.pool).await, pooled[1..].to_vec());
    assert_eq!(db.count_tenant_schemas().await, 3, "no schema was made");
    let from_pool: bool = sqlx::query_scalar(
        "SELECT (metadata->>'schema_from_pool')::boolean FROM audit_logs
          WHERE tenant_id = $1 AND action = 'tenant.provisioned'",
    )
    .bind(tenant.id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(from_pool);

    // The tenant's own role (made when the schema was pooled) reads and writes its tables.
    let mut tx = db.pool.begin().await.unwrap();
    as_tenant(&mut tx, tenant.id).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {}.companies (name) VALUES ('ACME')",
        tenant.schema_name
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    // …and not another pooled schema.
    let other = format!("tenant_{}", pooled[1].simple());
    let denied = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {other}.companies"
    )))
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"));
    drop(tx);
    assert_eq!(failing_checks(&db).await, vec![]);

    // An empty pool only means the schema is made on the spot.
    schema_pool::drain(&db.pool, |_| {}).await.unwrap();
    let fresh = db
        .tenancy()
        .provision(&new_tenant("second"), &Actor::operator())
        .await
        .unwrap();
    assert!(!pooled.contains(&fresh.id));
    assert!(db.schema_exists(&fresh.schema_name).await);
}

#[tokio::test]
async fn concurrent_sign_ups_claim_each_pooled_schema_once() {
    let db = TestDb::new().await;
    let service = service_pool(&db).await;
    schema_pool::fill(&service, 4, |_| {}).await.unwrap();
    let pooled: HashSet<Uuid> = pooled_ids(&db.pool).await.into_iter().collect();
    let mut signups = tokio::task::JoinSet::new();
    for i in 0..10 {
        let tenancy = capliquify::tenancy::Tenancy::new(service.clone(), 30);
        signups.spawn(async move {
            tenancy
                .provision(&new_tenant(&format!("rush-{i}")), &Actor::operator())
                .await
        });
    }
    let mut ids = Vec::new();
    while let Some(done) = signups.join_next().await {
        ids.push(done.unwrap().unwrap().id);
    }
    let distinct: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), 10);
    assert_eq!(
        distinct.intersection(&pooled).count(),
        4,
        "every pooled schema went to exactly one tenant"
    );
    assert!(pooled_ids(&db.pool).await.is_empty());
    assert_eq!(db.count_tenant_schemas().await, 10);
    assert_eq!(failing_checks(&db).await, vec![]);
}

#[tokio::test]
async fn a_failed_sign_up_returns_its_schema_to_the_pool() {
    let db = TestDb::new().await;
    db.tenant("taken", Tier::Starter).await;
    schema_pool::fill(&db.pool, 1, |_| {}).await.unwrap();
    let pooled = pooled_ids(&db.pool).await;
    // One connection: the failed sign-up's rollback is done before the next one starts.
    // (On a larger pool the row stays locked — skipped, never given twice — until the
    // connection that failed is used again.)
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    let tenancy = capliquify::tenancy::Tenancy::new(one, 30);
    let err = tenancy
        .provision(
            &NewTenant::parse("taken", "Again", Tier::Starter, "org_other").unwrap(),
            &Actor::operator(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TenancyError::SlugTaken(_)), "{err:?}");
    assert_eq!(pooled_ids(&db.pool).await, pooled, "the schema is back");
    let next = tenancy
        .provision(&new_tenant("next"), &Actor::operator())
        .await
        .unwrap();
    assert_eq!(next.id, pooled[0]);
}

#[tokio::test]
async fn replayed_and_concurrent_webhooks_make_one_tenant_from_one_pooled_schema() {
    let app = TestApp::spawn().await;
    schema_pool::fill(&app.db.pool, 3, |_| {}).await.unwrap();
    let pooled = pooled_ids(&app.db.pool).await;
    let event = crate::webhooks::org_event("organization.created", "org_p", "P", Some("pooled"), 1);
    // Svix retries a delivery with the same message id; a second endpoint or a manual
    // resend carries another. Both kinds arrive at once here.
    let deliveries = (0..6).map(|i| {
        let msg = if i % 2 == 0 {
            "msg_a".to_owned()
        } else {
            format!("msg_{i}")
        };
        let (app, event) = (&app, &event);
        async move { crate::webhooks::clerk(app, &msg, event).await }
    });
    for (status, body) in futures_util::future::join_all(deliveries).await {
        assert!(status.is_success(), "{status} {body}");
    }
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM tenants")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    assert!(pooled.contains(&ids[0]));
    assert_eq!(pooled_ids(&app.db.pool).await.len(), 2);
    assert_eq!(app.db.count_tenant_schemas().await, 3);
}

#[tokio::test]
async fn migrations_reach_unclaimed_schemas() {
    let db = TestDb::new().await;
    schema_pool::fill(&db.pool, 2, |_| {}).await.unwrap();
    let pooled = pooled_ids(&db.pool).await;
    let next = crate::common::version(1);
    let catalog = crate::common::tenant_migrations_with(&[(
        next,
        "pool probe",
        "CREATE TABLE pool_probe (id bigint PRIMARY KEY)",
    )]);
    migrate::sync_catalog(&db.pool, &catalog).await.unwrap();
    assert_eq!(
        migrate::pending_pooled(&db.pool, next).await.unwrap().len(),
        2
    );
    // (The catalog is now ahead of this build: migrations_current fails, as it should.)
    let behind: Vec<String> = failing_checks(&db).await.into_iter().map(|c| c.0).collect();
    assert_eq!(behind, ["migrations_current", "schema_pool_current"]);

    // `migrate` brings the first; the second is left behind for the claim to bring.
    let first = format!("tenant_{}", pooled[0].simple());
    let report = migrate::migrate_pooled(&db.pool, std::slice::from_ref(&first), next).await;
    assert_eq!((report.migrated, report.failed.len()), (1, 0));
    let second_tenant = {
        // Claims the oldest (the migrated one) first.
        let a = db
            .tenancy()
            .provision(&new_tenant("alpha"), &Actor::operator())
            .await
            .unwrap();
        assert_eq!(a.id, pooled[0]);
        assert_eq!(a.schema_version, Some(next));
        db.tenancy()
            .provision(&new_tenant("beta"), &Actor::operator())
            .await
            .unwrap()
    };
    assert_eq!(second_tenant.id, pooled[1]);
    assert_eq!(
        second_tenant.schema_version,
        Some(next),
        "migrated when claimed"
    );
    for id in &pooled {
        let role = format!("capliquify_t_{}", id.simple());
        let table = format!("tenant_{}.pool_probe", id.simple());
        let can: bool = sqlx::query_scalar("SELECT has_table_privilege($1, $2, 'INSERT')")
            .bind(&role)
            .bind(&table)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(can, "{role} on {table}");
    }
    let left: Vec<String> = failing_checks(&db).await.into_iter().map(|c| c.0).collect();
    assert_eq!(left, ["migrations_current"]);
}

#[tokio::test]
async fn draining_drops_schemas_and_roles_and_leaves_tenants() {
    let db = TestDb::new().await;
    let tenant = db.tenant("stays", Tier::Starter).await;
    schema_pool::fill(&db.pool, 2, |_| {}).await.unwrap();
    let pooled = pooled_ids(&db.pool).await;
    let dropped = std::sync::Mutex::new(Vec::new());
    let n = schema_pool::drain(&db.pool, |s| dropped.lock().unwrap().push(s.to_owned()))
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(dropped.into_inner().unwrap().len(), 2);
    for id in pooled {
        assert!(!db.schema_exists(&format!("tenant_{}", id.simple())).await);
        let role: Option<String> =
            sqlx::query_scalar("SELECT to_regrole(public.tenant_role_name($1))::text")
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(role, None);
    }
    assert!(db.schema_exists(&tenant.schema_name).await);
    assert_eq!(failing_checks(&db).await, vec![]);
}

#[tokio::test]
async fn only_the_service_fills_and_claims_and_tenants_do_neither() {
    let db = TestDb::new().await;
    let service = service_pool(&db).await;
    let tenant = db.tenant("nosy", Tier::Starter).await;
    schema_pool::fill(&service, 1, |_| {}).await.unwrap();
    // Draining and migrating the pool are operators' acts.
    for sql in [
        "SELECT public.drop_pooled_schema()",
        "SELECT public.migrate_pooled_schema('tenant_x')",
        "DELETE FROM public.tenant_schema_pool",
    ] {
        let err = sqlx::query(sql).execute(&service).await.unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{sql}");
    }
    // A tenant's role may neither claim nor see the pool.
    let mut tx = service.begin().await.unwrap();
    as_tenant(&mut tx, tenant.id).await;
    let err = sqlx::query("SELECT public.reserve_pooled_schema()")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
    drop(tx);
    let bad = sqlx::query("SELECT public.add_pooled_schema(-1)")
        .execute(&service)
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("must be 0 or more"), "{bad}");
    assert_eq!(pooled_ids(&db.pool).await.len(), 1);
}

#[tokio::test]
async fn the_service_refills_the_pool_when_a_sign_up_claims() {
    let db = TestDb::new().await;
    let service = service_pool(&db).await;
    let refill = tokio::spawn(schema_pool::refill_loop(service.clone(), 2));
    let wait_for = |n: usize| {
        let pool = db.pool.clone();
        async move {
            // It looks once a second: 20 s is ample on a busy machine.
            for _ in 0..200 {
                if pooled_ids(&pool).await.len() == n {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(wait_for(2).await, "filled at start");
    let before = pooled_ids(&db.pool).await;
    let tenant = capliquify::tenancy::Tenancy::new(service.clone(), 30)
        .provision(&new_tenant("wakes"), &Actor::operator())
        .await
        .unwrap();
    assert!(before.contains(&tenant.id));
    let mut refilled = false;
    for _ in 0..200 {
        let now = pooled_ids(&db.pool).await;
        if now.len() == 2 && !now.contains(&tenant.id) {
            refilled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    refill.abort();
    assert!(refilled, "the claim woke the refill");
    assert_eq!(pooled_ids(&db.pool).await.len(), 2, "never overfilled");
}

#[tokio::test]
async fn the_documented_claim_works_from_psql() {
    let db = TestDb::new().await;
    schema_pool::fill(&db.pool, 1, |_| {}).await.unwrap();
    let pooled = pooled_ids(&db.pool).await;
    let bin = capliquify::db::embedded::find_bin_dir().expect("PostgreSQL binaries");
    // The sequence migration 0017 documents, as an operator would type it.
    let script = r"
BEGIN;
SELECT public.reserve_pooled_schema() AS id \gset
INSERT INTO public.tenants (id, slug, name, schema_name, clerk_organization_id,
    subscription_tier, subscription_status, trial_ends_at, max_users, max_entities)
VALUES (:'id', 'by-hand', 'By Hand', 'tenant_' || replace(:'id', '-', ''), 'org_hand',
    'starter', 'trial', now() + interval '14 days', 5, 1);
SELECT public.create_tenant_schema(:'id');
COMMIT;
";
    // A file, not -c: \gset needs psql to run the script line by line.
    let file = std::env::temp_dir().join(format!("pool-claim-{}.sql", Uuid::new_v4()));
    std::fs::write(&file, script).unwrap();
    let out = Command::new(bin.join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &db.url, "-f"])
        .arg(&file)
        .output()
        .expect("run psql");
    std::fs::remove_file(&file).ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (id, version): (Uuid, Option<i64>) =
        sqlx::query_as("SELECT id, schema_version FROM tenants WHERE slug = 'by-hand'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(id, pooled[0]);
    assert_eq!(version, Some(crate::common::version(0)));
    assert!(pooled_ids(&db.pool).await.is_empty());
    assert_eq!(failing_checks(&db).await, vec![]);
}
