//! The psql baseline of provisioning: one long-lived `psql` session running the tenant
//! migration SQL, one transaction per schema, timed by psql's own `\timing` (the tenancy
//! and scale benches).

use std::process::Stdio;

use anyhow::{Context as _, bail, ensure};
use capliquify::tenancy::migrate;
use sqlx::{AssertSqlSafe, PgPool};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::BenchServer;

/// `psql` with the flags every baseline uses: no ~/.psqlrc, quiet, stop at the first error,
/// warnings and errors only.
pub fn psql(server: &BenchServer) -> Command {
    let mut cmd = Command::new(server.tool("psql"));
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &server.bench_url])
        // Notices (e.g. "already exists, skipping"), once per tenant, would bury the progress.
        .env("PGOPTIONS", "-c client_min_messages=warning")
        .kill_on_drop(true);
    cmd
}

/// `psql --version`.
pub async fn psql_version(server: &BenchServer) -> anyhow::Result<String> {
    let out = Command::new(server.tool("psql"))
        .arg("--version")
        .output()
        .await
        .with_context(|| format!("running {} --version", server.tool("psql").display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The SQL create_tenant_schema runs, straight from the embedded tenant migrations.
pub fn tenant_sql() -> String {
    migrate::tenant_migrations()
        .iter()
        .map(|m| m.sql.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One `psql` process for a whole benchmark, so its start-up is not counted.
pub struct PsqlSession {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// The schemas and roles made so far, for [`PsqlSession::drop_made`].
    made: Vec<(String, String)>,
}

impl PsqlSession {
    pub async fn start(server: &BenchServer) -> anyhow::Result<Self> {
        let mut child = psql(server)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", server.tool("psql").display()))?;
        let mut stdin = child.stdin.take().context("psql stdin")?;
        let stdout = child.stdout.take().context("psql stdout")?;
        // Bare values, so marker lines are easy to recognise.
        stdin
            .write_all(b"\\pset tuples_only on\n\\pset format unaligned\n")
            .await?;
        Ok(Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            made: Vec::new(),
        })
    }

    /// Creates `n` schemas, one transaction each, named by `next_serial`. Returns per
    /// tenant the sum of psql's `\timing` lines and the wall time between server-clock
    /// markers around the tenant.
    pub async fn provision(
        &mut self,
        mut next_serial: impl FnMut() -> usize,
        tenant_sql: &str,
        n: usize,
    ) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
        let mut script = String::new();
        for _ in 0..n {
            let serial = next_serial();
            let schema = format!("bench_psql_{serial:06}");
            // The tenant's database role, with the rights grant_tenant_role gives it. Granted
            // through default privileges set before the tables exist, the cheapest raw SQL
            // there is: `GRANT … ON ALL TABLES IN SCHEMA` would scan pg_class, which grows
            // with the fleet (migration 0012).
            let role = format!("bench_psql_role_{}_{serial:06}", std::process::id());
            // Markers run with \timing off so they are not counted in the tenant's sum.
            script.push_str(&format!(
                "SELECT '@@begin ' || (extract(epoch FROM clock_timestamp()) * 1000)::numeric(20,3);\n\
                 \\timing on\n\
                 BEGIN;\n\
                 CREATE SCHEMA {schema};\n\
                 SET LOCAL search_path TO {schema};\n\
                 CREATE ROLE {role} NOLOGIN INHERIT IN ROLE capliquify_tenant;\n\
                 GRANT {role} TO capliquify_service;\n\
                 GRANT USAGE ON SCHEMA {schema} TO {role};\n\
                 ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role};\n\
                 ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role};\n\
                 {tenant_sql}\n\
                 COMMIT;\n\
                 \\timing off\n\
                 SELECT '@@end ' || (extract(epoch FROM clock_timestamp()) * 1000)::numeric(20,3);\n"
            ));
            self.made.push((schema, role));
        }
        script.push_str("\\echo @@batch\n");
        self.stdin.write_all(script.as_bytes()).await?;
        self.stdin.flush().await?;

        let (mut timing, mut wall) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut sum, mut begin) = (0.0, None::<f64>);
        loop {
            let Some(line) = self.lines.next_line().await? else {
                bail!("psql exited before finishing the provisioning script");
            };
            if line == "@@batch" {
                break;
            } else if let Some(rest) = line.strip_prefix("@@begin ") {
                begin = Some(rest.trim().parse()?);
                sum = 0.0;
            } else if let Some(rest) = line.strip_prefix("@@end ") {
                let end: f64 = rest.trim().parse()?;
                wall.push(end - begin.take().context("@@end without @@begin")?);
                timing.push(sum);
            } else if let Some(t) = parse_timing(&line) {
                sum += t;
            }
        }
        ensure!(
            timing.len() == n,
            "psql reported {} tenants, expected {n}",
            timing.len()
        );
        Ok((timing, wall))
    }

    /// Drops the schemas and roles this session made (untimed), so they neither count as
    /// part of the fleet nor look like orphans to `doctor`.
    pub async fn drop_made(&mut self, pool: &PgPool) -> anyhow::Result<()> {
        for (schema, role) in self.made.drain(..) {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; DROP OWNED BY {role}; DROP ROLE {role};"
            )))
            .execute(pool)
            .await
            .with_context(|| format!("dropping {schema} and {role}"))?;
        }
        Ok(())
    }

    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.stdin.write_all(b"\\q\n").await?;
        drop(self.stdin);
        let status = self.child.wait().await?;
        ensure!(status.success(), "psql exited with {status}");
        Ok(())
    }
}

/// `Time: 12.345 ms` or `Time: 1234.567 ms (00:01.235)` → milliseconds.
fn parse_timing(line: &str) -> Option<f64> {
    line.strip_prefix("Time: ")?
        .split_once(" ms")?
        .0
        .trim()
        .parse()
        .ok()
}
