//! Connection recycling (src/db/recycle.rs): a pooled connection whose backend outgrew the
//! memory budget is replaced, a replaced connection starts clean, and without the measuring
//! function the pool goes on serving; tenant lanes keep each tenant on its lane's backends;
//! a connection idle for a while is checked before it is handed out, one just released is
//! not.

use capliquify::billing::Tier;
use capliquify::db::recycle::{CHECK_EVERY, Recycler};
use capliquify::db::{PoolConfig, connect_with, scope};

use crate::common::TestDb;

/// Runs `n` tenant transactions (round robin over `scopes`) on a one-connection pool and
/// returns the backend pid each ran on.
async fn backend_pids(pool: &sqlx::PgPool, scopes: &[scope::TenantScope], n: u64) -> Vec<i32> {
    let mut pids = Vec::new();
    for i in 0..n {
        let scope = &scopes[usize::try_from(i).unwrap() % scopes.len()];
        let mut tx = scope::begin(pool, scope).await.unwrap();
        let (pid, path): (i32, String) =
            sqlx::query_as("SELECT pg_backend_pid(), current_setting('search_path')")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(
            path,
            scope.schema.quoted().trim_matches('"'),
            "the tenant's path inside its transaction"
        );
        sqlx::query("SELECT count(*) FROM products")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        pids.push(pid);
    }
    pids
}

async fn scopes(db: &TestDb, n: usize) -> Vec<scope::TenantScope> {
    let mut out = Vec::new();
    for i in 0..n {
        let tenant = db.tenant(&format!("recycle-{i}"), Tier::Starter).await;
        out.push(tenant.scope().unwrap());
    }
    out
}

/// Distinct values in order of first appearance.
fn distinct(pids: &[i32]) -> Vec<i32> {
    let mut seen = Vec::new();
    for pid in pids {
        if !seen.contains(pid) {
            seen.push(*pid);
        }
    }
    seen
}

#[tokio::test]
async fn a_connection_whose_backend_outgrew_the_budget_is_replaced_and_starts_clean() {
    let db = TestDb::new().await;
    let scopes = scopes(&db, 3).await;
    // 1 MiB: below what any backend holds once it has run a query, so every measurement
    // finds the connection over budget.
    let recycler = Recycler::new(1).unwrap();
    let pools = PoolConfig::new(1).with_recycler(Some(recycler.clone()));
    let pool = connect_with(&db.app_url().await, &pools).await.unwrap();

    let pids = backend_pids(&pool, &scopes, 2 * CHECK_EVERY + 1).await;
    let stats = recycler.stats();
    assert!(stats.available, "the service role can measure its backend");
    assert_eq!(
        stats.checks, 2,
        "one measurement per {CHECK_EVERY} releases"
    );
    assert_eq!(stats.recycled, 2);
    let backends = distinct(&pids);
    assert_eq!(backends.len(), 3, "two replacements: {backends:?}");
    // Each backend served exactly CHECK_EVERY transactions before it was measured and closed.
    let first_of_second = pids.iter().position(|p| *p == backends[1]).unwrap();
    assert_eq!(first_of_second as u64, CHECK_EVERY);

    // The replacement carries nothing of the tenants it did not serve: outside a tenant
    // transaction it has the login's own path and role.
    let (user, path): (String, String) =
        sqlx::query_as("SELECT current_user::text, current_setting('search_path')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(user, crate::common::APP_ROLE);
    assert_eq!(path, "\"$user\", public");
    // The old backends are gone from the server.
    let alive: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
            .bind(&backends[..2])
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(alive, 0);
}

#[tokio::test]
async fn a_connection_within_the_budget_is_kept() {
    let db = TestDb::new().await;
    let scopes = scopes(&db, 2).await;
    let recycler = Recycler::new(65_536).unwrap();
    let pools = PoolConfig::new(1).with_recycler(Some(recycler.clone()));
    let pool = connect_with(&db.app_url().await, &pools).await.unwrap();

    let pids = backend_pids(&pool, &scopes, CHECK_EVERY + 1).await;
    assert_eq!(distinct(&pids).len(), 1);
    let stats = recycler.stats();
    assert_eq!(
        (stats.checks, stats.recycled, stats.available),
        (1, 0, true)
    );
}

#[tokio::test]
async fn without_the_measuring_function_the_pool_goes_on_serving() {
    // A database where public migration 0016 was never applied (the service started against
    // an older schema): the measurement fails, recycling switches itself off, and the
    // connection stays in service.
    let db = TestDb::empty().await;
    let recycler = Recycler::new(1).unwrap();
    let pools = PoolConfig::new(1).with_recycler(Some(recycler.clone()));
    let pool = connect_with(&db.url, &pools).await.unwrap();
    let mut pids = Vec::new();
    for _ in 0..2 * CHECK_EVERY {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
        pids.push(pid);
    }
    assert_eq!(distinct(&pids).len(), 1);
    let stats = recycler.stats();
    assert_eq!(
        (stats.checks, stats.recycled, stats.available),
        (1, 0, false)
    );
}

#[tokio::test]
async fn a_tenant_cannot_call_the_measuring_function() {
    let db = TestDb::new().await;
    let scopes = scopes(&db, 1).await;
    let pool = connect_with(&db.app_url().await, &PoolConfig::new(1))
        .await
        .unwrap();
    // The service role can (SECURITY DEFINER reads its own backend's contexts) …
    let bytes: i64 = sqlx::query_scalar("SELECT public.backend_memory_bytes()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(bytes > 100_000, "{bytes}");
    // … a tenant's role cannot.
    let mut tx = scope::begin(&pool, &scopes[0]).await.unwrap();
    let err = sqlx::query_scalar::<_, i64>("SELECT public.backend_memory_bytes()")
        .fetch_one(&mut *tx)
        .await
        .unwrap_err();
    let code = err.as_database_error().and_then(|e| e.code()).unwrap();
    assert_eq!(code, "42501", "{err}");
}

/// The backend pid of one transaction of `scope` begun through `lanes` (shared pool
/// `shared`), checking the tenant's path inside it.
async fn lane_pid(
    lanes: &capliquify::db::lanes::Lanes,
    shared: &sqlx::PgPool,
    scope: &scope::TenantScope,
) -> i32 {
    let mut tx = lanes
        .begin(shared, scope, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let (pid, path): (i32, String) =
        sqlx::query_as("SELECT pg_backend_pid(), current_setting('search_path')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(path, scope.schema.quoted().trim_matches('"'));
    tx.commit().await.unwrap();
    pid
}

/// Tenant lanes (src/db/lanes.rs): a tenant's transactions keep to one backend of its lane,
/// tenants of other lanes never reach it, a tenant whose lane stays busy runs on the shared
/// pool after a short wait rather than queue, and a lane's connection carries no tenant's
/// settings afterwards.
#[tokio::test]
async fn tenant_lanes_keep_each_tenant_on_its_own_backends_and_spill_when_busy() {
    use capliquify::db::lanes::{Lanes, SPILL_AFTER};
    let db = TestDb::new().await;
    let scopes = scopes(&db, 12).await;
    let pools = PoolConfig::new(4);
    let shared = connect_with(&db.app_url().await, &pools).await.unwrap();
    assert!(
        Lanes::new(&shared, 1, &pools).is_none(),
        "one lane is no lanes"
    );
    // Four lanes of one connection each.
    let lanes = Lanes::new(&shared, 4, &pools).unwrap();
    assert_eq!(lanes.pools().len(), 4);
    assert!(
        lanes
            .pools()
            .iter()
            .all(|p| p.options().get_max_connections() == 1)
    );

    let mut first: Vec<(usize, i32)> = Vec::new();
    for round in 0..3 {
        for (i, s) in scopes.iter().enumerate() {
            let pid = lane_pid(&lanes, &shared, s).await;
            if round == 0 {
                first.push((lanes.home_lane(s.id), pid));
            } else {
                assert_eq!(pid, first[i].1, "tenant {i} moved to another backend");
            }
        }
    }
    // Tenants of one lane share its backend; tenants of different lanes never do.
    for (a, (lane_a, pid_a)) in first.iter().enumerate() {
        for (lane_b, pid_b) in &first[a + 1..] {
            assert_eq!(lane_a == lane_b, pid_a == pid_b, "{first:?}");
        }
    }
    let used: std::collections::BTreeSet<usize> = first.iter().map(|(l, _)| *l).collect();
    assert!(
        used.len() >= 2,
        "12 tenants all hashed to one lane: {first:?}"
    );
    let shared_pids: Vec<i32> = {
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(shared.acquire().await.unwrap());
        }
        let mut pids = Vec::new();
        for conn in &mut held {
            pids.push(
                sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut **conn)
                    .await
                    .unwrap(),
            );
        }
        pids
    };
    assert!(first.iter().all(|(_, pid)| !shared_pids.contains(pid)));

    // Tenant 0's lane busy (its only connection in a transaction of a neighbour's): tenant
    // 0's next transaction waits SPILL_AFTER, then runs on the shared pool.
    let busy = &scopes[0];
    let held = scope::begin(&lanes.pools()[lanes.home_lane(busy.id)], busy)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let pid = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        lane_pid(&lanes, &shared, busy),
    )
    .await
    .expect("a busy lane does not hold the transaction back");
    assert!(started.elapsed() >= SPILL_AFTER);
    assert!(
        shared_pids.contains(&pid),
        "{pid} is not a shared-pool backend {shared_pids:?}"
    );
    held.rollback().await.unwrap();
    // And back on its lane once the lane is free.
    assert_eq!(lane_pid(&lanes, &shared, busy).await, first[0].1);

    // Outside a tenant transaction, every lane's connection is the login's own.
    for pool in lanes.pools() {
        let (user, path): (String, String) =
            sqlx::query_as("SELECT current_user::text, current_setting('search_path')")
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(user, crate::common::APP_ROLE);
        assert_eq!(path, "\"$user\", public");
    }
    lanes.close().await;
}

/// Waits (up to 10 s) until `pool` holds `n` idle connections: a released connection goes
/// back only after sqlx's release ping.
async fn wait_idle(pool: &sqlx::PgPool, n: usize) {
    for _ in 0..200 {
        if pool.num_idle() == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the pool never held {n} idle connection(s)");
}

/// Ends `pid`'s backend and waits until it is gone.
async fn terminate(db: &TestDb, pid: i32) {
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&db.pool)
        .await
        .unwrap();
    for _ in 0..200 {
        let alive = db
            .scalar_i64(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
            ))
            .await;
        if alive == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("backend {pid} did not end");
}

/// `PoolConfig::options`: a connection released less than `check_idle_after` ago is handed
/// out without a ping (its release ping checked it), so a backend killed in that moment
/// fails the next query, where sqlx's default would have replaced it; one idle longer is
/// pinged and, dead, replaced, so the query succeeds on a new backend. (Two pools, so
/// neither half depends on how fast this machine is: one that never pings within a
/// minute, one that pings after 200 ms.)
#[tokio::test]
async fn a_connection_idle_for_a_while_is_checked_before_use_one_just_released_is_not() {
    let db = TestDb::new().await;
    let pool = |after_ms: u64| {
        let mut config = PoolConfig::new(1);
        config.check_idle_after = std::time::Duration::from_millis(after_ms);
        let url = db.app_url();
        async move { connect_with(&url.await, &config).await.unwrap() }
    };
    let pid = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
    };

    let trusting = pool(60_000).await;
    let first = pid(trusting.clone()).await.unwrap();
    wait_idle(&trusting, 1).await;
    terminate(&db, first).await;
    assert!(
        pid(trusting.clone()).await.is_err(),
        "a connection released a moment ago is used without a ping"
    );
    let replaced = pid(trusting.clone()).await.unwrap();
    assert_ne!(replaced, first, "the broken connection was dropped");

    let checking = pool(200).await;
    let second = pid(checking.clone()).await.unwrap();
    wait_idle(&checking, 1).await;
    terminate(&db, second).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let third = pid(checking.clone())
        .await
        .expect("a connection idle past check_idle_after is pinged and replaced");
    assert_ne!(third, second);
    assert_eq!(
        capliquify::db::PoolConfig::new(1).check_idle_after,
        capliquify::db::CHECK_IDLE_AFTER,
        "the default"
    );
}

/// `CAPLIQUIFY_DB_TENANT_LANES=auto` counts the registry's live tenants on the home cluster
/// (not those deleted or placed elsewhere) when `serve` starts, and a number is taken as it
/// is.
#[tokio::test]
async fn auto_lanes_count_the_home_clusters_tenants() {
    use capliquify::db::lanes::{LaneCount, resolve};
    let db = TestDb::new().await;
    // A 16 MiB budget leaves room for 100 tenants a lane; 10 connections.
    let lanes = async |setting| resolve(setting, &db.pool, 16, 10).await.unwrap();
    assert_eq!(lanes(LaneCount::Auto).await, 1, "an empty fleet: lanes off");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(db.tenant(&format!("lanes-{i}"), Tier::Starter).await.id);
    }
    assert_eq!(lanes(LaneCount::Auto).await, 1);
    // 201 tenants, as the registry sees them (the count reads the registry alone).
    db.exec(
        "INSERT INTO public.tenants (slug, name, schema_name, clerk_organization_id,
                                     subscription_tier, subscription_status)
         SELECT 'lanes-x' || i, 'X', 'tenant_lanes_x' || i, 'org_lanes_x' || i,
                'starter', 'active'
           FROM generate_series(1, 198) i",
    )
    .await;
    assert_eq!(lanes(LaneCount::Auto).await, 3, "201 tenants at 100 a lane");
    db.exec(&format!(
        "UPDATE public.tenants SET deleted_at = now() WHERE id = '{}'",
        ids[1]
    ))
    .await;
    assert_eq!(
        lanes(LaneCount::Auto).await,
        2,
        "a deleted tenant (awaiting its purge) serves no requests"
    );
    db.exec(&format!(
        "UPDATE public.tenants SET deleted_at = NULL WHERE id = '{0}';
         UPDATE public.tenants SET cluster = 'elsewhere' WHERE id = '{1}'",
        ids[1], ids[0]
    ))
    .await;
    assert_eq!(
        lanes(LaneCount::Auto).await,
        2,
        "a tenant on another cluster is not the home cluster's"
    );
    assert_eq!(lanes(LaneCount::Fixed(7)).await, 7);
    // The connections cap what auto opens.
    assert_eq!(resolve(LaneCount::Auto, &db.pool, 16, 1).await.unwrap(), 1);
}
