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
