//! Restoring an archive: verify everything, then rebuild, load, migrate and swap in one
//! transaction.
//!
//! Every path builds the schema the same way: `CREATE SCHEMA`, then
//! `migrate_tenant_schema(schema, <archive version>)` (the tables exactly as the archive knew
//! them), `COPY … FROM STDIN` per table in foreign-key order, then `migrate_tenant_schema`
//! again to bring an older archive to the current version. Everything, including the swap and
//! the audit row, is one transaction: a failure or a killed connection at any point leaves
//! the database as it was, with no temporary schema behind.

use std::collections::{BTreeMap, BTreeSet};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use uuid::Uuid;

use super::archive::{self, Found};
use super::signing::{self, Trust};
use super::{
    BackupError, FORMAT, FORMAT_VERSION, Manifest, OnProgress, PartKind, PartSummary, Progress,
};
use crate::audit::{self, Actor, Entry};
use crate::billing::Tier;
use crate::tenancy::catalog;
use crate::tenancy::ident::{SchemaName, TenantSlug};
use crate::tenancy::{NewTenant, TenancyError, registry};

/// The public tables an archive may carry rows of.
const PUBLIC_TABLES: &[&str] = &["tenants", "users", "subscriptions", "audit_logs"];

/// What a restore makes of the archive.
#[derive(Debug, Clone)]
pub enum RestoreMode {
    /// The archive's tenant no longer exists (e.g. it was purged): register it again with
    /// the archive's identity (id, slug, schema name, Clerk organization), its users, its
    /// subscription and, when archived, its audit rows.
    Recreate,
    /// The archive's tenant exists (same id): its schema is replaced by the archive's and its
    /// public rows are set as the archive says.
    Replace,
    /// A new tenant with its own identity and a copy of the archive's data.
    Clone {
        slug: String,
        /// Default: the archive's tenant name.
        name: Option<String>,
        /// Default: `unlinked-<new tenant id>`, which no Clerk organization has.
        clerk_org: Option<String>,
    },
}

impl RestoreMode {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Recreate => "recreate",
            Self::Replace => "replace",
            Self::Clone { .. } => "clone",
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub mode: &'static str,
    pub slug: String,
    pub tenant_id: Uuid,
    pub schema_name: String,
    pub clerk_organization_id: String,
    /// The tenant the archive was made of.
    pub source_slug: String,
    pub archive_schema_version: i64,
    pub schema_version: i64,
    /// Migrations applied after loading (an older archive brought to the current version).
    pub migrations_applied: i32,
    pub users_restored: u64,
    pub tables: Vec<PartSummary>,
    pub millis: u64,
}

/// A fully checked archive.
#[derive(Debug)]
pub struct Verified {
    pub path: PathBuf,
    pub manifest: Manifest,
    entries: BTreeMap<String, Found>,
    tenant_row: serde_json::Map<String, Value>,
    users: Vec<Value>,
    subscriptions: Vec<Value>,
    audit_logs: Vec<Value>,
}

/// Reads the whole archive and checks it: that it is ours and of a format this build reads,
/// that its manifest is signed as `trust` requires, that every part the manifest lists is
/// there with its size, row count and SHA-256 (and nothing else is), and that its public
/// rows belong to the tenant it claims.
pub async fn verify(path: &Path, trust: Trust<'_>) -> Result<Verified, BackupError> {
    let owned = path.to_owned();
    let scanned = tokio::task::spawn_blocking(move || archive::scan(&owned))
        .await
        .map_err(|e| BackupError::Io(std::io::Error::other(e)))??;
    let shown = path.display().to_string();
    let corrupt = |what: String| BackupError::Corrupt {
        path: shown.clone(),
        what,
    };
    if scanned.layout_version != FORMAT_VERSION {
        return Err(BackupError::UnsupportedFormat {
            path: shown.clone(),
            found: scanned.layout_version,
        });
    }
    // Before anything in the manifest is believed.
    if let Some(problem) = signing::refusal(trust, &scanned.manifest, scanned.signature.as_deref())
    {
        return Err(BackupError::Signature {
            path: shown.clone(),
            problem,
        });
    }
    let manifest: Manifest = serde_json::from_slice(&scanned.manifest)
        .map_err(|e| corrupt(format!("manifest.json does not parse ({e})")))?;
    if manifest.format != FORMAT {
        return Err(BackupError::NotAnArchive {
            path: shown.clone(),
            reason: format!("its manifest says format {:?}", manifest.format),
        });
    }
    if manifest.format_version != scanned.layout_version {
        return Err(corrupt(format!(
            "the manifest says format version {}, the first entry {}",
            manifest.format_version, scanned.layout_version
        )));
    }
    TenantSlug::parse(&manifest.tenant.slug)
        .map_err(|e| corrupt(format!("the manifest's tenant slug: {e}")))?;
    SchemaName::parse(&manifest.tenant.schema_name)
        .map_err(|e| corrupt(format!("the manifest's schema name: {e}")))?;
    let newest = manifest.migrations.iter().map(|m| m.version).max();
    if manifest.schema_version < 1 || newest != Some(manifest.schema_version) {
        return Err(corrupt(format!(
            "schema version {} does not match its migration list",
            manifest.schema_version
        )));
    }

    let mut listed = BTreeSet::new();
    for part in &manifest.parts {
        let expected_path = match part.kind {
            PartKind::Tenant => format!("data/{}.copy", part.table),
            PartKind::Public => format!("public/{}.ndjson", part.table),
        };
        if part.path != expected_path
            || (part.kind == PartKind::Public && !PUBLIC_TABLES.contains(&part.table.as_str()))
        {
            return Err(corrupt(format!("unexpected part {:?}", part.path)));
        }
        let found = scanned.entries.get(&part.path).ok_or_else(|| {
            corrupt(format!(
                "part {} is listed in the manifest but missing",
                part.path
            ))
        })?;
        if found.sha256 != part.sha256 {
            return Err(corrupt(format!(
                "part {} fails its checksum (SHA-256 {}…, the manifest says {}…)",
                part.path,
                found.sha256.get(..12).unwrap_or(""),
                part.sha256.get(..12).unwrap_or("")
            )));
        }
        if found.bytes != part.bytes || found.rows != part.rows {
            return Err(corrupt(format!(
                "part {} has {} rows in {} bytes, the manifest says {} rows in {} bytes",
                part.path, found.rows, found.bytes, part.rows, part.bytes
            )));
        }
        listed.insert(part.path.clone());
    }
    if let Some(extra) = scanned.entries.keys().find(|k| !listed.contains(*k)) {
        return Err(corrupt(format!(
            "entry {extra} is not listed in the manifest"
        )));
    }

    let rows_of = |table: &str| -> Result<Vec<Value>, BackupError> {
        let Some(bytes) = scanned.small.get(&format!("public/{table}.ndjson")) else {
            return Ok(Vec::new());
        };
        bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                serde_json::from_slice::<Value>(line).map_err(|e| {
                    corrupt(format!("public/{table}.ndjson: a row does not parse ({e})"))
                })
            })
            .collect()
    };
    let mut tenants = rows_of("tenants")?;
    if tenants.len() != 1 {
        return Err(corrupt(format!(
            "public/tenants.ndjson must hold the tenant's one row, it holds {}",
            tenants.len()
        )));
    }
    let Some(Value::Object(tenant_row)) = tenants.pop() else {
        return Err(corrupt("the tenant row is not a JSON object".into()));
    };
    let id = manifest.tenant.id.to_string();
    let claims = [
        ("id", id.as_str()),
        ("slug", manifest.tenant.slug.as_str()),
        ("schema_name", manifest.tenant.schema_name.as_str()),
    ];
    for (field, want) in claims {
        if tenant_row.get(field).and_then(Value::as_str) != Some(want) {
            return Err(corrupt(format!(
                "the tenant row's {field} is not the manifest's {want:?}"
            )));
        }
    }
    let users = rows_of("users")?;
    let subscriptions = rows_of("subscriptions")?;
    let audit_logs = rows_of("audit_logs")?;
    for (table, rows) in [
        ("users", &users),
        ("subscriptions", &subscriptions),
        ("audit_logs", &audit_logs),
    ] {
        if rows
            .iter()
            .any(|r| r.get("tenant_id").and_then(Value::as_str) != Some(id.as_str()))
        {
            return Err(corrupt(format!(
                "public/{table}.ndjson holds a row of another tenant"
            )));
        }
    }
    Ok(Verified {
        path: path.to_owned(),
        manifest,
        entries: scanned.entries,
        tenant_row,
        users,
        subscriptions,
        audit_logs,
    })
}

/// Restores the archive at `path` as `mode` says (see [`RestoreMode`]). Nothing changes
/// unless the archive verifies and the whole restore succeeds.
pub async fn restore(
    pool: &sqlx::PgPool,
    path: &Path,
    mode: RestoreMode,
    trust: Trust<'_>,
    actor: &Actor,
    progress: OnProgress<'_>,
) -> Result<RestoreReport, BackupError> {
    let started = std::time::Instant::now();
    let archive = verify(path, trust).await?;
    let manifest = &archive.manifest;
    let shown = path.display().to_string();

    let mut tx = pool.begin().await?;
    let latest = check_catalog(&mut tx, &archive).await?;

    // Who the restored tenant is, and where its schema is built.
    let (tenant_id, slug, target, build, clerk_org) = match &mode {
        RestoreMode::Replace => {
            // Locks in the order migrate_tenant_schema takes them (the schema's advisory
            // lock, then the registry row), so a fleet migration cannot deadlock with us.
            let tenant = registry::fetch(&mut tx, &manifest.tenant.slug, false)
                .await
                .map_err(|e| match e {
                    TenancyError::UnknownTenant(slug) => BackupError::Refused(format!(
                        "no tenant with slug {slug:?} to replace; restore without --replace to register it again, or with --as NEW_SLUG"
                    )),
                    other => other.into(),
                })?;
            if !tenant.scope()?.cluster.is_home() {
                return Err(BackupError::Refused(format!(
                    "tenant {:?} is on cluster {:?}; --replace works on tenants at home for now (`capliquify tenant move {} --to home` first); nothing was changed",
                    tenant.slug, tenant.cluster, tenant.slug
                )));
            }
            if tenant.id != manifest.tenant.id {
                return Err(BackupError::Refused(format!(
                    "tenant {:?} here has id {}, the backup's has id {}: it is another tenant with the same slug; nothing was changed (use --as NEW_SLUG for a copy)",
                    tenant.slug, tenant.id, manifest.tenant.id
                )));
            }
            if let Some(to) = &tenant.moving_to {
                return Err(BackupError::Refused(format!(
                    "tenant {:?} is being moved to cluster {to:?}; restore it when the move has ended; nothing was changed",
                    tenant.slug
                )));
            }
            let target = tenant.scope()?.schema;
            sqlx::query(
                "SELECT pg_advisory_xact_lock(hashtextextended('capliquify:tenant-schema:' || $1, 0))",
            )
            .bind(target.as_str())
            .execute(&mut *tx)
            .await?;
            // No move may start while we restore (tenancy::placement takes this lock).
            let unmoved: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(format!("capliquify:tenant-move:{}", tenant.id))
                    .fetch_one(&mut *tx)
                    .await?;
            if !unmoved {
                return Err(BackupError::Refused(format!(
                    "tenant {:?} is being moved; restore it when the move has ended; nothing was changed",
                    tenant.slug
                )));
            }
            registry::fetch(&mut tx, &tenant.slug, true).await?;
            let build = SchemaName::parse(&format!("tenant_r{}", Uuid::new_v4().simple()))
                .map_err(TenancyError::from)?;
            (
                tenant.id,
                tenant.slug,
                target,
                build,
                tenant.clerk_organization_id,
            )
        }
        RestoreMode::Recreate => {
            match registry::fetch(&mut tx, &manifest.tenant.slug, false).await {
                Ok(existing) => {
                    return Err(BackupError::Refused(format!(
                        "tenant {:?} exists (id {}); pass --replace to replace its data with the backup, or --as NEW_SLUG for a copy beside it",
                        existing.slug, existing.id
                    )));
                }
                Err(TenancyError::UnknownTenant(_)) => {}
                Err(other) => return Err(other.into()),
            }
            let mut row = archive.tenant_row.clone();
            // Back as a live tenant at home: a backup taken during the grace period would
            // otherwise be purged again by the next lifecycle run, one taken mid-move would
            // stay read-only, and the schema is built here whatever the archive says.
            for (field, value) in [
                ("schema_version", Value::Null),
                ("deleted_at", Value::Null),
                ("cluster", json!("home")),
                ("moving_to", Value::Null),
            ] {
                row.insert(field.into(), value);
            }
            let org = text(&row, "clerk_organization_id");
            insert_tenant(&mut tx, &row, &manifest.tenant.slug, &org).await?;
            let schema =
                SchemaName::parse(&manifest.tenant.schema_name).map_err(TenancyError::from)?;
            (
                manifest.tenant.id,
                manifest.tenant.slug.clone(),
                schema.clone(),
                schema,
                org,
            )
        }
        RestoreMode::Clone {
            slug,
            name,
            clerk_org,
        } => {
            let id = Uuid::new_v4();
            let name = name.clone().unwrap_or_else(|| manifest.tenant.name.clone());
            let org = clerk_org
                .clone()
                .unwrap_or_else(|| format!("unlinked-{}", id.simple()));
            let tier: Tier = serde_json::from_value(
                archive
                    .tenant_row
                    .get("subscription_tier")
                    .cloned()
                    .unwrap_or(Value::Null),
            )
            .unwrap_or(Tier::Starter);
            // The same checks as `tenant create` (slug, name, Clerk organization).
            let new = NewTenant::parse(slug, &name, tier, &org)?;
            let schema = SchemaName::for_tenant(id);
            let now = Utc::now();
            let mut row = archive.tenant_row.clone();
            for (field, value) in [
                ("id", json!(id)),
                ("slug", json!(new.slug.as_str())),
                ("name", json!(new.name)),
                ("schema_name", json!(schema.as_str())),
                ("clerk_organization_id", json!(new.clerk_organization_id)),
                ("created_at", json!(now)),
                ("updated_at", json!(now)),
                ("deleted_at", Value::Null),
                ("schema_version", Value::Null),
                ("cluster", json!("home")),
                ("moving_to", Value::Null),
                // Links to the original's Clerk organization and Stripe customer stay with
                // the original.
                ("stripe_customer_id", Value::Null),
                ("clerk_created_by", Value::Null),
                ("clerk_updated_at", Value::Null),
                ("stripe_event_at", Value::Null),
            ] {
                row.insert(field.into(), value);
            }
            insert_tenant(&mut tx, &row, new.slug.as_str(), &new.clerk_organization_id).await?;
            (
                id,
                new.slug.as_str().to_owned(),
                schema.clone(),
                schema,
                new.clerk_organization_id,
            )
        }
    };

    // Build: the archive's structure, its data, then the current version.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA {}",
        build.quoted()
    )))
    .execute(&mut *tx)
    .await
    .map_err(|e| match e.as_database_error().and_then(|d| d.code()) {
        Some(code) if code == "42P06" => BackupError::Refused(format!(
            "schema {build} already exists; nothing was changed (`capliquify doctor` names stray schemas)"
        )),
        _ => e.into(),
    })?;
    sqlx::query("SELECT public.migrate_tenant_schema($1, $2)")
        .bind(build.as_str())
        .bind(manifest.schema_version)
        .execute(&mut *tx)
        .await?;
    let tables = load(&mut tx, &archive, &build, progress).await?;
    let migrations_applied: i32 = sqlx::query_scalar("SELECT public.migrate_tenant_schema($1)")
        .bind(build.as_str())
        .fetch_one(&mut *tx)
        .await?;

    let mut users_restored = 0;
    match &mode {
        RestoreMode::Replace => {
            // Swap: the old schema is untouched until here, and the lock taken by
            // migrate_tenant_schema keeps a concurrent migration of it out.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('capliquify:tenant-schema:' || $1, 0))")
                .bind(target.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                target.quoted()
            )))
            .execute(&mut *tx)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER SCHEMA {} RENAME TO {}",
                build.quoted(),
                target.quoted()
            )))
            .execute(&mut *tx)
            .await?;
            // The version the schema reached (a migration loaded meanwhile included).
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE public.tenants SET schema_version =
                        (SELECT max(version) FROM {}.schema_migrations)
                  WHERE id = $1",
                target.quoted()
            )))
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
            // The registry row, members and subscription stay as they are: Clerk and Stripe
            // own them, and rewinding them would give a removed member access back or undo
            // a cancellation. Audit rows the trail lacks are added (it is append-only).
            insert_audit_rows(&mut tx, tenant_id, &archive).await?;
        }
        RestoreMode::Recreate => {
            users_restored = insert_public_rows(&mut tx, &archive).await?;
        }
        RestoreMode::Clone { .. } => {
            // Users, subscription and audit rows are not copied (see docs/operations.md).
            // The API credentials' envelopes are bound to the original tenant's id and do
            // not open here; they are kept (which integrations exist) but switched off.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {}.api_credentials SET is_active = false, auto_sync_enabled = false",
                target.quoted()
            )))
            .execute(&mut *tx)
            .await?;
        }
    }
    // The finished schema, under its final name, belongs to the tenant's database role
    // (created if the tenant is new or was purged with its role; migration 0006).
    sqlx::query("SELECT public.grant_tenant_role($1, $2)")
        .bind(tenant_id)
        .bind(target.as_str())
        .execute(&mut *tx)
        .await?;
    // Citus mode: the schema was built on the coordinator (as provisioning builds one); its
    // tables go to a worker with their rows (and leave no copy on the coordinator), and the
    // role gets its worker login (a purged tenant's or a clone's role is new). In this
    // transaction, as provisioning does: a restore that fails leaves no shard. Nothing
    // without Citus.
    if crate::db::citus::place_tenant(&mut tx, tenant_id, &target).await? {
        crate::db::citus::drop_local_copies(&mut tx, &target).await?;
    }

    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| shown.clone());
    let rows: BTreeMap<&str, u64> = tables.iter().map(|t| (t.path.as_str(), t.rows)).collect();
    let (action, metadata) = match &mode {
        RestoreMode::Clone { .. } => (
            "tenant.cloned",
            json!({
                "slug": slug, "source_slug": manifest.tenant.slug,
                "file": file,
                "archive_created_at": manifest.created_at,
                "archive_schema_version": manifest.schema_version, "rows": rows,
            }),
        ),
        _ => (
            "tenant.backup_restored",
            json!({
                "slug": slug, "mode": mode.as_str(), "file": file,
                "archive_created_at": manifest.created_at,
                "archive_schema_version": manifest.schema_version, "rows": rows,
                "users_restored": users_restored,
            }),
        ),
    };
    audit::record(
        &mut tx,
        actor,
        Entry {
            tenant_id: Some(tenant_id),
            action,
            resource_type: "tenant",
            resource_id: slug.to_string(),
            metadata,
        },
    )
    .await?;
    tx.commit().await?;

    Ok(RestoreReport {
        mode: mode.as_str(),
        slug,
        tenant_id,
        schema_name: target.as_str().to_owned(),
        clerk_organization_id: clerk_org,
        source_slug: manifest.tenant.slug.clone(),
        archive_schema_version: manifest.schema_version,
        schema_version: latest,
        migrations_applied,
        users_restored,
        tables,
        millis: started.elapsed().as_millis() as u64,
    })
}

/// The newest catalog version, after checking the catalog can rebuild the archive's
/// structure: it must know every migration the archive's schema had, with the same SQL.
async fn check_catalog(conn: &mut PgConnection, archive: &Verified) -> Result<i64, BackupError> {
    let catalog: BTreeMap<i64, Vec<u8>> = sqlx::query_as::<_, (i64, Vec<u8>)>(
        "SELECT version, checksum FROM public.tenant_migrations",
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let latest = catalog.keys().max().copied().unwrap_or(0);
    let shown = archive.path.display().to_string();
    if archive.manifest.schema_version > latest {
        return Err(BackupError::NewerSchema {
            path: shown,
            archive: archive.manifest.schema_version,
            latest,
        });
    }
    for m in &archive.manifest.migrations {
        if catalog.get(&m.version).map(|c| archive::hex(c)) != Some(m.checksum.clone()) {
            return Err(BackupError::MigrationMismatch {
                path: shown,
                version: m.version,
            });
        }
    }
    Ok(latest)
}

fn text(row: &serde_json::Map<String, Value>, field: &str) -> String {
    row.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Registers a tenant row given as JSON (every column of `public.tenants`).
async fn insert_tenant(
    conn: &mut PgConnection,
    row: &serde_json::Map<String, Value>,
    slug: &str,
    clerk_org: &str,
) -> Result<(), BackupError> {
    sqlx::query(
        "INSERT INTO public.tenants SELECT * FROM jsonb_populate_record(NULL::public.tenants, $1)",
    )
    .bind(Value::Object(row.clone()))
    .execute(conn)
    .await
    .map_err(|e| {
        if e.as_database_error().and_then(|d| d.constraint()) == Some("tenants_pkey") {
            BackupError::Refused(
                "a tenant with the backup's id exists under another slug; use --as NEW_SLUG for a copy (nothing was changed)".to_owned(),
            )
        } else {
            TenancyError::from_insert(e, slug, clerk_org).into()
        }
    })?;
    Ok(())
}

/// Loads every tenant table of the archive into `schema` (which has exactly the archive's
/// tables), parents before children so the foreign keys hold row by row.
async fn load(
    conn: &mut PgConnection,
    archive: &Verified,
    schema: &SchemaName,
    progress: OnProgress<'_>,
) -> Result<Vec<PartSummary>, BackupError> {
    let shown = archive.path.display().to_string();
    // Parents before children, so the foreign keys hold row by row.
    let ordered = catalog::tables(&mut *conn, schema).await?;
    let tables: BTreeMap<&str, &catalog::SchemaTable> =
        ordered.iter().map(|t| (t.name.as_str(), t)).collect();
    let parts: BTreeMap<&str, &super::Part> = archive
        .manifest
        .parts
        .iter()
        .filter(|p| p.kind == PartKind::Tenant)
        .map(|p| (p.table.as_str(), p))
        .collect();
    // The archive's names reach SQL only after they matched the catalog's exactly.
    for (name, part) in &parts {
        let table = tables.get(*name).ok_or_else(|| BackupError::Corrupt {
            path: shown.clone(),
            what: format!(
                "it has table {name}, which schema version {} does not have",
                archive.manifest.schema_version
            ),
        })?;
        if table.column_names() != part.columns {
            return Err(BackupError::Corrupt {
                path: shown.clone(),
                what: format!(
                    "table {name} has columns ({}), schema version {} has ({})",
                    part.columns.join(", "),
                    archive.manifest.schema_version,
                    table.column_names().join(", ")
                ),
            });
        }
    }
    if let Some(missing) = tables.keys().find(|t| !parts.contains_key(*t)) {
        return Err(BackupError::Corrupt {
            path: shown.clone(),
            what: format!("table {missing} is missing from it"),
        });
    }

    progress(Progress::Start {
        parts: ordered.len() as u64,
    });
    let mut file = tokio::fs::File::open(&archive.path)
        .await
        .map_err(|e| BackupError::Open {
            path: shown.clone(),
            error: e,
        })?;
    let mut done = Vec::with_capacity(ordered.len());
    let mut buf = vec![0u8; 256 * 1024];
    for table in &ordered {
        let name = table.name.as_str();
        let part = parts[name];
        let found = &archive.entries[&part.path];
        let sql = format!(
            "COPY {}.{} ({}) FROM STDIN",
            schema.quoted(),
            table.name.quoted(),
            table.column_list()
        );
        file.seek(SeekFrom::Start(found.offset)).await?;
        let mut left = found.bytes;
        let mut hash = Sha256::new();
        let mut copy = conn.copy_in_raw(&sql).await?;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = file.read(&mut buf[..want]).await?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            copy.send(&buf[..n]).await?;
            left -= n as u64;
        }
        // The file is read a second time here: it must still be what was verified.
        if left > 0 || archive::hex(&hash.finalize()) != part.sha256 {
            copy.abort("archive changed while being restored").await?;
            return Err(BackupError::Corrupt {
                path: shown.clone(),
                what: format!("part {} changed while it was being restored", part.path),
            });
        }
        let rows = copy.finish().await?;
        if rows != part.rows {
            return Err(BackupError::Corrupt {
                path: shown.clone(),
                what: format!(
                    "table {name}: {rows} rows loaded, the manifest says {}",
                    part.rows
                ),
            });
        }
        progress(Progress::Part { name, rows });
        done.push(PartSummary {
            path: part.path.clone(),
            rows,
            bytes: part.bytes,
        });
    }
    Ok(done)
}

/// Recreating a tenant: its users, subscription and (when archived) audit rows as they were.
async fn insert_public_rows(
    conn: &mut PgConnection,
    archive: &Verified,
) -> Result<u64, BackupError> {
    let users = super::super::members::restore_rows(conn, Value::Array(archive.users.clone()))
        .await
        .map_err(users_conflict)?;
    sqlx::query(
        "INSERT INTO public.subscriptions
         SELECT * FROM jsonb_populate_recordset(NULL::public.subscriptions, $1)",
    )
    .bind(Value::Array(archive.subscriptions.clone()))
    .execute(&mut *conn)
    .await?;
    insert_audit_rows(conn, archive.manifest.tenant.id, archive).await?;
    Ok(users)
}

/// Adds the archive's audit rows the trail does not have (append-only: existing rows are
/// never rewritten). A row's user that no longer exists is left out of it, as
/// `ON DELETE SET NULL` would have done.
async fn insert_audit_rows(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    archive: &Verified,
) -> Result<(), BackupError> {
    if archive.audit_logs.is_empty() {
        return Ok(());
    }
    // Only the restored tenant's rows, linked only to its own members.
    sqlx::query(
        "INSERT INTO public.audit_logs (id, tenant_id, user_id, action, resource_type,
                                        resource_id, ip_address, user_agent, metadata, created_at)
         SELECT r.id, r.tenant_id, u.id, r.action, r.resource_type, r.resource_id,
                r.ip_address, r.user_agent, r.metadata, r.created_at
           FROM jsonb_populate_recordset(NULL::public.audit_logs, $1) r
           LEFT JOIN public.users u ON u.id = r.user_id AND u.tenant_id = r.tenant_id
          WHERE r.tenant_id = $2
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(Value::Array(archive.audit_logs.clone()))
    .bind(tenant_id)
    .execute(conn)
    .await?;
    Ok(())
}

fn users_conflict(e: sqlx::Error) -> BackupError {
    match e.as_database_error().and_then(|d| d.constraint()) {
        Some("users_clerk_user_id_key") => BackupError::Refused(
            "a user of the backup (same Clerk user id) now belongs to another tenant; nothing was changed".into(),
        ),
        _ => e.into(),
    }
}
