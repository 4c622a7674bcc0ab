//! The `capliquify` binary as operators use it: exit codes, messages, JSON, and the
//! embedded default.

use std::process::{Command, Output};

use crate::common::TestDb;

use capliquify::billing::Tier;
use sqlx::Connection as _;

fn capliquify(db: Option<&TestDb>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capliquify"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn");
    if let Some(db) = db {
        cmd.env("DATABASE_URL", &db.url);
    }
    cmd.output().expect("run capliquify")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

#[tokio::test]
async fn create_list_and_show_print_tables_and_json() {
    let db = TestDb::new().await;
    let out = capliquify(
        Some(&db),
        &[
            "tenant",
            "create",
            "--slug",
            "acme",
            "--name",
            "ACME Corp",
            "--tier",
            "professional",
            "--clerk-org",
            "org_acme",
        ],
    );
    assert_ok(&out);
    assert!(stdout(&out).contains("tenant_"), "{}", stdout(&out));

    let out = capliquify(Some(&db), &["tenant", "list"]);
    assert_ok(&out);
    let text = stdout(&out);
    let header = text.lines().next().unwrap();
    let row = text.lines().nth(2).unwrap();
    // Aligned: each value starts where its header does.
    assert_eq!(header.find("TIER"), row.find("professional"), "{text}");

    let out = capliquify(Some(&db), &["tenant", "show", "acme", "--json"]);
    assert_ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["slug"], "acme");
    assert_eq!(json["subscription_tier"], "professional");
    assert_eq!(json["max_users"], 25);

    let out = capliquify(Some(&db), &["tenant", "list", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(json["next_after"], serde_json::Value::Null);
}

/// The slugs of `tenant list`'s or `monitor tenants`' table, in order, and its `more:` line's
/// command, if any.
fn page_of(out: &Output, slugs: &[&str]) -> (Vec<String>, Option<String>) {
    assert_ok(out);
    let text = stdout(out);
    let shown = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| slugs.contains(w))
        .map(str::to_owned)
        .collect();
    let more = text
        .lines()
        .find_map(|l| l.strip_prefix("more: "))
        .map(str::to_owned);
    (shown, more)
}

/// The `--after` value of a `more:` command line.
fn after_of(more: &str) -> String {
    more.split("--after '")
        .nth(1)
        .and_then(|rest| rest.strip_suffix('\''))
        .unwrap_or_else(|| panic!("no --after in {more}"))
        .to_owned()
}

#[tokio::test]
async fn tenant_list_and_monitor_tenants_page_newest_first_to_the_end() {
    let db = TestDb::new().await;
    let slugs = ["page-a", "page-b", "page-c", "page-d", "page-e"];
    for slug in slugs {
        db.tenant(slug, Tier::Starter).await;
    }
    db.exec("UPDATE public.tenants SET deleted_at = now() WHERE slug = 'page-c'")
        .await;
    for command in [&["tenant", "list"][..], &["monitor", "tenants"][..]] {
        let mut seen = Vec::new();
        let mut args: Vec<String> = command.iter().map(|s| (*s).to_owned()).collect();
        args.extend(["--limit".into(), "2".into()]);
        let mut after: Option<String> = None;
        for _page in 0..5 {
            let mut page_args = args.clone();
            if let Some(after) = &after {
                page_args.extend(["--after".into(), after.clone()]);
            }
            let refs: Vec<&str> = page_args.iter().map(String::as_str).collect();
            let (shown, more) = page_of(&capliquify(Some(&db), &refs), &slugs);
            assert!(
                shown.len() <= 2,
                "{command:?}: a page of 2 showed {shown:?}"
            );
            seen.extend(shown);
            match more {
                Some(more) => {
                    assert!(more.starts_with(&format!("capliquify {}", command.join(" "))));
                    after = Some(after_of(&more));
                }
                None => break,
            }
        }
        // Newest first, the deleted one left out, each exactly once.
        assert_eq!(
            seen,
            ["page-e", "page-d", "page-b", "page-a"],
            "{command:?}"
        );
    }
    // --all brings the soft-deleted tenant back; --limit 0 is one page; --search filters.
    let (shown, more) = page_of(
        &capliquify(Some(&db), &["tenant", "list", "--all", "--limit", "0"]),
        &slugs,
    );
    assert_eq!(shown.len(), 5);
    assert_eq!(more, None);
    let out = capliquify(Some(&db), &["tenant", "list", "--search", "GE-B", "--json"]);
    assert_ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tenants"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json["tenants"][0]["slug"], "page-b");
    // A position that is not one is refused, naming the flag.
    for command in [&["tenant", "list"][..], &["monitor", "tenants"][..]] {
        let mut args = command.to_vec();
        args.extend(["--after", "yesterday"]);
        let out = capliquify(Some(&db), &args);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("--after"), "{}", stderr(&out));
    }
}

#[tokio::test]
async fn hostile_slugs_exit_non_zero_and_change_nothing() {
    let db = TestDb::new().await;
    let long = "x".repeat(200);
    for slug in [
        "acme\"; drop schema public;--",
        "UPPER",
        long.as_str(),
        "admin",
    ] {
        let out = capliquify(
            Some(&db),
            &[
                "tenant",
                "create",
                "--slug",
                slug,
                "--name",
                "X",
                "--tier",
                "starter",
                "--clerk-org",
                "org_x",
            ],
        );
        assert!(!out.status.success(), "{slug:?} accepted");
        assert!(stderr(&out).contains("slug"), "{}", stderr(&out));
    }
    assert_eq!(db.scalar_i64("SELECT count(*) FROM tenants").await, 0);
    assert!(db.schema_exists("public").await);
}

#[tokio::test]
async fn unknown_tenants_and_wrong_states_exit_non_zero_with_the_reason() {
    let db = TestDb::new().await;
    let out = capliquify(Some(&db), &["tenant", "suspend", "nobody-here"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no tenant with slug \"nobody-here\""),
        "{}",
        stderr(&out)
    );

    db.tenant("live-one", Tier::Starter).await;
    let out = capliquify(Some(&db), &["tenant", "reactivate", "live-one"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("only a suspended tenant"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn purge_in_the_grace_period_needs_force_and_the_typed_slug() {
    let db = TestDb::new().await;
    let t = db.tenant("to-purge", Tier::Starter).await;
    assert_ok(&capliquify(Some(&db), &["tenant", "delete", "to-purge"]));

    let out = capliquify(Some(&db), &["tenant", "purge", "to-purge"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("grace period"), "{}", stderr(&out));
    // No terminal to ask on: --force alone is refused.
    let out = capliquify(Some(&db), &["tenant", "purge", "to-purge", "--force"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--confirm to-purge"),
        "{}",
        stderr(&out)
    );
    let out = capliquify(
        Some(&db),
        &[
            "tenant",
            "purge",
            "to-purge",
            "--force",
            "--confirm",
            "other",
        ],
    );
    assert!(!out.status.success());
    assert!(db.schema_exists(&t.schema_name).await);

    let out = capliquify(
        Some(&db),
        &[
            "tenant",
            "purge",
            "to-purge",
            "--force",
            "--confirm",
            "to-purge",
        ],
    );
    assert_ok(&out);
    assert!(!db.schema_exists(&t.schema_name).await);
}

#[tokio::test]
async fn doctor_passes_on_a_healthy_database_and_fails_on_an_orphan_schema() {
    let db = TestDb::new().await;
    db.tenant("healthy", Tier::Starter).await;
    let out = capliquify(Some(&db), &["doctor"]);
    assert_ok(&out);
    let text = stdout(&out);
    assert!(
        text.contains("Public Schema Tables") && text.contains("no_orphan_schemas"),
        "{text}"
    );
    assert!(text.contains("PostgreSQL 1"), "{text}");

    db.exec("CREATE SCHEMA tenant_stray").await;
    let out = capliquify(Some(&db), &["doctor", "--json"]);
    assert!(!out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let orphan = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["test_name"] == "no_orphan_schemas")
        .unwrap();
    assert_eq!(orphan["result"], "FAIL");
}

#[tokio::test]
async fn doctor_on_an_unmigrated_database_says_to_migrate() {
    let db = TestDb::empty().await;
    let out = capliquify(Some(&db), &["doctor"]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("capliquify migrate"),
        "{}",
        stdout(&out)
    );
    // Commands that need the schema refuse with the same advice.
    let out = capliquify(Some(&db), &["tenant", "list"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("capliquify migrate"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn migrate_dry_run_changes_nothing_and_migrate_brings_everything_current() {
    let db = TestDb::empty().await;
    let all_public: Vec<i64> = capliquify::tenancy::migrate::PUBLIC_MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    let out = capliquify(Some(&db), &["migrate", "--dry-run"]);
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains("public migrations pending:"), "{text}");
    // One aligned row per pending migration: its version, then its description.
    for version in &all_public {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{version} "))),
            "{version} missing:\n{text}"
        );
    }
    assert!(text.contains("suspension source"), "{text}");
    assert!(
        !db.scalar_bool("SELECT to_regclass('public.tenants') IS NOT NULL")
            .await
    );

    let out = capliquify(Some(&db), &["migrate", "--jobs", "2", "--json"]);
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["pending"], 0);
    assert_eq!(report["latest"], crate::common::version(0));
    db.tenant("after-migrate", Tier::Starter).await;
    // Nothing to do: still a success.
    assert_ok(&capliquify(Some(&db), &["migrate"]));
}

#[tokio::test]
async fn migrate_exits_non_zero_when_a_tenant_fails() {
    let db = TestDb::new().await;
    let t = db.tenant("broken", Tier::Starter).await;
    db.exec(&format!("DROP SCHEMA {} CASCADE", t.schema_name))
        .await;
    db.exec(&format!(
        "UPDATE tenants SET schema_version = 0 WHERE id = '{}'",
        t.id
    ))
    .await;
    let out = capliquify(Some(&db), &["migrate"]);
    assert!(!out.status.success());
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("broken") && text.contains("1 failed"),
        "{text}"
    );
}

#[tokio::test]
async fn monitor_reports_sizes_and_tenants() {
    let db = TestDb::new().await;
    let t = db.tenant("watched", Tier::Professional).await;
    db.exec(&format!(
        "INSERT INTO users (clerk_user_id, email, tenant_id, role) VALUES ('user_1', 'a@b.c', '{}', 'owner')",
        t.id
    ))
    .await;
    let out = capliquify(Some(&db), &["monitor", "sizes", "--json"]);
    assert_ok(&out);
    let sizes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sizes[0]["slug"], "watched");
    assert_eq!(sizes[0]["table_count"], 11);
    let out = capliquify(Some(&db), &["monitor", "tenants", "--json"]);
    assert_ok(&out);
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["tenants"][0]["user_count"], 1);
    assert_eq!(page["next_after"], serde_json::Value::Null);
}

#[test]
fn every_command_has_help_for_newcomers() {
    for args in [
        vec!["--help"],
        vec!["migrate", "--help"],
        vec!["tenant", "--help"],
        vec!["tenant", "create", "--help"],
        vec!["tenant", "purge", "--help"],
        vec!["tenant", "undelete", "--help"],
        vec!["tenant", "backup", "--help"],
        vec!["tenant", "restore", "--help"],
        vec!["tenant", "clone", "--help"],
        vec!["doctor", "--help"],
        vec!["monitor", "sizes", "--help"],
        vec!["db", "--help"],
        vec!["serve", "--help"],
    ] {
        let out = capliquify(None, &args);
        assert_ok(&out);
        assert!(stdout(&out).contains("Usage:"), "{args:?}");
    }
    let purge = stdout(&capliquify(None, &["tenant", "purge", "--help"]));
    assert!(
        purge.contains("--confirm") && purge.contains("grace period"),
        "{purge}"
    );
}

#[test]
fn without_database_url_the_embedded_cluster_is_started_and_stopped_again() {
    let root = std::env::temp_dir().join(format!("capliquify-cli-embedded-{}", std::process::id()));
    let root_arg = root.to_str().unwrap();
    let out = capliquify(None, &["--data-dir", root_arg, "tenant", "list"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("0 tenant(s)"), "{}", stdout(&out));
    assert!(root.join("pg").join("PG_VERSION").exists());
    assert_private_cluster(&root);
    let out = capliquify(None, &["--data-dir", root_arg, "db", "status"]);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("not running"),
        "the command stopped the cluster it started"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn audit_since_accepts_a_plain_date_as_the_api_does() {
    let db = TestDb::new().await;
    db.tenant("dated", Tier::Starter).await;
    let today = chrono::Utc::now().date_naive();
    let since = |value: &str| capliquify(Some(&db), &["audit", "--since", value, "--json"]);
    let actions = |out: &Output| -> Vec<String> {
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap().to_owned())
            .collect()
    };
    for value in [
        today.to_string(),
        format!("{today}T00:00:00Z"),
        format!("{today}T00:00:00+00:00"),
    ] {
        let out = since(&value);
        assert_ok(&out);
        assert_eq!(actions(&out), ["tenant.provisioned"], "--since {value}");
    }
    let tomorrow = (today + chrono::Days::new(1)).to_string();
    let out = since(&tomorrow);
    assert_ok(&out);
    assert!(actions(&out).is_empty(), "--since {tomorrow}");

    let out = since("01/11/2026");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--since") && err.contains("nor a date (2026-11-01)"),
        "{err}"
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // The document is far larger than a pipe's buffer, so the writes meet the closed end.
    let mut child = Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .arg("openapi")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run capliquify");
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(stderr(&out), "", "nothing on stderr");
    // What a shell reports for a tool SIGPIPE stopped (`yes | head`): 128 + 13.
    assert_eq!(out.status.code(), Some(141));
}

#[tokio::test]
async fn db_status_with_database_url_names_the_configured_server_and_whether_it_answers() {
    let db = TestDb::new().await;
    let out = capliquify(Some(&db), &["db", "status"]);
    assert_ok(&out);
    let text = stdout(&out);
    assert!(
        text.contains("DATABASE_URL is set: the configured server")
            && text.contains("it answers: PostgreSQL"),
        "{text}"
    );
    assert!(!text.contains("not running"), "{text}");
    let out = capliquify(Some(&db), &["db", "status", "--json"]);
    assert_ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["answers"], true);

    // A server that does not answer: said, exit 1, and the password is never printed.
    let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .args(["db", "status"])
        .env(
            "DATABASE_URL",
            "postgres://someone:s3cret-pw@127.0.0.1:1/nothing",
        )
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("it does not answer"), "{text}");
    assert!(text.contains("127.0.0.1:1/nothing"), "{text}");
    assert!(
        !text.contains("s3cret-pw") && !stderr(&out).contains("s3cret-pw"),
        "{text}"
    );
}

#[test]
fn start_up_errors_name_the_setting_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .arg("serve")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("CLERK_JWKS_URL", "file:///nonexistent/capliquify-jwks.json")
        .env("CLERK_ISSUER", "https://clerk.example")
        .env(
            "ENCRYPTION_KEY",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        )
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.matches("CLERK_JWKS_URL").count(), 1, "{err}");
    assert!(
        err.contains("CLERK_JWKS_URL (file:///nonexistent/capliquify-jwks.json)"),
        "{err}"
    );
}

#[tokio::test]
async fn restore_given_a_slug_points_to_undelete_and_says_it_once() {
    let db = TestDb::new().await;
    db.tenant("acme", Tier::Starter).await;
    let out = capliquify(Some(&db), &["tenant", "restore", "acme"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("capliquify tenant undelete acme"), "{err}");

    // A missing file path: its I/O error is said once.
    let out = capliquify(
        Some(&db),
        &["tenant", "restore", "/nonexistent/acme.capliquify-backup"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert!(!err.contains("undelete"), "{err}");
}

#[tokio::test]
async fn repair_says_what_it_did_in_words_and_json_on_request() {
    let db = TestDb::new().await;
    let t = db.tenant("mended", Tier::Starter).await;
    let out = capliquify(Some(&db), &["tenant", "repair", "mended"]);
    assert_ok(&out);
    assert_eq!(
        stdout(&out).trim(),
        "mended: nothing to repair (schema present, migrated, role in place)"
    );
    db.exec(&format!("DROP SCHEMA {} CASCADE", t.schema_name))
        .await;
    let out = capliquify(Some(&db), &["tenant", "repair", "mended"]);
    assert_ok(&out);
    assert_eq!(
        stdout(&out).trim(),
        "mended: the missing schema was created, empty, at the newest version"
    );
    let out = capliquify(Some(&db), &["tenant", "repair", "mended", "--json"]);
    assert_ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["repair"]["action"], "healthy");
}

/// Runs `capliquify serve` with `env`, expecting it to refuse to start: it must exit (within
/// 20 s, before opening any database) with a message naming `named`.
fn serve_refuses(args: &[&str], env: &[(&str, &str)], named: &str) {
    use std::time::{Duration, Instant};
    let data_dir = std::env::temp_dir().join(format!("capliquify-refuse-{}", uuid::Uuid::new_v4()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capliquify"));
    cmd.arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("CLERK_JWKS_URL")
        .env_remove("CLERK_ISSUER")
        .env_remove("STRIPE_WEBHOOK_SECRET")
        .env_remove("CLERK_WEBHOOK_SIGNING_SECRET")
        .env_remove("CAPLIQUIFY_ADMIN_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run capliquify serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("poll serve").is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            let _ = child.wait();
            let _ = capliquify(
                None,
                &["--data-dir", &data_dir.to_string_lossy(), "db", "stop"],
            );
            let _ = std::fs::remove_dir_all(&data_dir);
            panic!("serve {args:?} with {env:?} started instead of refusing ({named})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("serve's output");
    assert!(!out.status.success(), "serve {args:?} exited 0");
    assert!(
        stderr(&out).contains(named),
        "{named} not named: {}",
        stderr(&out)
    );
    assert!(
        !data_dir.exists(),
        "serve started the embedded cluster before refusing"
    );
}

#[test]
fn serve_refuses_blank_or_weak_secrets_naming_the_variable() {
    // A blank webhook secret used to mean "verify with an empty HMAC key".
    let local = ["--listen", "127.0.0.1:0"];
    for (name, value) in [
        ("STRIPE_WEBHOOK_SECRET", ""),
        ("STRIPE_WEBHOOK_SECRET", "whsec_"),
        ("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_"),
        ("CAPLIQUIFY_ADMIN_TOKEN", ""),
        ("CAPLIQUIFY_CURSOR_SECRET", ""),
        ("ENCRYPTION_KEY", ""),
    ] {
        serve_refuses(&local, &[(name, value)], name);
    }
}

#[test]
fn serve_without_clerk_trusts_the_demo_key_only_as_the_loopback_demo() {
    serve_refuses(
        &["--no-demo", "--listen", "127.0.0.1:0"],
        &[],
        "CLERK_JWKS_URL",
    );
    serve_refuses(&["--listen", "0.0.0.0:0"], &[], "CLERK_JWKS_URL");
}

/// The embedded cluster under `root` can be reached only through its socket folder (mode
/// 0700), by password (its file mode 0600), with no `trust` rule and no TCP listener.
#[track_caller]
fn assert_private_cluster(root: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&root.join("sock")), 0o700, "the socket folder");
    assert_eq!(
        mode(&root.join("superuser.password")),
        0o600,
        "the password file"
    );
    let conf = std::fs::read_to_string(root.join("pg").join("capliquify.conf")).unwrap();
    assert!(conf.contains("listen_addresses = ''"), "{conf}");
    let hba = std::fs::read_to_string(root.join("pg").join("pg_hba.conf")).unwrap();
    let rules: Vec<&str> = hba
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(rules, ["local all all scram-sha-256"], "{hba}");
}

#[tokio::test]
async fn the_tests_cluster_admits_only_passwords_on_a_private_socket() {
    let db = TestDb::new().await;
    assert_private_cluster(&crate::common::test_cluster_root());
    let listen: String = sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(listen, "", "the cluster listens on TCP");
    let trusting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method IN ('trust', 'peer', 'ident') OR type <> 'local'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(trusting, 0);
    // The right socket without the password: refused, even for the superuser.
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(None).unwrap();
    let err = sqlx::PgConnection::connect(url.as_str())
        .await
        .expect_err("a connection without the password is refused");
    assert!(err.to_string().contains("password"), "{err}");
}

#[tokio::test]
async fn a_password_in_the_database_url_never_reaches_the_error_message() {
    // The tests' server refuses these wrong passwords at once (no retrying until a timeout).
    let db = TestDb::new().await;
    let mut in_query = url::Url::parse(&db.url).unwrap();
    in_query.set_password(None).unwrap();
    in_query
        .query_pairs_mut()
        .append_pair("password", "hunter2-query");
    let mut in_userinfo = url::Url::parse(&db.url).unwrap();
    in_userinfo.set_password(Some("hunter2-userinfo")).unwrap();
    for url in [in_query, in_userinfo] {
        let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
            .args(["tenant", "list"])
            .env("DATABASE_URL", url.as_str())
            .env("RUST_LOG", "debug")
            .output()
            .expect("run capliquify");
        assert!(!out.status.success());
        let (stdout, stderr) = (stdout(&out), stderr(&out));
        assert!(stderr.contains("cannot connect"), "{stderr}");
        assert!(
            !stdout.contains("hunter2") && !stderr.contains("hunter2"),
            "the password was printed: {stderr}"
        );
    }
}

#[tokio::test]
async fn extend_trial_moves_a_live_trial_and_refuses_anything_else() {
    let db = TestDb::new().await;
    let t = db.tenant("longer-trial", Tier::Starter).await;
    let out = capliquify(
        Some(&db),
        &["tenant", "extend-trial", "longer-trial", "--days", "7"],
    );
    assert_ok(&out);
    let ends: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT trial_ends_at FROM public.tenants WHERE id = $1")
            .bind(t.id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((ends - t.trial_ends_at.unwrap()).num_days(), 7);
    assert_eq!(
        db.audit_actions(t.id).await,
        ["tenant.provisioned", "tenant.trial_extended"]
    );
    let out = capliquify(
        Some(&db),
        &["tenant", "extend-trial", "longer-trial", "--days", "91"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--days"), "{}", stderr(&out));
    db.exec("UPDATE public.tenants SET subscription_status = 'active' WHERE slug = 'longer-trial'")
        .await;
    let out = capliquify(
        Some(&db),
        &["tenant", "extend-trial", "longer-trial", "--days", "3"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("only a live tenant on trial"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn set_tier_applies_the_plan_and_refuses_the_same_tier() {
    let db = TestDb::new().await;
    let t = db.tenant("retiered", Tier::Starter).await;
    let out = capliquify(
        Some(&db),
        &["tenant", "set-tier", "retiered", "--tier", "professional"],
    );
    assert_ok(&out);
    let (tier, max_entities): (String, i32) = sqlx::query_as(
        "SELECT subscription_tier::text, max_entities FROM public.tenants WHERE id = $1",
    )
    .bind(t.id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((tier.as_str(), max_entities), ("professional", 5));
    let out = capliquify(
        Some(&db),
        &["tenant", "set-tier", "retiered", "--tier", "professional"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already on that tier"),
        "{}",
        stderr(&out)
    );
}
