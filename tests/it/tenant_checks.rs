//! Each tenant's own checks, a slice at a time (issue 16, public migration 0020):
//! `check_tenant_schema()` finds what `verify_tenant_isolation()` and doctor's role and
//! history checks find, for one tenant, through indexed catalog paths only;
//! `verify_tenant_slice()` walks the fleet least recently checked first and records each
//! outcome; `doctor` reports every recorded problem until a later check finds it gone.

use std::process::{Command, Output};

use capliquify::billing::Tier;
use capliquify::tenancy::verify::{self, Depth};

use crate::common::TestDb;

fn doctor(db: &TestDb, args: &[&str]) -> (Output, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .arg("doctor")
        .args(args)
        .arg("--json")
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

/// The result and details of `name` in a doctor report.
fn line(report: &serde_json::Value, name: &str) -> (String, String) {
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["test_name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report}"));
    (
        check["result"].as_str().unwrap().to_owned(),
        check["details"].as_str().unwrap().to_owned(),
    )
}

async fn problems(db: &TestDb, tenant: uuid::Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT p FROM public.check_tenant_schema($1) p ORDER BY p")
        .bind(tenant)
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// The slugs one `verify_tenant_slice(n)` call checked, in its order.
async fn slice(db: &TestDb, n: i32) -> Vec<String> {
    let rows: Vec<String> = sqlx::query_scalar("SELECT slug FROM public.verify_tenant_slice($1)")
        .bind(n)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let mut slugs = rows;
    slugs.dedup();
    slugs
}

#[tokio::test]
async fn slices_walk_the_fleet_least_recently_checked_first() {
    let db = TestDb::new().await;
    for slug in ["walk-a", "walk-b", "walk-c"] {
        db.tenant(slug, Tier::Starter).await;
    }
    db.tenant("walk-gone", Tier::Starter).await;
    db.exec("UPDATE public.tenants SET deleted_at = now() WHERE slug = 'walk-gone'")
        .await;
    // Never-checked tenants first (by slug), then the oldest check: every live tenant once
    // per round, the soft-deleted one never.
    assert_eq!(slice(&db, 2).await, ["walk-a", "walk-b"]);
    assert_eq!(slice(&db, 2).await, ["walk-c", "walk-a"]);
    assert_eq!(slice(&db, 1).await, ["walk-b"]);
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM public.tenant_checks")
            .await,
        3
    );
    let err = sqlx::query("SELECT * FROM public.verify_tenant_slice(0)")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at least one tenant"), "{err}");
}

#[tokio::test]
async fn a_tenants_check_finds_what_the_whole_fleet_checks_find() {
    let db = TestDb::new().await;
    let bad = db.tenant("tampered", Tier::Starter).await;
    let good = db.tenant("untouched", Tier::Starter).await;
    assert_eq!(problems(&db, bad.id).await, Vec::<String>::new());
    let s = &bad.schema_name;
    let role = format!("capliquify_t_{}", bad.id.simple());
    db.exec(&format!("GRANT SELECT ON \"{s}\".products TO PUBLIC"))
        .await;
    db.exec(&format!("REVOKE INSERT ON \"{s}\".sales FROM {role}"))
        .await;
    db.exec(&format!(
        "CREATE TABLE \"{s}\".leak (tenant uuid REFERENCES public.tenants (id))"
    ))
    .await;
    db.exec(&format!(
        "UPDATE \"{s}\".schema_migrations SET checksum = '\\x00' WHERE version = 1"
    ))
    .await;
    db.exec(&format!("DROP TABLE \"{s}\".scenarios")).await;

    let found = problems(&db, bad.id).await;
    let has = |needle: &str| found.iter().any(|p| p.contains(needle));
    assert!(has("granted to PUBLIC: products"), "{found:?}");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("no read/write grant on") && p.contains("sales")),
        "{found:?}"
    );
    assert!(
        has("constraint leak.leak_tenant_fkey -> public.tenants"),
        "{found:?}"
    );
    assert!(
        has("migration 1 applied with a checksum the catalog lacks"),
        "{found:?}"
    );
    assert!(has("missing tables scenarios"), "{found:?}");
    assert_eq!(found.len(), 5, "{found:?}");
    assert_eq!(problems(&db, good.id).await, Vec::<String>::new());

    // The whole-fleet checks (the guide's function and the full report) agree, naming the
    // same schema for each kind.
    let full = verify::report(&db.pool).await.unwrap();
    for name in [
        "no_cross_schema_references",
        "no_public_grants",
        "tenant_histories_match_catalog",
        "tenant_roles_in_place",
        "tenant_schemas_current",
    ] {
        let check = full.checks.iter().find(|c| c.test_name == name).unwrap();
        assert_eq!(check.result, "FAIL", "{name}: {}", check.details);
        assert!(
            check.details.contains(s.as_str()) || check.details.contains("tampered"),
            "{name}: {}",
            check.details
        );
    }
}

#[tokio::test]
async fn doctor_reports_a_recorded_problem_until_a_check_finds_it_gone() {
    let db = TestDb::new().await;
    let bad = db.tenant("drifted", Tier::Starter).await;
    db.tenant("fine", Tier::Starter).await;
    let (out, report) = doctor(&db, &[]);
    assert!(out.status.success(), "{report}");
    assert_eq!(line(&report, "tenant_schemas_checked").0, "PASS");

    db.exec(&format!(
        "GRANT SELECT ON \"{}\".companies TO PUBLIC",
        bad.schema_name
    ))
    .await;
    // Reading only what earlier checks found: still clean, as nothing was checked since.
    let (out, report) = doctor(&db, &["--slice", "0"]);
    assert!(out.status.success(), "{report}");
    // One tenant per run, least recently checked first ("drifted" sorts first).
    let (out, report) = doctor(&db, &["--slice", "1"]);
    assert!(!out.status.success(), "{report}");
    let (result, details) = line(&report, "tenant_schemas_checked");
    assert_eq!(result, "FAIL");
    assert!(
        details.contains("drifted: granted to PUBLIC: companies"),
        "{details}"
    );
    // The next run checks the other tenant only, and still reports the recorded problem.
    let (out, report) = doctor(&db, &["--slice", "1"]);
    assert!(!out.status.success(), "{report}");
    assert!(
        line(&report, "tenant_schemas_checked")
            .1
            .contains("drifted:")
    );

    db.exec(&format!(
        "REVOKE SELECT ON \"{}\".companies FROM PUBLIC",
        bad.schema_name
    ))
    .await;
    let (out, report) = doctor(&db, &["--slice", "0"]);
    assert!(!out.status.success(), "not rechecked yet: {report}");
    let (out, report) = doctor(&db, &["--full"]);
    assert!(out.status.success(), "{report}");
    let (result, details) = line(&report, "tenant_schemas_checked");
    assert_eq!(result, "PASS");
    assert!(details.contains("all 2 checked in this run"), "{details}");
    // --full also ran the guide's whole-fleet function.
    assert_eq!(line(&report, "no_cross_schema_references").0, "PASS");
}

/// `doctor` without `--slice`: while serve keeps every tenant's checks current it runs
/// none of its own and reports serve's; once they are stale (serve stopped) or a tenant was
/// never checked, it checks a slice itself.
#[tokio::test]
async fn doctor_checks_a_slice_itself_only_when_serve_does_not_keep_the_checks_current() {
    let db = TestDb::new().await;
    let bad = db.tenant("drifted", Tier::Starter).await;
    db.tenant("fine", Tier::Starter).await;
    // As serve's background check does: a slice, then the fleet.
    verify::slice(&db.pool, verify::SLICE).await.unwrap();
    verify::check_fleet(&db.pool, true).await.unwrap();
    db.exec(&format!(
        "GRANT SELECT ON \"{}\".companies TO PUBLIC",
        bad.schema_name
    ))
    .await;
    let (out, report) = doctor(&db, &[]);
    assert!(
        out.status.success(),
        "no check ran, none found it: {report}"
    );
    let (result, details) = line(&report, "tenant_schemas_checked");
    assert_eq!(result, "PASS");
    assert!(details.contains("kept current by serve"), "{details}");
    // Serve stopped an hour ago: doctor checks a slice itself and finds the grant.
    db.exec("UPDATE public.tenant_checks SET checked_at = now() - interval '1 hour'")
        .await;
    db.exec(
        "UPDATE public.fleet_check
            SET checked_at = now() - interval '1 hour', serve_checked_at = now() - interval '1 hour'",
    )
    .await;
    let (out, report) = doctor(&db, &[]);
    assert!(!out.status.success(), "{report}");
    let (result, details) = line(&report, "tenant_schemas_checked");
    assert_eq!(result, "FAIL");
    assert!(details.contains("2 tenant(s) checked now"), "{details}");
    assert!(
        details.contains("drifted: granted to PUBLIC: companies"),
        "{details}"
    );
    // A tenant never checked also makes doctor check, even with the rest current.
    db.exec(&format!(
        "REVOKE SELECT ON \"{}\".companies FROM PUBLIC",
        bad.schema_name
    ))
    .await;
    verify::slice(&db.pool, verify::SLICE).await.unwrap();
    verify::check_fleet(&db.pool, true).await.unwrap();
    db.tenant("newcomer", Tier::Starter).await;
    // Serve's record predates the newcomer: its next minute checks it first.
    let (out, report) = doctor(&db, &[]);
    assert!(out.status.success(), "{report}");
    let details = line(&report, "tenant_schemas_checked").1;
    assert!(details.contains("none run now"), "{details}");
    // A record with a tenant never checked (serve's slice failed, or more sign-ups than a
    // slice in a minute) makes doctor check, even with the rest current.
    let recorded = verify::check_fleet(&db.pool, true).await.unwrap();
    assert_eq!((recorded.checkable, recorded.never_checked), (3, 1));
    let (out, report) = doctor(&db, &[]);
    assert!(out.status.success(), "{report}");
    let details = line(&report, "tenant_schemas_checked").1;
    assert!(details.contains("3 tenant(s) checked now"), "{details}");
}

#[tokio::test]
async fn doctor_reads_the_fleet_check_serve_recorded_and_the_versions_now() {
    let db = TestDb::new().await;
    let gone = db.tenant("gone", Tier::Starter).await;
    db.tenant("kept", Tier::Starter).await;
    // serve's minute: a slice, then the fleet.
    verify::slice(&db.pool, verify::SLICE).await.unwrap();
    let recorded = verify::check_fleet(&db.pool, true).await.unwrap();
    assert_eq!(
        (
            recorded.live,
            recorded.checkable,
            recorded.never_checked,
            recorded.missing_count,
            recorded.orphan_count
        ),
        (2, 2, 0, 0, 0),
        "{recorded:?}"
    );
    // After the record: debris, a dropped schema, and a tenant left behind the catalog.
    db.exec("CREATE SCHEMA tenant_debris").await;
    db.exec(&format!("DROP SCHEMA \"{}\" CASCADE", gone.schema_name))
        .await;
    db.exec("UPDATE public.tenants SET schema_version = schema_version - 1 WHERE slug = 'kept'")
        .await;
    // doctor reports the record for what it holds, and the versions as they are now.
    let (out, report) = doctor(&db, &[]);
    assert!(!out.status.success(), "{report}");
    let (result, details) = line(&report, "tenant_schemas_current");
    assert_eq!(result, "FAIL");
    assert!(details.contains("kept: at version"), "{details}");
    assert!(!details.contains("gone: schema"), "{details}");
    let (result, details) = line(&report, "no_orphan_schemas");
    assert_eq!(result, "PASS");
    assert!(details.contains("as of the fleet check at"), "{details}");
    // Checking now finds all three, and records them for the next plain run.
    for args in [&["--slice", "1"][..], &[]] {
        let (out, report) = doctor(&db, args);
        assert!(!out.status.success(), "{report}");
        let (_, details) = line(&report, "tenant_schemas_current");
        let missing = format!("gone: schema {} missing", gone.schema_name);
        assert!(details.contains(&missing), "{args:?}: {details}");
        assert!(details.contains("kept: at version"), "{args:?}: {details}");
        let (result, details) = line(&report, "no_orphan_schemas");
        assert_eq!(result, "FAIL", "{args:?}: {details}");
        assert!(details.contains("tenant_debris"), "{args:?}: {details}");
    }
    // The guide's own function, which joins the registry itself, names the same.
    let (_, details) = db.check("no_orphan_schemas").await;
    assert!(details.contains("tenant_debris"), "{details}");
    let (_, details) = db.check("tenant_schemas_current").await;
    assert!(details.contains("gone: schema"), "{details}");
    // The record's counts: two live tenants, one schema missing, one orphan.
    let recorded = verify::check_fleet(&db.pool, true).await.unwrap();
    assert_eq!(
        (recorded.live, recorded.missing_count, recorded.orphan_count),
        (2, 1, 1)
    );
    assert_eq!(recorded.orphans, ["tenant_debris"]);
    // A repair that recreates the schema checks the fleet again: the next plain doctor no
    // longer reports it missing.
    let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .args(["tenant", "repair", "gone"])
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (_, report) = doctor(&db, &[]);
    let (_, details) = line(&report, "tenant_schemas_current");
    assert!(!details.contains("gone: schema"), "{details}");
    assert!(details.contains("kept: at version"), "{details}");
}

#[tokio::test]
async fn tenants_never_checked_are_reported_not_passed() {
    let db = TestDb::new().await;
    for slug in ["unseen-a", "unseen-b", "unseen-c"] {
        db.tenant(slug, Tier::Starter).await;
    }
    let report = verify::doctor(&db.pool, Depth::Slice(1), |_, _| {})
        .await
        .unwrap();
    let check = report
        .checks
        .iter()
        .find(|c| c.test_name == "tenant_schemas_checked")
        .unwrap();
    assert_eq!(check.result, "INFO", "{}", check.details);
    assert!(
        check.details.contains("2 of 3 tenant(s) not checked yet"),
        "{}",
        check.details
    );
    let mut seen = Vec::new();
    verify::doctor(&db.pool, Depth::Full, |done, total| {
        seen.push((done, total))
    })
    .await
    .unwrap();
    assert_eq!(seen.first(), Some(&(0, 3)));
    assert_eq!(seen.last(), Some(&(3, 3)));
}

/// Catalog rows read by `sql` on `conn`: sequential and index fetches of pg_class,
/// pg_attribute, pg_depend, pg_constraint, pg_namespace and pg_proc, as
/// `pg_stat_sys_tables` counts them (`seq_tup_read + idx_tup_fetch`). `sql` runs twice
/// first, so the caches are warm. The count comes from this transaction's own statistics
/// (`pg_stat_get_xact_*`), so what other backends read meanwhile (autovacuum analysing
/// the tables a new tenant brought, for one) is not counted; the cumulative view counted
/// it and made the contrast flaky. The catalogs' and their indexes' oids are looked up
/// first, so reading the counters reads no catalog table.
pub(crate) async fn catalog_rows_read(conn: &mut sqlx::PgConnection, sql: &str) -> i64 {
    let (heaps, indexes): (
        Vec<sqlx::postgres::types::Oid>,
        Vec<sqlx::postgres::types::Oid>,
    ) = sqlx::query_as(
        "SELECT array_agg(DISTINCT h.oid::oid), array_agg(i.indexrelid)
               FROM unnest(ARRAY['pg_class', 'pg_attribute', 'pg_depend', 'pg_constraint',
                                 'pg_namespace', 'pg_proc']::regclass[]) AS h(oid)
               JOIN pg_index i ON i.indrelid = h.oid",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let counted =
        "SELECT ((SELECT sum(pg_stat_get_xact_tuples_returned(r)) FROM unnest($1::oid[]) r)
                         + (SELECT sum(pg_stat_get_xact_tuples_fetched(r))
                              FROM unnest($1::oid[] || $2::oid[]) r))::bigint";
    let read = || {
        sqlx::query_scalar::<_, i64>(counted)
            .bind(heaps.clone())
            .bind(indexes.clone())
    };
    let run = || sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()));
    for _ in 0..2 {
        run().execute(&mut *conn).await.unwrap();
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    let before = read().fetch_one(&mut *tx).await.unwrap();
    run().execute(&mut *tx).await.unwrap();
    let after = read().fetch_one(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    after - before
}

/// Asserts that `one` (a statement about one tenant, built from the tenant made first)
/// reads no more catalog rows with 8 tenants than with 2, while `whole` (a statement over
/// every tenant, the contrast that shows the probe can fail) reads over twice as many. The
/// planner is kept off sequential scans: with a handful of tenants the catalogs are small
/// enough for it to prefer them where an index exists, which it would not at fleet size.
pub(crate) async fn assert_catalog_reads_flat(
    db: &TestDb,
    one: impl Fn(&capliquify::tenancy::Tenant) -> String,
    whole: &str,
) {
    let tenant = db.tenant("probed", Tier::Starter).await;
    db.tenant("neighbour", Tier::Starter).await;
    let one = one(&tenant);
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let one_small = catalog_rows_read(&mut conn, &one).await;
    let whole_small = catalog_rows_read(&mut conn, whole).await;
    for i in 0..6 {
        db.tenant(&format!("more-{i}"), Tier::Starter).await;
    }
    let one_large = catalog_rows_read(&mut conn, &one).await;
    let whole_large = catalog_rows_read(&mut conn, whole).await;
    assert!(one_small > 0, "the probe counted nothing");
    assert!(
        one_large * 10 <= one_small * 11,
        "{one} read {one_small} catalog rows with 2 tenants, {one_large} with 8"
    );
    assert!(
        whole_large >= whole_small * 2,
        "{whole} read {whole_small} then {whole_large}: the probe sees no growth"
    );
}

/// The point of the slice: a tenant's check reads the catalog through indexes, so what it
/// reads does not grow with the number of tenants; the guide's whole-fleet function, for
/// contrast, does (measured: 316 rows, then 316; the whole-fleet function 969, then 3,543).
#[tokio::test]
async fn a_tenants_check_reads_as_much_catalog_at_any_fleet_size() {
    let db = TestDb::new().await;
    assert_catalog_reads_flat(
        &db,
        |t| format!("SELECT public.check_tenant_schema('{}')", t.id),
        "SELECT * FROM public.verify_tenant_isolation()",
    )
    .await;
}

/// serve's background loop checks a slice as it starts, as its least-privilege role.
#[tokio::test]
async fn the_service_checks_a_slice_in_the_background() {
    let db = TestDb::new().await;
    db.tenant("background", Tier::Starter).await;
    let service = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.app_url().await)
        .await
        .unwrap();
    let task = tokio::spawn(verify::check_loop(service));
    let mut checked = false;
    for _ in 0..200 {
        if db
            .scalar_i64(
                "SELECT (SELECT count(*) FROM public.tenant_checks)
                        + (SELECT count(*) FROM public.fleet_check)",
            )
            .await
            == 2
        {
            checked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    task.abort();
    assert!(
        checked,
        "the service's loop recorded no check, or no fleet check"
    );
    // The fleet check (after the slice) is what doctor reads instead of checking itself.
    let recorded = verify::kept_current(&db.pool).await.unwrap();
    assert_eq!(recorded.map(|f| (f.live, f.checkable)), Some((1, 1)));
}

/// The documented call works in psql.
#[tokio::test]
async fn psql_runs_a_slice() {
    let db = TestDb::new().await;
    db.tenant("from-psql", Tier::Starter).await;
    let out = Command::new("psql")
        .arg(&db.url)
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg("SELECT slug, coalesce(problem, 'ok') FROM public.verify_tenant_slice(100)")
        .arg("-c")
        .arg(
            "SELECT live, missing_count, orphan_count, checkable, never_checked \
               FROM public.check_fleet()",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "from-psql|ok\n1|0|0|1|0"
    );
}

/// `tenant repair` checks the tenant again once it has repaired it, so the very next doctor
/// (checking nothing itself) no longer reports what the repair fixed.
#[tokio::test]
async fn a_repair_is_seen_by_the_next_doctor_without_waiting_for_a_slice() {
    let db = TestDb::new().await;
    let broken = db.tenant("ungranted", Tier::Starter).await;
    db.exec(&format!(
        "DO $$ BEGIN EXECUTE format('REVOKE ALL ON %I.companies FROM %I', '{}',
                                    public.tenant_role_name('{}')); END $$",
        broken.schema_name, broken.id
    ))
    .await;
    let (out, report) = doctor(&db, &[]);
    assert!(!out.status.success(), "{report}");
    let (result, details) = line(&report, "tenant_schemas_checked");
    assert_eq!(result, "FAIL");
    assert!(
        details.contains("ungranted: no read/write grant on companies"),
        "{details}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .args(["tenant", "repair", "ungranted"])
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (out, report) = doctor(&db, &["--slice", "0"]);
    assert!(out.status.success(), "{report}");
    assert_eq!(line(&report, "tenant_schemas_checked").0, "PASS");
}

/// A slice of checks or size measurements reads the catalog of many cold schemas; its
/// backend would keep those entries for life (1.2 GiB after measuring 5,000 tenants), so it
/// runs on a connection closed afterwards, never one the pool hands out again.
#[tokio::test]
async fn slices_do_not_return_their_backend_to_the_pool() {
    let db = TestDb::new().await;
    db.tenant("cold", Tier::Starter).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    let pid = || async {
        sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = pid().await;
    assert_eq!(pid().await, before, "a pooled connection is reused");
    assert_eq!(verify::slice(&pool, 10).await.unwrap(), 1);
    let after_check = pid().await;
    assert_ne!(after_check, before, "the checking backend came back");
    assert_eq!(
        capliquify::monitor::measure_slice(&pool, 10).await.unwrap(),
        1
    );
    assert_ne!(pid().await, after_check, "the measuring backend came back");
}
