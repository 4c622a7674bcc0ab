//! Monitoring: usage against limits, slow queries attributed to their tenant through the
//! tenant's database role (pg_stat_statements), and the admin endpoints that serve both.

use std::process::Command;
use std::sync::Arc;

use crate::common::api::{Reply, TestApp};
use capliquify::access::Role;
use capliquify::billing::Tier;
use capliquify::http::HttpConfig;
use capliquify::monitor;
use reqwest::StatusCode;
use serde_json::Value;

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789abcdef";

async fn app_with_admin() -> TestApp {
    TestApp::spawn_with(
        HttpConfig {
            admin_token: Some(Arc::from(ADMIN_TOKEN)),
            ..HttpConfig::default()
        },
        4,
    )
    .await
}

async fn admin_get(app: &TestApp, token: Option<&str>, path: &str) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().get(app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn slow_queries_are_attributed_to_the_tenant_that_ran_them() {
    let app = app_with_admin().await;
    let a = app.tenant("stats-a", Tier::Professional).await;
    let b = app.tenant("stats-b", Tier::Professional).await;
    let (ta, tb) = (
        app.token_for(&a, Role::Owner),
        app.token_for(&b, Role::Owner),
    );
    app.company(&a, "A Co").await;
    for _ in 0..5 {
        let r: Reply = app.get(&ta, "/api/v1/companies?limit=5").await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = app.get(&tb, "/api/v1/products").await;
    assert_eq!(r.status, StatusCode::OK);

    let pool = &app.db.pool;
    let of_a = monitor::slow_queries(pool, Some(a.tenant.id), 100)
        .await
        .unwrap();
    assert!(
        !of_a.is_empty(),
        "tenant A's statements are attributed to it"
    );
    assert!(of_a.iter().all(|q| q.tenant == "stats-a"));
    let companies = of_a
        .iter()
        .find(|q| q.query.contains("companies") && q.query.starts_with("SELECT"))
        .unwrap_or_else(|| panic!("A's company listing is among its statements: {of_a:#?}"));
    assert!(companies.calls >= 5, "{companies:?}");
    let of_b = monitor::slow_queries(pool, Some(b.tenant.id), 100)
        .await
        .unwrap();
    assert!(of_b.iter().all(|q| q.tenant == "stats-b"));
    assert!(of_b.iter().any(|q| q.query.contains("products")));
    assert!(
        !of_b
            .iter()
            .any(|q| q.query.contains("companies") && q.calls >= 5),
        "A's calls are not counted for B"
    );
    let all = monitor::slow_queries(pool, None, 1000).await.unwrap();
    assert!(all.iter().any(|q| q.tenant == "stats-a") && all.iter().any(|q| q.tenant == "stats-b"));

    // The guide's attribution by query text finds none of it: our SQL never names a schema.
    let by_text: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM capliquify_stats.pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND query LIKE '%' || $1 || '%'",
    )
    .bind(&a.tenant.schema_name)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(by_text, 0);

    // The same through the admin API and the CLI.
    let (status, body) = admin_get(
        &app,
        Some(ADMIN_TOKEN),
        "/admin/api/slow-queries?tenant=stats-a&limit=50",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body.as_array().unwrap();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["tenant"] == "stats-a"),
        "{body}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .env("DATABASE_URL", &app.db.url)
        .args([
            "monitor",
            "slow-queries",
            "--tenant",
            "stats-b",
            "--limit",
            "5",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("TENANT") && stdout.contains("stats-b") && !stdout.contains("stats-a"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_says_what_is_wrong() {
    let app = app_with_admin().await;
    let t = app.tenant("admin-seen", Tier::Starter).await;
    app.company(&t, "One").await;

    let (status, body) = admin_get(&app, None, "/admin/api/tenants").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = admin_get(
        &app,
        Some("wrong-token-wrong-token-wrong-token"),
        "/admin/api/tenants",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A tenant's Clerk token is not an admin token.
    let owner = app.token_for(&t, Role::Owner);
    let (status, _) = admin_get(&app, Some(&owner), "/admin/api/sizes").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = admin_get(&app, Some(ADMIN_TOKEN), "/admin/api/tenants").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let row = body
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["slug"] == "admin-seen")
        .cloned()
        .expect("the tenant is listed");
    // TestApp adds one member per role; one company was created.
    assert_eq!(
        (row["user_count"].as_i64(), row["entity_count"].as_i64()),
        (Some(4), Some(1)),
        "{row}"
    );
    assert!(row["max_entities"].is_number(), "{row}");

    // The admin API ranks what serve's loop measured (here: one slice, measured now).
    monitor::measure_slice(&app.db.pool, 100).await.unwrap();
    let (status, body) = admin_get(&app, Some(ADMIN_TOKEN), "/admin/api/sizes?limit=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");

    for (path, status, field) in [
        ("/admin/api/sizes?limit=0", StatusCode::BAD_REQUEST, "limit"),
        (
            "/admin/api/sizes?limit=lots",
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        ("/admin/api/tenants?drop=1", StatusCode::BAD_REQUEST, "drop"),
        (
            "/admin/api/slow-queries?tenant=no-such-tenant",
            StatusCode::NOT_FOUND,
            "tenant",
        ),
        (
            "/admin/api/slow-queries?tenant=..%2F..",
            StatusCode::NOT_FOUND,
            "tenant",
        ),
    ] {
        let (got, body) = admin_get(&app, Some(ADMIN_TOKEN), path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["field"], field, "{path}: {body}");
    }

    // Without a configured token the endpoints are off, and say how to turn them on.
    let off = TestApp::spawn().await;
    let (status, body) = admin_get(&off, Some(ADMIN_TOKEN), "/admin/api/tenants").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("CAPLIQUIFY_ADMIN_TOKEN"),
        "{body}"
    );
}

#[tokio::test]
async fn monitor_tenants_shows_usage_against_limits() {
    let app = TestApp::spawn().await;
    let t = app.tenant("usage-cli", Tier::Professional).await;
    app.company(&t, "First").await;
    app.company(&t, "Second").await;
    let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .env("DATABASE_URL", &app.db.url)
        .args(["monitor", "tenants"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("usage-cli"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(stdout.contains("ENTITIES"), "{stdout}");
    assert!(
        line.contains("4/") && line.contains("2/"),
        "users 4/…, entities 2/…: {line}"
    );
}

/// The exact size of one schema's tables, computed independently of the product's function
/// (by scanning pg_class on relnamespace, as the guide's query does).
async fn exact_size(db: &crate::common::TestDb, schema: &str) -> i64 {
    db.scalar_i64(&format!(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
          WHERE c.relnamespace = '\"{schema}\"'::regnamespace AND c.relkind IN ('r', 'p')"
    ))
    .await
}

/// `monitor sizes` ranks the sizes a slice measurement recorded and measures only the
/// largest candidates (30 at least) again: with more tenants than that, the largest is found
/// once it has been measured, and the size shown is the exact current one, even after it
/// grew since.
#[tokio::test]
async fn sizes_finds_the_largest_of_many_tenants_and_measures_it_exactly() {
    let db = crate::common::TestDb::new().await;
    let mut schemas = Vec::new();
    for i in 0..36 {
        schemas.push(
            db.tenant(&format!("size-{i:02}"), Tier::Starter)
                .await
                .schema_name,
        );
    }
    assert!(
        monitor::sizes(&db.pool, 5).await.unwrap().is_empty(),
        "nothing measured yet"
    );
    // The last schema by slug, so the slice measures it last.
    let big = schemas.iter().max().unwrap();
    db.exec(&format!(
        "INSERT INTO \"{big}\".companies (name) SELECT 'Company ' || g FROM generate_series(1, 20000) g"
    ))
    .await;
    assert_eq!(monitor::measure_slice(&db.pool, 100).await.unwrap(), 36);
    let top = monitor::sizes(&db.pool, 1).await.unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(&top[0].schema_name, big);
    assert!(top[0].slug.as_deref().unwrap().starts_with("size-"));
    assert_eq!(top[0].total_bytes, exact_size(&db, big).await);
    assert_eq!(
        top[0].table_count,
        db.scalar_i64(&format!(
            "SELECT count(*) FROM information_schema.tables
          WHERE table_schema = '{big}' AND table_type = 'BASE TABLE'"
        ))
        .await
    );
    // It grows; no slice measures it again, but the size shown is measured as it is shown.
    let recorded = top[0].total_bytes;
    db.exec(&format!(
        "INSERT INTO \"{big}\".companies (name) SELECT 'More ' || g FROM generate_series(1, 20000) g"
    ))
    .await;
    let top = monitor::sizes(&db.pool, 1).await.unwrap();
    assert!(
        top[0].total_bytes > recorded,
        "{} after {recorded}",
        top[0].total_bytes
    );
    assert_eq!(top[0].total_bytes, exact_size(&db, big).await);
    // A limit above the fleet shows every schema, largest first.
    let all = monitor::sizes(&db.pool, 100).await.unwrap();
    assert_eq!(all.len(), 36);
    assert!(all.windows(2).all(|w| w[0].total_bytes >= w[1].total_bytes));
    assert_eq!(
        monitor::schema_size(&db.pool, big)
            .await
            .unwrap()
            .map(|s| s.0),
        Some(exact_size(&db, big).await)
    );
    assert_eq!(
        monitor::schema_size(&db.pool, "tenant_no_such")
            .await
            .unwrap(),
        None
    );
}

/// Slices walk the fleet least recently measured first, never measured before anyone, and
/// the coverage says how many are left.
#[tokio::test]
async fn size_slices_walk_the_fleet_least_recently_measured_first() {
    let db = crate::common::TestDb::new().await;
    for slug in ["walk-a", "walk-b", "walk-c", "walk-d", "walk-e"] {
        db.tenant(slug, Tier::Starter).await;
    }
    let never = || async { monitor::coverage(&db.pool).await.unwrap().never_measured };
    assert_eq!(never().await, 5);
    let measured_at = |slug: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
                "SELECT s.measured_at FROM public.tenant_sizes s
                   JOIN public.tenants t ON t.id = s.tenant_id WHERE t.slug = $1",
            )
            .bind(slug)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(monitor::measure_slice(&db.pool, 2).await.unwrap(), 2);
    assert_eq!(never().await, 3);
    let first = measured_at("walk-a").await;
    assert_eq!(monitor::measure_slice(&db.pool, 2).await.unwrap(), 2);
    assert_eq!(monitor::measure_slice(&db.pool, 2).await.unwrap(), 2);
    // walk-e, never measured, then walk-a, the oldest measurement.
    assert_eq!(never().await, 0);
    assert!(measured_at("walk-a").await > first);
    assert!(measured_at("walk-b").await < measured_at("walk-a").await);
    let coverage = monitor::coverage(&db.pool).await.unwrap();
    assert_eq!(coverage.tenants, 5);
    assert_eq!(
        coverage.oldest_measurement,
        Some(measured_at("walk-b").await)
    );
    // A purged tenant's measurement goes with it (ON DELETE CASCADE).
    let operator = capliquify::audit::Actor::operator();
    let tenancy = db.tenancy();
    tenancy.soft_delete("walk-c", &operator).await.unwrap();
    tenancy
        .purge("walk-c", true, Some("walk-c"), &operator)
        .await
        .unwrap();
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM public.tenant_sizes")
            .await,
        4
    );
    // A slice of nothing is refused, naming the limit.
    let err = sqlx::query("SELECT public.measure_tenant_slice(0)")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at least one tenant"), "{err}");
}

/// The point of measuring by slices: measuring one schema reads the catalog through
/// indexes, the same number of rows with 8 tenants as with 2 (the planner kept off
/// sequential scans, which it would not choose at fleet size); the former ranking, which
/// read pg_class whole, reads over twice as many (so the probe can fail).
#[tokio::test]
async fn measuring_a_tenant_reads_as_much_catalog_at_any_fleet_size() {
    let db = crate::common::TestDb::new().await;
    crate::tenant_checks::assert_catalog_reads_flat(
        &db,
        |t| {
            format!(
                "SELECT * FROM public.tenant_schema_size('{}')",
                t.schema_name
            )
        },
        "SELECT n.nspname, sum(c.relpages) FROM pg_namespace n
           LEFT JOIN pg_class c ON c.relnamespace = n.oid
          WHERE n.nspname LIKE 'tenant\\_%' GROUP BY n.nspname",
    )
    .await;
}

/// serve's loop measures as the service's least-privilege role, and catches up while some
/// tenants were never measured (more than one slice's worth here would take minutes; one
/// slice shows the loop works as that role).
#[tokio::test]
async fn the_service_measures_sizes_in_the_background() {
    let db = crate::common::TestDb::new().await;
    db.tenant("sized-in-background", Tier::Starter).await;
    let service = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.app_url().await)
        .await
        .unwrap();
    let task = tokio::spawn(monitor::measure_loop(service.clone()));
    let mut measured = false;
    for _ in 0..200 {
        if db
            .scalar_i64("SELECT count(*) FROM public.tenant_sizes")
            .await
            == 1
        {
            measured = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    task.abort();
    assert!(measured, "the service's loop recorded no size");
    // And the service role may rank them (the console and the admin API do).
    assert_eq!(monitor::sizes(&service, 10).await.unwrap().len(), 1);
}

/// The command: measures a slice before ranking (or none, or all), says what it did not
/// rank, and shows the functions work from psql.
#[tokio::test]
async fn monitor_sizes_measures_a_slice_then_ranks() {
    let db = crate::common::TestDb::new().await;
    for i in 0..3 {
        db.tenant(&format!("cmd-size-{i}"), Tier::Starter).await;
    }
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_capliquify"))
            .args(["monitor", "sizes"])
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = run(&["--slice", "0"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("3 of 3 tenants not measured yet"),
        "{stdout}"
    );
    assert!(!stdout.contains("cmd-size-"), "{stdout}");
    let out = run(&["--slice", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 of 3 tenants not measured yet"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("cmd-size-").count(), 2, "{stdout}");
    let out = run(&["--full", "--json"]);
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(3), "{json}");
    let out = run(&[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ranked all 3 tenants"));
    // Without --slice it measures a slice only when nobody keeps the sizes current: with
    // every tenant measured and one measured within 2 minutes (serve's pace) it measures
    // none, however old the others are.
    let measured_long_ago = "SELECT count(*) FROM public.tenant_sizes
                              WHERE measured_at < now() - interval '30 minutes'";
    db.exec("UPDATE public.tenant_sizes SET measured_at = now() - interval '1 hour'")
        .await;
    db.exec(
        "UPDATE public.tenant_sizes SET measured_at = now() - interval '1 minute'
          WHERE tenant_id = (SELECT id FROM public.tenants WHERE slug = 'cmd-size-0')",
    )
    .await;
    assert!(run(&[]).status.success());
    assert_eq!(
        db.scalar_i64(measured_long_ago).await,
        2,
        "kept current: no slice"
    );
    // Nothing measured for 2 minutes (no serve): it measures a slice first.
    db.exec("UPDATE public.tenant_sizes SET measured_at = now() - interval '1 hour'")
        .await;
    assert!(run(&[]).status.success());
    assert_eq!(
        db.scalar_i64(measured_long_ago).await,
        0,
        "a slice measured"
    );
    let out = run(&["--full", "--slice", "5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--slice"));

    let psql = Command::new("psql")
        .arg(&db.url)
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(
            "SELECT public.measure_tenant_slice(10);
             SELECT m.table_count FROM public.tenants t,
                    public.tenant_schema_size(t.schema_name) m WHERE t.slug = 'cmd-size-0'",
        )
        .output()
        .unwrap();
    assert!(
        psql.status.success(),
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&psql.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let tables = db
        .scalar_i64(
            "SELECT count(*) FROM information_schema.tables
              WHERE table_schema = (SELECT schema_name FROM public.tenants WHERE slug = 'cmd-size-0')
                AND table_type = 'BASE TABLE'",
        )
        .await;
    assert_eq!(lines, ["3".to_owned(), tables.to_string()]);
}
