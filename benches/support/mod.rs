//! What the benchmarks share: their flags parsed one way ([`args`]), and what they need from
//! the server: `DATABASE_URL` or the embedded cluster (in durable mode, as in production), a
//! bench database recreated for every run, and the PostgreSQL client tools (psql, pgbench)
//! matching the server. Pieces more than one bench runs live in the submodules: the
//! operators' commands as processes ([`commands`]), CPU time from `/proc` ([`cpu`]), a fleet of real tenants and the request
//! load over it ([`fleet`]), pgbench with per-transaction logs ([`pgbench`]), the psql
//! provisioning baseline ([`psql`]), and sign-ups as they arrive ([`signup`]).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use capliquify::db::embedded::{EmbeddedCluster, EmbeddedOptions};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

#[allow(dead_code)] // the tenancy and scale benches'; compiled, unused, into the others
pub mod commands;
#[allow(dead_code)] // the api, fleet and scale benches'; compiled, unused, into the others
pub mod cpu;
#[allow(dead_code)] // the fleet, api and scale benches'; compiled, unused, into the others
pub mod fleet;
#[allow(dead_code)] // the api and scale benches'; compiled, unused, into the others
pub mod pgbench;
#[allow(dead_code)] // the tenancy and scale benches'; compiled, unused, into the others
pub mod psql;
#[allow(dead_code)] // the tenancy and scale benches'; compiled, unused, into the others
pub mod signup;

/// A bench's flags, with the checks between them that clap cannot state.
pub trait BenchArgs: clap::Parser {
    /// `Err` with a message naming the flags when their values do not go together.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The bench's flags from the command line, or clap's help or error and exit.
///
/// `cargo bench` adds `--bench` to the arguments of `harness = false` targets, to tell a
/// libtest harness it runs as a benchmark; no bench here has such a flag, so it is dropped.
pub fn args<T: BenchArgs>() -> T {
    let args = T::parse_from(std::env::args_os().filter(|a| a != "--bench"));
    if let Err(message) = args.check() {
        T::command()
            .error(clap::error::ErrorKind::ValueValidation, message)
            .exit();
    }
    args
}

pub struct BenchServer {
    pub admin_url: String,
    pub bench_url: String,
    database: String,
    /// The embedded cluster when `DATABASE_URL` is unset.
    cluster: Option<EmbeddedCluster>,
}

impl BenchServer {
    /// `DATABASE_URL`'s server, or the embedded cluster under `target/<folder>`.
    pub fn open(database: &str, folder: &str) -> anyhow::Result<Self> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => {
                let mut bench = url::Url::parse(&url).context("DATABASE_URL does not parse")?;
                bench.set_path(database);
                Ok(Self {
                    admin_url: url,
                    bench_url: bench.to_string(),
                    database: database.into(),
                    cluster: None,
                })
            }
            _ => {
                let root = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("target")
                    .join(folder);
                eprintln!(
                    "DATABASE_URL unset: starting the embedded cluster under {}",
                    root.display()
                );
                // Durable: fsync at commit is part of every path's cost, as in production.
                let cluster = EmbeddedCluster::start(&EmbeddedOptions {
                    root,
                    durable: true,
                    database: database.into(),
                })?;
                Ok(Self {
                    admin_url: cluster.admin_url(),
                    bench_url: cluster.url(),
                    database: database.into(),
                    cluster: Some(cluster),
                })
            }
        }
    }

    /// The bench database's URL for another role (the service's login role): same server,
    /// same password (the embedded cluster's; give the role it, or no password elsewhere).
    #[allow(dead_code)] // not the backup, console, forecast or import benches'
    pub fn bench_url_as(&self, user: &str) -> anyhow::Result<String> {
        let mut url = url::Url::parse(&self.bench_url).context("bench URL does not parse")?;
        url.set_username(user)
            .map_err(|()| anyhow::anyhow!("the bench URL takes no user name"))?;
        Ok(url.to_string())
    }

    /// The database for the report: its URL without a password, and where it comes from.
    pub fn describe(&self) -> String {
        let origin = if self.cluster.is_some() {
            "embedded, durable"
        } else {
            "DATABASE_URL"
        };
        format!("{} ({origin})", capliquify::db::redact(&self.bench_url))
    }

    /// The report's first lines: the bench, when, on how many cores, how busy the machine
    /// was (other work takes cores from both sides of every ratio), the server and database.
    #[allow(dead_code)] // not every bench prints this header
    pub fn print_header(&self, bench: &str, server_version: &str) {
        println!("capliquify {bench} benchmark");
        println!(
            "  date:     {}",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
        );
        println!(
            "  cores:    {}",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "  loadavg:  {}",
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        println!("  server:   {server_version}");
        println!("  database: {}", self.describe());
    }

    /// A PostgreSQL client tool: the embedded cluster's own, else the one on PATH.
    #[allow(dead_code)] // the fleet bench runs no client tool
    pub fn tool(&self, name: &str) -> PathBuf {
        self.cluster
            .as_ref()
            .map(|c| c.bin_dir().join(name))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(name))
    }

    async fn admin(&self, sql: String) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .context("connecting to the maintenance database")?;
        sqlx::query(AssertSqlSafe(sql.clone()))
            .execute(&mut admin)
            .await
            .with_context(|| sql)?;
        admin.close().await?;
        Ok(())
    }

    /// Drops and creates the bench database, so runs do not depend on each other.
    pub async fn recreate_database(&self) -> anyhow::Result<()> {
        self.drop_database().await?;
        self.admin(format!("CREATE DATABASE \"{}\"", self.database))
            .await
    }

    pub async fn drop_database(&self) -> anyhow::Result<()> {
        self.admin(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.database
        ))
        .await
    }

    /// Stops the embedded cluster if this run started it.
    pub fn stop(self) -> anyhow::Result<()> {
        if let Some(cluster) = self.cluster
            && cluster.started_here()
        {
            eprintln!("stopping the embedded cluster");
            cluster.stop()?;
        }
        Ok(())
    }
}

/// The median of `xs` (the mean of the middle two for an even count; NaN when empty).
#[allow(dead_code)] // not every bench reports medians
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs `benches/peer/statsforecast_peer.py` with `python` (a venv with statsforecast):
/// `job` as JSON on its stdin, its JSON report from its stdout.
#[allow(dead_code)] // the forecast benches'
pub fn statsforecast_peer(
    python: &str,
    job: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/peer/statsforecast_peer.py"
    );
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {python}"))?;
    child
        .stdin
        .take()
        .context("peer stdin")?
        .write_all(job.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "the peer failed");
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// A bench's whole life on its server: opens it (`database` on `DATABASE_URL`, or the
/// embedded cluster under `target/<folder>`; blocking, so before the runtime exists), runs
/// `body` on a multi-thread runtime, then drops the database and stops the server however
/// `body` ended. The first error wins.
#[allow(dead_code)] // the benches with one server
pub fn run_on_server(
    database: &str,
    folder: &str,
    body: impl AsyncFnOnce(&BenchServer) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let server = BenchServer::open(database, folder)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(body(&server));
    let cleanup = runtime.block_on(server.drop_database());
    drop(runtime);
    let stopped = server.stop();
    outcome?;
    cleanup?;
    stopped
}
