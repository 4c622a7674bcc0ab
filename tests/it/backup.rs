//! Per-tenant backup, restore and clone: round trips, older archives, atomicity under
//! failure, clones with their own identity, refused files, and the command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::TestDb;
use capliquify::audit::Actor;
use capliquify::billing::Tier;
use capliquify::tenancy::Tenant;
use capliquify::tenancy::backup::{
    self, BackupError, BackupKey, BackupReport, RestoreMode, RestoreReport, Trust, archive,
};
use capliquify::tenancy::migrate;

const TABLES: &[&str] = &[
    "companies",
    "products",
    "sales",
    "inventory",
    "forecasts",
    "working_capital_metrics",
    "scenarios",
    "api_credentials",
    "user_preferences",
];

/// The operators' archive key of these tests (CAPLIQUIFY_BACKUP_KEY).
const BACKUP_KEY: &str = "test-backup-key-0123456789abcdef-XYZ";

fn key() -> BackupKey {
    BackupKey::parse(BACKUP_KEY).unwrap()
}

fn actor() -> Actor {
    Actor::operator()
}

/// A folder of its own for one test's archives.
fn folder() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("capliquify-backup-test-")
        .tempdir()
        .expect("temp folder")
}

/// Fills every business table of `schema` with a few rows (`n` products), including
/// generated columns, JSON, NULLs and text that needs escaping in COPY.
async fn seed(db: &TestDb, schema: &str, n: i32) {
    db.exec(&format!(
        "INSERT INTO {schema}.companies (id, name, legal_name, settings)
           VALUES ('11111111-1111-1111-1111-111111111111', 'Co of {schema}', E'tab\\there\\nnewline \\\\ backslash', '{{\"k\": [1, 2]}}');
         INSERT INTO {schema}.products (company_id, sku, name, unit_cost, unit_price, description)
           SELECT '11111111-1111-1111-1111-111111111111', 'SKU-' || g, 'Product ' || g, g * 1.5, g * 3, CASE WHEN g % 2 = 0 THEN NULL ELSE 'odd' END
             FROM generate_series(1, {n}) g;
         INSERT INTO {schema}.sales (company_id, product_id, sale_date, quantity, unit_price, total_amount)
           SELECT company_id, id, date '2026-01-01', 2, unit_price, unit_price * 2 FROM {schema}.products;
         INSERT INTO {schema}.inventory (company_id, product_id, quantity_on_hand, quantity_reserved, unit_cost)
           SELECT company_id, id, 10, 3, unit_cost FROM {schema}.products;
         INSERT INTO {schema}.forecasts (company_id, forecast_date, forecast_type, predicted_value, model_parameters)
           VALUES ('11111111-1111-1111-1111-111111111111', date '2026-02-01', 'demand', 100, '{{\"a\": 1}}');
         INSERT INTO {schema}.working_capital_metrics (company_id, period_date, period_type, cash)
           VALUES ('11111111-1111-1111-1111-111111111111', date '2026-01-31', 'monthly', 1234.56);
         INSERT INTO {schema}.scenarios (company_id, name, parameters)
           VALUES ('11111111-1111-1111-1111-111111111111', 'Base', '{{}}');
         INSERT INTO {schema}.api_credentials (company_id, service, credentials)
           VALUES ('11111111-1111-1111-1111-111111111111', 'xero', '{{\"v\": 1}}');
         INSERT INTO {schema}.user_preferences (user_id, preferences) VALUES ('user_x', '{{\"theme\": \"dark\"}}');"
    ))
    .await;
}

/// A clone's data compares equal to its source but for `api_credentials` (switched off in
/// clones: their envelopes open only for the original tenant); its row count still counts.
fn without_credentials(mut fp: Vec<(String, i64, String)>) -> Vec<(String, i64, String)> {
    for (table, _, digest) in &mut fp {
        if table == "api_credentials" {
            digest.clear();
        }
    }
    fp
}

/// Every table of `schema` as (table, rows, md5 of all rows as text, generated columns
/// included).
async fn fingerprint(db: &TestDb, schema: &str) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for table in TABLES {
        let (rows, digest): (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))
               FROM {schema}.{table} t"
        )))
        .fetch_one(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{schema}.{table}: {e}"));
        out.push(((*table).to_owned(), rows, digest));
    }
    out
}

async fn take_backup(db: &TestDb, slug: &str, dir: &Path, with_audit: bool) -> BackupReport {
    let file = dir.join(format!("{slug}.{}", backup::EXTENSION));
    backup::backup(
        &db.pool,
        slug,
        Some(&file),
        with_audit,
        Some(&key()),
        &actor(),
        &|_| {},
    )
    .await
    .expect("backup succeeds")
}

async fn restore(
    db: &TestDb,
    file: &Path,
    mode: RestoreMode,
) -> Result<RestoreReport, BackupError> {
    backup::restore(&db.pool, file, mode, Trust::key(&key()), &actor(), &|_| {}).await
}

async fn temp_schemas(db: &TestDb) -> i64 {
    db.scalar_i64("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\\_r%' AND length(nspname) = 40")
        .await
}

async fn tenant_row(db: &TestDb, slug: &str) -> Tenant {
    capliquify::tenancy::registry::find(&db.pool, slug)
        .await
        .expect("tenant exists")
}

/// The whole visible state of the database: every tenant row and every tenant schema's data.
async fn everything(db: &TestDb) -> (Vec<String>, Vec<(String, Vec<(String, i64, String)>)>) {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT to_jsonb(t)::text FROM public.tenants t ORDER BY slug")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant\\_%' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut data = Vec::new();
    for s in schemas {
        let f = fingerprint(db, &s).await;
        data.push((s, f));
    }
    (rows, data)
}

#[tokio::test]
async fn a_backup_restored_with_replace_brings_back_the_data_exactly() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme", Tier::Professional).await;
    let other = db.tenant("bystander", Tier::Starter).await;
    seed(&db, &acme.schema_name, 25).await;
    seed(&db, &other.schema_name, 3).await;
    db.exec(&format!(
        "INSERT INTO users (clerk_user_id, email, tenant_id, role)
         VALUES ('user_gone_since', 'gone@acme.example', '{}', 'admin')",
        acme.id
    ))
    .await;
    let before = fingerprint(&db, &acme.schema_name).await;
    let bystander = fingerprint(&db, &other.schema_name).await;
    let dir = folder();

    let report = take_backup(&db, "acme", dir.path(), false).await;
    assert_eq!(report.schema_version, crate::common::version(0));
    let products = report
        .parts
        .iter()
        .find(|p| p.path == "data/products.copy")
        .unwrap();
    assert_eq!(products.rows, 25);
    assert!(report.file.exists());
    // Nothing else is left in the folder: no temporary file.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // Change everything (a member is removed too), then restore.
    db.exec(&format!(
        "DELETE FROM {s}.sales; UPDATE {s}.inventory SET quantity_reserved = 0;
         INSERT INTO {s}.user_preferences (user_id) VALUES ('later');
         UPDATE public.tenants SET name = 'Renamed' WHERE slug = 'acme';
         UPDATE public.users SET removed_at = now() WHERE clerk_user_id = 'user_gone_since'",
        s = acme.schema_name
    ))
    .await;
    assert_ne!(fingerprint(&db, &acme.schema_name).await, before);

    let restored = restore(&db, &report.file, RestoreMode::Replace)
        .await
        .unwrap();
    assert_eq!(restored.tenant_id, acme.id);
    assert_eq!(restored.schema_name, acme.schema_name);
    assert_eq!(fingerprint(&db, &acme.schema_name).await, before);
    // Generated columns are recomputed, not copied: quantity_available = 10 - 3.
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM {}.inventory WHERE quantity_available = 7",
            acme.schema_name
        ))
        .await,
        25
    );
    // The registry row, members and subscription are Clerk's and Stripe's: left as they are.
    let after = tenant_row(&db, "acme").await;
    assert_eq!(after.name, "Renamed");
    assert!(
        db.scalar_bool(
            "SELECT removed_at IS NOT NULL FROM users WHERE clerk_user_id = 'user_gone_since'"
        )
        .await,
        "a member removed after the backup stays removed"
    );
    assert_eq!(after.schema_version, Some(crate::common::version(0)));
    assert_eq!(fingerprint(&db, &other.schema_name).await, bystander);
    assert_eq!(temp_schemas(&db).await, 0);
    assert_eq!(
        db.audit_actions(acme.id).await,
        [
            "tenant.provisioned",
            "tenant.backup",
            "tenant.backup_restored"
        ]
    );
    let (result, details) = db.check("no_orphan_schemas").await;
    assert_eq!(result, "PASS", "{details}");
}

#[tokio::test]
async fn the_archive_is_a_tar_with_a_manifest_of_counts_and_checksums() {
    let db = TestDb::new().await;
    let t = db.tenant("tarred", Tier::Starter).await;
    seed(&db, &t.schema_name, 4).await;
    let dir = folder();
    let report = take_backup(&db, "tarred", dir.path(), true).await;
    let scanned = archive::scan(&report.file).unwrap();
    assert_eq!(scanned.layout_version, backup::FORMAT_VERSION);
    let manifest: backup::Manifest = serde_json::from_slice(&scanned.manifest).unwrap();
    assert_eq!(manifest.tenant.slug, "tarred");
    assert_eq!(manifest.tenant.id, t.id);
    assert_eq!(manifest.schema_version, crate::common::version(0));
    assert!(manifest.with_audit);
    let tables: Vec<&str> = manifest.parts.iter().map(|p| p.path.as_str()).collect();
    for table in TABLES {
        assert!(
            tables.contains(&format!("data/{table}.copy").as_str()),
            "{tables:?}"
        );
    }
    assert!(tables.contains(&"public/audit_logs.ndjson"));
    assert!(!tables.iter().any(|t| t.contains("schema_migrations")));
    for part in &manifest.parts {
        let found = &scanned.entries[&part.path];
        assert_eq!(found.sha256, part.sha256, "{}", part.path);
        assert_eq!(found.rows, part.rows, "{}", part.path);
    }
    let inventory = manifest
        .parts
        .iter()
        .find(|p| p.table == "inventory")
        .unwrap();
    assert!(!inventory.columns.contains(&"quantity_available".to_owned()));
    assert_eq!(inventory.rows, 4);
}

#[tokio::test]
async fn an_archive_of_an_older_schema_version_is_restored_and_migrated() {
    let db = TestDb::new().await;
    // A tenant whose schema is at version 1 (made the guide's way, then migrated to 1 only).
    let id = uuid::Uuid::new_v4();
    let schema = format!("tenant_{}", id.simple());
    db.exec(&format!(
        "INSERT INTO public.tenants (id, slug, name, schema_name, clerk_organization_id,
                                     subscription_tier, subscription_status, features)
         VALUES ('{id}', 'old-one', 'Old One', '{schema}', 'org_old', 'starter', 'active', '{{}}');
         CREATE SCHEMA {schema};
         SELECT public.migrate_tenant_schema('{schema}', 1);"
    ))
    .await;
    assert_eq!(tenant_row(&db, "old-one").await.schema_version, Some(1));
    seed(&db, &schema, 5).await;
    let dir = folder();
    let report = take_backup(&db, "old-one", dir.path(), false).await;
    assert_eq!(report.schema_version, 1);
    // A restored copy is migrated to the latest version, which may add columns (tenant
    // migration 0003 adds two to working_capital_metrics): it must equal the source
    // migrated the same way.
    db.exec(&format!(
        "SELECT public.migrate_tenant_schema('{schema}', {})",
        crate::common::version(0)
    ))
    .await;
    let before = fingerprint(&db, &schema).await;

    let copy = restore(
        &db,
        &report.file,
        RestoreMode::Clone {
            slug: "old-copy".into(),
            name: None,
            clerk_org: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(copy.archive_schema_version, 1);
    assert_eq!(copy.schema_version, crate::common::version(0));
    assert_eq!(
        copy.migrations_applied as i64,
        crate::common::version(0) - 1
    );
    assert_eq!(
        without_credentials(fingerprint(&db, &copy.schema_name).await),
        without_credentials(before.clone())
    );
    // Migration 2's constraint exists in the copy.
    assert!(
        db.scalar_bool(&format!(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'inventory_quantity_reserved__within_on_hand_check'
                              AND connamespace = '{}'::regnamespace)",
            copy.schema_name
        ))
        .await
    );

    let replaced = restore(&db, &report.file, RestoreMode::Replace)
        .await
        .unwrap();
    assert_eq!(replaced.schema_version, crate::common::version(0));
    assert_eq!(
        tenant_row(&db, "old-one").await.schema_version,
        Some(crate::common::version(0))
    );
    assert_eq!(fingerprint(&db, &schema).await, before);
    let (result, details) = db.check("tenant_schemas_current").await;
    assert_eq!(result, "PASS", "{details}");
}

#[tokio::test]
async fn a_replace_that_fails_after_loading_leaves_the_old_data_and_no_temporary_schema() {
    let db = TestDb::new().await;
    let t = db.tenant("fragile", Tier::Starter).await;
    seed(&db, &t.schema_name, 6).await;
    let dir = folder();
    let report = take_backup(&db, "fragile", dir.path(), false).await;
    db.exec(&format!("DELETE FROM {}.sales", t.schema_name))
        .await;
    let changed = everything(&db).await;

    // A newer tenant migration that fails: it runs after the data is loaded.
    let with_bad = crate::common::tenant_migrations_with(&[(
        crate::common::version(1),
        "fails",
        "SELECT 1/0",
    )]);
    migrate::sync_catalog(&db.pool, &with_bad).await.unwrap();

    let err = restore(&db, &report.file, RestoreMode::Replace)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("division by zero"), "{err}");
    assert_eq!(everything(&db).await, changed);
    assert_eq!(temp_schemas(&db).await, 0);
    assert_eq!(
        db.audit_actions(t.id).await,
        ["tenant.provisioned", "tenant.backup"]
    );
}

#[tokio::test]
async fn a_replace_killed_midway_leaves_the_old_data_and_no_temporary_schema() {
    let db = TestDb::new().await;
    let t = db.tenant("killed", Tier::Starter).await;
    seed(&db, &t.schema_name, 6).await;
    let dir = folder();
    let report = take_backup(&db, "killed", dir.path(), false).await;
    db.exec(&format!("DELETE FROM {}.sales", t.schema_name))
        .await;
    let changed = everything(&db).await;

    // A slow migration keeps the restore busy after loading, so its backend can be killed.
    let slow = crate::common::tenant_migrations_with(&[(
        crate::common::version(1),
        "slow",
        "SELECT pg_sleep(30)",
    )]);
    migrate::sync_catalog(&db.pool, &slow).await.unwrap();
    let pool = db.pool.clone();
    let file = report.file.clone();
    let running = tokio::spawn(async move {
        let key = key();
        backup::restore(
            &pool,
            &file,
            RestoreMode::Replace,
            Trust::key(&key),
            &actor(),
            &|_| {},
        )
        .await
    });
    assert!(
        crate::common::kill_backend_running(&db, "SELECT public.migrate_tenant_schema($1)").await,
        "the restore's migration was not seen running"
    );
    assert!(running.await.unwrap().is_err());
    assert_eq!(everything(&db).await, changed);
    assert_eq!(temp_schemas(&db).await, 0);
}

#[tokio::test]
async fn a_clone_has_its_own_identity_and_independent_data() {
    let db = TestDb::new().await;
    let src = db.tenant("source-co", Tier::Enterprise).await;
    let other = db.tenant("neighbour", Tier::Starter).await;
    seed(&db, &src.schema_name, 8).await;
    seed(&db, &other.schema_name, 2).await;
    db.exec(&format!(
        "INSERT INTO public.users (clerk_user_id, email, tenant_id, role)
         VALUES ('user_src', 'a@source.test', '{}', 'owner')",
        src.id
    ))
    .await;
    let source_data = fingerprint(&db, &src.schema_name).await;
    let neighbour = fingerprint(&db, &other.schema_name).await;
    let neighbour_row = tenant_row(&db, "neighbour").await;

    let copy = backup::clone_tenant(
        &db.pool,
        "source-co",
        "copy-co",
        None,
        None,
        &actor(),
        &|_| {},
    )
    .await
    .unwrap();
    assert_ne!(copy.tenant_id, src.id);
    assert_eq!(
        copy.schema_name,
        format!("tenant_{}", copy.tenant_id.simple())
    );
    assert_eq!(
        copy.clerk_organization_id,
        format!("unlinked-{}", copy.tenant_id.simple())
    );
    assert_eq!(copy.users_restored, 0);
    let row = tenant_row(&db, "copy-co").await;
    assert_eq!(row.name, src.name);
    assert_eq!(row.subscription_tier, Tier::Enterprise);
    assert_eq!(row.schema_version, Some(crate::common::version(0)));
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM users WHERE tenant_id = '{}'",
            copy.tenant_id
        ))
        .await,
        0
    );
    assert_eq!(
        without_credentials(fingerprint(&db, &copy.schema_name).await),
        without_credentials(source_data.clone())
    );
    // The credentials came along sealed to the original, so they are switched off.
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM {}.api_credentials WHERE NOT is_active AND NOT auto_sync_enabled",
            copy.schema_name
        ))
        .await,
        1
    );

    // Independent: changing the copy leaves the source alone.
    db.exec(&format!("DELETE FROM {}.sales", copy.schema_name))
        .await;
    assert_eq!(fingerprint(&db, &src.schema_name).await, source_data);
    assert_eq!(fingerprint(&db, &other.schema_name).await, neighbour);
    assert_eq!(
        tenant_row(&db, "neighbour").await.updated_at,
        neighbour_row.updated_at
    );
    assert_eq!(db.audit_actions(copy.tenant_id).await, ["tenant.cloned"]);
    let (result, details) = db.check("no_orphan_schemas").await;
    assert_eq!(result, "PASS", "{details}");

    // A named clone with its own Clerk organization.
    let dir = folder();
    let file = take_backup(&db, "source-co", dir.path(), false).await.file;
    let named = restore(
        &db,
        &file,
        RestoreMode::Clone {
            slug: "copy-two".into(),
            name: Some("Copy Two".into()),
            clerk_org: Some("org_copy_two".into()),
        },
    )
    .await
    .unwrap();
    let row = tenant_row(&db, "copy-two").await;
    assert_eq!(
        (row.name.as_str(), row.clerk_organization_id.as_str()),
        ("Copy Two", "org_copy_two")
    );
    assert_eq!(named.slug, "copy-two");
}

#[tokio::test]
async fn an_existing_target_slug_or_unknown_source_is_refused_and_changes_nothing() {
    let db = TestDb::new().await;
    let a = db.tenant("alpha", Tier::Starter).await;
    db.tenant("beta", Tier::Starter).await;
    seed(&db, &a.schema_name, 2).await;
    let dir = folder();
    let file = take_backup(&db, "alpha", dir.path(), false).await.file;
    let state = everything(&db).await;

    let err = restore(
        &db,
        &file,
        RestoreMode::Clone {
            slug: "beta".into(),
            name: None,
            clerk_org: None,
        },
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("slug \"beta\" already exists"),
        "{err}"
    );
    let err = backup::clone_tenant(&db.pool, "alpha", "beta", None, None, &actor(), &|_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    // Restoring without --replace over a live tenant is refused.
    let err = restore(&db, &file, RestoreMode::Recreate)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--replace"), "{err}");
    // A Clerk organization that another tenant has.
    let err = restore(
        &db,
        &file,
        RestoreMode::Clone {
            slug: "gamma".into(),
            name: None,
            clerk_org: Some("org_beta".into()),
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("org_beta"), "{err}");

    let missing = dir.path().join("nobody.capliquify-backup");
    let err = backup::backup(
        &db.pool,
        "nobody-here",
        Some(&missing),
        false,
        None,
        &actor(),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("no tenant with slug \"nobody-here\""),
        "{err}"
    );
    assert!(!missing.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no partial file left"
    );
    let err = backup::clone_tenant(
        &db.pool,
        "nobody-here",
        "delta",
        None,
        None,
        &actor(),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("nobody-here"), "{err}");
    // An existing output file is never overwritten.
    let err = backup::backup(
        &db.pool,
        "alpha",
        Some(&file),
        false,
        None,
        &actor(),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BackupError::OutputExists(_)), "{err}");
    assert_eq!(everything(&db).await, state);
}

/// Writes a copy of `file` changed by `f` next to it.
fn damaged(file: &Path, name: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(file).unwrap();
    f(&mut bytes);
    let out = file.with_file_name(name);
    std::fs::write(&out, bytes).unwrap();
    out
}

#[tokio::test]
async fn corrupted_truncated_and_foreign_files_are_refused_and_change_nothing() {
    let db = TestDb::new().await;
    let t = db.tenant("careful", Tier::Starter).await;
    seed(&db, &t.schema_name, 10).await;
    let dir = folder();
    let file = take_backup(&db, "careful", dir.path(), true).await.file;
    db.exec(&format!("DELETE FROM {}.sales", t.schema_name))
        .await;
    let products_at = archive::scan(&file).unwrap().entries["data/products.copy"].offset;
    let len = std::fs::metadata(&file).unwrap().len() as usize;

    let flipped = damaged(&file, "flipped", |b| b[products_at as usize + 5] ^= 0x01);
    let truncated = damaged(&file, "truncated", |b| b.truncate(len / 2));
    let no_manifest = damaged(&file, "no-manifest", |b| {
        let at = archive::scan(&file).unwrap().entries["public/users.ndjson"].offset as usize;
        b.truncate(at + 512);
    });
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "just some notes\n".repeat(100)).unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    // A real tar archive that is not ours.
    let foreign = dir.path().join("foreign.tar");
    {
        let mut builder = tar::Builder::new(std::fs::File::create(&foreign).unwrap());
        let mut header = tar::Header::new_ustar();
        header.set_size(5);
        header.set_cksum();
        builder
            .append_data(&mut header, "hello.txt", &b"hello"[..])
            .unwrap();
        builder.finish().unwrap();
    }
    let mut manifest_edited = None;
    {
        // A valid tar whose manifest claims another row count.
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        if let Some(at) = text.find("\"rows\": 10,") {
            let mut b = bytes.clone();
            b[at + 9] = b'9';
            let out = dir.path().join("edited");
            std::fs::write(&out, b).unwrap();
            manifest_edited = Some(out);
        }
    }
    let state = everything(&db).await;
    let cases = [
        (flipped, "fails its checksum"),
        (truncated, "truncated"),
        (no_manifest, "manifest"),
        (text, "not a capliquify tenant backup"),
        (empty, "not a capliquify tenant backup"),
        (foreign, "not a capliquify tenant backup"),
        (
            // The checksums match the edited manifest, but its signature does not.
            manifest_edited.expect("manifest has a 10-row part"),
            "its manifest was altered",
        ),
    ];
    for (path, expected) in &cases {
        for mode in [RestoreMode::Replace, RestoreMode::Recreate] {
            let err = restore(&db, path, mode).await.unwrap_err().to_string();
            assert!(err.contains(expected), "{}: {err}", path.display());
        }
    }
    assert_eq!(everything(&db).await, state);
    assert_eq!(temp_schemas(&db).await, 0);
    assert_eq!(
        db.audit_actions(t.id).await,
        ["tenant.provisioned", "tenant.backup"]
    );
}

#[tokio::test]
async fn a_purged_tenant_is_recreated_with_its_identity_users_and_audit_trail() {
    let db = TestDb::new().await;
    let t = db.tenant("phoenix", Tier::Professional).await;
    seed(&db, &t.schema_name, 3).await;
    db.exec(&format!(
        "INSERT INTO public.users (clerk_user_id, email, tenant_id, role)
         VALUES ('user_phoenix', 'p@phoenix.test', '{}', 'owner')",
        t.id
    ))
    .await;
    let data = fingerprint(&db, &t.schema_name).await;
    let dir = folder();
    // Backed up during the grace period, as an operator does before a purge.
    let tenancy = db.tenancy();
    tenancy.soft_delete("phoenix", &actor()).await.unwrap();
    let file = take_backup(&db, "phoenix", dir.path(), true).await.file;
    tenancy
        .purge("phoenix", true, Some("phoenix"), &actor())
        .await
        .unwrap();
    assert!(!db.schema_exists(&t.schema_name).await);

    let report = restore(&db, &file, RestoreMode::Recreate).await.unwrap();
    assert_eq!(report.tenant_id, t.id);
    assert_eq!(report.users_restored, 1);
    let row = tenant_row(&db, "phoenix").await;
    assert_eq!(
        (row.id, row.schema_name.as_str()),
        (t.id, t.schema_name.as_str())
    );
    assert_eq!(row.clerk_organization_id, "org_phoenix");
    assert!(
        row.deleted_at.is_none(),
        "it comes back live, not to be purged again by the next lifecycle run"
    );
    assert_eq!(fingerprint(&db, &t.schema_name).await, data);
    assert_eq!(
        db.audit_actions(t.id).await,
        [
            "tenant.provisioned",
            "tenant.deleted",
            "tenant.backup_restored"
        ]
    );
    // The archived backup row itself was written after the snapshot, so it is not in it;
    // the provisioning row was, and came back.
}

// ---- the command line ---------------------------------------------------------------------

fn capliquify(db: &TestDb, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("CAPLIQUIFY_BACKUP_KEY", BACKUP_KEY)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run capliquify")
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_commands_back_up_restore_clone_and_undelete() {
    let db = TestDb::new().await;
    let t = db.tenant("cli-co", Tier::Starter).await;
    seed(&db, &t.schema_name, 3).await;
    let dir = folder();
    let file = dir.path().join("cli.capliquify-backup");
    let file_arg = file.to_str().unwrap();

    let out = capliquify(
        &db,
        &["tenant", "backup", "cli-co", "-o", file_arg, "--json"],
    );
    assert_ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["slug"], "cli-co");
    assert_eq!(json["schema_version"], crate::common::version(0));

    let out = capliquify(&db, &["tenant", "restore", file_arg, "--as", "cli-copy"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let header = text.lines().next().unwrap();
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("data/products.copy"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(header.find("ROWS"), row.find('3'), "{text}");
    assert!(text.contains("cli-copy"), "{text}");

    let out = capliquify(&db, &["tenant", "restore", file_arg, "--replace", "--json"]);
    assert_ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["mode"], "replace");
    assert_eq!(json["tenant_id"], t.id.to_string());

    let out = capliquify(
        &db,
        &[
            "tenant",
            "clone",
            "cli-co",
            "cli-third",
            "--clerk-org",
            "org_third",
        ],
    );
    assert_ok(&out);
    assert_eq!(
        tenant_row(&db, "cli-third").await.clerk_organization_id,
        "org_third"
    );

    let out = capliquify(&db, &["tenant", "restore", file_arg]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replace"));

    let out = capliquify(
        &db,
        &["tenant", "restore", file_arg, "--replace", "--as", "x-y-z"],
    );
    assert!(
        !out.status.success(),
        "--replace and --as exclude each other"
    );

    // The old `tenant restore SLUG` is now `tenant undelete SLUG`.
    assert_ok(&capliquify(&db, &["tenant", "delete", "cli-copy"]));
    assert_ok(&capliquify(&db, &["tenant", "undelete", "cli-copy"]));
    assert!(tenant_row(&db, "cli-copy").await.deleted_at.is_none());

    for sub in ["backup", "restore", "clone", "undelete"] {
        let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
            .args(["tenant", sub, "--help"])
            .output()
            .unwrap();
        assert_ok(&out);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Example"), "{sub}: {help}");
    }
}

#[tokio::test]
async fn a_backup_whose_connection_drops_midway_leaves_no_file() {
    let db = TestDb::new().await;
    let t = db.tenant("dropped", Tier::Starter).await;
    seed(&db, &t.schema_name, 6).await;
    let dir = folder();
    let file = dir.path().join("dropped.capliquify-backup");
    // Hold `sales` so the backup's COPY of it waits, in plain sight, until it is killed.
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {}.sales IN ACCESS EXCLUSIVE MODE",
        t.schema_name
    )))
    .execute(&mut *holder)
    .await
    .unwrap();
    let (pool, target) = (db.pool.clone(), file.clone());
    let running = tokio::spawn(async move {
        backup::backup(
            &pool,
            "dropped",
            Some(&target),
            false,
            None,
            &actor(),
            &|_| {},
        )
        .await
    });
    assert!(
        crate::common::kill_backend_running(&db, "%COPY%sales%").await,
        "the backup's COPY was not seen running"
    );
    let err = running
        .await
        .unwrap()
        .expect_err("a dropped connection fails the backup");
    holder.rollback().await.unwrap();
    assert!(!err.to_string().is_empty());
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing is left in the folder: {left:?}");
    assert!(
        !db.audit_actions(t.id)
            .await
            .contains(&"tenant.backup".to_owned()),
        "a failed backup is not recorded as one"
    );
}

#[tokio::test]
async fn an_archive_entry_that_is_not_a_plain_file_is_refused() {
    let db = TestDb::new().await;
    db.tenant("linky", Tier::Starter).await;
    let dir = folder();
    // Our marker, then a symbolic link where a data part would be.
    let file = dir.path().join("linky.capliquify-backup");
    {
        let mut builder = tar::Builder::new(std::fs::File::create(&file).unwrap());
        let mut marker = tar::Header::new_ustar();
        marker.set_size(0);
        marker.set_cksum();
        builder
            .append_data(
                &mut marker,
                format!("{}1", archive::MARKER_PREFIX),
                &b""[..],
            )
            .unwrap();
        let mut link = tar::Header::new_ustar();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder
            .append_link(&mut link, "data/sales.copy", "/etc/passwd")
            .unwrap();
        builder.finish().unwrap();
    }
    let state = everything(&db).await;
    let err = restore(&db, &file, RestoreMode::Recreate)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a plain file"), "{err}");
    assert_eq!(everything(&db).await, state);
}

#[tokio::test]
async fn replace_refuses_a_tenant_being_moved() {
    let db = TestDb::new().await;
    let t = db.tenant("on-the-move", Tier::Starter).await;
    seed(&db, &t.schema_name, 2).await;
    let dir = folder();
    let report = take_backup(&db, "on-the-move", dir.path(), false).await;
    db.exec("UPDATE tenants SET moving_to = 'eu2' WHERE slug = 'on-the-move'")
        .await;
    let state = everything(&db).await;
    let err = restore(&db, &report.file, RestoreMode::Replace)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is being moved"), "{err}");
    assert_eq!(everything(&db).await, state);
    assert_eq!(temp_schemas(&db).await, 0);
}

/// Archives are signed with the operators' key: an unsigned one, one signed with another
/// key, or a signed one without the key to check it is refused (nothing changes) unless the
/// operator says --insecure-unsigned; and no entry is read into memory past its cap.
#[tokio::test]
async fn unsigned_or_mis_signed_archives_are_refused_unless_insecure() {
    let db = TestDb::new().await;
    let t = db.tenant("signed-co", Tier::Starter).await;
    seed(&db, &t.schema_name, 4).await;
    let dir = folder();
    let unsigned = dir.path().join("unsigned.capliquify-backup");
    backup::backup(
        &db.pool,
        "signed-co",
        Some(&unsigned),
        false,
        None,
        &actor(),
        &|_| {},
    )
    .await
    .unwrap();
    let other_key = BackupKey::parse("another-operators-key-0123456789-abc").unwrap();
    let foreign = dir.path().join("foreign-key.capliquify-backup");
    backup::backup(
        &db.pool,
        "signed-co",
        Some(&foreign),
        false,
        Some(&other_key),
        &actor(),
        &|_| {},
    )
    .await
    .unwrap();
    let signed = take_backup(&db, "signed-co", dir.path(), false).await.file;
    let state = everything(&db).await;
    let key = key();
    for (file, trust, expected) in [
        (&unsigned, Trust::key(&key), "is not signed"),
        (
            &foreign,
            Trust::key(&key),
            "is not signed with this CAPLIQUIFY_BACKUP_KEY",
        ),
        (
            &signed,
            Trust::default(),
            "CAPLIQUIFY_BACKUP_KEY is not set",
        ),
    ] {
        let err = backup::restore(
            &db.pool,
            file,
            RestoreMode::Replace,
            trust,
            &actor(),
            &|_| {},
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(expected) && err.contains("--insecure-unsigned"),
            "{}: {err}",
            file.display()
        );
    }
    assert_eq!(
        everything(&db).await,
        state,
        "a refused archive changes nothing"
    );

    // The command line: refused without the flag, restored with it.
    let shown = unsigned.to_string_lossy().into_owned();
    let out = capliquify(&db, &["tenant", "restore", &shown, "--replace"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not signed"));
    assert_ok(&capliquify(
        &db,
        &[
            "tenant",
            "restore",
            &shown,
            "--replace",
            "--insecure-unsigned",
        ],
    ));
    // And a signed one with the key, as operators run it.
    assert_ok(&capliquify(
        &db,
        &["tenant", "restore", &signed.to_string_lossy(), "--replace"],
    ));
}

#[tokio::test]
async fn an_archive_entry_larger_than_its_cap_is_refused_before_it_is_read() {
    let dir = folder();
    let file = dir.path().join("huge.capliquify-backup");
    {
        let mut builder = tar::Builder::new(std::fs::File::create(&file).unwrap());
        let mut marker = tar::Header::new_ustar();
        marker.set_size(0);
        marker.set_cksum();
        builder
            .append_data(
                &mut marker,
                format!("{}1", archive::MARKER_PREFIX),
                &b""[..],
            )
            .unwrap();
        let huge = vec![b' '; 17 << 20];
        let mut header = tar::Header::new_ustar();
        header.set_size(huge.len() as u64);
        header.set_cksum();
        builder
            .append_data(&mut header, archive::MANIFEST, &huge[..])
            .unwrap();
        builder.finish().unwrap();
    }
    let err = archive::scan(&file).unwrap_err().to_string();
    assert!(
        err.contains("more than the 16777216 this build reads into memory"),
        "{err}"
    );
}
