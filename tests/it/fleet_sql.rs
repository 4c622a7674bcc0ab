//! `capliquify fleet sql`: one read-only query across tenant schemas.

use std::process::Command;

use crate::common::TestDb;
use capliquify::billing::Tier;

fn fleet(db: &TestDb, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .arg("fleet")
        .arg("sql")
        .args(args)
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("run capliquify")
}

#[tokio::test]
async fn a_query_runs_in_every_tenant_and_rows_carry_their_tenant() {
    let db = TestDb::new().await;
    for (slug, companies) in [("fleet-a", 1), ("fleet-b", 3), ("fleet-c", 0)] {
        let t = db.tenant(slug, Tier::Enterprise).await;
        for i in 0..companies {
            db.exec(&format!(
                "INSERT INTO {}.companies (name) VALUES ('{slug} co {i}')",
                t.schema_name
            ))
            .await;
        }
    }
    let out = fleet(
        &db,
        &["SELECT count(*) AS companies FROM companies", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let counts: Vec<(String, i64)> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["tenant"].as_str().unwrap().to_owned(),
                r["companies"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("fleet-a".into(), 1),
            ("fleet-b".into(), 3),
            ("fleet-c".into(), 0)
        ]
    );

    // One tenant only, as a table.
    let out = fleet(
        &db,
        &[
            "SELECT name FROM companies ORDER BY name",
            "--tenant",
            "fleet-b",
        ],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fleet-b co 2") && !text.contains("fleet-a co 0"),
        "{text}"
    );
    assert!(text.contains("3 row(s) from 1 tenant(s)"), "{text}");
}

#[tokio::test]
async fn the_query_cannot_write_or_smuggle_a_second_statement() {
    let db = TestDb::new().await;
    let t = db.tenant("fleet-safe", Tier::Starter).await;
    db.exec(&format!(
        "INSERT INTO {}.companies (name) VALUES ('kept')",
        t.schema_name
    ))
    .await;
    for query in [
        "WITH gone AS (DELETE FROM companies RETURNING *) SELECT * FROM gone",
        "SELECT 1) q; DELETE FROM companies; SELECT (1",
    ] {
        let out = fleet(&db, &[query]);
        assert!(!out.status.success(), "{query} was accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED fleet-safe"));
    }
    assert_eq!(
        db.scalar_i64(&format!("SELECT count(*) FROM {}.companies", t.schema_name))
            .await,
        1
    );
    let out = fleet(&db, &["SELECT pg_sleep(5)", "--timeout-secs", "1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("statement timeout"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fleet(&db, &["SELECT 1", "--tenant", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no live tenant with slug \"nobody\""));
}

#[tokio::test]
async fn only_a_select_is_run_failures_are_counted_and_columns_keep_the_selects_order() {
    let db = TestDb::new().await;
    for slug in ["fleet-x", "fleet-y"] {
        let t = db.tenant(slug, Tier::Starter).await;
        db.exec(&format!(
            "INSERT INTO {}.companies (name) VALUES ('{slug} co')",
            t.schema_name
        ))
        .await;
    }
    // Not a SELECT: refused before any tenant is asked, saying what is allowed.
    for query in [
        "DELETE FROM products",
        "  update companies set name = 'x'",
        "DROP TABLE companies",
    ] {
        let out = fleet(&db, &[query]);
        assert_eq!(out.status.code(), Some(2), "{query}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("only one read-only SELECT") && !err.contains("FAILED"),
            "{query}: {err}"
        );
        assert!(out.stdout.is_empty(), "{query}");
    }
    // A trailing semicolon, as typed in psql, is fine.
    let out = fleet(&db, &["SELECT count(*) AS n FROM companies;"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every tenant failing is a failure, and the summary says so.
    let out = fleet(&db, &["SELECT no_such_column FROM companies"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("0 row(s) from 0 tenant(s); 2 tenant(s) failed"),
        "{text}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FAILED fleet-x") && err.contains("FAILED fleet-y"),
        "{err}"
    );

    // Columns come out in the SELECT's order, not alphabetically.
    let out = fleet(
        &db,
        &["SELECT name AS zeta, 1 AS alpha, 2 AS mid FROM companies"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["tenant", "zeta", "alpha", "mid"], "{text}");
    let out = fleet(
        &db,
        &["SELECT name AS zeta, 1 AS alpha FROM companies", "--json"],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["columns"],
        serde_json::json!(["tenant", "zeta", "alpha"])
    );
}
