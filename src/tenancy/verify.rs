//! Health of the tenancy layer: the guide's verification summary, versions, and the
//! isolation checks of `verify_tenant_isolation()`.

use serde::Serialize;
use sqlx::PgPool;

use super::migrate::{PUBLIC_MIGRATIONS, latest_version, tenant_migrations};

/// One row of `tenancy_summary()` (the guide's 003_testing_queries.sql output).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SummaryRow {
    pub check_name: String,
    pub count: i64,
    pub expected: String,
}

/// One row of `verify_tenant_isolation()`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Check {
    pub test_name: String,
    pub result: String,
    pub details: String,
}

impl Check {
    /// PASS, or INFO: a line that reports a state without judging it (e.g. the Citus mode).
    pub fn passed(&self) -> bool {
        matches!(self.result.as_str(), "PASS" | "INFO")
    }
}

/// Versions of the pieces that must agree.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub capliquify: &'static str,
    pub postgres: String,
    pub public_schema: i64,
    pub public_schema_expected: i64,
    pub tenant_catalog: i64,
    pub tenant_catalog_expected: i64,
}

/// Everything `capliquify doctor` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub versions: Versions,
    pub summary: Vec<SummaryRow>,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }
}

/// Everything `capliquify doctor` checks (and the console's System page shows): [`report`]
/// and the checks of the connected role's privileges and of Citus.
pub async fn doctor(pool: &PgPool) -> sqlx::Result<Report> {
    let mut report = report(pool).await?;
    report
        .checks
        .push(crate::db::privileges::doctor_check(pool).await?);
    report
        .checks
        .push(crate::db::citus::doctor_check(pool).await?);
    Ok(report)
}

/// The versions of this build, the server, the public schema and the tenant catalog, and
/// whether the public schema was migrated at all (else its versions are 0).
pub async fn versions(pool: &PgPool) -> sqlx::Result<(Versions, bool)> {
    let postgres: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(pool)
        .await?;
    let migrated: bool = sqlx::query_scalar(
        "SELECT to_regprocedure('public.verify_tenant_isolation()') IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    let mut versions = Versions {
        capliquify: env!("CARGO_PKG_VERSION"),
        postgres,
        public_schema: 0,
        public_schema_expected: latest_version(&PUBLIC_MIGRATIONS.migrations),
        tenant_catalog: 0,
        tenant_catalog_expected: latest_version(tenant_migrations()),
    };
    if migrated {
        let (public_schema, tenant_catalog): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT max(version) FROM public._sqlx_migrations WHERE success),
                    (SELECT max(version) FROM public.tenant_migrations)",
        )
        .fetch_one(pool)
        .await?;
        versions.public_schema = public_schema.unwrap_or(0);
        versions.tenant_catalog = tenant_catalog.unwrap_or(0);
    }
    Ok((versions, migrated))
}

/// Gathers the report. A database that was never migrated yields a report with a failing
/// check rather than an error, so `doctor` can say what to do.
pub async fn report(pool: &PgPool) -> sqlx::Result<Report> {
    let (versions, migrated) = versions(pool).await?;
    if !migrated {
        return Ok(Report {
            versions,
            summary: Vec::new(),
            checks: vec![Check {
                test_name: "public_schema_migrated".into(),
                result: "FAIL".into(),
                details: "the capliquify public schema is missing; run `capliquify migrate`".into(),
            }],
        });
    }
    let summary =
        sqlx::query_as("SELECT check_name, count, expected FROM public.tenancy_summary()")
            .fetch_all(pool)
            .await?;
    let mut checks: Vec<Check> =
        sqlx::query_as("SELECT test_name, result, details FROM public.verify_tenant_isolation()")
            .fetch_all(pool)
            .await?;
    checks.push(histories(pool).await?);
    checks.push(roles(pool).await?);
    checks.push(schema_pool(pool, versions.tenant_catalog).await?);
    let current = versions.public_schema == versions.public_schema_expected
        && versions.tenant_catalog == versions.tenant_catalog_expected;
    checks.insert(
        0,
        Check {
            test_name: "migrations_current".into(),
            result: if current { "PASS" } else { "FAIL" }.into(),
            details: format!(
                "public schema {}/{}, tenant catalog {}/{}{}",
                versions.public_schema,
                versions.public_schema_expected,
                versions.tenant_catalog,
                versions.tenant_catalog_expected,
                if current {
                    ""
                } else {
                    "; run `capliquify migrate`"
                }
            ),
        },
    );
    Ok(Report {
        versions,
        summary,
        checks,
    })
}

/// The schema pool's unclaimed schemas are at the catalog's newest tenant migration (a sign-up
/// migrates the one it claims, but `capliquify migrate` should have left none behind).
async fn schema_pool(pool: &PgPool, latest: i64) -> sqlx::Result<Check> {
    let status = super::schema_pool::status(pool, latest).await?;
    let (result, details) = if status.behind == 0 {
        (
            "PASS",
            format!(
                "{} unclaimed schema(s), all at version {latest}",
                status.unclaimed
            ),
        )
    } else {
        (
            "FAIL",
            format!(
                "{} of {} unclaimed schema(s) behind version {latest}; run `capliquify migrate`",
                status.behind, status.unclaimed
            ),
        )
    };
    Ok(Check {
        test_name: "schema_pool_current".into(),
        result: result.into(),
        details,
    })
}

/// Every tenant schema's applied history against the catalog: a version whose checksum the
/// catalog does not have means someone edited a schema's history or an applied migration.
/// (`migrate_tenant_schema` trusts the registry's version for registered tenants, so this
/// is where drift shows.) One query per tenant, each its own short transaction, so the
/// check holds no locks across the fleet.
async fn histories(pool: &PgPool) -> sqlx::Result<Check> {
    let tenants: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.slug::text, t.schema_name::text FROM public.tenants t
          WHERE to_regclass(quote_ident(t.schema_name) || '.schema_migrations') IS NOT NULL
          ORDER BY t.slug",
    )
    .fetch_all(pool)
    .await?;
    let mut drifted = Vec::new();
    for (slug, schema) in &tenants {
        let Ok(schema) = super::SchemaName::parse(schema) else {
            continue;
        };
        let version: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT min(s.version) FROM {}.schema_migrations s
               LEFT JOIN public.tenant_migrations c USING (version)
              WHERE c.checksum IS DISTINCT FROM s.checksum",
            schema.quoted()
        )))
        .fetch_one(pool)
        .await?;
        if let Some(version) = version {
            drifted.push(format!("{slug}: migration {version}"));
        }
    }
    Ok(Check {
        test_name: "tenant_histories_match_catalog".into(),
        result: if drifted.is_empty() { "PASS" } else { "FAIL" }.into(),
        details: if drifted.is_empty() {
            format!(
                "{} tenant schema histories match the catalog",
                tenants.len()
            )
        } else {
            format!(
                "applied with a checksum the catalog lacks: {}",
                drifted
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    })
}

/// Every live tenant's database role exists and holds its rights on its own schema, and no
/// tenant schema or table is granted to any role (PUBLIC included) but its owner and its
/// tenant's role (public migration 0006; `capliquify tenant repair SLUG` re-grants).
async fn roles(pool: &PgPool) -> sqlx::Result<Check> {
    let mut problems: Vec<String> = sqlx::query_scalar(super::lifecycle::ROLE_PROBLEMS_SQL)
        .bind(Option::<uuid::Uuid>::None)
        .fetch_all(pool)
        .await?;
    let foreign: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT g.object || ' is also granted to ' || coalesce(r.rolname, 'PUBLIC')
           FROM (SELECT n.nspname::text AS object, n.nspname AS schema, n.nspowner AS owner, a.grantee
                   FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
                  WHERE n.nspname LIKE 'tenant\\_%'
                 UNION ALL
                 SELECT n.nspname || '.' || c.relname, n.nspname, c.relowner, a.grantee
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  CROSS JOIN LATERAL aclexplode(c.relacl) a
                  WHERE n.nspname LIKE 'tenant\\_%') g
           LEFT JOIN pg_roles r ON r.oid = g.grantee
           LEFT JOIN public.tenants t ON t.schema_name = g.schema
           -- (an unclaimed pooled schema already belongs to the role of its future tenant)
           LEFT JOIN public.tenant_schema_pool p ON p.schema_name = g.schema
          WHERE g.grantee <> g.owner
            AND (r.rolname IS NULL
                 OR r.rolname IS DISTINCT FROM public.tenant_role_name(coalesce(t.id, p.tenant_id)))
          ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    problems.extend(foreign);
    Ok(Check {
        test_name: "tenant_roles_in_place".into(),
        result: if problems.is_empty() { "PASS" } else { "FAIL" }.into(),
        details: if problems.is_empty() {
            "every live tenant has its own role, granted on its own schema only".into()
        } else {
            format!(
                "{}; run `capliquify tenant repair SLUG`",
                problems
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    })
}
