//! Production deployment: TLS to PostgreSQL as `sslmode`/`sslrootcert` say (against a
//! cluster of the test that accepts only TLS, with a CA made in the test), `config check`,
//! and the Render blueprint checked against its JSON Schema.

use std::process::Command;

use crate::common::tls_server::{TestCa, TlsServer};
use capliquify::db;

async fn connect(url: &str) -> Result<sqlx::PgPool, String> {
    db::connect(url, 2).await.map_err(|e| format!("{e:#}"))
}

async fn uses_tls(pool: &sqlx::PgPool) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .expect("pg_stat_ssl")
}

#[tokio::test]
async fn sslmode_is_honoured_as_libpq_does() {
    let server = TlsServer::start();
    let ca = server.ca_file();
    let ca = ca.display();

    // require: encrypted, the certificate not checked (the test CA is no system root).
    let pool = connect(&server.url("127.0.0.1", "sslmode=require"))
        .await
        .expect("sslmode=require connects");
    assert!(uses_tls(&pool).await, "require must encrypt");
    pool.close().await;

    // The default (prefer) uses TLS when the server offers it.
    let pool = connect(&server.url("127.0.0.1", ""))
        .await
        .expect("the default sslmode connects");
    assert!(uses_tls(&pool).await, "prefer must encrypt when it can");
    pool.close().await;

    // verify-full with the right CA and the name in the certificate.
    let pool = connect(&server.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .expect("verify-full with the certificate's host name connects");
    assert!(uses_tls(&pool).await);
    pool.close().await;

    // verify-ca does not check the name.
    let pool = connect(&server.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")))
        .await
        .expect("verify-ca by IP connects");
    pool.close().await;

    // verify-full by a name the certificate does not hold: refused, and said why.
    let err = connect(&server.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .expect_err("verify-full by a name not in the certificate must fail");
    eprintln!("verify-full, wrong name: {err}");
    assert!(
        err.contains("names the host \"127.0.0.1\"") && err.contains("not valid for name"),
        "unclear error: {err}"
    );

    // verify-full without the CA: the system roots do not know the test CA.
    let err = connect(&server.url("localhost", "sslmode=verify-full"))
        .await
        .expect_err("an unknown CA must fail verify-full");
    assert!(err.contains("certificate"), "unclear error: {err}");

    // libpq: require with a root certificate named verifies the chain (as verify-ca).
    let other = TestCa::new("Another CA");
    let other_file = server.dir().join("other-ca.pem");
    std::fs::write(&other_file, &other.pem).expect("write other-ca.pem");
    let err = connect(&server.url(
        "127.0.0.1",
        &format!("sslmode=require&sslrootcert={}", other_file.display()),
    ))
    .await
    .expect_err("require with a root that did not sign the server must fail");
    assert!(err.contains("certificate"), "unclear error: {err}");

    // disable against a server that requires TLS: refused, and the fix named.
    let err = connect(&server.url("127.0.0.1", "sslmode=disable"))
        .await
        .expect_err("a plain connection must be refused");
    eprintln!("disable against hostssl only: {err}");
    assert!(
        err.contains("accepts only TLS") && err.contains("sslmode=require"),
        "unclear error: {err}"
    );
}

#[tokio::test]
async fn migrate_runs_over_tls() {
    let server = TlsServer::start();
    let url = server.url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            server.ca_file().display()
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .args(["migrate", "--json"])
        .env("DATABASE_URL", &url)
        .env_remove("CAPLIQUIFY_CLUSTERS")
        .output()
        .expect("run capliquify migrate");
    assert!(
        out.status.success(),
        "migrate over TLS failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// config check
// ---------------------------------------------------------------------------------------------

/// `capliquify <args>` with only `env` in its environment.
fn capliquify(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run capliquify");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn setting<'a>(report: &'a serde_json::Value, env: &str) -> &'a serde_json::Value {
    report["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .find(|s| s["env"] == env)
        .unwrap_or_else(|| panic!("{env} is not listed: {report:#}"))
}

const GOOD_KEY: &str = "3f9a1c7e5b2d8046f1e3a5c7b9d0e2f4a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4f6";

#[test]
fn config_check_finds_problems_and_prints_no_secret() {
    let (ok, stdout, stderr) = capliquify(
        &["--db-max-connections", "5", "config", "check", "--json"],
        &[
            (
                "DATABASE_URL",
                "postgres://svc:hunter2-db@db.example.com/capliquify?sslmode=disable",
            ),
            ("CAPLIQUIFY_ADMIN_TOKEN", "short-admin-token"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_c2VjcmV0LXN0cmlwZQ"),
        ],
    );
    assert!(!ok, "errors must exit non-zero: {stdout}{stderr}");
    for secret in [
        "hunter2-db",
        "short-admin-token",
        "whsec_c2VjcmV0LXN0cmlwZQ",
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} printed"
        );
    }
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(setting(&report, "DATABASE_URL")["source"], "environment");
    assert_eq!(
        setting(&report, "CAPLIQUIFY_DB_MAX_CONNECTIONS")["source"],
        "flag"
    );
    assert_eq!(
        setting(&report, "CAPLIQUIFY_DB_MAX_CONNECTIONS")["value"],
        "5"
    );
    assert_eq!(
        setting(&report, "CAPLIQUIFY_DELETION_GRACE_DAYS")["source"],
        "default"
    );
    assert_eq!(setting(&report, "ENCRYPTION_KEY")["source"], "unset");
    // Settings of commands are listed too (read from clap's tree).
    assert_eq!(setting(&report, "CAPLIQUIFY_LISTEN")["command"], "serve");
    assert_eq!(setting(&report, "CAPLIQUIFY_ADMIN_TOKEN")["secret"], true);
    let problems = report["problems"].as_array().expect("problems");
    let error_about = |name: &str, words: &str| {
        problems.iter().any(|p| {
            p["level"] == "error"
                && p["setting"] == name
                && p["message"].as_str().is_some_and(|m| m.contains(words))
        })
    };
    assert!(error_about("ENCRYPTION_KEY", "missing"), "{problems:#?}");
    assert!(
        error_about("CLERK_JWKS_URL", "CLERK_ISSUER"),
        "{problems:#?}"
    );
    assert!(
        error_about("CAPLIQUIFY_ADMIN_TOKEN", "weak"),
        "{problems:#?}"
    );
    assert!(
        error_about("DATABASE_URL", "not encrypted"),
        "{problems:#?}"
    );

    // A weak key and the demo key are errors too.
    for key in [
        "ab".repeat(32),
        "6465762d6f6e6c792d6b65792d636170".repeat(2),
    ] {
        let (ok, stdout, _) = capliquify(&["config", "check"], &[("ENCRYPTION_KEY", &key)]);
        assert!(!ok && stdout.contains("ERROR ENCRYPTION_KEY"), "{stdout}");
        assert!(!stdout.contains(&key), "the key was printed");
    }
}

#[test]
fn config_check_passes_a_complete_production_configuration() {
    let (ok, stdout, stderr) = capliquify(
        &["config", "check"],
        &[
            (
                "DATABASE_URL",
                "postgres://svc:pw@db.example.com/capliquify?sslmode=verify-full",
            ),
            ("ENCRYPTION_KEY", GOOD_KEY),
            (
                "CLERK_JWKS_URL",
                "https://clerk.example.com/.well-known/jwks.json",
            ),
            ("CLERK_ISSUER", "https://clerk.example.com"),
            ("CAPLIQUIFY_LISTEN", "0.0.0.0:10000"),
            ("CAPLIQUIFY_CURSOR_SECRET", &"c".repeat(40)),
            ("CAPLIQUIFY_ADMIN_TOKEN", &"a1b2".repeat(10)),
            ("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_c2VjcmV0"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_x"),
        ],
    );
    assert!(ok, "a complete configuration must pass: {stdout}{stderr}");
    assert!(stdout.contains("no problems found"), "{stdout}");
    assert!(
        !stdout.contains(GOOD_KEY) && !stdout.contains(":pw@"),
        "{stdout}"
    );
    assert!(stdout.contains("ENCRYPTION_KEY") && stdout.contains("environment"));
}

// ---------------------------------------------------------------------------------------------
// The Render blueprint
// ---------------------------------------------------------------------------------------------

fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn blueprint_errors(blueprint: &serde_json::Value) -> Vec<String> {
    let schema: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/render-blueprint.schema.json")).expect("schema");
    let validator = jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema");
    validator
        .iter_errors(blueprint)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn blueprint() -> serde_json::Value {
    serde_saphyr::from_str(&repo_file("render.yaml")).expect("render.yaml is YAML")
}

#[test]
fn render_blueprint_matches_the_schema() {
    let blueprint = blueprint();
    let errors = blueprint_errors(&blueprint);
    assert!(errors.is_empty(), "render.yaml: {errors:#?}");

    // The schema rejects what Render would: a cron job without a schedule, an unknown field,
    // a secret given both a value and sync: false.
    let mut broken = blueprint.clone();
    let cron = broken["services"]
        .as_array_mut()
        .and_then(|s| s.iter_mut().find(|s| s["type"] == "cron"))
        .expect("a cron job");
    cron.as_object_mut().expect("object").remove("schedule");
    assert!(
        !blueprint_errors(&broken).is_empty(),
        "cron without schedule passed"
    );
    let mut broken = blueprint.clone();
    broken["services"][0]["healthcheckPath"] = "/readyz".into();
    assert!(
        !blueprint_errors(&broken).is_empty(),
        "a misspelt field passed"
    );
    let mut broken = blueprint.clone();
    broken["services"][0]["envVars"][1] =
        serde_json::json!({ "key": "X", "value": "1", "sync": false });
    assert!(
        !blueprint_errors(&broken).is_empty(),
        "value with sync: false passed"
    );
}

#[test]
fn render_blueprint_runs_our_commands_with_every_setting() {
    use capliquify::cli::Cli;
    use clap::{CommandFactory as _, Parser as _};

    let blueprint = blueprint();
    let services = blueprint["services"].as_array().expect("services");
    let web = services
        .iter()
        .find(|s| s["type"] == "web")
        .expect("a web service");
    let cron = services
        .iter()
        .find(|s| s["type"] == "cron")
        .expect("a cron job");
    assert_eq!(web["healthCheckPath"], "/readyz");
    assert_eq!(web["preDeployCommand"], "capliquify migrate");
    assert_eq!(cron["dockerCommand"], "capliquify lifecycle run");
    let database = blueprint["databases"][0]["name"]
        .as_str()
        .expect("a database");
    for command in [&web["preDeployCommand"], &cron["dockerCommand"]] {
        let words: Vec<&str> = command.as_str().expect("string").split(' ').collect();
        Cli::try_parse_from(&words).unwrap_or_else(|e| panic!("{command}: {e}"));
    }

    // The variables each service gets: its own and its groups'.
    let groups = blueprint["envVarGroups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let vars_of = |service: &serde_json::Value| -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for var in service["envVars"].as_array().into_iter().flatten() {
            if let Some(group) = var["fromGroup"].as_str() {
                let group = groups
                    .iter()
                    .find(|g| g["name"] == group)
                    .expect("group exists");
                out.extend(group["envVars"].as_array().cloned().unwrap_or_default());
            } else {
                out.push(var.clone());
            }
        }
        out
    };
    for service in [web, cron] {
        let vars = vars_of(service);
        let url = vars
            .iter()
            .find(|v| v["key"] == "DATABASE_URL")
            .expect("DATABASE_URL");
        assert_eq!(url["fromDatabase"]["name"], database);
        assert!(vars.iter().any(|v| v["key"] == "ENCRYPTION_KEY"));
    }

    // Every setting of the binary is in the web service, secrets only as sync: false.
    // Not there: the embedded cluster's folder (never used with DATABASE_URL), and what
    // operators' one-off commands take: the password `db init-roles` sets and the Sentia
    // database `import sentia` reads.
    let not_deployed = [
        "CAPLIQUIFY_DATA_DIR",
        "CAPLIQUIFY_APP_PASSWORD",
        "SENTIA_DATABASE_URL",
    ];
    let vars = vars_of(web);
    let mut stack = vec![Cli::command()];
    let mut checked = 0;
    while let Some(cmd) = stack.pop() {
        stack.extend(cmd.get_subcommands().cloned());
        for arg in cmd.get_arguments() {
            let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
                continue;
            };
            if not_deployed.contains(&env) {
                continue;
            }
            checked += 1;
            let var = vars
                .iter()
                .find(|v| v["key"] == env)
                .unwrap_or_else(|| panic!("render.yaml does not set {env}"));
            if arg.is_hide_env_values_set() && env != "DATABASE_URL" {
                assert_eq!(var["sync"], false, "{env} is a secret: use sync: false");
            }
        }
    }
    assert!(checked > 15, "only {checked} settings found");
}

// ---------------------------------------------------------------------------------------------
// Managed databases: an owner with CREATEROLE, no superuser
// ---------------------------------------------------------------------------------------------

/// A login role for this test (unique name, a password so it works with any authentication)
/// that owns `db`'s database, and the database's URL as that role.
async fn owner_of(db: &crate::common::TestDb, attributes: &str) -> (String, String) {
    let role = format!(
        "cq_owner_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS {attributes} PASSWORD 'owner-pw'"
    ))
    .await;
    db.exec(&format!("ALTER DATABASE \"{}\" OWNER TO {role}", db.name))
        .await;
    let mut url = url::Url::parse(&db.url).expect("test URL parses");
    url.set_username(&role).expect("user");
    url.set_password(Some("owner-pw")).expect("password");
    (role, url.to_string())
}

#[tokio::test]
async fn migrations_and_roles_work_as_an_owner_with_createrole_but_no_superuser() {
    let db = crate::common::TestDb::empty().await;
    let (owner, url) = owner_of(&db, "CREATEROLE").await;
    let env = |extra: &[(&'static str, String)]| {
        let mut env = vec![("DATABASE_URL", url.clone())];
        env.extend(extra.iter().cloned());
        env
    };
    let run = |args: &[&str], env: Vec<(&'static str, String)>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        capliquify(args, &env)
    };
    let (ok, out, err) = run(&["migrate"], env(&[]));
    assert!(
        ok,
        "migrate as {owner} (CREATEROLE, no superuser): {out}{err}"
    );
    let login = format!(
        "cq_app_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let (ok, out, err) = run(
        &["db", "init-roles", "--login", &login],
        env(&[("CAPLIQUIFY_APP_PASSWORD", "app-pw-not-printed".into())]),
    );
    assert!(ok, "init-roles as {owner}: {out}{err}");
    assert!(!out.contains("app-pw-not-printed") && !err.contains("app-pw-not-printed"));
    // Provisioning creates the tenant's role and grants it: CREATEROLE suffices.
    let (ok, out, err) = run(
        &[
            "tenant",
            "create",
            "--slug",
            "acme",
            "--name",
            "ACME",
            "--tier",
            "starter",
            "--clerk-org",
            "org_acme",
        ],
        env(&[("ENCRYPTION_KEY", GOOD_KEY.into())]),
    );
    assert!(ok, "tenant create as {owner}: {out}{err}");
    let (ok, out, err) = run(&["doctor", "--json"], env(&[]));
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    let line = report["checks"]
        .as_array()
        .and_then(|c| {
            c.iter().find(|c| {
                c["test_name"]
                    .as_str()
                    .is_some_and(|n| n.contains("CREATEROLE"))
            })
        })
        .unwrap_or_else(|| panic!("doctor has no CREATEROLE line: {report:#}"));
    assert_eq!(line["result"], "PASS", "{line}");
    assert!(ok, "doctor as {owner}: {report:#}");
    // The service's login role can serve but not migrate; doctor says so without failing.
    let member: bool = sqlx::query_scalar("SELECT pg_has_role($1, 'capliquify_service', 'MEMBER')")
        .bind(&login)
        .fetch_one(&db.pool)
        .await
        .expect("membership");
    assert!(member, "{login} must be a member of capliquify_service");
}

#[tokio::test]
async fn migrate_without_createrole_fails_first_with_one_message_naming_the_grant() {
    let db = crate::common::TestDb::empty().await;
    let (owner, url) = owner_of(&db, "NOCREATEROLE").await;
    for args in [&["migrate"][..], &["db", "init-roles"][..]] {
        let (ok, out, err) = capliquify(args, &[("DATABASE_URL", &url)]);
        assert!(!ok, "{args:?} without CREATEROLE must fail: {out}{err}");
        assert!(
            err.contains("lacks CREATEROLE")
                && err.contains(&format!("ALTER ROLE \"{owner}\" CREATEROLE")),
            "{args:?}: unclear error: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one message: {err}");
    }
    // Nothing was started: no migration table.
    let started = db
        .scalar_bool("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
        .await;
    assert!(!started, "migrations began without CREATEROLE");
}

// ---------------------------------------------------------------------------------------------
// Upgrades: the previous release against the migrated schema
// ---------------------------------------------------------------------------------------------

/// During a deploy the previous release keeps serving after `migrate` ran with the new one.
/// Needs the previous release's binary in `CAPLIQUIFY_PREVIOUS_BINARY` (see docs/deploy.md,
/// "Upgrades", for how to build it); skipped, saying so, without it.
#[tokio::test]
async fn the_previous_release_keeps_serving_against_the_migrated_schema() {
    use crate::common::api::{ENCRYPTION_KEY, ISSUER, KID, TEST_KEY, TestApp};
    use capliquify::access::Role;
    use capliquify::billing::Tier;

    let Some(previous) = std::env::var_os("CAPLIQUIFY_PREVIOUS_BINARY").filter(|v| !v.is_empty())
    else {
        eprintln!(
            "SKIPPED the_previous_release_keeps_serving_against_the_migrated_schema: \
             CAPLIQUIFY_PREVIOUS_BINARY is not set (docs/deploy.md, Upgrades)"
        );
        return;
    };
    // Migrated by this build; a tenant with members, served by this build too.
    let app = TestApp::spawn().await;
    let tenant = app.tenant("prev-release", Tier::Starter).await;
    let token = app.token_for(&tenant, Role::Owner);
    assert_eq!(
        app.get(&token, "/api/v1/products").await.status,
        reqwest::StatusCode::OK
    );

    let dir = std::env::temp_dir().join(format!("capliquify-prev-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let jwks = dir.join("jwks.json");
    let document = capliquify::http::auth::jwks_for(TEST_KEY, KID).expect("JWKS");
    std::fs::write(&jwks, document.to_string()).expect("write JWKS");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut old = Command::new(&previous)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", app.db.app_url().await)
        .env("ENCRYPTION_KEY", ENCRYPTION_KEY)
        .env("CLERK_JWKS_URL", format!("file://{}", jwks.display()))
        .env("CLERK_ISSUER", ISSUER)
        .env("CAPLIQUIFY_LISTEN", format!("127.0.0.1:{port}"))
        .env("CAPLIQUIFY_LIFECYCLE_INTERVAL_SECS", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the previous release");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..120 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == reqwest::StatusCode::OK
        {
            ready = true;
            break;
        }
        if old.try_wait().ok().flatten().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let products = client
        .get(format!("{base}/api/v1/products"))
        .bearer_auth(&token)
        .send()
        .await
        .map(|r| r.status());
    let _ = old.kill();
    let _ = old.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        ready,
        "the previous release never became ready on the migrated schema"
    );
    assert_eq!(
        products.expect("request to the previous release"),
        reqwest::StatusCode::OK
    );
}

#[test]
fn a_bad_tls_setting_fails_at_start_naming_the_setting_without_the_password() {
    let (ok, out, err) = capliquify(
        &["doctor"],
        &[(
            "DATABASE_URL",
            "postgres://u:secret-pw@db.example/x?sslrootcert=system&sslmode=require",
        )],
    );
    assert!(!ok, "{out}{err}");
    assert!(
        err.starts_with("error: DATABASE_URL:") && err.contains("verify-full"),
        "{err}"
    );
    assert!(
        !err.contains("secret-pw") && !out.contains("secret-pw"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one message: {err}");
}
