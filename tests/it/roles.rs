//! Least-privilege database roles: hostile SQL inside a tenant transaction, run exactly as
//! the service runs it (logged in as the service's login role, switched to the tenant's
//! role by `db::scope::begin`), is refused by PostgreSQL itself.

use std::process::Command;
use std::sync::Arc;

use crate::common::TestDb;
use capliquify::billing::Tier;
use capliquify::db::scope::{self, TenantScope};
use capliquify::tenancy::migrate;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};

/// Runs `sql` in a fresh transaction of `scope` and returns the SQLSTATE it failed with.
async fn sqlstate(pool: &PgPool, scope: &TenantScope, sql: &str) -> Option<String> {
    let mut tx = scope::begin(pool, scope).await.expect("tenant transaction");
    let result = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *tx)
        .await;
    tx.rollback().await.ok();
    match result {
        Ok(_) => None,
        Err(e) => Some(
            e.as_database_error()
                .and_then(|d| d.code())
                .map(|c| c.into_owned())
                .unwrap_or_else(|| format!("not a database error: {e}")),
        ),
    }
}

pub(crate) struct Fleet {
    pub(crate) db: TestDb,
    /// Logged in as the service's login role.
    pub(crate) app: PgPool,
    pub(crate) a: TenantScope,
    pub(crate) b: TenantScope,
}

async fn fleet() -> Fleet {
    fleet_on(TestDb::new().await).await
}

/// Tenants A (the attacker) and B (with a company worth stealing) on `db`, and a pool
/// logged in as the service's login role.
pub(crate) async fn fleet_on(db: TestDb) -> Fleet {
    let a = db.tenant("hostile-a", Tier::Starter).await.scope().unwrap();
    let b = db.tenant("victim-b", Tier::Starter).await.scope().unwrap();
    // B has data worth stealing.
    let mut tx = scope::begin(&db.pool, &b).await.unwrap();
    sqlx::query("INSERT INTO companies (name) VALUES ('B secret')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let app = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.app_url().await)
        .await
        .unwrap();
    Fleet { db, app, a, b }
}

#[tokio::test]
async fn hostile_sql_in_a_tenant_transaction_is_refused_by_the_database() {
    hostile_sql_is_refused(&fleet().await).await;
}

/// The test above, on any fleet (plain PostgreSQL, or Citus: tests/it/citus.rs).
pub(crate) async fn hostile_sql_is_refused(f: &Fleet) {
    let b_schema = f.b.schema.as_str();
    let b_id = f.b.id;
    let hostile = [
        // Another tenant's data.
        format!("SELECT * FROM {b_schema}.companies"),
        format!("UPDATE {b_schema}.companies SET name = 'pwned'"),
        // Shared tables the tenant has no business reading.
        "SELECT * FROM public.users".into(),
        "SELECT * FROM public.subscriptions".into(),
        "SELECT * FROM public.tenants".into(),
        "SELECT * FROM public.webhook_events".into(),
        "SELECT * FROM public.audit_logs".into(),
        "UPDATE public.tenants SET subscription_tier = 'enterprise'".into(),
        // Forging or erasing the audit trail.
        format!(
            "INSERT INTO public.audit_logs (tenant_id, action, resource_type, resource_id)
             VALUES ('{b_id}', 'forged', 'x', 'x')"
        ),
        "INSERT INTO public.audit_logs (tenant_id, action, resource_type, resource_id)
         VALUES (NULL, 'forged', 'x', 'x')"
            .into(),
        "UPDATE public.audit_logs SET action = 'forged'".into(),
        "DELETE FROM public.audit_logs".into(),
        // Server files and programs.
        "SELECT pg_read_file('/etc/passwd')".into(),
        "SELECT pg_ls_dir('.')".into(),
        "SELECT lo_import('/etc/passwd')".into(),
        "COPY companies TO '/tmp/capliquify-stolen.csv'".into(),
        "COPY (SELECT 1) TO PROGRAM 'id'".into(),
        // Switching role or search path from inside an expression.
        "SELECT set_config('role', 'capliquify_service', true)".into(),
        format!("SELECT set_config('search_path', '{b_schema}', true)"),
        // Changing the schema or its history.
        "DROP TABLE companies".into(),
        "TRUNCATE companies".into(),
        "ALTER TABLE companies DISABLE TRIGGER ALL".into(),
        "CREATE TABLE evil (x int)".into(),
        "CREATE FUNCTION public.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'".into(),
        "DELETE FROM schema_migrations".into(),
        // Statistics: every role's statements, every tenant's tables and row counts.
        "SELECT count(*) FROM capliquify_stats.pg_stat_statements".into(),
        "SELECT count(*) FROM capliquify_stats.pg_stat_statements(true)".into(),
        "SELECT relname, n_live_tup FROM pg_stat_user_tables".into(),
        "SELECT relname FROM pg_stat_all_tables".into(),
        "SELECT relname FROM pg_statio_user_tables".into(),
        "SELECT relname FROM pg_stat_xact_user_tables".into(),
        "SELECT indexrelname FROM pg_stat_user_indexes".into(),
        format!(
            "SELECT pg_stat_get_live_tuples(c.oid) FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = '{b_schema}' AND c.relname = 'companies'"
        ),
        // The provisioning functions.
        "SELECT public.create_tenant_schema(gen_random_uuid())".into(),
        format!("SELECT public.delete_tenant_schema('{b_id}')"),
        format!(
            "SELECT public.grant_tenant_role('{}', '{b_schema}')",
            f.a.id
        ),
    ];
    let mut allowed = Vec::new();
    for sql in &hostile {
        match sqlstate(&f.app, &f.a, sql).await.as_deref() {
            Some("42501") => {}
            other => allowed.push(format!("{sql} → {other:?}")),
        }
    }
    assert!(
        allowed.is_empty(),
        "expected permission errors (42501), got:\n{}",
        allowed.join("\n")
    );
    // Nothing of the extension is left in `public` for a tenant to call.
    assert_eq!(
        sqlstate(
            &f.app,
            &f.a,
            "SELECT count(*) FROM public.pg_stat_statements(true)"
        )
        .await
        .as_deref(),
        Some("42883"),
        "public.pg_stat_statements(boolean) must not exist"
    );

    // B's data is untouched, and the tenant's own work still runs as its role.
    let name: String = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT name FROM {b_schema}.companies"
    )))
    .fetch_one(&f.db.pool)
    .await
    .unwrap();
    assert_eq!(name, "B secret");
    let mut tx = scope::begin(&f.app, &f.a).await.unwrap();
    sqlx::query("INSERT INTO companies (name) VALUES ('A own')")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO public.audit_logs (tenant_id, action, resource_type, resource_id)
         VALUES ($1, 'company.created', 'company', 'x')",
    )
    .bind(f.a.id)
    .execute(&mut *tx)
    .await
    .expect("a tenant appends its own audit rows");
    let (user, own): (String, i64) =
        sqlx::query_as("SELECT current_user::text, (SELECT count(*) FROM companies)")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(user, f.a.role());
    assert_eq!(own, 1);
}

#[tokio::test]
async fn the_service_login_cannot_change_the_audit_trail_or_read_tenant_data_itself() {
    service_login_is_least_privileged(&fleet().await).await;
}

/// The test above, on any fleet (plain PostgreSQL, or Citus: tests/it/citus.rs).
pub(crate) async fn service_login_is_least_privileged(f: &Fleet) {
    f.db.exec(&format!(
        "INSERT INTO audit_logs (tenant_id, action, resource_type, resource_id)
         VALUES ('{}', 'x.done', 'x', 'x')",
        f.a.id
    ))
    .await;
    for sql in [
        "UPDATE public.audit_logs SET action = 'forged'".to_owned(),
        "DELETE FROM public.audit_logs".to_owned(),
        "TRUNCATE public.audit_logs".to_owned(),
        // NOINHERIT: membership in the tenant roles gives the service no rights of theirs.
        format!("SELECT * FROM {}.companies", f.b.schema.as_str()),
        "SELECT pg_read_file('/etc/passwd')".to_owned(),
        "CREATE SCHEMA tenant_evil".to_owned(),
    ] {
        let err = sqlx::raw_sql(AssertSqlSafe(sql.clone()))
            .execute(&f.app)
            .await
            .expect_err(&sql);
        assert_eq!(
            err.as_database_error().and_then(|d| d.code()).as_deref(),
            Some("42501"),
            "{sql}: {err}"
        );
    }
    let (superuser, createrole, createdb, bypass): (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&f.app)
    .await
    .unwrap();
    assert!(!superuser && !createrole && !createdb && !bypass);
}

/// The documented gap (docs/security.md): a whole extra statement — which bound values can
/// never become — may `SET ROLE` to any role the login role belongs to. Pinned here so the
/// documentation stays true; if PostgreSQL ever closes it, this test says so.
#[tokio::test]
async fn documented_gap_a_separate_set_role_statement_switches_tenants() {
    separate_set_role_switches_tenants(&fleet().await).await;
}

/// The test above, on any fleet (plain PostgreSQL, or Citus: tests/it/citus.rs).
pub(crate) async fn separate_set_role_switches_tenants(f: &Fleet) {
    let mut tx = scope::begin(&f.app, &f.a).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("SET LOCAL ROLE \"{}\"", f.b.role())))
        .execute(&mut *tx)
        .await
        .expect("the gap: the login role is a member of every tenant role");
    let stolen: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {}.companies",
        f.b.schema.as_str()
    )))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(stolen, 1);
}

#[tokio::test]
async fn provisioning_and_purging_as_the_service_creates_and_drops_the_tenant_role() {
    let db = TestDb::new().await;
    let app = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.app_url().await)
        .await
        .unwrap();
    let tenancy = capliquify::tenancy::Tenancy::new(app.clone(), 0);
    let new =
        capliquify::tenancy::NewTenant::parse("svc-made", "Svc", Tier::Starter, "org_svc").unwrap();
    let actor = capliquify::audit::Actor::operator();
    let t = tenancy
        .provision(&new, &actor)
        .await
        .expect("the service provisions");
    let role = scope::role_name(t.id);
    let rights: (bool, bool, bool) = sqlx::query_as(
        "SELECT has_schema_privilege($1, $2, 'USAGE'),
                has_table_privilege($1, $2 || '.sales', 'INSERT'),
                has_table_privilege($1, $2 || '.schema_migrations', 'INSERT')",
    )
    .bind(&role)
    .bind(&t.schema_name)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(rights, (true, true, false));
    // Every relation of the schema, as grant_tenant_role lists them without `ON ALL TABLES
    // IN SCHEMA` (migration 0012): DML on each table, only SELECT on schema_migrations, the
    // sequences usable; and nothing in another tenant's schema.
    let grants: Vec<(String, String, bool, bool, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, c.relkind::text,
                has_table_privilege($1, c.oid, 'SELECT'),
                has_table_privilege($1, c.oid, 'INSERT'),
                has_table_privilege($1, c.oid, 'UPDATE'),
                has_table_privilege($1, c.oid, 'DELETE')
           FROM pg_class c
          WHERE c.relnamespace = to_regnamespace($2) AND c.relkind IN ('r', 'p', 'S', 'v')
          ORDER BY 1",
    )
    .bind(&role)
    .bind(&t.schema_name)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(grants.len() >= 10, "the schema's relations: {grants:?}");
    for (name, kind, select, insert, update, delete) in &grants {
        let expected = match (name.as_str(), kind.as_str()) {
            ("schema_migrations", _) => (true, false, false, false),
            // Sequences: SELECT and UPDATE (setval); INSERT and DELETE do not apply.
            (_, "S") => (true, false, true, false),
            _ => (true, true, true, true),
        };
        assert_eq!(
            (*select, *insert, *update, *delete),
            expected,
            "the tenant role's rights on {name} ({kind})"
        );
    }
    let other = tenancy
        .provision(
            &capliquify::tenancy::NewTenant::parse("svc-other", "Other", Tier::Starter, "org_svc2")
                .unwrap(),
            &actor,
        )
        .await
        .unwrap();
    let foreign: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c
          WHERE c.relnamespace = to_regnamespace($2)
            AND has_table_privilege($1, c.oid, 'SELECT')",
    )
    .bind(&role)
    .bind(&other.schema_name)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(foreign, 0, "no right in another tenant's schema");

    tenancy.soft_delete(&t.slug, &actor).await.unwrap();
    tenancy
        .purge(&t.slug, true, Some(t.slug.as_str()), &actor)
        .await
        .expect("the service purges");
    assert!(!db.schema_exists(&t.schema_name).await);
    assert!(
        !db.scalar_bool(&format!(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}')"
        ))
        .await,
        "the purged tenant's role is dropped"
    );
}

#[tokio::test]
async fn a_migration_that_adds_a_table_grants_it_to_every_tenant_role() {
    let db = TestDb::new().await;
    let t = db.tenant("grows", Tier::Starter).await;
    let migrations = crate::common::tenant_migrations_with(&[(
        crate::common::version(1),
        "cash notes",
        "CREATE TABLE cash_notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)",
    )]);
    migrate::migrate_public(&db.pool, &migrations)
        .await
        .unwrap();
    let latest = crate::common::version(1);
    let pending = migrate::pending_tenants(&db.pool, latest).await.unwrap();
    let report = migrate::migrate_fleet(&db.pool, pending, latest, 1, Arc::new(|_| {})).await;
    assert_eq!(report.migrated, 1, "{report:?}");
    let app = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.app_url().await)
        .await
        .unwrap();
    let mut tx = scope::begin(&app, &t.scope().unwrap()).await.unwrap();
    sqlx::query("INSERT INTO cash_notes (note) VALUES ('ok')")
        .execute(&mut *tx)
        .await
        .expect("the new table (and its identity sequence) is the tenant's");
    tx.commit().await.unwrap();
}

fn capliquify(db: &TestDb) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capliquify"));
    cmd.env("DATABASE_URL", &db.url)
        .env_remove("CAPLIQUIFY_APP_PASSWORD");
    cmd
}

#[tokio::test]
async fn init_roles_creates_a_plain_login_role_and_refuses_privileged_ones() {
    let db = TestDb::new().await;
    let login = format!(
        "cq_login_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let out = capliquify(&db)
        .args(["db", "init-roles", "--login", &login])
        .env("CAPLIQUIFY_APP_PASSWORD", "s3cret-for-tests")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&login) && stdout.contains("created"),
        "{stdout}"
    );
    let (login_ok, superuser, member, has_password): (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT rolcanlogin, rolsuper, pg_has_role(rolname, 'capliquify_service', 'MEMBER'),
                rolpassword IS NOT NULL
           FROM pg_authid WHERE rolname = $1",
    )
    .bind(&login)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(login_ok && !superuser && member && has_password);

    // Idempotent; audited each time.
    let again = capliquify(&db)
        .args(["--json", "db", "init-roles", "--login", &login])
        .output()
        .unwrap();
    assert!(again.status.success());
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["action"], "updated");
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM audit_logs WHERE action = 'db.roles_initialized'")
            .await,
        2
    );

    // A superuser, a reserved or a malformed name: refused, nothing changed.
    let superuser: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    for (bad, says) in [
        (superuser.as_str(), "superuser"),
        ("capliquify_service", "invalid login role name"),
        ("x\"; DROP ROLE y; --", "invalid login role name"),
    ] {
        let out = capliquify(&db)
            .args(["db", "init-roles", "--login", bad])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(stderr.contains(says), "{bad}: {stderr}");
    }
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM audit_logs WHERE action = 'db.roles_initialized'")
            .await,
        2
    );
    db.exec(&format!("DROP ROLE \"{login}\"")).await;
}

#[tokio::test]
async fn doctor_finds_a_tenant_role_without_its_rights_and_repair_grants_them() {
    let f = fleet().await;
    let check = |db: &TestDb| {
        let pool = db.pool.clone();
        async move {
            let report = capliquify::tenancy::verify::report(&pool).await.unwrap();
            let c = report
                .checks
                .into_iter()
                .find(|c| c.test_name == "tenant_roles_in_place")
                .expect("doctor has the roles check");
            (c.result, c.details)
        }
    };
    assert_eq!(check(&f.db).await.0, "PASS");

    // A table's grant lost, and another tenant's role let into B's schema.
    f.db.exec(&format!(
        "REVOKE INSERT ON {}.sales FROM \"{}\"",
        f.a.schema.as_str(),
        f.a.role()
    ))
    .await;
    f.db.exec(&format!(
        "GRANT USAGE ON SCHEMA {} TO \"{}\"",
        f.b.schema.as_str(),
        f.a.role()
    ))
    .await;
    f.db.exec(&format!(
        "GRANT SELECT ON {}.companies TO PUBLIC",
        f.b.schema.as_str()
    ))
    .await;
    let (result, details) = check(&f.db).await;
    assert_eq!(result, "FAIL");
    assert!(
        details.contains("hostile-a: no read/write grant on sales"),
        "{details}"
    );
    assert!(
        details.contains(&format!(
            "{}.companies is also granted to PUBLIC",
            f.b.schema.as_str()
        )),
        "{details}"
    );
    assert!(
        details.contains(&format!(
            "{} is also granted to {}",
            f.b.schema.as_str(),
            f.a.role()
        )),
        "{details}"
    );

    let tenancy = f.db.tenancy();
    let actor = capliquify::audit::Actor::operator();
    let (_, repair) = tenancy.repair("hostile-a", &actor).await.unwrap();
    assert!(
        matches!(repair, capliquify::tenancy::lifecycle::Repair::RoleGranted),
        "{repair:?}"
    );
    f.db.exec(&format!(
        "REVOKE USAGE ON SCHEMA {} FROM \"{}\"; REVOKE SELECT ON {}.companies FROM PUBLIC",
        f.b.schema.as_str(),
        f.a.role(),
        f.b.schema.as_str()
    ))
    .await;
    let (result, details) = check(&f.db).await;
    assert_eq!(result, "PASS", "{details}");
}

/// The production setup of docs/security.md: migrations and operators' commands run as the
/// database owner, a non-superuser with CREATEROLE; the service as `db init-roles`' login.
#[tokio::test]
async fn a_non_superuser_owner_migrates_and_runs_the_operators_tenant_commands() {
    let db = TestDb::empty().await;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let (owner, login) = (format!("cq_owner_{suffix}"), format!("cq_svc_{suffix}"));
    // The test URL's password (the embedded cluster's), so the role can log in there too.
    let password = url::Url::parse(&db.url)
        .ok()
        .and_then(|u| u.password().map(|p| format!(" PASSWORD '{p}'")))
        .unwrap_or_default();
    db.exec(&format!(
        "CREATE ROLE {owner} LOGIN CREATEROLE{password}; ALTER DATABASE \"{}\" OWNER TO {owner}",
        db.name
    ))
    .await;
    let as_user = |user: &str| {
        let mut url = url::Url::parse(&db.url).unwrap();
        url.set_username(user).unwrap();
        url.to_string()
    };
    let owner_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&as_user(&owner))
        .await
        .unwrap();
    migrate::migrate_public(&owner_pool, migrate::tenant_migrations())
        .await
        .expect("a CREATEROLE owner runs every migration");
    let actor = capliquify::audit::Actor::operator();
    let login_password = url::Url::parse(&db.url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned));
    capliquify::db::roles::init(&owner_pool, &login, login_password.as_deref(), &actor)
        .await
        .expect("the owner creates the service's login role");
    let tenancy = capliquify::tenancy::Tenancy::new(owner_pool.clone(), 30);
    let new = capliquify::tenancy::NewTenant::parse("owned", "Owned", Tier::Starter, "org_owned")
        .unwrap();
    let t = tenancy.provision(&new, &actor).await.unwrap();
    let scope = t.scope().unwrap();

    // The owner switches to the tenant's role (keys rotate, fleet sql do).
    let rows = capliquify::tenancy::fleet::query(
        owner_pool.clone(),
        vec![t.clone()],
        "SELECT current_user::text AS who, count(*) AS companies FROM companies",
        1,
        std::time::Duration::from_secs(5),
    )
    .await;
    assert_eq!(rows[0].error, None, "{rows:?}");
    assert_eq!(rows[0].rows[0]["who"], serde_json::json!(scope.role()));

    // The service's login works in the tenant's transaction, and only there.
    let service = PgPoolOptions::new()
        .max_connections(1)
        .connect(&as_user(&login))
        .await
        .unwrap();
    assert_eq!(
        sqlstate(
            &service,
            &scope,
            "INSERT INTO companies (name) VALUES ('ok')"
        )
        .await,
        None
    );
    assert_eq!(
        sqlstate(&service, &scope, "SELECT * FROM public.users")
            .await
            .as_deref(),
        Some("42501")
    );
    let report = capliquify::tenancy::verify::report(&owner_pool)
        .await
        .unwrap();
    assert!(report.healthy(), "{:?}", report.checks);

    service.close().await;
    owner_pool.close().await;
    db.exec(&format!("DROP ROLE {login}")).await;
}

/// `db init-roles` sends a SCRAM verifier instead of the password: it must be the one
/// PostgreSQL itself derives. PostgreSQL hashes a plain password with a random salt; the
/// same salt and iteration count through ours must give the same stored and server keys.
#[tokio::test]
async fn the_scram_verifier_is_the_one_postgresql_derives() {
    use base64::Engine as _;
    let db = TestDb::empty().await;
    let role = format!(
        "cq_scram_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    for password in [
        "correct horse battery staple",
        "p@ss'w\"ord;--",
        "ünïcødé-not-ascii",
    ] {
        db.exec(&format!(
            "SET password_encryption = 'scram-sha-256';
             DROP ROLE IF EXISTS {role}; CREATE ROLE {role} PASSWORD '{}'",
            password.replace('\'', "''")
        ))
        .await;
        let stored: String =
            sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
                .bind(&role)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        // SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
        let (head, _) = stored
            .split_once('$')
            .and_then(|(_, rest)| rest.split_once('$'))
            .unwrap();
        let (iterations, salt) = head.split_once(':').unwrap();
        let salt = base64::engine::general_purpose::STANDARD
            .decode(salt)
            .unwrap();
        let ours = capliquify::db::roles::scram_sha_256_verifier(
            password,
            &salt,
            iterations.parse().unwrap(),
        );
        assert_eq!(ours, stored, "password {password:?}");
    }
    db.exec(&format!("DROP ROLE {role}")).await;

    // And init-roles stores a verifier, not the password.
    let login = format!(
        "cq_login_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let db = TestDb::new().await;
    capliquify::db::roles::init(
        &db.pool,
        &login,
        Some("s3cret"),
        &capliquify::audit::Actor::operator(),
    )
    .await
    .unwrap();
    let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(&login)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    db.exec(&format!("DROP ROLE {login}")).await;
}

/// Membership found by walking from the role down to its members (public migration 0024's
/// `role_is_member`, and `IS_MEMBER_SQL` for the Rust side) answers as
/// `pg_has_role(member, role, 'MEMBER')` does for roles that are not superusers: a direct
/// grant, a chain of grants (through a NOINHERIT role too), a role in itself, and unrelated
/// or reversed pairs — so provisioning may use it instead of pg_has_role, whose cost grows
/// with the square of the fleet on PostgreSQL 15 (docs/scaling.md).
#[tokio::test]
async fn membership_walked_from_the_role_agrees_with_pg_has_role() {
    let db = TestDb::new().await;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let names: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| format!("cq_member_{n}_{suffix}"))
        .collect();
    let [a, b, c, d, e] = [0, 1, 2, 3, 4].map(|i| names[i].as_str());
    db.exec(&format!(
        "CREATE ROLE {a}; CREATE ROLE {b} NOINHERIT; CREATE ROLE {c}; CREATE ROLE {d};
         CREATE ROLE {e}; GRANT {c} TO {b}; GRANT {b} TO {a}; GRANT {c} TO {e}"
    ))
    .await;
    let mut members = 0;
    for member in &names {
        for role in &names {
            let (expected, function): (bool, bool) = sqlx::query_as(
                "SELECT pg_has_role($1, $2, 'MEMBER'), public.role_is_member($1, $2)",
            )
            .bind(member)
            .bind(role)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            let inlined: bool = sqlx::query_scalar(capliquify::db::roles::IS_MEMBER_SQL)
                .bind(member)
                .bind(role)
                .fetch_one(&db.pool)
                .await
                .unwrap();
            assert_eq!(function, expected, "role_is_member({member}, {role})");
            assert_eq!(inlined, expected, "IS_MEMBER_SQL({member}, {role})");
            members += usize::from(expected);
        }
    }
    // Each role in itself (5), a in b and c, b in c, e in c.
    assert_eq!(members, 9, "the graph is not the one this test means");
    let unknown: bool = db
        .scalar_bool(&format!(
            "SELECT public.role_is_member('{a}', 'cq_no_such_role_{suffix}')"
        ))
        .await;
    assert!(!unknown, "a role that does not exist has no members");
    db.exec(&format!("DROP ROLE {a}, {b}, {c}, {d}, {e}")).await;
}
