//! Per-tenant backup, restore and clone.
//!
//! A backup is one archive file ([`archive`]) holding every table of one tenant's schema
//! (data only: the structure follows from the schema version, i.e. the tenant migrations)
//! and the tenant's public rows, read in one `REPEATABLE READ READ ONLY` transaction so all
//! parts come from the same snapshot. It touches only this tenant's objects: the tables are
//! found through the schema's own catalog entries (by namespace, through indexes), so its
//! time does not grow with the number of other tenants, unlike `pg_dump -n`, which reads the
//! whole catalog.
//!
//! [`restore`] verifies an archive in full before it changes anything, then rebuilds the
//! schema from the tenant migrations at the archive's version, loads the data, migrates it
//! to the current version and swaps it in: all in one transaction. Archives are signed
//! with the operator's key ([`signing`]); a restore refuses an unsigned or mis-signed one
//! unless told otherwise.

pub mod archive;
pub mod restore;
pub mod signing;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::TenancyError;
use super::catalog::{self, CatalogError};
use super::ident::SchemaName;
use super::registry;
use crate::audit::{self, Actor, Entry};

pub use restore::{RestoreMode, RestoreReport, restore};
pub use signing::{BackupKey, Trust};

/// What the manifest's `format` says.
pub const FORMAT: &str = "capliquify-tenant-backup";
/// The archive layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// File name extension of archives.
pub const EXTENSION: &str = "capliquify-backup";

/// What can go wrong backing up or restoring. Messages name the file or tenant and what is
/// wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    #[error("{path} is not a capliquify tenant backup: {reason}")]
    NotAnArchive { path: String, reason: String },
    #[error("backup {path} is damaged: {what}; nothing was changed")]
    Corrupt { path: String, what: String },
    #[error(
        "backup {path} has format version {found}; this capliquify reads version {FORMAT_VERSION} (use the capliquify that wrote it, or a newer one)"
    )]
    UnsupportedFormat { path: String, found: u32 },
    #[error(
        "backup {path} is of schema version {archive}, newer than this database's tenant migrations (version {latest}); run a newer capliquify and `capliquify migrate` first"
    )]
    NewerSchema {
        path: String,
        archive: i64,
        latest: i64,
    },
    #[error(
        "backup {path} was made with a tenant migration {version} that this database's catalog lacks or holds with other SQL (checksums differ): the archive's structure cannot be rebuilt here; restore it where that migration is known"
    )]
    MigrationMismatch { path: String, version: i64 },
    #[error("{0}")]
    Refused(String),
    #[error(
        "backup {path} {problem}; nothing was changed (`tenant restore --insecure-unsigned` restores it without checking, only for a file you trust)"
    )]
    Signature { path: String, problem: String },
    // Not a `source` field: the message already carries the I/O error, and `{:#}` would
    // print it twice.
    #[error("cannot open {path}: {error}")]
    Open { path: String, error: std::io::Error },
    #[error("{0} already exists; choose another file with -o")]
    OutputExists(String),
    #[error("file error: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<CatalogError> for BackupError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Db(e) => Self::Database(e),
            CatalogError::Name(e) => Self::Refused(e.to_string()),
            CatalogError::Cycle(tables) => Self::Refused(format!(
                "the tenant tables' foreign keys form a cycle ({tables}); this restore cannot order them"
            )),
        }
    }
}

/// The archive's table of contents (`manifest.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// The capliquify version that wrote it.
    pub tool_version: String,
    pub tenant: ManifestTenant,
    /// The schema's version (newest tenant migration applied) when it was backed up.
    pub schema_version: i64,
    /// The tenant migrations the schema had applied, with their SHA-384 checksums (hex), so
    /// a restore can check it rebuilds the same structure.
    pub migrations: Vec<AppliedMigration>,
    pub created_at: DateTime<Utc>,
    pub with_audit: bool,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestTenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub schema_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppliedMigration {
    pub version: i64,
    pub checksum: String,
}

/// One part of the archive: a tenant table or a set of public rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    /// Entry name in the archive.
    pub path: String,
    /// `tenant` (COPY text of a schema table) or `public` (NDJSON rows of a public table).
    pub kind: PartKind,
    pub table: String,
    /// COPY column list (tenant tables; generated columns are left out and recomputed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartKind {
    Tenant,
    Public,
}

/// Progress of a long run, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// `parts` steps follow.
    Start { parts: u64 },
    /// One step is done.
    Part { name: &'a str, rows: u64 },
}

/// A progress callback; `&|_| {}` for none.
pub type OnProgress<'a> = &'a (dyn Fn(Progress<'_>) + Send + Sync);

/// What a backup wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub file: PathBuf,
    pub bytes: u64,
    pub slug: String,
    pub tenant_id: Uuid,
    pub schema_version: i64,
    pub with_audit: bool,
    pub created_at: DateTime<Utc>,
    pub millis: u64,
    pub parts: Vec<PartSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartSummary {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// The default file name: `<slug>-<UTC time>.capliquify-backup`.
pub fn default_file_name(slug: &str, at: DateTime<Utc>) -> String {
    format!("{slug}-{}.{EXTENSION}", at.format("%Y%m%dT%H%M%SZ"))
}

/// Backs up tenant `slug` to `output` (default: [`default_file_name`] in the current
/// folder), signed with `key` when given, and records a `tenant.backup` audit row once the
/// file is complete.
pub async fn backup(
    pool: &PgPool,
    slug: &str,
    output: Option<&Path>,
    with_audit: bool,
    key: Option<&BackupKey>,
    actor: &Actor,
    progress: OnProgress<'_>,
) -> Result<BackupReport, BackupError> {
    let started = std::time::Instant::now();
    let now = Utc::now();
    let file = match output {
        Some(path) => path.to_owned(),
        None => PathBuf::from(default_file_name(slug, now)),
    };
    let mut report = write_archive(pool, slug, &file, with_audit, key, progress).await?;
    // The backup's transaction is read-only: the audit row gets a small one of its own, and
    // an archive that could not be audited is removed, so no unrecorded backup remains.
    let audited = async {
        let mut tx = pool.begin().await?;
        audit::record(
            &mut tx,
            actor,
            Entry {
                tenant_id: Some(report.tenant_id),
                action: "tenant.backup",
                resource_type: "tenant",
                resource_id: slug.to_string(),
                metadata: json!({
                    "slug": report.slug,
                    "file": report.file.file_name().map(|f| f.to_string_lossy().into_owned()),
                    "bytes": report.bytes,
                    "schema_version": report.schema_version,
                    "with_audit": with_audit,
                    "signed": key.is_some(),
                    "rows": report.parts.iter().map(|p| (p.path.clone(), p.rows)).collect::<std::collections::BTreeMap<_, _>>(),
                }),
            },
        )
        .await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = audited {
        let _ = tokio::fs::remove_file(&report.file).await;
        return Err(e.into());
    }
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Writes the archive of tenant `slug` to `file` (refusing to overwrite one), through a
/// temporary file in the same folder that is renamed into place only when complete; with
/// `key`, its manifest is signed (`manifest.sig`).
pub async fn write_archive(
    pool: &PgPool,
    slug: &str,
    file: &Path,
    with_audit: bool,
    key: Option<&BackupKey>,
    progress: OnProgress<'_>,
) -> Result<BackupReport, BackupError> {
    let started = std::time::Instant::now();
    if tokio::fs::try_exists(file).await? {
        return Err(BackupError::OutputExists(file.display().to_string()));
    }
    let folder = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    // Removed on drop: a failure (full disk, dropped connection) leaves nothing behind, and
    // nothing ever carries the final name before it is complete.
    let temp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.",
            file.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        ))
        .suffix(".partial")
        .tempfile_in(&folder)
        .map_err(|e| BackupError::Open {
            path: folder.display().to_string(),
            error: e,
        })?;

    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    // The first query takes the snapshot: the registry row and every table below agree.
    let tenant = registry::fetch(&mut tx, slug, false).await?;
    let scope = tenant.scope()?;
    if !scope.cluster.is_home() {
        // One snapshot cannot span two clusters (registry at home, data elsewhere).
        return Err(BackupError::Refused(format!(
            "tenant {slug:?} is on cluster {:?}; back up only tenants at home for now (`capliquify tenant move {slug} --to home` first); nothing was written",
            scope.cluster.as_str()
        )));
    }
    // The service's role (the console's backups) has no rights on tenant schemas (least
    // privilege, public migration 0006): it reads the tenant's tables as the tenant's own
    // role, of which it is a member, and the public rows as itself. An owner reads all as
    // itself.
    let as_tenant: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace n
                         WHERE n.nspname = $1 AND NOT has_schema_privilege(n.oid, 'USAGE'))",
    )
    .bind(scope.schema.as_str())
    .fetch_one(&mut *tx)
    .await?;
    if as_tenant {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET LOCAL ROLE \"{}\"",
            scope.role()
        )))
        .execute(&mut *tx)
        .await?;
    }
    // Written in name order (the archive's layout); restore orders them itself.
    let mut tables = catalog::tables(&mut tx, &scope.schema).await?;
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    if tables.is_empty() {
        return Err(BackupError::Refused(format!(
            "tenant {slug:?} has no schema {} (or it holds no tables); run `capliquify tenant repair {slug}`",
            scope.schema
        )));
    }
    let migrations = applied_migrations(&mut tx, &scope.schema).await?;
    let schema_version = migrations.last().map_or(0, |m| m.version);
    let created_at = Utc::now();
    let public_tables: &[&str] = if with_audit {
        &["tenants", "users", "subscriptions", "audit_logs"]
    } else {
        &["tenants", "users", "subscriptions"]
    };
    progress(Progress::Start {
        parts: (tables.len() + public_tables.len()) as u64,
    });

    let handle = tokio::fs::File::from_std(temp.reopen()?);
    let mut out = archive::Writer::new(handle, created_at.timestamp().max(0) as u64);
    out.entry(&format!("{}{FORMAT_VERSION}", archive::MARKER_PREFIX), &[])
        .await?;
    let mut parts = Vec::new();
    for table in &tables {
        let path = format!("data/{}.copy", table.name);
        out.begin(&path).await?;
        let sql = format!(
            "COPY {}.{} ({}) TO STDOUT",
            scope.schema.quoted(),
            table.name.quoted(),
            table.column_list()
        );
        let mut stream = tx.copy_out_raw(&sql).await?;
        while let Some(chunk) = stream.next().await {
            out.write(&chunk?).await?;
        }
        drop(stream);
        let written = out.end().await?;
        progress(Progress::Part {
            name: table.name.as_str(),
            rows: written.rows,
        });
        parts.push(part(
            path,
            PartKind::Tenant,
            table.name.as_str(),
            table.column_names(),
            written,
        ));
    }
    if as_tenant {
        sqlx::query("RESET ROLE").execute(&mut *tx).await?;
    }
    for table in public_tables {
        let path = format!("public/{table}.ndjson");
        out.begin(&path).await?;
        // Table names are from the fixed list above; the tenant id is a bind parameter.
        let sql = sqlx::AssertSqlSafe(match *table {
            "tenants" => {
                "SELECT to_jsonb(r)::text FROM public.tenants r WHERE r.id = $1".to_owned()
            }
            other => format!(
                "SELECT to_jsonb(r)::text FROM public.{other} r WHERE r.tenant_id = $1 ORDER BY r.id"
            ),
        });
        let mut rows = sqlx::query_scalar::<_, String>(sql)
            .bind(tenant.id)
            .fetch(&mut *tx);
        let mut line = Vec::new();
        while let Some(row) = rows.next().await {
            line.clear();
            line.extend_from_slice(row?.as_bytes());
            line.push(b'\n');
            out.write(&line).await?;
        }
        drop(rows);
        let written = out.end().await?;
        progress(Progress::Part {
            name: &format!("public.{table}"),
            rows: written.rows,
        });
        parts.push(part(path, PartKind::Public, table, Vec::new(), written));
    }
    tx.commit().await?;

    let manifest = Manifest {
        format: FORMAT.to_owned(),
        format_version: FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        tenant: ManifestTenant {
            id: tenant.id,
            slug: tenant.slug.clone(),
            name: tenant.name.clone(),
            schema_name: tenant.schema_name.clone(),
        },
        schema_version,
        migrations,
        created_at,
        with_audit,
        parts,
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
    out.entry(archive::MANIFEST, &manifest_json).await?;
    if let Some(key) = key {
        out.entry(archive::SIGNATURE, key.sign(&manifest_json).as_bytes())
            .await?;
    }
    let bytes = out.finish().await?;
    temp.persist_noclobber(file).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            BackupError::OutputExists(file.display().to_string())
        } else {
            BackupError::Io(e.error)
        }
    })?;
    // The rename is durable once the folder's entry is on disk.
    if let Ok(dir) = std::fs::File::open(&folder) {
        let _ = dir.sync_all();
    }
    Ok(BackupReport {
        file: file.to_owned(),
        bytes,
        slug: tenant.slug,
        tenant_id: tenant.id,
        schema_version,
        with_audit,
        created_at,
        millis: started.elapsed().as_millis() as u64,
        parts: manifest
            .parts
            .iter()
            .map(|p| PartSummary {
                path: p.path.clone(),
                rows: p.rows,
                bytes: p.bytes,
            })
            .collect(),
    })
}

fn part(
    path: String,
    kind: PartKind,
    table: &str,
    columns: Vec<String>,
    written: archive::Written,
) -> Part {
    Part {
        path,
        kind,
        table: table.to_owned(),
        columns,
        rows: written.rows,
        bytes: written.bytes,
        sha256: written.sha256,
    }
}

/// The schema's own migration history, oldest first.
async fn applied_migrations(
    conn: &mut PgConnection,
    schema: &SchemaName,
) -> Result<Vec<AppliedMigration>, sqlx::Error> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT version, checksum FROM {}.schema_migrations ORDER BY version",
        schema.quoted()
    )))
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(version, checksum)| AppliedMigration {
            version,
            checksum: archive::hex(&checksum),
        })
        .collect())
}

/// Copies tenant `slug` into a new tenant `new_slug`: a backup into a temporary folder (the
/// system's), restored as a clone ([`RestoreMode::Clone`]), the file removed afterwards.
///
/// Why through an archive rather than `INSERT INTO new.t SELECT * FROM old.t`: one path
/// builds every restored schema (rebuilt from the migrations at the snapshot's version,
/// loaded, migrated), so a clone of a tenant whose schema is behind works like a restore of
/// an old archive, and the source is read in one read-only snapshot without locking it.
pub async fn clone_tenant(
    pool: &PgPool,
    slug: &str,
    new_slug: &str,
    name: Option<String>,
    clerk_org: Option<String>,
    actor: &Actor,
    progress: OnProgress<'_>,
) -> Result<RestoreReport, BackupError> {
    // Refuse a bad or taken target before copying anything.
    super::TenantSlug::parse(new_slug).map_err(TenancyError::from)?;
    match registry::find(pool, new_slug).await {
        Ok(_) => return Err(TenancyError::SlugTaken(new_slug.to_owned()).into()),
        Err(TenancyError::UnknownTenant(_)) => {}
        Err(other) => return Err(other.into()),
    }
    let folder = tempfile::Builder::new()
        .prefix("capliquify-clone-")
        .tempdir()?;
    let file = folder.path().join(default_file_name(slug, Utc::now()));
    // The archive never leaves this process: a key of its own signs and checks it.
    let key = BackupKey::ephemeral()?;
    write_archive(pool, slug, &file, false, Some(&key), progress).await?;
    let mode = RestoreMode::Clone {
        slug: new_slug.to_owned(),
        name,
        clerk_org,
    };
    restore(pool, &file, mode, Trust::key(&key), actor, progress).await
}
